"""The filter DSL (DESIGN §5): one parser, one AST, a SQLite compiler and a python evaluator.

Grammar (JSON)::

    filter := {"and": [filter, ...]}        every child holds
            | {"or": [filter, ...]}         some child holds
            | {"not": filter}               the child does not hold
            | {field: scalar}               shorthand for {field: {"eq": scalar}}
            | {field: {op: value, ...}}     every op holds
            | {key: ..., key: ..., ...}     several keys at one level: AND of them
    op     := eq | ne | gt | gte | lt | lte | in | nin | contains | like | exists
    field  := column | [info.]key[.key ...]  segments are identifiers (Unicode letters allowed)

``None`` or ``{}`` (top level only) means no filter. Fields:

* text columns ``id cube_id user_id agent_id conversation_id app_id memory key memory_type
  status mode merged_into embedding_model``, number columns ``version access_count``
  (integer) and ``confidence`` (real), date columns ``created_at updated_at event_time
  last_accessed_at`` (values are ISO dates/datetimes or ``date``/``datetime`` objects and compare
  as instants; a bare date is midnight UTC);
* list columns ``tags keywords``: ``eq``/``contains`` v = v is an element, ``in`` = some element
  is listed, ``like`` = some element matches, ``exists`` = non-empty; ``ne``/``nin`` negate;
* anything else is a key path into ``info`` (``scene`` = ``info.scene``; ``a.b`` = info.a.b),
  except ``info``/``sources``/``history`` and bare operator names, which are errors
  (write ``info.<name>`` to reach such a key).
  Comparison is type-strict: numbers with numbers, strings with strings, bools only by
  ``eq``/``ne``; an order test between different kinds is false. ``contains`` is membership
  on an array and substring on a string.

A missing or null field fails every test except ``ne``, ``nin`` and ``exists false``;
``eq null`` / ``ne null`` mean "is missing or null" / "is present". ``like`` is SQLite's: ``%``
any run, ``_`` one character, ASCII-only case folding, no escape character. ``not`` is plain
boolean negation. :func:`evaluate` is the reference that :func:`compile_sqlite` agrees with.
"""

from __future__ import annotations

import math
import operator
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from enum import Enum
from typing import Any, Literal, TypeAlias

from .errors import FilterError
from .schema import MemoryItem, format_time, parse_time

__all__ = [
    "OPERATORS",
    "And",
    "Compare",
    "Field",
    "FieldKind",
    "Node",
    "Not",
    "Or",
    "and_",
    "columns",
    "compile_sqlite",
    "eq",
    "evaluate",
    "fields_of",
    "parse_filter",
]

FieldKind: TypeAlias = Literal["text", "int", "real", "date", "list", "info"]

#: Every operator, in the order error messages list them.
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "like", "exists")

MAX_DEPTH = 32
MAX_NODES = 500
MAX_LIST = 1000
MAX_PATTERN = 1000  # SQLite refuses long LIKE patterns ("pattern too complex")
MAX_VALUES = 10_000  # all values of one filter together; keeps SQL under SQLite's variable cap

_KIND_COLUMNS: dict[FieldKind, str] = {
    "text": "id cube_id user_id agent_id conversation_id app_id memory key memory_type status"
    " mode merged_into embedding_model",
    "int": "version access_count",
    "real": "confidence",
    "date": "created_at updated_at event_time last_accessed_at",
    "list": "tags keywords",
}
_COLUMNS: dict[str, FieldKind] = {col: kind for kind, cols in _KIND_COLUMNS.items() for col in cols.split()}


def columns(kind: FieldKind) -> tuple[str, ...]:
    """The item columns a filter may name with this kind (a backend indexes exactly these)."""
    return tuple(_KIND_COLUMNS.get(kind, "").split())


_UNFILTERABLE = frozenset({"info", "sources", "history", "embedding", "seq"})
_NOT_FOR: dict[str, tuple[FieldKind, ...]] = {
    "gt": ("list",),
    "gte": ("list",),
    "lt": ("list",),
    "lte": ("list",),
    "contains": ("int", "real", "date"),
    "like": ("int", "real", "date"),
}
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_SQL_OPS = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "like": "LIKE"}
_NEGATIONS = {"ne": "eq", "nin": "in"}
# Unicode word characters (so Chinese info keys work); no quotes or brackets can get in.
_FIELD_RE = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


# ----------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Field:
    """A filter field: an item column, or a key path into ``info``.

    Attributes:
        kind: How the field compares: ``text``, ``int``, ``real``, ``date``, ``list`` or ``info``.
        column: The table column (``"info"`` for info keys).
        path: The key path inside ``info``; empty for columns.
    """

    kind: FieldKind
    column: str
    path: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The canonical name: the column, or ``info.<key>[.<key>...]``."""
        return ".".join((self.column, *self.path))


@dataclass(frozen=True)
class And:
    """All children hold."""

    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """At least one child holds."""

    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """The child does not hold."""

    child: Node


@dataclass(frozen=True)
class Compare:
    """One test ``field op value``.

    Attributes:
        field: What is tested.
        op: One of :data:`OPERATORS`.
        value: The normalised value: dates as canonical strings, ``in``/``nin`` lists as tuples,
            ``None`` only for ``eq``/``ne`` (is missing / is present).
    """

    field: Field
    op: str
    value: Any


Node: TypeAlias = And | Or | Not | Compare


# ----------------------------------------------------------------------------- parsing


def parse_filter(spec: Mapping[str, Any] | None) -> Node | None:
    """Parse and validate a filter.

    Args:
        spec: A filter in the DSL's JSON form; ``None`` or ``{}`` for no filter.

    Returns:
        The AST, or ``None`` when there is no filter.

    Raises:
        FilterError: The filter is malformed; its ``path`` points at the offending part.
    """
    if spec is None or (isinstance(spec, Mapping) and not spec):
        return None
    return _Parser().filter(spec, "$", 1)


def eq(field_name: str, value: Any) -> Node:
    """The validated test ``field_name == value`` (``None``: the field is missing or null).

    Raises:
        FilterError: The field name or the value is invalid.
    """
    path = f"$.{field_name}"
    field = _field(field_name, path)
    return Compare(field, "eq", _Parser().value(field, "eq", value, path))


def and_(*nodes: Node | None) -> Node | None:
    """The conjunction of ``nodes``, ignoring ``None`` (no filter); nested ``And`` are flattened."""
    kids: list[Node] = []
    for node in nodes:
        if isinstance(node, And):
            kids.extend(node.children)
        elif node is not None:
            kids.append(node)
    if len(kids) <= 1:
        return kids[0] if kids else None
    return And(tuple(kids))


def fields_of(node: Node | None) -> set[str]:
    """The canonical names (:attr:`Field.name`) of every field that ``node`` tests, at any depth."""
    if node is None:
        return set()
    if isinstance(node, Compare):
        return {node.field.name}
    if isinstance(node, Not):
        return fields_of(node.child)
    return {name for child in node.children for name in fields_of(child)}


def _field(name: Any, path: str) -> Field:
    if not isinstance(name, str) or not _FIELD_RE.fullmatch(name):
        raise FilterError(f"invalid field name {name!r}", path=path)
    if name in OPERATORS:
        raise FilterError(f"{name!r} is an operator; write {{field: {{{name!r}: value}}}}", path=path)
    head, *rest = name.split(".")
    if head == "info" and rest:
        return Field("info", "info", tuple(rest))
    if head in _UNFILTERABLE or (head in _COLUMNS and rest):
        raise FilterError(
            f"{name!r} is not a filterable field; write 'info.{name}' for a key of info", path=path
        )
    if head in _COLUMNS:
        return Field(_COLUMNS[head], head)
    return Field("info", "info", (head, *rest))


def _date(value: Any, path: str) -> str:
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time(), UTC)
    if isinstance(value, (str, datetime)):
        try:
            return format_time(parse_time(value))
        except (ValueError, OverflowError):
            pass
    raise FilterError(f"{value!r} is not a date or an ISO-8601 datetime", path=path)


class _Parser:
    """One parse: counts nodes and values against the limits."""

    def __init__(self) -> None:
        self.nodes = 0
        self.values = 0

    def count(self, path: str) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FilterError(f"a filter has at most {MAX_NODES} nodes", path=path)

    def filter(self, spec: Any, path: str, depth: int) -> Node:
        if not isinstance(spec, Mapping):
            raise FilterError(f"a filter must be an object, not {type(spec).__name__}", path=path)
        if not spec:
            raise FilterError("an empty filter is allowed only at the top level", path=path)
        if depth > MAX_DEPTH:
            raise FilterError(f"filters nest at most {MAX_DEPTH} deep", path=path)
        parts: list[Node] = []
        for key, value in spec.items():
            sub = f"{path}.{key}"
            if key in ("and", "or"):
                if not isinstance(value, (list, tuple)) or not value:
                    raise FilterError(f"{key!r} takes a non-empty list of filters", path=sub)
                self.count(sub)
                kids = tuple(self.filter(v, f"{sub}[{i}]", depth + 1) for i, v in enumerate(value))
                parts.append(And(kids) if key == "and" else Or(kids))
            elif key == "not":
                self.count(sub)
                parts.append(Not(self.filter(value, sub, depth + 1)))
            else:
                parts.extend(self.leaves(key, value, sub))
        if len(parts) == 1:
            return parts[0]
        self.count(path)
        return And(tuple(parts))

    def leaves(self, name: Any, spec: Any, path: str) -> list[Node]:
        field = _field(name, path)
        if not isinstance(spec, Mapping):
            self.count(path)
            return [Compare(field, "eq", self.value(field, "eq", spec, path))]
        if not spec:
            raise FilterError(f"no operator given; valid operators: {', '.join(OPERATORS)}", path=path)
        out: list[Node] = []
        for op, value in spec.items():
            self.count(f"{path}.{op}")
            out.append(Compare(field, op, self.value(field, op, value, f"{path}.{op}")))
        return out

    def value(self, field: Field, op: Any, value: Any, path: str) -> Any:
        if op not in OPERATORS:
            raise FilterError(f"unknown operator {op!r}; valid operators: {', '.join(OPERATORS)}", path=path)
        if field.kind in _NOT_FOR.get(op, ()):
            raise FilterError(f"{op!r} does not apply to {field.kind} field {field.name!r}", path=path)
        if op == "exists":
            if not isinstance(value, bool):
                raise FilterError("'exists' takes true or false", path=path)
            return value
        if op in ("in", "nin"):
            if not isinstance(value, (list, tuple)) or not 0 < len(value) <= MAX_LIST:
                raise FilterError(f"{op!r} takes a list of 1 to {MAX_LIST} values", path=path)
            return tuple(self.scalar(field, v, f"{path}[{i}]") for i, v in enumerate(value))
        if value is None:
            if op in ("eq", "ne") and field.kind != "list":
                return None
            raise FilterError(f"{op!r} cannot take null here; use 'exists'", path=path)
        if op == "like" and not isinstance(value, str):
            raise FilterError("'like' takes a string pattern", path=path)
        if op == "like" and len(value) > MAX_PATTERN:
            raise FilterError(f"'like' patterns are limited to {MAX_PATTERN} characters", path=path)
        if op in _ORDER and isinstance(value, bool):
            raise FilterError(f"{op!r} takes a number or a string, not a bool", path=path)
        return self.scalar(field, value, path)

    def scalar(self, field: Field, value: Any, path: str) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise FilterError(f"a filter holds at most {MAX_VALUES} values", path=path)
        if isinstance(value, Enum):  # e.g. MemoryStatus.ACTIVATED -> "activated"
            value = value.value
        kind = field.kind
        if kind == "date":
            return _date(value, path)
        if isinstance(value, str) and kind in ("text", "list", "info"):
            return value
        if isinstance(value, bool):
            if kind == "info":
                return value
        elif isinstance(value, (int, float)) and kind in ("int", "real", "info"):
            if isinstance(value, float) and not math.isfinite(value):
                raise FilterError(f"{value!r} is not a finite number", path=path)
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise FilterError(f"{value!r} does not fit in 64 bits", path=path)
            return value
        expected = {"int": "a number", "real": "a number", "info": "a string, number or bool"}
        raise FilterError(f"{field.name!r} takes {expected.get(kind, 'a string')}, not {value!r}", path=path)


def _positive(node: Compare) -> tuple[Compare, bool]:
    """``node`` without its negation, and whether to negate: ne, nin, exists false, eq null."""
    if node.value is None:
        return replace(node, op="exists", value=True), node.op == "eq"
    if node.op == "exists":
        return replace(node, value=True), not node.value
    if node.op in _NEGATIONS:
        return replace(node, op=_NEGATIONS[node.op]), True
    return node, False


# ----------------------------------------------------------------------------- evaluator


def evaluate(node: Node | None, item: MemoryItem) -> bool:
    """Whether ``item`` passes the filter (``None`` passes everything): the reference semantics.

    ``info`` is read as JSON data (as the store round-trips it): dicts, lists, str, int, float,
    bool and None.
    """
    if node is None:
        return True
    if isinstance(node, And):
        return all(evaluate(child, item) for child in node.children)
    if isinstance(node, Or):
        return any(evaluate(child, item) for child in node.children)
    if isinstance(node, Not):
        return not evaluate(node.child, item)
    positive, negate = _positive(node)
    return _eval_leaf(positive, item) != negate


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "str" if isinstance(value, str) else "other"


def _same(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) != "other" and bool(a == b)


def _like(text: str, pattern: str) -> bool:
    """SQLite's LIKE: ``%`` any run, ``_`` one character, ASCII-only case folding, no escape."""
    t, p = text.translate(_ASCII_LOWER), pattern.translate(_ASCII_LOWER)
    ti = pi = 0
    star, mark = -1, 0  # the last '%' seen and where its run currently ends in t
    while ti < len(t):
        if pi < len(p) and p[pi] == "%":
            star, mark, pi = pi, ti, pi + 1
        elif pi < len(p) and p[pi] in ("_", t[ti]):
            ti, pi = ti + 1, pi + 1
        elif star >= 0:
            mark += 1
            ti, pi = mark, star + 1
        else:
            return False
    return not p[pi:].strip("%")


def _raw(field: Field, item: MemoryItem) -> Any:
    if field.kind != "info":
        value = getattr(item, field.column)
        return format_time(value) if field.kind == "date" and value is not None else value
    value = item.info
    for key in field.path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _eval_leaf(node: Compare, item: MemoryItem) -> bool:
    op, value, raw = node.op, node.value, _raw(node.field, item)
    if node.field.kind == "list":
        if op == "exists":
            return bool(raw)
        if op == "like":
            return any(_like(element, value) for element in raw)
        return any(element in value for element in raw) if op == "in" else value in raw
    if raw is None:
        return False
    if op == "exists":
        return True
    if op == "eq":
        return _same(raw, value)
    if op == "in":
        return any(_same(raw, v) for v in value)
    if op == "like":
        return isinstance(raw, str) and _like(raw, value)
    if op == "contains":
        if isinstance(raw, str):
            return isinstance(value, str) and value in raw
        return isinstance(raw, list) and any(_same(element, value) for element in raw)
    return _kind(raw) == _kind(value) and _ORDER[op](raw, value)


# ----------------------------------------------------------------------------- SQLite


def compile_sqlite(node: Node | None, *, table: str = "items") -> tuple[str, list[Any]]:
    """Compile a filter to a SQLite boolean expression over the items table.

    Every sub-expression yields exactly 0 or 1 (never NULL), so ``NOT`` is boolean negation and
    the result selects exactly the items :func:`evaluate` accepts.

    Args:
        node: The filter; ``None`` compiles to ``"1"``.
        table: The name or alias of the items table; columns are qualified with it.

    Returns:
        The SQL expression, with ``?`` placeholders, and its parameters in order.

    Raises:
        ValueError: ``table`` is not a plain identifier.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
        raise ValueError(f"invalid table name {table!r}")
    if node is None:
        return "1", []
    return _compile(node, table)


def _compile(node: Node, table: str) -> tuple[str, list[Any]]:
    if isinstance(node, Not):
        sql, params = _compile(node.child, table)
        return f"(NOT {sql})", params
    if isinstance(node, Compare):
        positive, negate = _positive(node)
        sql, params = _sql_leaf(positive, table)
        return (f"(NOT ({sql}))" if negate else f"({sql})"), params
    parts = [_compile(child, table) for child in node.children]
    joiner = " AND " if isinstance(node, And) else " OR "
    return "(" + joiner.join(sql for sql, _ in parts) + ")", [p for _, ps in parts for p in ps]


def _test(expr: str, op: str, value: Any) -> tuple[str, list[Any]]:
    """``expr op value`` for a non-null ``expr``, with ``value`` as parameters."""
    if op == "in":
        return f"{expr} IN ({', '.join('?' * len(value))})", list(value)
    if op == "contains":
        return f"instr({expr}, ?) > 0", [value]
    return f"{expr} {_SQL_OPS[op]} ?", [value]


def _typed_in(jtype: str, jvalue: str, values: tuple[Any, ...]) -> tuple[str, list[Any]]:
    """A JSON value (its ``json_type`` and SQL value) equals one of ``values``, type-strictly."""
    strs = [v for v in values if _kind(v) == "str"]
    nums = [v for v in values if _kind(v) == "number"]
    bools = sorted({"'true'" if v else "'false'" for v in values if _kind(v) == "bool"})
    parts: list[str] = []
    params: list[Any] = []
    for group, types in ((strs, "'text'"), (nums, "'integer', 'real'")):
        if group:
            sql, ps = _test(jvalue, "in", group)
            parts.append(f"({jtype} IN ({types}) AND {sql})")
            params += ps
    if bools:
        parts.append(f"{jtype} IN ({', '.join(bools)})")
    return " OR ".join(parts), params


def _sql_leaf(node: Compare, table: str) -> tuple[str, list[Any]]:
    """The positive leaf (no ne/nin/exists false/null) as a 0/1 expression."""
    field, op, value = node.field, node.op, node.value
    col = f"{table}.{field.column}"
    if field.kind == "list":
        if op == "exists":
            return f"json_array_length({col}) > 0", []
        test, params = _test("je.value", "eq" if op == "contains" else op, value)
        return f"EXISTS (SELECT 1 FROM json_each({col}) AS je WHERE {test})", params
    if field.kind != "info":
        if op == "exists":
            return f"{col} IS NOT NULL", []
        if op == "eq":
            return f"{col} IS ?", [value]
        test, params = _test(col, op, value)
        return f"{col} IS NOT NULL AND {test}", params
    path = "'$." + ".".join(f'"{key}"' for key in field.path) + "'"
    jtype, jvalue = f"json_type({col}, {path})", f"json_extract({col}, {path})"
    if op == "exists":
        return f"COALESCE({jtype}, 'null') <> 'null'", []
    if op == "contains":
        member, params = _typed_in("je.type", "je.value", (value,))
        sql = f"CASE {jtype} WHEN 'array' THEN EXISTS "
        sql += f"(SELECT 1 FROM json_each({col}, {path}) AS je WHERE {member})"
        if isinstance(value, str):
            sql += f" WHEN 'text' THEN instr({jvalue}, ?) > 0"
            params.append(value)
        return sql + " ELSE 0 END", params
    if op in ("eq", "in"):
        sql, params = _typed_in(jtype, jvalue, value if op == "in" else (value,))
    else:  # an order test or like; the value's kind is fixed by the parser
        types = "'text'" if isinstance(value, str) else "'integer', 'real'"
        test, params = _test(jvalue, op, value)
        sql = f"{jtype} IN ({types}) AND {test}"
    return f"COALESCE({sql}, 0)", params
