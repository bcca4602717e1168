"""The Weaviate stand-in, driven only through the real weaviate-client v4.

Each test says which part of the stand-in to look at when it fails; the expected numbers are
worked out by hand in the comments (BM25 with k1=1.2, b=0.75; cosine distance; Weaviate's
rankedFusion and relativeScoreFusion).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import uuid
from collections.abc import Iterator

import pytest

weaviate = pytest.importorskip("weaviate")

from weaviate.classes.config import Configure, DataType, Property  # noqa: E402
from weaviate.classes.data import DataObject  # noqa: E402
from weaviate.classes.query import Filter, HybridFusion, MetadataQuery, Sort  # noqa: E402
from weaviate.classes.tenants import Tenant  # noqa: E402
from weaviate.exceptions import (  # noqa: E402
    UnexpectedStatusCodeError,
    WeaviateDeleteManyError,
    WeaviateInsertManyAllFailedError,
    WeaviateQueryError,
)

import tests.weaviate_standin as standin_package  # noqa: E402
from tests.weaviate_standin import WeaviateStandIn  # noqa: E402

weaviate_standin = standin_package.weaviate_standin  # the shared fixture, made visible to pytest here

UTC = dt.timezone.utc
PROPS = [
    Property(name="text", data_type=DataType.TEXT),
    Property(name="tags", data_type=DataType.TEXT_ARRAY),
    Property(name="n", data_type=DataType.INT),
    Property(name="x", data_type=DataType.NUMBER),
    Property(name="b", data_type=DataType.BOOL),
    Property(name="d", data_type=DataType.DATE),
]


def uid(i: int) -> uuid.UUID:
    return uuid.UUID(int=i)


@pytest.fixture
def client(weaviate_standin: WeaviateStandIn) -> Iterator[weaviate.WeaviateClient]:
    client = weaviate_standin.connect()
    try:
        yield client
    finally:
        client.close()


def make(
    client: weaviate.WeaviateClient, name: str = "Mem", *, auto_tenants: bool = False, null_state: bool = True
):
    return client.collections.create(
        name,
        properties=PROPS,
        vector_config=Configure.Vectors.self_provided(),
        multi_tenancy_config=Configure.multi_tenancy(enabled=True, auto_tenant_creation=auto_tenants),
        inverted_index_config=Configure.inverted_index(index_null_state=null_state),
    )


def ids(objects) -> set[int]:
    return {o.uuid.int for o in objects}


# --- connection and schema -------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Dep005:DeprecationWarning")  # the client's PyPI version nudge
def test_connect_with_init_checks(weaviate_standin: WeaviateStandIn) -> None:
    """connect() with init checks: OIDC probe, /v1/meta, the gRPC health check (server.py)."""
    client = weaviate_standin.connect(skip_init_checks=False)
    try:
        assert client.is_ready() and client.is_live()
        assert client.get_meta()["version"] == "1.33.0"
    finally:
        client.close()


def test_collection_lifecycle(client: weaviate.WeaviateClient) -> None:
    """POST/GET/DELETE /v1/schema and the class JSON the client parses (store.complete_class)."""
    assert not client.collections.exists("Mem")
    make(client)
    assert client.collections.exists("Mem")
    config = client.collections.get("Mem").config.get()
    assert {p.name: p.data_type.value for p in config.properties} == {
        "text": "text",
        "tags": "text[]",
        "n": "int",
        "x": "number",
        "b": "boolean",
        "d": "date",
    }
    assert config.multi_tenancy_config.enabled
    assert config.inverted_index_config.bm25.k1 == 1.2
    assert config.vector_config["default"].vector_index_config.distance_metric.value == "cosine"
    with pytest.raises(UnexpectedStatusCodeError, match="already exists"):
        make(client)
    client.collections.delete("Mem")
    assert not client.collections.exists("Mem")


def test_tenants(client: weaviate.WeaviateClient) -> None:
    """Tenant create (REST), get (gRPC TenantsGet), get_by_name / exists (REST), remove."""
    coll = make(client)
    coll.tenants.create(["t1", Tenant(name="t2")])
    assert set(coll.tenants.get()) == {"t1", "t2"}
    assert coll.tenants.exists("t1") and not coll.tenants.exists("t3")
    assert coll.tenants.get_by_name("t2").name == "t2"
    assert coll.tenants.get_by_name("t3") is None
    coll.tenants.remove(["t2"])
    assert set(coll.tenants.get()) == {"t1"}


# --- writes ----------------------------------------------------------------------------------


def test_insert_many_and_read_back_every_type(client: weaviate.WeaviateClient) -> None:
    """gRPC BatchObjects in, Search out: each data type and the vector survive the round trip."""
    coll = make(client)
    coll.tenants.create(["t1"])
    t1 = coll.with_tenant("t1")
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    props = {"text": "Hello", "tags": ["a", "b"], "n": 7, "x": 0.25, "b": True, "d": when}
    result = t1.data.insert_many([DataObject(uuid=uid(1), properties=props, vector=[0.5, 0.25])])
    assert not result.has_errors and result.uuids == {0: uid(1)}
    got = t1.query.fetch_object_by_id(uid(1), include_vector=True)
    assert got is not None
    assert got.properties == props
    assert got.vector == {"default": [0.5, 0.25]}
    assert t1.query.fetch_object_by_id(uid(2)) is None


def test_insert_many_reports_failed_objects(client: weaviate.WeaviateClient) -> None:
    """Per-object errors come back by index with Weaviate's validator texts (store.validate_property)."""
    coll = make(client)
    coll.tenants.create(["t1"])
    t1 = coll.with_tenant("t1")
    result = t1.data.insert_many(
        [
            DataObject(uuid=uid(1), properties={"text": "fine", "n": 1}, vector=[1.0, 0.0]),
            DataObject(uuid=uid(2), properties={"n": "three"}),
            DataObject(uuid=uid(3), properties={"n": 1.5}),
            DataObject(uuid=uid(4), properties={"x": "big"}),
            DataObject(uuid=uid(5), properties={"b": "yes"}),
            DataObject(uuid=uid(6), properties={"text": 5}),
            DataObject(uuid=uid(7), properties={"d": "yesterday"}),
            DataObject(uuid=uid(8), properties={"tags": [1, 2]}),
            DataObject(uuid=uid(9), properties={"nope": "x"}),
            DataObject(uuid=uid(10), properties={"text": "bad dims"}, vector=[1.0, 0.0, 0.0]),
        ]
    )
    assert result.has_errors
    assert result.uuids == {0: uid(1)}
    messages = {i: e.message for i, e in result.errors.items()}
    assert (
        messages[1]
        == "invalid integer property 'n' on class 'Mem': requires an integer, the given value is 'three'"
    )
    assert (
        messages[2]
        == "invalid integer property 'n' on class 'Mem': requires an integer, the given value is '1.5'"
    )
    assert (
        messages[3]
        == "invalid number property 'x' on class 'Mem': requires a float, the given value is 'big'"
    )
    assert messages[4] == "invalid boolean property 'b' on class 'Mem': not a bool, but string"
    assert messages[5] == "invalid text property 'text' on class 'Mem': not a string, but float64"
    assert "requires a string with a RFC3339 formatted date" in messages[6]
    assert messages[7].startswith("invalid text array property 'tags' on class 'Mem'")
    assert messages[8].startswith("no such prop with name 'nope' found in class 'Mem'")
    assert "vector with length 3" in messages[9]
    assert str(result.errors[1].original_uuid) == str(uid(2))
    assert ids(t1.query.fetch_objects().objects) == {1}


def test_update_replace_delete_by_id(client: weaviate.WeaviateClient) -> None:
    """REST PATCH merges, PUT replaces (vector too), DELETE and HEAD answer 204/404."""
    coll = make(client)
    coll.tenants.create(["t1"])
    t1 = coll.with_tenant("t1")
    t1.data.insert_many([DataObject(uuid=uid(1), properties={"text": "a", "n": 1}, vector=[1.0, 0.0])])
    t1.data.update(uuid=uid(1), properties={"n": 2})
    got = t1.query.fetch_object_by_id(uid(1), include_vector=True)
    assert got.properties == {"text": "a", "n": 2} and got.vector == {"default": [1.0, 0.0]}
    t1.data.replace(uuid=uid(1), properties={"x": 3.5}, vector=[0.0, 1.0])
    got = t1.query.fetch_object_by_id(uid(1), include_vector=True)
    assert got.properties == {"x": 3.5} and got.vector == {"default": [0.0, 1.0]}
    with pytest.raises(UnexpectedStatusCodeError):
        t1.data.update(uuid=uid(2), properties={"n": 2})
    with pytest.raises(UnexpectedStatusCodeError, match="requires an integer"):
        t1.data.update(uuid=uid(1), properties={"n": "two"})
    assert t1.data.exists(uid(1))
    assert t1.data.delete_by_id(uid(1)) is True
    assert t1.data.delete_by_id(uid(1)) is False
    assert not t1.data.exists(uid(1))
    t1.data.insert(properties={"text": "single"}, uuid=uid(3), vector=[1.0, 1.0])
    assert t1.query.fetch_object_by_id(uid(3)).properties == {"text": "single"}


def test_delete_many_counts(client: weaviate.WeaviateClient) -> None:
    """gRPC BatchDelete: matches / successful, dry_run deletes nothing, verbose lists the uuids."""
    coll = make(client)
    coll.tenants.create(["t1"])
    t1 = coll.with_tenant("t1")
    t1.data.insert_many([DataObject(uuid=uid(i), properties={"n": i}) for i in range(1, 6)])
    dry = t1.data.delete_many(where=Filter.by_property("n").greater_than(3), dry_run=True)
    assert (dry.matches, dry.successful, dry.failed) == (2, 0, 0)
    assert t1.aggregate.over_all(total_count=True).total_count == 5
    done = t1.data.delete_many(where=Filter.by_property("n").greater_than(3), verbose=True)
    assert (done.matches, done.successful, done.failed) == (2, 2, 0)
    assert {o.uuid for o in done.objects} == {uid(4), uid(5)} and all(o.successful for o in done.objects)
    assert ids(t1.query.fetch_objects().objects) == {1, 2, 3}
    none = t1.data.delete_many(where=Filter.by_property("n").equal(99))
    assert (none.matches, none.successful) == (0, 0)
    with pytest.raises(WeaviateDeleteManyError, match="without tenant"):
        coll.data.delete_many(where=Filter.by_property("n").equal(1))


# --- multi-tenancy ---------------------------------------------------------------------------


def test_tenant_isolation(client: weaviate.WeaviateClient) -> None:
    """A tenant sees only its own objects in every read and delete (store.Store.shard)."""
    coll = make(client)
    coll.tenants.create(["t1", "t2"])
    t1, t2 = coll.with_tenant("t1"), coll.with_tenant("t2")
    t1.data.insert_many([DataObject(uuid=uid(1), properties={"text": "apple", "n": 1}, vector=[1.0, 0.0])])
    t2.data.insert_many([DataObject(uuid=uid(2), properties={"text": "apple", "n": 1}, vector=[1.0, 0.0])])
    assert ids(t1.query.fetch_objects().objects) == {1}
    assert t1.query.fetch_object_by_id(uid(2)) is None
    assert ids(t1.query.near_vector(near_vector=[1.0, 0.0]).objects) == {1}
    assert ids(t1.query.bm25(query="apple").objects) == {1}
    assert ids(t1.query.hybrid(query="apple", vector=[1.0, 0.0]).objects) == {1}
    assert t1.aggregate.over_all(total_count=True).total_count == 1
    assert t1.data.delete_many(where=Filter.by_id().equal(uid(2))).matches == 0
    assert not t1.data.delete_by_id(uid(2))
    assert ids(t2.query.fetch_objects().objects) == {2}


def test_requests_without_or_with_unknown_tenant_fail(client: weaviate.WeaviateClient) -> None:
    """Weaviate's errors for a multi-tenant collection used without a tenant or with a missing one."""
    coll = make(client)
    coll.tenants.create(["t1"])
    with pytest.raises(WeaviateQueryError, match="has multi-tenancy enabled, but request was without tenant"):
        coll.query.fetch_objects()
    with pytest.raises(WeaviateInsertManyAllFailedError, match="request was without tenant"):
        coll.data.insert_many([DataObject(properties={"n": 1})])
    with pytest.raises(UnexpectedStatusCodeError, match="request was without tenant"):
        coll.data.insert(properties={"n": 1})
    with pytest.raises(WeaviateQueryError, match='tenant not found: "t9"'):
        coll.with_tenant("t9").query.fetch_objects()
    with pytest.raises(WeaviateInsertManyAllFailedError, match='tenant not found: "t9"'):
        coll.with_tenant("t9").data.insert_many([DataObject(properties={"n": 1})])
    auto = make(client, "Auto", auto_tenants=True)
    auto.with_tenant("fresh").data.insert_many([DataObject(properties={"n": 1})])
    assert auto.tenants.exists("fresh")


# --- filters ---------------------------------------------------------------------------------


@pytest.fixture
def filtered(client: weaviate.WeaviateClient):
    coll = make(client)
    coll.tenants.create(["t1"])
    t1 = coll.with_tenant("t1")
    rows = {
        1: {
            "text": "Hello World",
            "tags": ["red", "blue"],
            "n": 1,
            "x": 1.5,
            "b": True,
            "d": "2024-01-01T00:00:00Z",
        },
        2: {
            "text": "hello there",
            "tags": ["green"],
            "n": 2,
            "x": 2.5,
            "b": False,
            "d": "2024-02-01T00:00:00Z",
        },
        3: {
            "text": "goodbye world",
            "tags": ["red"],
            "n": 3,
            "x": -1.0,
            "b": True,
            "d": "2024-03-01T00:00:00Z",
        },
        4: {"text": "unrelated", "tags": [], "x": 0.0, "b": False},
    }
    result = t1.data.insert_many(
        [
            DataObject(
                uuid=uid(i),
                properties={
                    k: (dt.datetime.fromisoformat(v.replace("Z", "+00:00")) if k == "d" else v)
                    for k, v in p.items()
                },
            )
            for i, p in rows.items()
        ]
    )
    assert not result.has_errors
    return t1


def _p(name: str):
    return Filter.by_property(name)


def _date(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=UTC)


FILTER_CASES = [
    # text, word tokenisation: the value's tokens must all occur (case-folded)
    ("text equal one token", _p("text").equal("hello"), {1, 2}),
    ("text equal two tokens", _p("text").equal("HELLO world"), {1}),
    ("text not_equal", _p("text").not_equal("hello"), {3, 4}),
    ("text like prefix", _p("text").like("hel*"), {1, 2}),
    ("text like suffix", _p("text").like("*orld"), {1, 3}),
    ("text like ?", _p("text").like("th?re"), {2}),
    ("text contains_any", _p("text").contains_any(["goodbye", "there"]), {2, 3}),
    ("text contains_all", _p("text").contains_all(["hello", "world"]), {1}),
    # text[]
    ("text[] equal", _p("tags").equal("red"), {1, 3}),
    ("text[] not_equal", _p("tags").not_equal("red"), {2, 4}),
    ("text[] contains_any", _p("tags").contains_any(["green", "blue"]), {1, 2}),
    ("text[] contains_all", _p("tags").contains_all(["red", "blue"]), {1}),
    ("text[] contains_none", _p("tags").contains_none(["red"]), {2, 4}),
    # int
    ("int equal", _p("n").equal(2), {2}),
    ("int not_equal (missing matches)", _p("n").not_equal(2), {1, 3, 4}),
    ("int greater_than", _p("n").greater_than(1), {2, 3}),
    ("int greater_or_equal", _p("n").greater_or_equal(2), {2, 3}),
    ("int less_than", _p("n").less_than(2), {1}),
    ("int less_or_equal", _p("n").less_or_equal(2), {1, 2}),
    ("int contains_any", _p("n").contains_any([1, 3]), {1, 3}),
    ("int is_none", _p("n").is_none(True), {4}),
    ("int is not none", _p("n").is_none(False), {1, 2, 3}),
    # number
    ("number equal", _p("x").equal(2.5), {2}),
    ("number greater_than", _p("x").greater_than(1.0), {1, 2}),
    ("number less_than", _p("x").less_than(0.0), {3}),
    ("number less_or_equal", _p("x").less_or_equal(0.0), {3, 4}),
    # boolean
    ("bool equal true", _p("b").equal(True), {1, 3}),
    ("bool equal false", _p("b").equal(False), {2, 4}),
    ("bool not_equal", _p("b").not_equal(True), {2, 4}),
    # date
    ("date greater_than", _p("d").greater_than(_date("2024-01-15")), {2, 3}),
    ("date less_or_equal", _p("d").less_or_equal(_date("2024-02-01")), {1, 2}),
    ("date equal", _p("d").equal(_date("2024-03-01")), {3}),
    ("date is_none", _p("d").is_none(True), {4}),
    # ids
    ("id equal", Filter.by_id().equal(uid(2)), {2}),
    ("id not_equal", Filter.by_id().not_equal(uid(1)), {2, 3, 4}),
    ("id contains_any", Filter.by_id().contains_any([uid(1), uid(3), uid(9)]), {1, 3}),
    # combinations
    ("and", _p("n").greater_than(1) & _p("tags").equal("red"), {3}),
    ("or", _p("n").equal(1) | _p("text").equal("there"), {1, 2}),
    ("not", Filter.not_(_p("b").equal(True)), {2, 4}),
    (
        "nested",
        (_p("n").equal(1) | _p("n").equal(3)) & _p("text").equal("world") & _p("x").greater_than(0.0),
        {1},
    ),
    ("all_of", Filter.all_of([_p("b").equal(True), _p("x").less_than(0.0)]), {3}),
    ("any_of", Filter.any_of([_p("n").equal(2), _p("d").is_none(True)]), {2, 4}),
]


@pytest.mark.parametrize(("name", "where", "expected"), FILTER_CASES, ids=[c[0] for c in FILTER_CASES])
def test_filters(filtered, name: str, where, expected: set[int]) -> None:
    """Filter semantics per operator and type, evaluated by store.matches; also via delete_many counts."""
    assert ids(filtered.query.fetch_objects(filters=where).objects) == expected
    assert filtered.aggregate.over_all(total_count=True, filters=where).total_count == len(expected)
    assert filtered.data.delete_many(where=where, dry_run=True).matches == len(expected)


def test_filter_refusals(client: weaviate.WeaviateClient, filtered) -> None:
    """Filters Weaviate refuses fail loudly instead of matching nothing (store.check_filter)."""
    with pytest.raises(WeaviateQueryError, match="no such prop with name 'nope'"):
        filtered.query.fetch_objects(filters=_p("nope").equal("x"))
    with pytest.raises(WeaviateQueryError, match='cannot use "valueText" on type "int"'):
        filtered.query.fetch_objects(filters=_p("n").equal("two"))
    with pytest.raises(WeaviateQueryError, match='cannot use "valueInt" on type "number"'):
        filtered.query.fetch_objects(filters=_p("x").equal(2))
    plain = make(client, "NoNulls", null_state=False)
    plain.tenants.create(["t1"])
    with pytest.raises(WeaviateQueryError, match="Nullstate must be indexed"):
        plain.with_tenant("t1").query.fetch_objects(filters=_p("n").is_none(True))
    with pytest.raises(WeaviateQueryError, match="timestamps must be indexed"):
        plain.with_tenant("t1").query.fetch_objects(
            filters=Filter.by_creation_time().greater_than(_date("2024-01-01"))
        )


# --- reads and ranking -----------------------------------------------------------------------


def test_fetch_objects_pages_and_by_ids(client: weaviate.WeaviateClient) -> None:
    """fetch_objects orders by UUID without a filter; limit/offset page it; by-ids uses an _id filter."""
    coll = make(client)
    coll.tenants.create(["t1"])
    t1 = coll.with_tenant("t1")
    t1.data.insert_many([DataObject(uuid=uid(i), properties={"n": i}) for i in (5, 3, 1, 4, 2)])
    assert [o.uuid.int for o in t1.query.fetch_objects(limit=2).objects] == [1, 2]
    assert [o.uuid.int for o in t1.query.fetch_objects(limit=2, offset=2).objects] == [3, 4]
    assert [o.uuid.int for o in t1.query.fetch_objects(limit=10, offset=4).objects] == [5]
    assert ids(t1.query.fetch_objects_by_ids([uid(2), uid(4), uid(9)]).objects) == {2, 4}
    assert t1.query.fetch_objects(limit=1, return_properties=[]).objects[0].properties == {}
    assert [o.uuid.int for o in t1.iterator()] == [1, 2, 3, 4, 5]  # the `after` cursor
    by_n = t1.query.fetch_objects(sort=Sort.by_property("n", ascending=False), limit=3)
    assert [o.properties["n"] for o in by_n.objects] == [5, 4, 3]


def test_near_vector_ranks_by_cosine_distance(client: weaviate.WeaviateClient) -> None:
    """Exact cosine distance = 1 - cos; ascending; filters, limit and a distance cut-off apply."""
    coll = make(client)
    coll.tenants.create(["t1"])
    t1 = coll.with_tenant("t1")
    t1.data.insert_many(
        [
            DataObject(uuid=uid(1), properties={"n": 1}, vector=[1.0, 0.0]),  # cos 1      -> 0
            DataObject(uuid=uid(2), properties={"n": 2}, vector=[1.0, 1.0]),  # cos 1/√2   -> 0.2929
            DataObject(uuid=uid(3), properties={"n": 3}, vector=[0.0, 1.0]),  # cos 0      -> 1
            DataObject(uuid=uid(4), properties={"n": 4}, vector=[-1.0, 0.0]),  # cos -1    -> 2
            DataObject(uuid=uid(5), properties={"n": 5}),  # no vector: never a hit
        ]
    )
    res = t1.query.near_vector(near_vector=[2.0, 0.0], limit=3, return_metadata=MetadataQuery(distance=True))
    assert [o.uuid.int for o in res.objects] == [1, 2, 3]
    assert [o.metadata.distance for o in res.objects] == pytest.approx(
        [0.0, 1 - 1 / math.sqrt(2), 1.0], abs=1e-6
    )
    res = t1.query.near_vector(near_vector=[2.0, 0.0], filters=_p("n").greater_than(1), limit=2)
    assert [o.uuid.int for o in res.objects] == [2, 3]
    res = t1.query.near_vector(near_vector=[2.0, 0.0], distance=0.5)
    assert [o.uuid.int for o in res.objects] == [1, 2]


def bm25(tf: int, dl: int, avgdl: float, n_docs: int, df: int) -> float:
    idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    return idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avgdl))


def test_bm25_scores(client: weaviate.WeaviateClient) -> None:
    """BM25 per property (k1=1.2, b=0.75), summed; stopwords dropped; query_properties narrows."""
    coll = make(client)
    coll.tenants.create(["t1"])
    t1 = coll.with_tenant("t1")
    t1.data.insert_many(
        [
            DataObject(uuid=uid(1), properties={"text": "apple banana", "tags": ["fruit"]}),
            DataObject(uuid=uid(2), properties={"text": "apple apple cherry", "tags": ["banana"]}),
            DataObject(uuid=uid(3), properties={"text": "cherry date"}),
        ]
    )
    # "text": lengths 2, 3, 2 -> avgdl 7/3; "banana" occurs in doc 1 only (df 1 of N 3).
    # "tags": lengths 1, 1 -> avgdl 1; "banana" occurs in doc 2 only.
    res = t1.query.bm25(query="the banana", return_metadata=MetadataQuery(score=True))
    scores = {o.uuid.int: o.metadata.score for o in res.objects}
    assert scores == pytest.approx({1: bm25(1, 2, 7 / 3, 3, 1), 2: bm25(1, 1, 1, 3, 1)}, rel=1e-5)
    assert [o.uuid.int for o in res.objects] == [1, 2]  # tf / length: 1.062 (text) vs 1.0 (tags)
    res = t1.query.bm25(query="banana", query_properties=["text"], return_metadata=MetadataQuery(score=True))
    assert [o.uuid.int for o in res.objects] == [1]
    # "apple": tf 2 in doc 2 (length 3) beats tf 1 in doc 1 (length 2); df 2.
    res = t1.query.bm25(query="apple", return_metadata=MetadataQuery(score=True), limit=5)
    assert [o.uuid.int for o in res.objects] == [2, 1]
    assert res.objects[0].metadata.score == pytest.approx(bm25(2, 3, 7 / 3, 3, 2), rel=1e-5)
    res = t1.query.bm25(query="apple cherry", filters=_p("tags").equal("fruit"))
    assert [o.uuid.int for o in res.objects] == [1]
    assert t1.query.bm25(query="the of and").objects == []


@pytest.fixture
def hybrid_data(client: weaviate.WeaviateClient):
    coll = make(client)
    coll.tenants.create(["t1"])
    t1 = coll.with_tenant("t1")
    t1.data.insert_many(
        [
            DataObject(uuid=uid(1), properties={"text": "apple pie"}, vector=[1.0, 0.0]),
            DataObject(uuid=uid(2), properties={"text": "apple apple"}, vector=[0.0, 1.0]),
            DataObject(uuid=uid(3), properties={"text": "banana"}, vector=[1.0, 1.0]),
        ]
    )
    return t1


def test_hybrid_relative_score_fusion(hybrid_data) -> None:
    """relativeScoreFusion: each result set min-max normalised, weighted by alpha / 1-alpha, summed.

    keyword "apple": doc 2 (tf 2) > doc 1 (tf 1) -> normalised 1, 0.
    vector [1, 0]: 1 - distance = 1 (doc 1), 1/√2 (doc 3), 0 (doc 2) -> normalised the same.
    alpha 0.6: doc 1 = 0.6, doc 3 = 0.6/√2 = 0.4243, doc 2 = 0.4.
    """
    res = hybrid_data.query.hybrid(
        query="apple",
        vector=[1.0, 0.0],
        alpha=0.6,
        fusion_type=HybridFusion.RELATIVE_SCORE,
        return_metadata=MetadataQuery(score=True),
    )
    assert [o.uuid.int for o in res.objects] == [1, 3, 2]
    assert [o.metadata.score for o in res.objects] == pytest.approx([0.6, 0.6 / math.sqrt(2), 0.4], rel=1e-5)
    res = hybrid_data.query.hybrid(
        query="apple", vector=[1.0, 0.0], alpha=0.6, filters=_p("text").equal("banana")
    )
    assert [o.uuid.int for o in res.objects] == [3]
    res = hybrid_data.query.hybrid(query="apple", vector=[1.0, 0.0], alpha=0.0)
    assert [o.uuid.int for o in res.objects] == [2, 1]
    res = hybrid_data.query.hybrid(query="apple", vector=[1.0, 0.0], alpha=0.6, limit=1)
    assert [o.uuid.int for o in res.objects] == [1]


def test_hybrid_ranked_fusion(hybrid_data) -> None:
    """rankedFusion: weight / (rank + 60) per result set, summed.

    keyword ranks: doc 2, doc 1; vector ranks: doc 1, doc 3, doc 2; alpha 0.5:
    doc 1 = .5/61 + .5/60, doc 2 = .5/60 + .5/62, doc 3 = .5/61.
    """
    res = hybrid_data.query.hybrid(
        query="apple",
        vector=[1.0, 0.0],
        alpha=0.5,
        fusion_type=HybridFusion.RANKED,
        return_metadata=MetadataQuery(score=True),
    )
    assert [o.uuid.int for o in res.objects] == [1, 2, 3]
    expected = [0.5 / 61 + 0.5 / 60, 0.5 / 60 + 0.5 / 62, 0.5 / 61]
    assert [o.metadata.score for o in res.objects] == pytest.approx(expected, rel=1e-5)


def test_fixture_and_reset(weaviate_standin: WeaviateStandIn) -> None:
    """The reusable fixture gives a started stand-in; reset() empties it without a restart."""
    assert weaviate_standin.http_port and weaviate_standin.grpc_port
    client = weaviate_standin.connect()
    try:
        make(client)
        weaviate_standin.reset()
        assert not client.collections.exists("Mem")
    finally:
        client.close()


def test_async_client(weaviate_standin: WeaviateStandIn) -> None:
    """The async client (grpc.aio stubs, httpx.AsyncClient) drives the same stand-in."""

    async def run() -> list[dict]:
        client = weaviate.use_async_with_custom(
            http_host="127.0.0.1",
            http_port=weaviate_standin.http_port,
            http_secure=False,
            grpc_host="127.0.0.1",
            grpc_port=weaviate_standin.grpc_port,
            grpc_secure=False,
            skip_init_checks=True,
        )
        await client.connect()
        try:
            coll = await client.collections.create(
                "Mem",
                properties=PROPS,
                vector_config=Configure.Vectors.self_provided(),
                multi_tenancy_config=Configure.multi_tenancy(enabled=True),
            )
            await coll.tenants.create(["t1"])
            t1 = coll.with_tenant("t1")
            result = await t1.data.insert_many(
                [DataObject(properties={"text": "hi there"}, vector=[1.0, 0.0])]
            )
            assert not result.has_errors
            found = await t1.query.hybrid(query="hi", vector=[1.0, 0.0])
            return [o.properties for o in found.objects]
        finally:
            await client.close()

    assert asyncio.run(run()) == [{"text": "hi there"}]
