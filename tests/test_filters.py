"""Tests of the filter DSL: parser, evaluator, and the SQLite compiler against the evaluator."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memos_core.errors import FilterError
from memos_core.filters import (
    And,
    Compare,
    Field,
    Not,
    Or,
    and_,
    compile_sqlite,
    eq,
    evaluate,
    fields_of,
    parse_filter,
)
from memos_core.schema import MemoryItem, MemoryStatus, parse_time
from memos_core.stores._sqlite_schema import ITEM_COLUMNS, ITEMS_DDL, item_to_row


def make_db(items: Iterable[MemoryItem]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.executescript(ITEMS_DDL)
    cols = [*ITEM_COLUMNS, "embedding"]
    sql = f"INSERT INTO items ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"
    conn.executemany(sql, [item_to_row(item) for item in items])
    return conn


def selected(conn: sqlite3.Connection, items: list[MemoryItem], spec: Any) -> set[str]:
    """The ids the filter selects; asserts that SQL and the evaluator agree."""
    node = parse_filter(spec)
    sql, params = compile_sqlite(node)
    in_sql = {row[0] for row in conn.execute(f"SELECT id FROM items WHERE {sql}", params)}
    assert {row[0] for row in conn.execute(f"SELECT {sql} FROM items", params)} <= {0, 1}
    in_python = {item.id for item in items if evaluate(node, item)}
    assert in_sql == in_python, (spec, sql, params)
    return in_python


# ----------------------------------------------------------------------------- fixed items

ITEMS = [
    MemoryItem(
        id="m1",
        cube_id="c1",
        user_id="u1",
        memory="Plan the Q3 offsite 工作",
        key="offsite",
        memory_type="long_term",
        tags=["工作", "urgent"],
        keywords=["Offsite"],
        info={
            "custom_status": "待准备",
            "priority": 2,
            "flag": True,
            "arr": [1, "x", True],
            "nested": {"a": {"b": 5}},
            "s": "Hello World",
        },
        version=1,
        access_count=3,
        confidence=0.9,
        created_at=parse_time("2024-05-01T10:00:00+02:00"),  # 08:00Z
        event_time=parse_time("2024-04-30"),
    ),
    MemoryItem(
        id="m2",
        cube_id="c1",
        memory="学习 rust",
        memory_type="working",
        tags=["学习"],
        info={"custom_status": "完成", "priority": 2.5, "flag": 1, "arr": "x1", "n": None},
        version=2,
        confidence=0.5,
        created_at=parse_time("2024-05-01T23:30:00-05:00"),  # 2024-05-02T04:30Z
    ),
    MemoryItem(
        id="m3",
        cube_id="c2",
        agent_id="a1",
        memory="ÉCOLE notes",
        status="archived",
        keywords=["Alpha", "beta"],
        info={"priority": "2", "flag": False, "nested": {"a": 1}},
        version=3,
        confidence=1.0,
        created_at=parse_time("2024-04-30T12:00:00Z"),
    ),
]


@pytest.fixture(scope="module")
def db() -> sqlite3.Connection:
    return make_db(ITEMS)


CASES: list[tuple[Any, set[str]]] = [
    # the seed example
    ({"and": [{"tags": {"contains": "工作"}}, {"custom_status": "待准备"}]}, {"m1"}),
    (None, {"m1", "m2", "m3"}),
    ({}, {"m1", "m2", "m3"}),
    # text columns
    ({"cube_id": "c1"}, {"m1", "m2"}),
    ({"cube_id": {"eq": "c2"}}, {"m3"}),
    ({"user_id": {"ne": "u1"}}, {"m2", "m3"}),
    ({"user_id": None}, {"m2", "m3"}),
    ({"user_id": {"ne": None}}, {"m1"}),
    ({"agent_id": {"exists": True}}, {"m3"}),
    ({"agent_id": {"exists": False}}, {"m1", "m2"}),
    ({"memory_type": {"in": ["working", "user"]}}, {"m2"}),
    ({"user_id": {"nin": ["u1"]}}, {"m2", "m3"}),
    ({"memory": {"contains": "offsite"}}, {"m1"}),
    ({"memory": {"contains": "Offsite"}}, set()),
    ({"memory": {"like": "plan%"}}, {"m1"}),
    ({"memory": {"like": "%工_"}}, {"m1"}),
    ({"memory": {"like": "écOLE%"}}, set()),  # non-ASCII letters do not fold
    ({"memory": {"like": "ÉcOLE%"}}, {"m3"}),
    ({"key": {"gt": "a"}}, {"m1"}),
    ({"memory": {"gte": "学"}}, {"m2"}),  # code-point order
    ({"status": {"lt": "b"}}, {"m1", "m2", "m3"}),
    # number columns
    ({"version": 2}, {"m2"}),
    ({"version": {"gte": 2}}, {"m2", "m3"}),
    ({"version": {"lt": 1.5}}, {"m1"}),
    ({"confidence": {"lte": 0.5}}, {"m2"}),
    ({"confidence": 1}, {"m3"}),
    ({"access_count": {"in": [0, 3]}}, {"m1", "m2", "m3"}),
    ({"access_count": {"gt": 0, "lte": 3}}, {"m1"}),
    # dates compare as instants, whatever the offset
    ({"created_at": {"gte": "2024-05-01"}}, {"m1", "m2"}),
    ({"created_at": {"lt": "2024-05-02T06:00:00+02:00"}}, {"m1", "m3"}),
    ({"created_at": {"gt": "2024-05-01T23:00:00-05:00"}}, {"m2"}),
    ({"created_at": "2024-05-01T08:00:00Z"}, {"m1"}),
    ({"created_at": "2024-05-01T04:00:00-04:00"}, {"m1"}),
    ({"created_at": {"gte": date(2024, 5, 2)}}, {"m2"}),
    (
        {"created_at": {"lte": datetime(2024, 5, 1, 9, tzinfo=timezone(timedelta(hours=1)))}},
        {"m1", "m3"},
    ),
    ({"created_at": {"in": ["2024-04-30T14:00:00+02:00", "2020-01-01"]}}, {"m3"}),
    ({"event_time": {"exists": True}}, {"m1"}),
    ({"event_time": {"lt": "2024-05-01"}}, {"m1"}),
    ({"event_time": {"ne": "2024-04-30"}}, {"m2", "m3"}),
    # list columns
    ({"tags": "学习"}, {"m2"}),
    ({"tags": {"ne": "学习"}}, {"m1", "m3"}),
    ({"tags": {"in": ["urgent", "学习"]}}, {"m1", "m2"}),
    ({"tags": {"nin": ["urgent", "nope"]}}, {"m2", "m3"}),
    ({"tags": {"exists": True}}, {"m1", "m2"}),
    ({"tags": {"exists": False}}, {"m3"}),
    ({"keywords": {"like": "ALPHA"}}, {"m3"}),
    ({"keywords": {"like": "%e%"}}, {"m1", "m3"}),
    ({"keywords": {"contains": "Alpha"}}, {"m3"}),
    # info: type-strict equality
    ({"custom_status": "完成"}, {"m2"}),
    ({"info.custom_status": {"ne": "完成"}}, {"m1", "m3"}),
    ({"priority": 2}, {"m1"}),
    ({"priority": 2.0}, {"m1"}),
    ({"priority": "2"}, {"m3"}),
    ({"flag": True}, {"m1"}),
    ({"flag": 1}, {"m2"}),
    ({"flag": False}, {"m3"}),
    ({"flag": {"ne": True}}, {"m2", "m3"}),
    ({"priority": {"in": [2.5, "2"]}}, {"m2", "m3"}),
    ({"priority": {"nin": [2, True]}}, {"m2", "m3"}),
    # info: order tests between kinds are false
    ({"priority": {"gt": 2}}, {"m2"}),
    ({"priority": {"gte": "1"}}, {"m3"}),
    ({"priority": {"lt": 3, "gt": 1}}, {"m1", "m2"}),
    ({"flag": {"lte": 1}}, {"m2"}),
    # info: missing and null
    ({"n": None}, {"m1", "m2", "m3"}),
    ({"n": {"exists": True}}, set()),
    ({"custom_status": {"exists": True}}, {"m1", "m2"}),
    ({"custom_status": {"exists": False}}, {"m3"}),
    ({"custom_status": {"ne": None}}, {"m1", "m2"}),
    ({"missing": {"ne": 1}}, {"m1", "m2", "m3"}),
    ({"missing": {"nin": ["a"]}}, {"m1", "m2", "m3"}),
    ({"missing": {"gte": 0}}, set()),
    ({"not": {"missing": 1}}, {"m1", "m2", "m3"}),
    # info: contains (array membership, substring) and like
    ({"arr": {"contains": "x"}}, {"m1", "m2"}),
    ({"arr": {"contains": 1}}, {"m1"}),
    ({"arr": {"contains": True}}, {"m1"}),
    ({"arr": {"contains": "1"}}, {"m2"}),
    ({"s": {"contains": "World"}}, {"m1"}),
    ({"s": {"contains": "world"}}, set()),
    ({"priority": {"contains": 2}}, set()),
    ({"s": {"like": "hello%"}}, {"m1"}),
    ({"priority": {"like": "2"}}, {"m3"}),
    # info: nested paths
    ({"nested.a.b": 5}, {"m1"}),
    ({"info.nested.a.b": {"gte": 5}}, {"m1"}),
    ({"nested.a": 1}, {"m3"}),
    ({"nested.a": {"exists": True}}, {"m1", "m3"}),
    ({"nested.a.b.c": {"exists": False}}, {"m1", "m2", "m3"}),
    # boolean structure
    ({"or": [{"version": 1}, {"version": 3}]}, {"m1", "m3"}),
    ({"not": {"or": [{"version": 1}, {"version": 3}]}}, {"m2"}),
    ({"cube_id": "c1", "version": {"gt": 1}}, {"m2"}),
    ({"and": [{"cube_id": "c1"}], "not": {"tags": "工作"}}, {"m2"}),
    ({"not": {"not": {"flag": True}}}, {"m1"}),
]


@pytest.mark.parametrize(("spec", "expected"), CASES)
def test_operators(db: sqlite3.Connection, spec: Any, expected: set[str]) -> None:
    assert selected(db, ITEMS, spec) == expected


ERRORS: list[tuple[Any, str, str]] = [
    ([{"a": 1}], "$", "must be an object"),
    ({"and": [{"a": 1}, {"tags": {"gt": "x"}}]}, "$.and[1].tags.gt", "does not apply"),
    ({"and": {"a": 1}}, "$.and", "non-empty list"),
    ({"or": []}, "$.or", "non-empty list"),
    ({"not": [{"a": 1}]}, "$.not", "must be an object"),
    ({"not": {}}, "$.not", "empty filter"),
    ({"a": {"between": [1, 2]}}, "$.a.between", "valid operators: eq, ne, gt"),
    ({"a": {}}, "$.a", "no operator"),
    ({"a b": 1}, "$.a b", "invalid field name"),
    ({"a.": 1}, "$.a.", "invalid field name"),
    ({"1a": 1}, "$.1a", "invalid field name"),
    ({"gte": 5}, "$.gte", "is an operator"),
    ({"sources": 1}, "$.sources", "not a filterable field"),
    ({"info": {"exists": True}}, "$.info", "not a filterable field"),
    ({"status.x": 1}, "$.status.x", "info.status.x"),
    ({"version": "2"}, "$.version", "takes a number"),
    ({"version": True}, "$.version", "takes a number"),
    ({"confidence": {"gt": float("nan")}}, "$.confidence.gt", "finite"),
    ({"a": 2**64}, "$.a", "64 bits"),
    ({"status": 1}, "$.status", "takes a string"),
    ({"status": ["a", "b"]}, "$.status", "takes a string"),
    ({"tags": {"in": ["a", 1]}}, "$.tags.in[1]", "takes a string"),
    ({"tags": None}, "$.tags", "use 'exists'"),
    ({"a": {"gt": None}}, "$.a.gt", "cannot take null"),
    ({"a": {"in": []}}, "$.a.in", "list of 1 to 1000"),
    ({"a": {"in": "abc"}}, "$.a.in", "list of 1 to 1000"),
    ({"a": {"in": list(range(1001))}}, "$.a.in", "list of 1 to 1000"),
    ({"a": {"in": [None]}}, "$.a.in[0]", "string, number or bool"),
    ({"a": {"in": [[1]]}}, "$.a.in[0]", "string, number or bool"),
    ({"a": {"eq": {"x": 1}}}, "$.a.eq", "string, number or bool"),
    ({"a": {"exists": 1}}, "$.a.exists", "true or false"),
    ({"a": {"like": 1}}, "$.a.like", "string pattern"),
    ({"a": {"gt": True}}, "$.a.gt", "not a bool"),
    ({"version": {"contains": 1}}, "$.version.contains", "does not apply"),
    ({"created_at": {"like": "2024%"}}, "$.created_at.like", "does not apply"),
    ({"created_at": {"gt": "yesterday"}}, "$.created_at.gt", "not a date"),
    ({"created_at": {"gt": 20240501}}, "$.created_at.gt", "not a date"),
    (
        {"or": [{"a": 1}, {"event_time": {"in": ["2024-05-01", "x"]}}]},
        "$.or[1].event_time.in[1]",
        "x",
    ),
]


@pytest.mark.parametrize(("spec", "path", "message"), ERRORS)
def test_errors(spec: Any, path: str, message: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(spec)
    assert caught.value.path == path
    assert message in str(caught.value)
    assert f"(at {path})" in str(caught.value)


def test_limits() -> None:
    deep: dict[str, Any] = {"a": 1}
    for _ in range(31):
        deep = {"not": deep}
    assert parse_filter(deep) is not None
    with pytest.raises(FilterError, match="nest at most 32"):
        parse_filter({"not": deep})
    widest = parse_filter({"or": [{"and": [{"a": i}, {"tags": "x"}]} for i in range(166)]})
    sql, params = compile_sqlite(widest)
    assert make_db(ITEMS).execute(f"SELECT count(*) FROM items WHERE {sql}", params).fetchone()
    with pytest.raises(FilterError, match="at most 500 nodes") as caught:
        parse_filter({"or": [{"a": i} for i in range(500)]})
    assert caught.value.path == "$.or[499].a"
    many = {"or": [{"a": {"in": list(range(1000))}} for _ in range(11)]}
    with pytest.raises(FilterError, match="at most 10000 values"):
        parse_filter(many)


def test_ast_is_normalised() -> None:
    node = parse_filter({"created_at": {"gte": "2024-05-01T10:00:00+02:00"}, "a.b": {"in": [1]}})
    assert node == And(
        (
            Compare(Field("date", "created_at"), "gte", "2024-05-01T08:00:00.000000+00:00"),
            Compare(Field("info", "info", ("a", "b")), "in", (1,)),
        )
    )
    assert parse_filter({"info.scene": "x"}) == parse_filter({"scene": "x"})
    a, b = (Compare(Field("info", "info", (key,)), "eq", 1) for key in "ab")
    assert parse_filter({"or": [{"a": 1}], "not": {"b": 1}}) == And((Or((a,)), Not(b)))


def test_helpers() -> None:
    scope = eq("cube_id", "c1")
    assert scope == Compare(Field("text", "cube_id"), "eq", "c1")
    assert eq("status", MemoryStatus.ARCHIVED) == Compare(Field("text", "status"), "eq", "archived")
    assert eq("conversation_id", None) == Compare(Field("text", "conversation_id"), "eq", None)
    with pytest.raises(FilterError):
        eq("version", "1")
    user = parse_filter({"or": [{"status": "archived"}, {"not": {"scene": "x"}}]})
    assert and_(None, None) is None
    assert and_(None, scope) is scope
    combined = and_(scope, user, and_(eq("version", 1), eq("tags", "a")))
    assert isinstance(combined, And) and len(combined.children) == 4
    assert fields_of(combined) == {"cube_id", "status", "info.scene", "version", "tags"}
    assert fields_of(None) == set()
    assert evaluate(None, ITEMS[0]) is True
    assert compile_sqlite(None) == ("1", [])
    sql, params = compile_sqlite(combined, table="t")
    assert "t.cube_id IS ?" in sql and "items." not in sql and params[0] == "c1"
    with pytest.raises(ValueError):
        compile_sqlite(scope, table="items; DROP TABLE items")


def test_scope_uses_index(db: sqlite3.Connection) -> None:
    sql, params = compile_sqlite(and_(eq("cube_id", "c1"), eq("status", "activated")))
    plan = " ".join(
        str(r) for r in db.execute(f"EXPLAIN QUERY PLAN SELECT id FROM items WHERE {sql}", params)
    )
    assert "items_cube" in plan


# ----------------------------------------------------------------------------- properties
# Items and filters draw from the same small pools, so that filters often split the items.

CHARS = "aAbB_%工作éÉ"
STRINGS = ["", "a", "A", "ab", "aB", "工作", "待准备", "é", "É", "x_y", "%"]
pool = st.sampled_from(STRINGS)
strings = pool | st.text(alphabet=CHARS, max_size=3)
numbers = st.integers(-2, 2) | st.sampled_from([-0.5, 0.5, 1.0, 2.0])
scalars = pool | numbers | st.booleans()
info_values = (
    scalars
    | st.none()
    | st.lists(scalars | st.none() | st.lists(scalars, max_size=1), max_size=3)
    | st.fixed_dictionaries({"x": scalars | st.none()})
)
zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))])
instants = st.sampled_from(
    [
        "2024-05-01T00:00:00Z",
        "2024-05-01T02:00:00+02:00",
        "2024-04-30T22:00:00-02:00",
        "2024-05-01T10:30:00+00:00",
        "2024-05-02",
    ]
) | st.datetimes(datetime(2024, 4, 30), datetime(2024, 5, 2), timezones=zones)
times = instants.map(parse_time)
date_values = (
    instants
    | st.dates(date(2024, 4, 29), date(2024, 5, 3))
    | instants.map(lambda v: v.isoformat() if isinstance(v, datetime) else v)
)
users = st.sampled_from(["u1", "u2", "用户"])
tags = st.sampled_from(["a", "A", "b", "工作", "学习", "x_y", "%", "", "é", "É"])

# field -> (kind, values that items take and filters test)
FIELDS: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "id": ("text", st.sampled_from(["m0", "m1", "m2", "m10"])),
    "user_id": ("text", users),
    "agent_id": ("text", users),
    "memory": ("text", strings),
    "key": ("text", strings),
    "memory_type": ("text", st.sampled_from(["working", "long_term", "偏好"])),
    "status": ("text", st.sampled_from(["activated", "archived", "deleted"])),
    "mode": ("text", st.sampled_from(["fast", "fine"])),
    "version": ("number", st.integers(1, 3) | st.sampled_from([1.5, 2.0])),
    "access_count": ("number", st.integers(0, 2)),
    "confidence": ("number", st.sampled_from([0.0, 0.5, 1, 1.0, 2.5])),
    "created_at": ("date", date_values),
    "updated_at": ("date", date_values),
    "event_time": ("date", date_values),
    "last_accessed_at": ("date", date_values),
    "tags": ("list", tags),
    "keywords": ("list", tags),
    "k1": ("info", scalars),
    "info.k2": ("info", scalars),
    "n": ("info", scalars),
    "n.x": ("info", scalars),
    "info.n.x": ("info", scalars),
    "missing": ("info", scalars),
}
OPS_FOR = {
    "text": ["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "like", "exists"],
    "number": ["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "exists"],
    "date": ["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "exists"],
    "list": ["eq", "ne", "in", "nin", "contains", "like", "exists"],
    "info": ["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "like", "exists"],
}
patterns = st.sampled_from(["%", "a%", "%B", "_", "A_", "%工%", "%é", "É", "待%", "x_y", ""]) | st.text(
    alphabet=CHARS, max_size=3
)


@st.composite
def memory_items(draw: st.DrawFn) -> list[MemoryItem]:
    def value(field: str) -> Any:
        return draw(FIELDS[field][1])

    def maybe(field: str) -> Any:
        return draw(st.none() | FIELDS[field][1])

    return [
        MemoryItem(
            id=f"m{i}",
            cube_id="c1",
            user_id=maybe("user_id"),
            agent_id=maybe("agent_id"),
            memory=value("memory"),
            key=maybe("key"),
            memory_type=value("memory_type"),
            status=value("status"),
            mode=value("mode"),
            version=draw(st.integers(1, 3)),
            access_count=value("access_count"),
            confidence=value("confidence"),
            tags=draw(st.lists(tags, max_size=3)),
            keywords=draw(st.lists(tags, max_size=2)),
            info=draw(
                st.fixed_dictionaries({"k1": info_values}, optional={"k2": info_values, "n": info_values})
            ),
            created_at=draw(times),
            updated_at=draw(times),
            event_time=draw(st.none() | times),
            last_accessed_at=draw(st.none() | times),
        )
        for i in range(draw(st.integers(2, 12)))
    ]


def value_for(field: str, op: str) -> st.SearchStrategy[Any]:
    kind, base = FIELDS[field]
    if op == "exists":
        return st.booleans()
    if op in ("in", "nin"):
        return st.lists(base, min_size=1, max_size=4)
    if op == "like":
        return patterns
    if op in ("contains", "gt", "gte", "lt", "lte") and kind == "info":
        return pool | numbers
    if op in ("eq", "ne") and kind != "list":
        return base | st.none()
    return base


@st.composite
def leaves(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(FIELDS)))
    ops = draw(st.lists(st.sampled_from(OPS_FOR[FIELDS[field][0]]), min_size=1, max_size=2, unique=True))
    spec = {op: draw(value_for(field, op)) for op in ops}
    if list(spec) == ["eq"] and draw(st.booleans()):
        return {field: spec["eq"]}
    return {field: spec}


def merge(specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several filters as one multi-key object when their keys differ, else an explicit and."""
    keys = [k for spec in specs for k in spec]
    if len(keys) == len(set(keys)):
        return {k: v for spec in specs for k, v in spec.items()}
    return {"and": specs}


filters = leaves() | st.recursive(
    leaves(),
    lambda inner: (
        st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"and": fs})
        | st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"or": fs})
        | inner.map(lambda f: {"not": f})
        | st.lists(inner, min_size=2, max_size=3).map(merge)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(items=memory_items(), specs=st.lists(filters, min_size=4, max_size=12))
def test_sql_agrees_with_evaluator(items: list[MemoryItem], specs: list[dict[str, Any]]) -> None:
    conn = make_db(items)
    for spec in specs:
        selected(conn, items, spec)
        selected(conn, items, {"not": spec})


@settings(max_examples=300, deadline=None)
@given(spec=filters)
def test_generated_filters_parse(spec: dict[str, Any]) -> None:
    node = parse_filter(spec)
    assert node is not None
    compile_sqlite(node)


def test_unicode_info_keys_work_in_sql_and_python() -> None:
    """Chinese info keys are filterable; quoting keeps them out of the SQL text's syntax."""
    import sqlite3

    conn = sqlite3.connect(":memory:")
    conn.executescript(ITEMS_DDL)
    hit = MemoryItem(cube_id="c", memory="a", info={"状态": "待准备"})
    miss = MemoryItem(cube_id="c", memory="b", info={"状态": "完成"})
    for it in (hit, miss):
        row = item_to_row(it)
        conn.execute(
            f"INSERT INTO items ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
        )
    node = parse_filter({"状态": "待准备"})
    sql, params = compile_sqlite(node)
    assert [r[0] for r in conn.execute(f"SELECT id FROM items WHERE {sql}", params)] == [hit.id]
    assert evaluate(node, hit) and not evaluate(node, miss)
