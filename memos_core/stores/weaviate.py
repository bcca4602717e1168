"""Weaviate store (scale-out, DESIGN §4 and §10) on weaviate-client v4 (docs/weaviate.md).

Sync and async share one I/O-free planner: :meth:`WeaviatePlanner.plan` turns an op into a
generator of :class:`Call` requests (collection, tenant, client method, filters, properties,
vectors, limits) that receives each result and returns the op's result. :class:`WeaviateStore`
runs plans with :func:`run_plan` on a ``WeaviateClient``, :class:`AsyncWeaviateStore` with
:func:`arun_plan` on a ``WeaviateAsyncClient``; nothing else is written twice. Backend errors
(an unreachable server included) become :class:`StoreError` raised ``from`` the client's error.
:class:`HybridSearch` is Weaviate's own ``query.hybrid`` (relativeScoreFusion); the MemOS
retrieval keeps fusing TextSearch and VectorSearch itself, so rankings match across backends.

Layout:

- **One collection for items** (``MemosItem`` by default) with native multi-tenancy: **one tenant
  per cube**, so a cube is Weaviate's own isolation boundary. Tenants are created on the first
  write to a cube; a read of a cube that has no tenant returns nothing. ``replace_space``
  rebuilds a cube in a new tenant generation, named by a pointer record (``_GEN_NS``) that is
  switched only once the copy is complete. Cube ids that are not
  valid tenant names (``[A-Za-z0-9_-]{1,64}``) are mapped to ``h-<sha256>``.
- Each object's UUID is the item id when that is a canonical UUID (others are mapped with
  ``uuid5``). ``access_count``/``last_accessed_at`` are their own properties, updated in place
  by a touch and overlaid on the JSON when reading (a touch never rewrites the item). The
  **whole item is kept as JSON** in ``item_json`` (not indexed), so an item round-trips exactly;
  beside it live the indexed copies that filters, sort and search need. Vectors are
  self-provided (one named vector, ``default``, cosine distance).
- **Text search** is BM25 over ``search_text``: :meth:`MemoryItem.search_text` pre-tokenised with
  :func:`memos_core.text.tokenize` (jieba for CJK, as the SQLite store does) and a light English
  plural fold (``cats`` -> ``cat``; SQLite's FTS5 uses Porter stemming, which folds more), stored
  with ``whitespace`` tokenisation. Scores are Weaviate's BM25 scores (higher is better).
- **Vector search** is ``near_vector``; the score is ``1 - cosine distance``, the cosine
  similarity the SQLite store reports.
- **Records** (and the id -> cube index that ``GetItems``/``TouchItems`` need, since those ops
  carry no cube) live in a second, plain collection (``MemosItemRecord``): namespace, key, JSON.

What it does not do (``supports_transactions = False``): a batch is applied op by op, not
atomically. ``PutItems.if_revisions`` and ``PutRecords.if_absent`` are checked by a read just
before the write: they catch stale writers, but two writers racing in the same instant can both
pass (best-effort). ``supports_tasks = False``: put the scheduler's queue elsewhere (§10).

Filters (DESIGN §5) compile to :class:`weaviate.classes.query.Filter` with
:func:`compile_filter`, a pure function. Item columns are indexed properties (``field``
tokenisation, so text compares as whole values). ``info`` keys are flattened into one ``text[]``
property ``info_pairs``: ``path=<json value>`` per scalar, ``path[]=<json value>`` per scalar
element of a list, and ``path`` for every present non-null value. So ``info.*`` filters support
``eq ne in nin exists contains like`` (``like`` on string values only); keys are escaped in
paths (``\\ . = [ ]`` get a backslash). Order tests (``gt``...) on ``info`` keys raise
:class:`FilterError`. ``like`` matches ASCII-lower-cased copies (``lc_<column>``, ``info_like``)
with a lower-cased pattern, so it is ASCII-case-insensitive as :func:`filters.evaluate` is (a
pattern holding ``*`` or ``?`` raises FilterError); ``contains`` on a text column is a
``like *v*``. ``field`` tokenisation trims whitespace: ``eq "x"`` also matches ``"  x  "``.
``ListItems`` pages with offset, so its ``offset + limit`` stays capped by Weaviate
(``QUERY_MAXIMUM_RESULTS``, 10 000 by default); full reads (deletes, re-embedding, record
listings) never use offsets: the ``after`` cursor or keyset paging on the item id / the record key.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid as uuid_lib
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlparse

import numpy as np

from .. import filters as F
from ..errors import (
    ConflictError,
    FilterError,
    InvalidInputError,
    MemosError,
    MissingDependencyError,
    NotSupportedError,
    StoreError,
)
from ..ports import (
    DeleteItems,
    GetItems,
    GetRecords,
    ListItems,
    ListRecords,
    MemoryStore,
    Op,
    PutItems,
    PutRecords,
    ScoredId,
    TextSearch,
    TouchItems,
    VectorSearch,
)
from ..schema import MemoryItem, parse_time, utcnow
from ..text import tokenize

if TYPE_CHECKING:
    from weaviate import WeaviateAsyncClient, WeaviateClient

__all__ = [
    "AsyncWeaviateStore",
    "Call",
    "HybridSearch",
    "WeaviatePlanner",
    "WeaviateStore",
    "arun_plan",
    "compile_filter",
    "connection_params",
    "item_properties",
    "run_plan",
    "search_terms",
]

_NS = uuid_lib.UUID("6f1c1d0e-5d1b-4c55-9a38-2f5a1f1f0c11")
_TENANT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VECTOR = "default"
_PAGE = 1000
#: The records namespace that maps item ids to cubes (GetItems/TouchItems carry no cube).
_INDEX_NS = "\x00memos.item_cube"
_DELETED = "deleted"
#: The records namespace of each cube's current tenant generation (set by replace_space).
_GEN_NS = "\x00memos.tenant_generation"

#: Filter columns -> the property holding them (``id`` is the ``item_id`` property); taken from
#: the filter DSL's own column table, so a newly filterable column is indexed here too.
_TEXT_PROPS = ["item_id", *(c for c in F.columns("text") if c != "id")]
_LIST_PROPS = F.columns("list")
#: Columns with an ASCII-lower-cased copy (``lc_<name>``) for case-insensitive ``like``.
_LIKE_PROPS = (*_TEXT_PROPS, *_LIST_PROPS)
#: What reading an item returns: the JSON plus the counters a touch updates in place.
_READ_PROPS = ["item_json", "seq", "access_count", "last_accessed_at"]
_INT_PROPS = (*F.columns("int"), "vector_dim", "seq")
_REAL_PROPS = F.columns("real")
_DATE_PROPS = F.columns("date")


def _weaviate() -> Any:
    try:
        import weaviate
    except ImportError as exc:
        raise MissingDependencyError("weaviate-client", "weaviate") from exc
    return weaviate


# ----------------------------------------------------------------------------- pure helpers


def object_uuid(item_id: str) -> str:
    """The Weaviate UUID of an item id: the id itself when it is a canonical (lower-case,
    hyphenated) UUID, else a uuid5 of it, so ids that merely parse to the same UUID
    (``u.hex``, upper case) stay distinct items."""
    try:
        if item_id == str(uuid_lib.UUID(item_id)):
            return item_id
    except ValueError:
        pass
    return str(uuid_lib.uuid5(_NS, item_id))


def record_uuid(namespace: str, key: str) -> str:
    return str(uuid_lib.uuid5(_NS, f"{namespace}\x1f{key}"))


def tenant_name(cube_id: str) -> str:
    """The tenant of a cube: its id when that is a valid tenant name, else a hash of it."""
    if _TENANT_RE.fullmatch(cube_id) and not cube_id.startswith("h-"):
        return cube_id
    return "h-" + hashlib.sha256(cube_id.encode()).hexdigest()[:40]


def _fold(token: str) -> str:
    """A light English plural fold (Weaviate has no stemmer): cats -> cat, ponies -> pony."""
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")) and token.isascii():
        return token[:-1]
    return token


def search_terms(text: str, *, query: bool = False) -> list[str]:
    """The BM25 tokens of ``text``; for a query, stopwords dropped (unless that leaves none)
    and each term once, as the SQLite store does."""
    if not query:
        return [_fold(t) for t in tokenize(text)]
    words = tokenize(text, drop_stopwords=True) or tokenize(text)
    return list(dict.fromkeys(_fold(t) for t in words))


def _json_scalar(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        value = int(value)  # 3.0 and 3 are the same number to the filter semantics
    return json.dumps(value, ensure_ascii=False)


_KEY_ESCAPES = {c: "\\" + c for c in "\\.=[]"}


def _key(key: str) -> str:
    """An info key escaped for a flattened path (``\\ . = [ ]`` get a backslash)."""
    return "".join(_KEY_ESCAPES.get(c, c) for c in key)


def _ascii_lower(text: str) -> str:
    """ASCII-only lower case, the folding of ``like`` (SQLite's and :func:`filters.evaluate`'s)."""
    return text.translate(F._ASCII_LOWER)


def info_pairs(info: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``info`` flattened for filtering (see the module docstring); keys escaped with
    :func:`_key`, so ``{"a.b": 1}`` and ``{"a": {"b": 1}}`` stay apart."""
    out: list[str] = []
    for key, value in info.items():
        path = f"{prefix}{_key(str(key))}"
        if value is None:
            continue
        out.append(path)
        if isinstance(value, dict):
            out += info_pairs(value, path + ".")
        elif isinstance(value, list):
            out += [f"{path}[]={_json_scalar(v)}" for v in value if isinstance(v, (str, int, float, bool))]
        else:
            out.append(f"{path}={_json_scalar(value)}")
    return list(dict.fromkeys(out))


def info_like(info: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``path=<json value>`` of every string value of ``info``, the value ASCII-lower-cased:
    what a case-insensitive ``like`` on an info key matches."""
    out: list[str] = []
    for key, value in info.items():
        path = f"{prefix}{_key(str(key))}"
        if isinstance(value, dict):
            out += info_like(value, path + ".")
        elif isinstance(value, str):
            out.append(f"{path}={_json_scalar(_ascii_lower(value))}")
    return out


def _date(value: datetime | None) -> str | None:
    return None if value is None else parse_time(value).isoformat().replace("+00:00", "Z")


def item_properties(item: MemoryItem, *, seq: int, dim: int) -> dict[str, Any]:
    """The stored properties of ``item`` (``seq``: first-insert order, the listing tie-break;
    ``dim``: its vector's dimension, 0 without one)."""
    props: dict[str, Any] = {
        "item_json": json.dumps(item.to_dict(), ensure_ascii=False),
        "search_text": " ".join(search_terms(item.search_text())),
        "item_id": item.id,
        "tags": list(item.tags),
        "keywords": list(item.keywords),
        "info_pairs": info_pairs(item.info),
        "info_like": info_like(item.info),
        "version": item.version,
        "access_count": item.access_count,
        "confidence": float(item.confidence),
        "seq": seq,
        "vector_dim": dim,
    }
    for name in _TEXT_PROPS[1:]:
        props[name] = getattr(item, name)
    for name in _DATE_PROPS:
        props[name] = _date(getattr(item, name))
    for name in _LIKE_PROPS:  # ASCII-lower-cased copies: what `like` matches
        value = props.get(name)
        if value is not None:
            props[f"lc_{name}"] = (
                [_ascii_lower(v) for v in value] if isinstance(value, list) else _ascii_lower(value)
            )
    return {k: v for k, v in props.items() if v is not None}


def _like_pattern(pattern: str) -> str:
    if "*" in pattern or "?" in pattern:
        raise FilterError(f"'like' pattern {pattern!r}: Weaviate cannot match a literal '*' or '?'")
    return pattern.replace("%", "*").replace("_", "?")


def _literal(value: str) -> str:
    if "*" in value or "?" in value:
        raise FilterError(f"{value!r}: Weaviate's like cannot match a literal '*' or '?'")
    return value


class _Never:
    """A test no item passes (an integer column compared with a non-integer)."""


_NEVER = _Never()


def _int_value(op: str, value: Any) -> tuple[str, Any]:
    """``op value`` for an int property: an integral number as int; a fraction becomes the
    integer bound with the same meaning (``lt 2.5`` -> ``lte 2``), or a test nothing passes."""
    if isinstance(value, int):
        return op, value
    if float(value).is_integer():
        return op, int(value)
    if op in ("gt", "gte"):
        return "gte", math.ceil(value)
    if op in ("lt", "lte"):
        return "lte", math.floor(value)
    return op, _NEVER


def compile_filter(node: F.Node | None) -> Any:
    """Compile a filter AST to a Weaviate ``Filter`` (``None`` for no filter). Pure; imports
    ``weaviate`` only for the filter classes.

    Raises:
        FilterError: The filter uses something Weaviate cannot express.
    """
    if node is None:
        return None
    return _compile(node, _weaviate().classes.query.Filter)


def _never(flt: Any) -> Any:
    return flt.by_id().equal(str(uuid_lib.UUID(int=0)))


def _compile(node: F.Node, flt: Any) -> Any:
    if isinstance(node, F.And):
        return flt.all_of([_compile(c, flt) for c in node.children])
    if isinstance(node, F.Or):
        return flt.any_of([_compile(c, flt) for c in node.children])
    if isinstance(node, F.Not):
        return flt.not_(_compile(node.child, flt))
    positive, negate = F._positive(node)
    out = _leaf(positive, flt)
    return flt.not_(out) if negate else out


def _leaf(node: F.Compare, flt: Any) -> Any:
    field, op, value = node.field, node.op, node.value
    if field.kind == "info":
        return _info_leaf(node, flt)
    name = "item_id" if field.column == "id" else field.column
    prop = flt.by_property(name)
    if op == "exists":
        return prop.is_none(False)
    if op == "like":  # ASCII-case-insensitive, as filters.evaluate and SQLite are
        return flt.by_property(f"lc_{name}").like(_like_pattern(_ascii_lower(value)))
    if field.kind == "list":
        values = list(value) if op == "in" else [value]
        return prop.contains_any(values)
    if field.kind == "date":
        value = tuple(parse_time(v) for v in value) if op == "in" else parse_time(value)
    elif field.kind == "real":
        value = tuple(float(v) for v in value) if op == "in" else float(value)
    elif field.kind == "int":
        if op == "in":
            value = tuple(v for _, v in (_int_value("eq", x) for x in value) if not isinstance(v, _Never))
            if not value:
                return _never(flt)
        else:
            op, value = _int_value(op, value)
            if isinstance(value, _Never):
                return _never(flt)
    if op == "in":
        return flt.any_of([prop.equal(v) for v in value]) if len(value) > 1 else prop.equal(value[0])
    if op == "eq":
        return prop.equal(value)
    if op == "contains":  # substring of a text column
        return prop.like(f"*{_literal(value)}*")
    return {
        "gt": prop.greater_than,
        "gte": prop.greater_or_equal,
        "lt": prop.less_than,
        "lte": prop.less_or_equal,
    }[op](value)


def _info_leaf(node: F.Compare, flt: Any) -> Any:
    path, op, value = ".".join(_key(k) for k in node.field.path), node.op, node.value
    prop = flt.by_property("info_pairs")
    if op == "exists":
        return prop.contains_any([path])
    if op in ("eq", "in"):
        values = list(value) if op == "in" else [value]
        return prop.contains_any([f"{path}={_json_scalar(v)}" for v in values])
    if op == "contains":
        member = prop.contains_any([f"{path}[]={_json_scalar(value)}"])
        if not isinstance(value, str):
            return member
        inner = _literal(_json_scalar(value)[1:-1])
        return flt.any_of([member, prop.like(f'{_literal(path)}="*{inner}*"')])
    if op == "like":
        inner = _json_scalar(_like_pattern(_ascii_lower(value)))[1:-1]
        return flt.by_property("info_like").like(f'{_literal(path)}="{inner}"')
    raise FilterError(
        f"{op!r} on info key {node.field.name!r}: the Weaviate store cannot order info values "
        "(info keys support eq, ne, in, nin, exists, contains and like)"
    )


def _scope(where: F.Node | None) -> F.Node:
    """``where`` and "not deleted": what searches see."""
    alive = F.Not(F.eq("status", _DELETED))
    return alive if where is None else F.And((alive, where))


def _space_error(cube_id: str, have_dim: int, have_model: str | None, dim: int, model: str | None) -> None:
    if have_dim == dim and (model is None or have_model is None or have_model == model):
        return
    raise InvalidInputError(
        f"cube {cube_id!r} holds {have_dim}-dimensional vectors of model {have_model!r}; this one is "
        f"{dim}-dimensional from {model!r} (re-embed the cube with replace_space, or delete its memories)"
    )


#: One object to write: the item, its vector (None: none) and its first-insert order.
_Row = tuple[MemoryItem, list[float] | None, int]


@dataclass
class _Stored:
    item: MemoryItem
    vector: list[float] | None
    seq: int


@dataclass(frozen=True)
class HybridSearch:
    """Weaviate's native hybrid search (``query.hybrid``, ``relativeScoreFusion``) over the item
    text and vectors; result: best-first ``ScoredId``, fused scores in [0, 1].

    ``alpha`` weighs the vector leg (``1 - alpha`` the BM25 leg): 0 is pure BM25, 1 pure vector.
    A Weaviate-only op (the embedded stores have none): the MemOS retrieval keeps calling
    :class:`TextSearch` and :class:`VectorSearch` and fuses them itself, so rankings are the same
    on every backend. See docs/weaviate.md for how the two fusions differ.
    """

    cube_ids: Sequence[str]
    query: str
    vector: np.ndarray
    where: F.Node | None = None
    limit: int = 10
    alpha: float = 0.5
    model_id: str | None = None


# ----------------------------------------------------------------------------- requests and drivers


@dataclass(frozen=True)
class Call:
    """One request to Weaviate, as data: the method at ``path`` (``"query.bm25"``) of the
    handle of ``collection`` (``None``: the client itself) with ``tenant``, called with ``args``
    and ``kwargs`` (filters, properties, vectors, limits). The planner yields these; a driver
    performs them on a sync or an async client, which share this exact API, and sends the
    result (or throws the error) back into the plan."""

    collection: str | None
    tenant: str | None
    path: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


_T = TypeVar("_T")

#: A plan: a generator that yields :class:`Call` s, receives their results and returns the op's
#: result. Plans do no I/O, so the sync and the async store run the very same ones.
Plan = Generator[Call, Any, _T]


def _method(client: Any, call: Call) -> Any:
    obj = client if call.collection is None else client.collections.use(call.collection)
    if call.tenant is not None:
        obj = obj.with_tenant(call.tenant)
    for name in call.path.split("."):
        obj = getattr(obj, name)
    return obj


def run_plan(client: WeaviateClient, plan: Plan[_T]) -> _T:
    """The sync driver: perform each call of ``plan`` on ``client``."""
    try:
        call = next(plan)
        while True:
            try:
                result = _method(client, call)(*call.args, **call.kwargs)
            except Exception as exc:
                call = plan.throw(exc)
            else:
                call = plan.send(result)
    except StopIteration as stop:
        return cast(_T, stop.value)


async def arun_plan(client: WeaviateAsyncClient, plan: Plan[_T]) -> _T:
    """The async driver: :func:`run_plan`, awaiting each call."""
    try:
        call = next(plan)
        while True:
            try:
                result = await _method(client, call)(*call.args, **call.kwargs)
            except Exception as exc:
                call = plan.throw(exc)
            else:
                call = plan.send(result)
    except StopIteration as stop:
        return cast(_T, stop.value)


def _tenant_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says a tenant does not exist (a cached generation that was replaced)."""
    return not isinstance(exc, MemosError) and "tenant not found" in str(exc).lower()


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """Translate backend errors into StoreError at the boundary (ours pass through)."""
    try:
        yield
    except MemosError:
        raise
    except Exception as exc:
        raise StoreError(f"weaviate {what} failed: {exc}") from exc


_CLOUD_DOMAINS = (".weaviate.cloud", ".weaviate.network")


def connection_params(
    url: str, *, grpc_port: int | None = None, grpc_host: str | None = None, api_key: str | None = None
) -> dict[str, Any]:
    """The ``connect_to_custom`` / ``use_async_with_custom`` arguments for ``url``: gRPC on the
    same host (``grpc-<host>`` on Weaviate Cloud) at ``grpc_port`` (50051, 443 over https);
    ``api_key`` becomes the API-key auth credentials."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise InvalidInputError(f"weaviate url {url!r}: expected http://host:port or https://host")
    secure = parsed.scheme == "https"
    host = parsed.hostname or "localhost"
    if grpc_host is None:
        cloud = host.endswith(_CLOUD_DOMAINS) and not host.startswith("grpc-")
        grpc_host = f"grpc-{host}" if cloud else host
    params: dict[str, Any] = {
        "http_host": host,
        "http_port": parsed.port or (443 if secure else 8080),
        "http_secure": secure,
        "grpc_host": grpc_host,
        "grpc_port": grpc_port or (443 if secure else 50051),
        "grpc_secure": secure,
    }
    if api_key:
        params["auth_credentials"] = _weaviate().classes.init.Auth.api_key(api_key)
    return params


# ----------------------------------------------------------------------------- the planner


class WeaviatePlanner:
    """The I/O-free core both stores share: every op as a :data:`Plan`.

    It holds the collection names and the cache of tenants known to exist; a driver
    (:func:`run_plan`, :func:`arun_plan`) performs what a plan asks for.
    """

    supports_tasks = False
    supports_transactions = False
    supports_multiprocess = True

    def __init__(self, *, collection: str = "MemosItem") -> None:
        self._name = collection
        self._records_name = f"{collection}Record"
        self._tenants: dict[str, str] = {}  # cube -> its current tenant, known to exist

    def _call(self, tenant: str | None, path: str, *args: Any, **kwargs: Any) -> Call:
        return Call(self._name, tenant, path, args, kwargs)

    def _rcall(self, path: str, *args: Any, **kwargs: Any) -> Call:
        return Call(self._records_name, None, path, args, kwargs)

    # ------------------------------------------------------------------ setup

    def plan_setup(self) -> Plan[None]:
        """Create both collections when missing."""
        wvc = _weaviate().classes.config
        text, field_tok = wvc.DataType.TEXT, wvc.Tokenization.FIELD

        def prop(name: str, data_type: Any, **kw: Any) -> Any:
            return wvc.Property(name=name, data_type=data_type, **kw)

        if not (yield Call(None, None, "collections.exists", (self._name,))):
            props = [
                prop("item_json", text, index_filterable=False, index_searchable=False),
                prop(
                    "search_text",
                    text,
                    tokenization=wvc.Tokenization.WHITESPACE,
                    index_filterable=False,
                    index_searchable=True,
                ),
                *[prop(n, text, tokenization=field_tok, index_searchable=False) for n in _TEXT_PROPS],
                *[
                    prop(n, wvc.DataType.TEXT_ARRAY, tokenization=field_tok, index_searchable=False)
                    for n in (*_LIST_PROPS, "info_pairs", "info_like", *[f"lc_{n}" for n in _LIST_PROPS])
                ],
                *[prop(f"lc_{n}", text, tokenization=field_tok, index_searchable=False) for n in _TEXT_PROPS],
                *[prop(n, wvc.DataType.INT) for n in _INT_PROPS],
                *[prop(n, wvc.DataType.NUMBER) for n in _REAL_PROPS],
                *[prop(n, wvc.DataType.DATE) for n in _DATE_PROPS],
            ]
            yield Call(
                None,
                None,
                "collections.create",
                (self._name,),
                {
                    "properties": props,
                    "vector_config": wvc.Configure.Vectors.self_provided(
                        name=_VECTOR,
                        vector_index_config=wvc.Configure.VectorIndex.hnsw(
                            distance_metric=wvc.VectorDistances.COSINE
                        ),
                    ),
                    "multi_tenancy_config": wvc.Configure.multi_tenancy(enabled=True),
                    "inverted_index_config": wvc.Configure.inverted_index(index_null_state=True),
                },
            )
        if not (yield Call(None, None, "collections.exists", (self._records_name,))):
            yield Call(
                None,
                None,
                "collections.create",
                (self._records_name,),
                {
                    "properties": [
                        prop("namespace", text, tokenization=field_tok, index_searchable=False),
                        prop("key", text, tokenization=field_tok, index_searchable=False),
                        prop("value", text, index_filterable=False, index_searchable=False),
                    ],
                    "vector_config": wvc.Configure.Vectors.self_provided(),
                },
            )

    # ------------------------------------------------------------------ ops

    def plan(self, op: Op | HybridSearch) -> Plan[Any]:
        """The plan of one op."""
        if isinstance(op, PutItems):
            return (yield from self._put(op))
        if isinstance(op, GetItems):
            return (yield from self._get(op.ids))
        if isinstance(op, DeleteItems):
            return (yield from self._delete(op))
        if isinstance(op, ListItems):
            return (yield from self._list(op))
        if isinstance(op, TextSearch):
            return (yield from self._text_search(op))
        if isinstance(op, VectorSearch):
            return (yield from self._vector_search(op))
        if isinstance(op, HybridSearch):
            return (yield from self._hybrid_search(op))
        if isinstance(op, TouchItems):
            return (yield from self._touch(op))
        if isinstance(op, PutRecords):
            return (yield from self._put_records(op))
        if isinstance(op, GetRecords):
            found = yield from self._read_records(op.namespace, op.keys)
            return [found.get(k) for k in op.keys]
        if isinstance(op, ListRecords):
            return (yield from self._list_records(op))
        raise InvalidInputError(f"the Weaviate store does not support {type(op).__name__}")

    # ------------------------------------------------------------------ tenants

    def forget_tenants(self) -> None:
        """Drop the tenant cache: the next op re-reads each cube's generation pointer (the
        drivers call this and retry once when a tenant is not found, so a generation switch made
        by another process is seen)."""
        self._tenants.clear()

    def _tenant(self, cube_id: str, *, create: bool = False) -> Plan[str | None]:
        """The cube's current tenant: its generation pointer's (written by ``replace_space``),
        else :func:`tenant_name`; ``None`` when it has none (and ``create`` is false)."""
        if cube_id in self._tenants:
            return self._tenants[cube_id]
        pointer = None
        # A cheap REST check first: most cubes were never rebuilt and have no pointer.
        if (yield self._rcall("data.exists", record_uuid(_GEN_NS, cube_id))):
            pointer = (yield from self._read_records(_GEN_NS, [cube_id])).get(cube_id)
        name = str(pointer["tenant"]) if pointer else tenant_name(cube_id)
        if not (yield self._call(None, "tenants.exists", name)):
            if not create:
                return None
            yield self._call(None, "tenants.create", [name])
        self._tenants[cube_id] = name
        return name

    def _tenants_of(self, cube_ids: Sequence[str]) -> Plan[list[tuple[str, str]]]:
        """``(cube, tenant)`` of the cubes that have a tenant."""
        if not cube_ids:
            raise InvalidInputError("at least one cube id is required")
        out: list[tuple[str, str]] = []
        for cube in dict.fromkeys(cube_ids):
            tenant = yield from self._tenant(cube)
            if tenant is not None:
                out.append((cube, tenant))
        return out

    # ------------------------------------------------------------------ reading objects

    def _fetch(self, tenant: str, ids: Sequence[str], *, vectors: bool = False) -> Plan[dict[str, _Stored]]:
        """Stored items of ``ids`` in one tenant, by item id."""
        from weaviate.classes.query import Filter

        out: dict[str, _Stored] = {}
        uuids = list(dict.fromkeys(object_uuid(i) for i in ids))
        for start in range(0, len(uuids), _PAGE):
            chunk = uuids[start : start + _PAGE]
            res = yield self._call(
                tenant,
                "query.fetch_objects",
                filters=Filter.by_id().contains_any(chunk),
                limit=len(chunk),
                include_vector=vectors,
                return_properties=_READ_PROPS,
            )
            for obj in res.objects:
                stored = _stored(obj, vectors)
                out[stored.item.id] = stored
        return out

    def _fetch_where(self, tenant: str, where: Any, *, vectors: bool = False) -> Plan[list[_Stored]]:
        """Every item of a tenant that ``where`` selects. Never paged by offset (Weaviate caps
        ``offset + limit``): the whole tenant with the ``after`` cursor, a filtered read by
        keyset on the item id (sorted by it, each page ``item_id >`` the last one read)."""
        from weaviate.classes.query import Filter, Sort

        out: list[_Stored] = []
        if where is None:
            after: str | None = None
            while True:
                res = yield self._call(
                    tenant,
                    "query.fetch_objects",
                    limit=_PAGE,
                    after=after,
                    include_vector=vectors,
                    return_properties=_READ_PROPS,
                )
                out += [_stored(o, vectors) for o in res.objects]
                if len(res.objects) < _PAGE:
                    return out
                after = str(res.objects[-1].uuid)
        last: str | None = None
        while True:
            page_filter = where if last is None else where & Filter.by_property("item_id").greater_than(last)
            res = yield self._call(
                tenant,
                "query.fetch_objects",
                filters=page_filter,
                sort=Sort.by_property("item_id", ascending=True),
                limit=_PAGE,
                include_vector=vectors,
                return_properties=_READ_PROPS,
            )
            out += [_stored(o, vectors) for o in res.objects]
            if len(res.objects) < _PAGE:
                return out
            last = out[-1].item.id

    def _cubes_of(self, ids: Sequence[str]) -> Plan[dict[str, str]]:
        """item id -> cube id, from the index records."""
        found = yield from self._read_records(_INDEX_NS, list(dict.fromkeys(ids)))
        return {k: str(v["cube"]) for k, v in found.items() if v is not None}

    def _by_cube(self, ids: Sequence[str]) -> Plan[dict[str, list[str]]]:
        groups: dict[str, list[str]] = {}
        for item_id, cube in (yield from self._cubes_of(ids)).items():
            groups.setdefault(cube, []).append(item_id)
        return groups

    def _get(self, ids: Sequence[str]) -> Plan[list[MemoryItem | None]]:
        found: dict[str, MemoryItem] = {}
        for cube, cube_ids in (yield from self._by_cube(ids)).items():
            tenant = yield from self._tenant(cube)
            if tenant is not None:
                found.update({k: s.item for k, s in (yield from self._fetch(tenant, cube_ids)).items()})
        return [found.get(i) for i in ids]

    def plan_embeddings(self, ids: Sequence[str]) -> Plan[dict[str, np.ndarray]]:
        """Stored vectors of ``ids`` (those that have one)."""
        out: dict[str, np.ndarray] = {}
        for cube, cube_ids in (yield from self._by_cube(ids)).items():
            tenant = yield from self._tenant(cube)
            if tenant is None:
                continue
            for item_id, stored in (yield from self._fetch(tenant, cube_ids, vectors=True)).items():
                if stored.vector is not None:
                    out[item_id] = np.asarray(stored.vector, dtype=np.float32)
        return out

    # ------------------------------------------------------------------ writing objects

    def _write(self, tenant: str, rows: Sequence[_Row]) -> Plan[None]:
        """Upsert ``(item, vector, seq)`` rows; any failed object raises StoreError naming it."""
        from weaviate.classes.data import DataObject

        for start in range(0, len(rows), _PAGE):
            chunk = rows[start : start + _PAGE]
            objects = [
                DataObject(
                    properties=item_properties(item, seq=seq, dim=len(vec or ())),
                    uuid=object_uuid(item.id),
                    vector={_VECTOR: vec} if vec is not None else None,
                )
                for item, vec, seq in chunk
            ]
            result = yield from self._insert(self._name, tenant, objects, [item.id for item, _, _ in chunk])
            if result.errors:
                failed = "; ".join(
                    f"item {chunk[i][0].id}: {err.message}" for i, err in sorted(result.errors.items())
                )
                raise StoreError(f"weaviate refused {len(result.errors)} of {len(chunk)} items: {failed}")

    @staticmethod
    def _insert(collection: str, tenant: str | None, objects: list[Any], ids: list[str]) -> Plan[Any]:
        from weaviate.exceptions import WeaviateInsertManyAllFailedError

        try:
            return (yield Call(collection, tenant, "data.insert_many", (objects,)))
        except WeaviateInsertManyAllFailedError as exc:
            raise StoreError(
                f"weaviate refused every object of the batch ({', '.join(ids[:5])}...): {exc}"
            ) from exc

    def _cube_space(self, tenant: str) -> Plan[tuple[int, str | None] | None]:
        """(dimension, model) of the cube's live vectors, or None when it has none."""
        from weaviate.classes.query import Filter

        res = yield self._call(
            tenant,
            "query.fetch_objects",
            filters=Filter.by_property("vector_dim").greater_than(0)
            & Filter.not_(Filter.by_property("status").equal(_DELETED)),
            limit=1,
            return_properties=["vector_dim", "embedding_model"],
        )
        if not res.objects:
            return None
        props = res.objects[0].properties
        model = props.get("embedding_model")
        return int(props["vector_dim"]), str(model) if model is not None else None

    def _put(self, op: PutItems) -> Plan[None]:
        n = len(op.items)
        embeddings = [None] * n if op.embeddings is None else list(op.embeddings)
        revisions = [None] * n if op.if_revisions is None else list(op.if_revisions)
        if len(embeddings) != n or len(revisions) != n:
            raise InvalidInputError("PutItems: embeddings/if_revisions must align with items")
        if not n:
            return
        homes = yield from self._cubes_of([i.id for i in op.items])
        moved: dict[str, list[str]] = {}
        for item in op.items:
            if homes.get(item.id, item.cube_id) != item.cube_id:
                moved.setdefault(homes[item.id], []).append(item.id)
        for home, ids in moved.items():
            # An index entry whose object is gone (a hard delete cut short) does not pin the id.
            home_tenant = yield from self._tenant(home)
            alive = set() if home_tenant is None else set((yield from self._fetch(home_tenant, ids)))
            if alive:
                raise InvalidInputError(f"item {sorted(alive)[0]} belongs to another cube; ids cannot move")
            for item_id in ids:
                del homes[item_id]
        by_cube: dict[str, list[int]] = {}
        for pos, item in enumerate(op.items):
            by_cube.setdefault(item.cube_id, []).append(pos)
        plans: list[tuple[str, list[_Row], list[_Row] | None]] = []
        # microseconds, not nanoseconds: the sequence must stay exact as a float64 (< 2**53),
        # since JSON paths carry numbers as doubles; +1 per new item keeps insertion order
        seq = time.time_ns() // 1000
        for cube, positions in by_cube.items():  # check everything before writing anything
            tenant = yield from self._tenant(cube, create=True)
            assert tenant is not None
            old = yield from self._fetch(
                tenant, [op.items[p].id for p in positions if op.items[p].id in homes], vectors=True
            )
            space = yield from self._cube_space(tenant)
            rebuild: list[_Row] | None = None
            dims = {int(np.asarray(embeddings[p]).shape[-1]) for p in positions if embeddings[p] is not None}
            if op.replace_space and space is not None and dims - {space[0]}:
                # An HNSW index holds one dimension: the cube's tenant is recreated, and the
                # items this batch does not re-embed lose their (old-space) vectors.
                mine = {op.items[p].id for p in positions}
                everything = yield from self._fetch_where(tenant, None)
                rebuild = [(s.item, None, s.seq) for s in everything if s.item.id not in mine]
                old = {k: _Stored(v.item, None, v.seq) for k, v in old.items()}
                space = None
            rows: list[_Row] = []
            for p in positions:
                item, vec, expected = op.items[p], embeddings[p], revisions[p]
                prev = old.get(item.id)
                found = 0 if prev is None else prev.item.revision
                if expected is not None and found != expected:
                    raise ConflictError(f"item {item.id} is at revision {found}, expected {expected}")
                if vec is not None:
                    dim = int(np.asarray(vec).shape[-1])
                    if space is not None and not op.replace_space:
                        _space_error(cube, space[0], space[1], dim, item.embedding_model)
                    space = space or (dim, item.embedding_model)
                stored_vec = (
                    [float(x) for x in np.asarray(vec, dtype=np.float32)] if vec is not None else None
                )
                if prev is not None:
                    last = [t for t in (prev.item.last_accessed_at, item.last_accessed_at) if t is not None]
                    item = item.evolve(
                        revision=found + 1,
                        access_count=max(prev.item.access_count, item.access_count),
                        last_accessed_at=max(last) if last else None,
                    )
                    rows.append((item, stored_vec if stored_vec is not None else prev.vector, prev.seq))
                else:
                    seq += 1
                    rows.append((item.evolve(revision=1), stored_vec, seq))
            plans.append((cube, rows, rebuild))
        new = {i.id: {"cube": i.cube_id} for i in op.items if i.id not in homes}
        if new:  # the index first: an entry whose object failed to write just reads as missing
            yield from self._write_records(_INDEX_NS, new)
        for cube, rows, rest in plans:
            if rest is None:
                tenant = yield from self._tenant(cube, create=True)
                assert tenant is not None
                yield from self._write(tenant, rows)
                continue
            # replace_space: build the cube anew in a fresh tenant generation, switch the
            # cube's pointer to it, then drop the old one. A failure before the switch leaves
            # the cube as it was (and removes the half-built generation).
            old_tenant = yield from self._tenant(cube, create=True)
            fresh = "h-" + hashlib.sha256(f"{cube}\x1f{uuid_lib.uuid4()}".encode()).hexdigest()[:40]
            yield self._call(None, "tenants.create", [fresh])
            try:
                if rest:
                    yield from self._write(fresh, rest)
                yield from self._write(fresh, rows)
                yield from self._write_records(_GEN_NS, {cube: {"tenant": fresh}})
            except Exception:
                with suppress(Exception):
                    yield self._call(None, "tenants.remove", [fresh])
                raise
            self._tenants[cube] = fresh
            yield self._call(None, "tenants.remove", [old_tenant])

    def _delete(self, op: DeleteItems) -> Plan[int]:
        if op.ids is None and op.where is None:
            raise InvalidInputError("delete needs ids or a filter")
        if not op.cube_ids:
            raise InvalidInputError("at least one cube id is required")
        from weaviate.classes.query import Filter

        where = compile_filter(op.where)
        selections: list[Any] = [where]
        if op.ids is not None:
            if not op.ids:
                return 0
            uuids = list(dict.fromkeys(object_uuid(i) for i in op.ids))
            selections = []
            for start in range(0, len(uuids), _PAGE):
                by_id = Filter.by_id().contains_any(uuids[start : start + _PAGE])
                selections.append(by_id if where is None else by_id & where)
        count = 0
        now = utcnow()
        for _, tenant in (yield from self._tenants_of(op.cube_ids)):
            matched = []
            for selection in selections:
                matched += yield from self._fetch_where(tenant, selection, vectors=not op.hard)
            count += len(matched)
            if not matched:
                continue
            if op.hard:
                # Objects first, then their index entries: a crash in between leaves index
                # entries whose object is gone, which reads and puts treat as absent.
                uuids = [object_uuid(s.item.id) for s in matched]
                for start in range(0, len(uuids), _PAGE):
                    yield self._call(
                        tenant,
                        "data.delete_many",
                        where=Filter.by_id().contains_any(uuids[start : start + _PAGE]),
                    )
                yield from self._write_records(_INDEX_NS, {s.item.id: None for s in matched})
            else:
                # Re-read right before the write and build each row from what is stored now,
                # so an update that landed since the match is kept, not overwritten with the
                # older copy (residual race: a write in the instant between this read and
                # the write below; Weaviate has no compare-and-set).
                fresh = yield from self._fetch(tenant, [s.item.id for s in matched], vectors=True)
                rows = [
                    (
                        s.item.evolve(status=_DELETED, updated_at=now, revision=s.item.revision + 1),
                        s.vector,
                        s.seq,
                    )
                    for s in fresh.values()
                ]
                yield from self._write(tenant, rows)
        return count

    def _touch(self, op: TouchItems) -> Plan[None]:
        for cube, ids in (yield from self._by_cube(op.ids)).items():
            tenant = yield from self._tenant(cube)
            if tenant is None:
                continue
            found = yield from self._fetch(tenant, ids)
            at = _date(op.at)
            for item_id, stored in found.items():
                # A partial update of the counters alone: never item_json nor the revision, so
                # a touch cannot undo a concurrent update (two touches racing may count once).
                yield self._call(
                    tenant,
                    "data.update",
                    uuid=object_uuid(item_id),
                    properties={"access_count": stored.item.access_count + 1, "last_accessed_at": at},
                )

    # ------------------------------------------------------------------ queries

    def _list(self, op: ListItems) -> Plan[tuple[list[MemoryItem], int]]:
        from weaviate.classes.query import Sort

        where = compile_filter(op.where)
        sort = Sort.by_property("created_at", ascending=False).by_property("seq", ascending=False)
        rows: list[tuple[datetime, int, MemoryItem]] = []
        total = 0
        want = op.offset + op.limit
        for _, tenant in (yield from self._tenants_of(op.cube_ids)):
            agg = yield self._call(tenant, "aggregate.over_all", filters=where, total_count=True)
            total += int(agg.total_count or 0)
            if want <= 0:
                continue
            res = yield self._call(
                tenant,
                "query.fetch_objects",
                filters=where,
                sort=sort,
                limit=want,
                return_properties=_READ_PROPS,
            )
            for obj in res.objects:
                stored = _stored(obj, False)
                rows.append((stored.item.created_at, stored.seq, stored.item))
        # the id last: a total order, so offset pages never repeat or skip a tied item
        rows.sort(key=lambda r: (r[0], r[1], r[2].id), reverse=True)
        return [r[2] for r in rows[op.offset : want]], total

    def _text_search(self, op: TextSearch) -> Plan[list[ScoredId]]:
        from weaviate.classes.query import MetadataQuery

        terms = search_terms(op.query, query=True)
        tenants = yield from self._tenants_of(op.cube_ids)
        if not terms or op.limit <= 0:
            return []
        where = compile_filter(_scope(op.where))
        hits: list[ScoredId] = []
        for _, tenant in tenants:
            res = yield self._call(
                tenant,
                "query.bm25",
                query=" ".join(terms),
                query_properties=["search_text"],
                filters=where,
                limit=op.limit,
                return_metadata=MetadataQuery(score=True),
                return_properties=["item_id"],
            )
            hits += [_scored(o, float(o.metadata.score or 0.0)) for o in res.objects]
        return _best(hits, op.limit)

    def _vector_search(self, op: VectorSearch) -> Plan[list[ScoredId]]:
        from weaviate.classes.query import MetadataQuery

        vec = np.asarray(op.vector, dtype=np.float32)
        where = compile_filter(_scope(op.where))
        hits: list[ScoredId] = []
        for cube, tenant in (yield from self._tenants_of(op.cube_ids)):
            space = yield from self._cube_space(tenant)
            if space is None:
                continue
            _space_error(cube, space[0], space[1], int(vec.shape[0]), op.model_id)
            if op.limit <= 0:
                continue
            res = yield self._call(
                tenant,
                "query.near_vector",
                near_vector=[float(x) for x in vec],
                target_vector=_VECTOR,
                filters=where,
                limit=op.limit,
                return_metadata=MetadataQuery(distance=True),
                return_properties=["item_id"],
            )
            hits += [_scored(o, 1.0 - float(o.metadata.distance or 0.0)) for o in res.objects]
        return _best(hits, op.limit)

    def _hybrid_search(self, op: HybridSearch) -> Plan[list[ScoredId]]:
        from weaviate.classes.query import HybridFusion, MetadataQuery

        if not 0.0 <= op.alpha <= 1.0:
            raise InvalidInputError(f"alpha must be in [0, 1], not {op.alpha}")
        vec = np.asarray(op.vector, dtype=np.float32)
        terms = search_terms(op.query, query=True)
        where = compile_filter(_scope(op.where))
        hits: list[ScoredId] = []
        for cube, tenant in (yield from self._tenants_of(op.cube_ids)):
            space = yield from self._cube_space(tenant)
            if space is not None:
                _space_error(cube, space[0], space[1], int(vec.shape[0]), op.model_id)
            elif not terms:
                continue
            if op.limit <= 0:
                continue
            res = yield self._call(
                tenant,
                "query.hybrid",
                query=" ".join(terms),
                query_properties=["search_text"],
                vector=[float(x) for x in vec],
                target_vector=_VECTOR,
                alpha=op.alpha if terms else 1.0,  # no query words: the vector leg alone
                fusion_type=HybridFusion.RELATIVE_SCORE,
                filters=where,
                limit=op.limit,
                return_metadata=MetadataQuery(score=True),
                return_properties=["item_id"],
            )
            hits += [_scored(o, float(o.metadata.score or 0.0)) for o in res.objects]
        return _best(hits, op.limit)

    # ------------------------------------------------------------------ records

    def _read_records(self, namespace: str, keys: Sequence[str]) -> Plan[dict[str, dict[str, Any] | None]]:
        from weaviate.classes.query import Filter

        out: dict[str, dict[str, Any] | None] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _PAGE):
            chunk = unique[start : start + _PAGE]
            res = yield self._rcall(
                "query.fetch_objects",
                filters=Filter.by_id().contains_any([record_uuid(namespace, k) for k in chunk]),
                limit=len(chunk),
                return_properties=["key", "value"],
            )
            for obj in res.objects:
                out[str(obj.properties["key"])] = json.loads(str(obj.properties["value"]))
        return out

    def _write_records(self, namespace: str, records: Mapping[str, dict[str, Any] | None]) -> Plan[None]:
        from weaviate.classes.data import DataObject
        from weaviate.classes.query import Filter

        gone = [record_uuid(namespace, k) for k, v in records.items() if v is None]
        for start in range(0, len(gone), _PAGE):
            yield self._rcall(
                "data.delete_many", where=Filter.by_id().contains_any(gone[start : start + _PAGE])
            )
        objects = [
            DataObject(
                properties={
                    "namespace": namespace,
                    "key": k,
                    "value": json.dumps(v, ensure_ascii=False, sort_keys=True),
                },
                uuid=record_uuid(namespace, k),
            )
            for k, v in records.items()
            if v is not None
        ]
        for start in range(0, len(objects), _PAGE):
            chunk = objects[start : start + _PAGE]
            keys = [str(o.properties["key"]) for o in chunk]
            result = yield from self._insert(self._records_name, None, chunk, keys)
            if result.errors:
                failed = "; ".join(
                    f"record {namespace}/{keys[i]}: {e.message}" for i, e in sorted(result.errors.items())
                )
                raise StoreError(f"weaviate refused {len(result.errors)} records: {failed}")

    def _put_records(self, op: PutRecords) -> Plan[None]:
        if op.if_absent:
            if any(v is None for v in op.records.values()):
                raise InvalidInputError("PutRecords(if_absent=True) cannot delete")
            # Best-effort: checked by a read just before the write (no transactions).
            if existing := (yield from self._read_records(op.namespace, list(op.records))):
                raise ConflictError(f"record {op.namespace}/{next(iter(existing))} exists already")
        yield from self._write_records(op.namespace, op.records)

    def _list_records(self, op: ListRecords) -> Plan[list[tuple[str, dict[str, Any]]]]:
        from weaviate.classes.query import Filter, Sort

        where = Filter.by_property("namespace").equal(op.namespace)
        if op.prefix and "*" not in op.prefix and "?" not in op.prefix:
            where = where & Filter.by_property("key").like(op.prefix + "*")
        rows: list[tuple[str, dict[str, Any]]] = []
        last: str | None = None
        while len(rows) < op.limit:  # keyset paging on the key, never offset (capped)
            res = yield self._rcall(
                "query.fetch_objects",
                filters=where if last is None else where & Filter.by_property("key").greater_than(last),
                sort=Sort.by_property("key", ascending=True),
                limit=_PAGE,
                return_properties=["key", "value"],
            )
            for obj in res.objects:
                key = str(obj.properties["key"])
                if key.startswith(op.prefix):
                    rows.append((key, json.loads(str(obj.properties["value"]))))
            if len(res.objects) < _PAGE:
                break
            last = str(res.objects[-1].properties["key"])
        rows.sort(key=lambda r: r[0])
        return rows[: op.limit]


def _stored(obj: Any, vectors: bool) -> _Stored:
    """The stored item, its access counters (kept as their own properties, which a touch
    updates in place) overlaid on the JSON."""
    props = obj.properties
    item = MemoryItem.from_dict(json.loads(props["item_json"]))
    count, last = props.get("access_count"), props.get("last_accessed_at")
    if count is not None and int(count) != item.access_count:
        item = item.evolve(access_count=int(count))
    if last is not None:
        when = parse_time(last)
        if when != item.last_accessed_at:
            item = item.evolve(last_accessed_at=when)
    vec = obj.vector.get(_VECTOR) if vectors and obj.vector else None
    return _Stored(item, list(vec) if vec else None, int(obj.properties.get("seq") or 0))


def _scored(obj: Any, score: float) -> ScoredId:
    return ScoredId(score, str(obj.properties["item_id"]))


def _best(hits: list[ScoredId], limit: int) -> list[ScoredId]:
    hits.sort(key=lambda h: -h.score)  # stable: a tie keeps Weaviate's (per-tenant) order
    return hits[:limit]


# ----------------------------------------------------------------------------- the stores


class WeaviateStore(WeaviatePlanner, MemoryStore):
    """Memory items and records in Weaviate, one tenant per cube (sync driver).

    Example:
        >>> store = WeaviateStore.from_url("http://localhost:8080")  # doctest: +SKIP
        >>> store.setup()  # doctest: +SKIP
        >>> store.put([MemoryItem(cube_id="u1", memory="likes tea")], [vector])  # doctest: +SKIP
        >>> store.hybrid_search(["u1"], "tea", vector, alpha=0.5)  # doctest: +SKIP

    Args:
        client: A connected ``weaviate.WeaviateClient``; the store does not close an injected one.
        collection: The items collection; records go to ``<collection>Record``.
        owns_client: Close ``client`` in :meth:`close`.
    """

    def __init__(
        self, *, client: WeaviateClient, collection: str = "MemosItem", owns_client: bool = False
    ) -> None:
        super().__init__(collection=collection)
        self._client = client
        self._owns = owns_client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        grpc_port: int | None = None,
        grpc_host: str | None = None,
        api_key: str | None = None,
        collection: str = "MemosItem",
        **kwargs: Any,
    ) -> WeaviateStore:
        """Connect to ``url`` (``http://host:8080``; gRPC on ``grpc_port`` of the same host, see
        :func:`connection_params`); other keyword arguments go to ``weaviate.connect_to_custom``.

        Raises:
            StoreError: Weaviate cannot be reached (raised from the client's error).
        """
        params = connection_params(url, grpc_port=grpc_port, grpc_host=grpc_host, api_key=api_key)
        with _errors(f"connect to {url}"):
            client = _weaviate().connect_to_custom(**params, **kwargs)
        return cls(client=client, collection=collection, owns_client=True)

    def setup(self) -> None:
        """Create both collections when missing. Idempotent."""
        with _errors("setup"):
            run_plan(self._client, self.plan_setup())

    def close(self) -> None:
        if self._owns:
            self._client.close()

    def batch(self, ops: Sequence[Op | HybridSearch]) -> list[Any]:
        """Apply ``ops`` in order, one by one (no transaction: see the module docstring)."""
        out: list[Any] = []
        for op in ops:
            with _errors(type(op).__name__):
                try:
                    out.append(run_plan(self._client, self.plan(op)))
                except Exception as exc:
                    if not _tenant_gone(exc):
                        raise
                    self.forget_tenants()  # another process switched a cube's generation
                    out.append(run_plan(self._client, self.plan(op)))
        return out

    def get_embeddings(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        with _errors("get_embeddings"):
            return run_plan(self._client, self.plan_embeddings(ids))

    def hybrid_search(
        self,
        cube_ids: Sequence[str],
        query: str,
        vector: np.ndarray,
        where: F.Node | None = None,
        *,
        limit: int = 10,
        alpha: float = 0.5,
    ) -> list[ScoredId]:
        """Weaviate's native hybrid search (see :class:`HybridSearch`)."""
        result: list[ScoredId] = self.batch([HybridSearch(cube_ids, query, vector, where, limit, alpha)])[0]
        return result


class AsyncWeaviateStore(WeaviatePlanner):
    """:class:`WeaviateStore` on a ``weaviate.WeaviateAsyncClient`` (async driver): the same
    plans, so the same results; every method is the ``a``-prefixed twin of the sync one.

    Example:
        >>> store = await AsyncWeaviateStore.from_url("http://localhost:8080")  # doctest: +SKIP
        >>> await store.setup()  # doctest: +SKIP
        >>> await store.aput([MemoryItem(cube_id="u1", memory="likes tea")], [vector])  # doctest: +SKIP
        >>> await store.aclose()  # doctest: +SKIP

    Args:
        client: A connected ``weaviate.WeaviateAsyncClient``; not closed unless ``owns_client``.
        collection: The items collection; records go to ``<collection>Record``.
        owns_client: Close ``client`` in :meth:`aclose`.
    """

    def __init__(
        self, *, client: WeaviateAsyncClient, collection: str = "MemosItem", owns_client: bool = False
    ) -> None:
        super().__init__(collection=collection)
        self._client = client
        self._owns = owns_client

    @classmethod
    async def from_url(
        cls,
        url: str,
        *,
        grpc_port: int | None = None,
        grpc_host: str | None = None,
        api_key: str | None = None,
        collection: str = "MemosItem",
        **kwargs: Any,
    ) -> AsyncWeaviateStore:
        """Connect to ``url`` (see :meth:`WeaviateStore.from_url`); keyword arguments go to
        ``weaviate.use_async_with_custom``.

        Raises:
            StoreError: Weaviate cannot be reached (raised from the client's error).
        """
        params = connection_params(url, grpc_port=grpc_port, grpc_host=grpc_host, api_key=api_key)
        with _errors(f"connect to {url}"):
            client = _weaviate().use_async_with_custom(**params, **kwargs)
            try:
                await client.connect()
            except BaseException:
                with suppress(Exception):  # the connect error is the one to report
                    await client.close()
                raise
        return cls(client=client, collection=collection, owns_client=True)

    async def setup(self) -> None:
        """Create both collections when missing. Idempotent."""
        with _errors("setup"):
            await arun_plan(self._client, self.plan_setup())

    async def aclose(self) -> None:
        if self._owns:
            await self._client.close()

    def batch(self, ops: Sequence[Op | HybridSearch]) -> list[Any]:
        raise NotSupportedError("AsyncWeaviateStore is async: use `await store.abatch(ops)`")

    async def abatch(self, ops: Sequence[Op | HybridSearch]) -> list[Any]:
        """Apply ``ops`` in order, one by one (no transaction: see the module docstring)."""
        out: list[Any] = []
        for op in ops:
            with _errors(type(op).__name__):
                try:
                    out.append(await arun_plan(self._client, self.plan(op)))
                except Exception as exc:
                    if not _tenant_gone(exc):
                        raise
                    self.forget_tenants()  # another process switched a cube's generation
                    out.append(await arun_plan(self._client, self.plan(op)))
        return out

    # One-line conveniences over abatch(), the twins of MemoryStore's.
    async def aput(
        self, items: Sequence[MemoryItem], embeddings: Sequence[np.ndarray | None] | None = None
    ) -> None:
        await self.abatch([PutItems(items, embeddings)])

    async def aget(self, ids: Sequence[str]) -> list[MemoryItem | None]:
        result: list[MemoryItem | None] = (await self.abatch([GetItems(ids)]))[0]
        return result

    async def adelete(
        self,
        cube_ids: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        where: F.Node | None = None,
        hard: bool = False,
    ) -> int:
        count: int = (await self.abatch([DeleteItems(cube_ids, ids, where, hard)]))[0]
        return count

    async def alist_items(
        self, cube_ids: Sequence[str], where: F.Node | None = None, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[MemoryItem], int]:
        result: tuple[list[MemoryItem], int] = (
            await self.abatch([ListItems(cube_ids, where, limit, offset)])
        )[0]
        return result

    async def asearch_text(
        self, cube_ids: Sequence[str], query: str, where: F.Node | None = None, *, limit: int = 10
    ) -> list[ScoredId]:
        result: list[ScoredId] = (await self.abatch([TextSearch(cube_ids, query, where, limit)]))[0]
        return result

    async def asearch_vector(
        self, cube_ids: Sequence[str], vector: np.ndarray, where: F.Node | None = None, *, limit: int = 10
    ) -> list[ScoredId]:
        result: list[ScoredId] = (await self.abatch([VectorSearch(cube_ids, vector, where, limit)]))[0]
        return result

    async def ahybrid_search(
        self,
        cube_ids: Sequence[str],
        query: str,
        vector: np.ndarray,
        where: F.Node | None = None,
        *,
        limit: int = 10,
        alpha: float = 0.5,
    ) -> list[ScoredId]:
        """Weaviate's native hybrid search (see :class:`HybridSearch`)."""
        result: list[ScoredId] = (
            await self.abatch([HybridSearch(cube_ids, query, vector, where, limit, alpha)])
        )[0]
        return result

    async def atouch(self, ids: Sequence[str], at: datetime) -> None:
        await self.abatch([TouchItems(ids, at)])

    async def aget_embeddings(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        with _errors("get_embeddings"):
            return await arun_plan(self._client, self.plan_embeddings(ids))

    async def aput_records(self, namespace: str, records: Mapping[str, dict[str, Any] | None]) -> None:
        await self.abatch([PutRecords(namespace, records)])

    async def aget_record(self, namespace: str, key: str) -> dict[str, Any] | None:
        result: list[dict[str, Any] | None] = (await self.abatch([GetRecords(namespace, [key])]))[0]
        return result[0]

    async def alist_records(
        self, namespace: str, prefix: str = "", *, limit: int = 10_000
    ) -> list[tuple[str, dict[str, Any]]]:
        result: list[tuple[str, dict[str, Any]]] = (
            await self.abatch([ListRecords(namespace, prefix, limit)])
        )[0]
        return result
