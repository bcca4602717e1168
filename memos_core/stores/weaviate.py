"""Weaviate store (scale-out, DESIGN §4 and §10) on weaviate-client v4.

Layout:

- **One collection for items** (``MemosItem`` by default) with native multi-tenancy: **one tenant
  per cube**, so a cube is Weaviate's own isolation boundary. Tenants are created on the first
  write to a cube; a read of a cube that has no tenant returns nothing. Cube ids that are not
  valid tenant names (``[A-Za-z0-9_-]{1,64}``) are mapped to ``h-<sha256>``.
- Each object's UUID is the item id (ids that are not UUIDs are mapped with ``uuid5``). The
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
``eq ne in nin exists contains like`` (``like`` on string values only); order tests (``gt``...)
on ``info`` keys raise :class:`FilterError`. ``like`` is Weaviate's (case-sensitive; a pattern
holding ``*`` or ``?`` raises FilterError), ``contains`` on a text column is a ``like *v*``.
Listings page with offset: Weaviate caps ``offset + limit`` (``QUERY_MAXIMUM_RESULTS``, 10 000 by
default).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid as uuid_lib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from .. import filters as F
from ..errors import (
    ConflictError,
    FilterError,
    InvalidInputError,
    MemosError,
    MissingDependencyError,
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
    from weaviate import WeaviateClient
    from weaviate.collections import Collection

__all__ = ["WeaviateStore", "compile_filter", "item_properties", "search_terms"]

_NS = uuid_lib.UUID("6f1c1d0e-5d1b-4c55-9a38-2f5a1f1f0c11")
_TENANT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VECTOR = "default"
_PAGE = 1000
#: The records namespace that maps item ids to cubes (GetItems/TouchItems carry no cube).
_INDEX_NS = "\x00memos.item_cube"
_DELETED = "deleted"

#: Filter columns -> the property holding them (``id`` is the ``item_id`` property).
_TEXT_PROPS = [
    "item_id",
    "cube_id",
    "user_id",
    "agent_id",
    "conversation_id",
    "app_id",
    "memory",
    "key",
    "memory_type",
    "status",
    "mode",
    "merged_into",
    "embedding_model",
]
_LIST_PROPS = ("tags", "keywords")
_INT_PROPS = ("version", "access_count", "vector_dim", "seq")
_DATE_PROPS = ("created_at", "updated_at", "event_time", "last_accessed_at")


def _weaviate() -> Any:
    try:
        import weaviate
    except ImportError as exc:
        raise MissingDependencyError("weaviate-client", "weaviate") from exc
    return weaviate


# ----------------------------------------------------------------------------- pure helpers


def object_uuid(item_id: str) -> str:
    """The Weaviate UUID of an item id: the id itself when it is a UUID, else a uuid5 of it."""
    try:
        return str(uuid_lib.UUID(item_id))
    except ValueError:
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


def info_pairs(info: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``info`` flattened for filtering (see the module docstring)."""
    out: list[str] = []
    for key, value in info.items():
        path = f"{prefix}{key}"
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
    if field.kind == "list":
        if op == "like":
            return prop.like(_like_pattern(value))
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
    if op == "like":
        return prop.like(_like_pattern(value))
    if op == "contains":  # substring of a text column
        return prop.like(f"*{_literal(value)}*")
    return {
        "gt": prop.greater_than,
        "gte": prop.greater_or_equal,
        "lt": prop.less_than,
        "lte": prop.less_or_equal,
    }[op](value)


def _info_leaf(node: F.Compare, flt: Any) -> Any:
    path, op, value = ".".join(node.field.path), node.op, node.value
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
        return flt.any_of([member, prop.like(f'{path}="*{inner}*"')])
    if op == "like":
        inner = _json_scalar(_like_pattern(value))[1:-1]
        return prop.like(f'{path}="{inner}"')
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


# ----------------------------------------------------------------------------- the store


class WeaviateStore(MemoryStore):
    """Memory items and records in Weaviate, one tenant per cube.

    Example:
        >>> store = WeaviateStore.from_url("http://localhost:8080")  # doctest: +SKIP
        >>> store.setup()  # doctest: +SKIP
        >>> store.put([MemoryItem(cube_id="u1", memory="likes tea")], [vector])  # doctest: +SKIP

    Args:
        client: A connected ``weaviate.WeaviateClient``; the store does not close an injected one.
        collection: The items collection; records go to ``<collection>Record``.
        owns_client: Close ``client`` in :meth:`close`.
    """

    supports_tasks = False
    supports_transactions = False
    supports_multiprocess = True

    def __init__(
        self, *, client: WeaviateClient, collection: str = "MemosItem", owns_client: bool = False
    ) -> None:
        self._client = client
        self._name = collection
        self._records_name = f"{collection}Record"
        self._owns = owns_client
        self._tenants: set[str] = set()

    @classmethod
    def from_url(
        cls, url: str, *, grpc_port: int = 50051, collection: str = "MemosItem", **kwargs: Any
    ) -> WeaviateStore:
        """Connect to ``url`` (``http://host:8080``; gRPC on ``grpc_port`` of the same host)."""
        weaviate = _weaviate()
        parsed = urlparse(url)
        secure = parsed.scheme == "https"
        host = parsed.hostname or "localhost"
        client = weaviate.connect_to_custom(
            http_host=host,
            http_port=parsed.port or (443 if secure else 8080),
            http_secure=secure,
            grpc_host=host,
            grpc_port=grpc_port,
            grpc_secure=secure,
            **kwargs,
        )
        return cls(client=client, collection=collection, owns_client=True)

    # ------------------------------------------------------------------ plumbing

    def setup(self) -> None:
        """Create both collections when missing. Idempotent."""
        wvc = _weaviate().classes.config
        text, field = wvc.DataType.TEXT, wvc.Tokenization.FIELD

        def prop(name: str, data_type: Any, **kw: Any) -> Any:
            return wvc.Property(name=name, data_type=data_type, **kw)

        with self._errors("setup"):
            if not self._client.collections.exists(self._name):
                props = [
                    prop("item_json", text, index_filterable=False, index_searchable=False),
                    prop(
                        "search_text",
                        text,
                        tokenization=wvc.Tokenization.WHITESPACE,
                        index_filterable=False,
                        index_searchable=True,
                    ),
                    *[prop(n, text, tokenization=field, index_searchable=False) for n in _TEXT_PROPS],
                    *[
                        prop(n, wvc.DataType.TEXT_ARRAY, tokenization=field, index_searchable=False)
                        for n in (*_LIST_PROPS, "info_pairs")
                    ],
                    *[prop(n, wvc.DataType.INT) for n in _INT_PROPS],
                    prop("confidence", wvc.DataType.NUMBER),
                    *[prop(n, wvc.DataType.DATE) for n in _DATE_PROPS],
                ]
                self._client.collections.create(
                    self._name,
                    properties=props,
                    vector_config=wvc.Configure.Vectors.self_provided(
                        name=_VECTOR,
                        vector_index_config=wvc.Configure.VectorIndex.hnsw(
                            distance_metric=wvc.VectorDistances.COSINE
                        ),
                    ),
                    multi_tenancy_config=wvc.Configure.multi_tenancy(enabled=True),
                    inverted_index_config=wvc.Configure.inverted_index(index_null_state=True),
                )
            if not self._client.collections.exists(self._records_name):
                self._client.collections.create(
                    self._records_name,
                    properties=[
                        prop("namespace", text, tokenization=field, index_searchable=False),
                        prop("key", text, tokenization=field, index_searchable=False),
                        prop("value", text, index_filterable=False, index_searchable=False),
                    ],
                    vector_config=wvc.Configure.Vectors.self_provided(),
                )

    def close(self) -> None:
        if self._owns:
            self._client.close()

    @staticmethod
    @contextmanager
    def _errors(what: str) -> Iterator[None]:
        """Translate backend errors into StoreError at the boundary (ours pass through)."""
        try:
            yield
        except MemosError:
            raise
        except Exception as exc:
            raise StoreError(f"weaviate {what} failed: {exc}") from exc

    @property
    def _items(self) -> Collection[Any, Any]:
        return self._client.collections.use(self._name)

    @property
    def _records(self) -> Collection[Any, Any]:
        return self._client.collections.use(self._records_name)

    def _has_tenant(self, cube_id: str) -> bool:
        name = tenant_name(cube_id)
        if name not in self._tenants and self._items.tenants.exists(name):
            self._tenants.add(name)
        return name in self._tenants

    def _tenant(self, cube_id: str, *, create: bool = False) -> Collection[Any, Any] | None:
        """The cube's tenant handle; ``None`` when it has none (and ``create`` is false)."""
        name = tenant_name(cube_id)
        if not self._has_tenant(cube_id):
            if not create:
                return None
            from weaviate.classes.tenants import Tenant

            self._items.tenants.create([Tenant(name=name)])
            self._tenants.add(name)
        return self._items.with_tenant(name)

    # ------------------------------------------------------------------ batch

    def batch(self, ops: Sequence[Op]) -> list[Any]:
        """Apply ``ops`` in order, one by one (no transaction: see the module docstring)."""
        out: list[Any] = []
        for op in ops:
            with self._errors(type(op).__name__):
                out.append(self._apply(op))
        return out

    def _apply(self, op: Op) -> Any:
        if isinstance(op, PutItems):
            return self._put(op)
        if isinstance(op, GetItems):
            return self._get(op.ids)
        if isinstance(op, DeleteItems):
            return self._delete(op)
        if isinstance(op, ListItems):
            return self._list(op)
        if isinstance(op, TextSearch):
            return self._text_search(op)
        if isinstance(op, VectorSearch):
            return self._vector_search(op)
        if isinstance(op, TouchItems):
            return self._touch(op)
        if isinstance(op, PutRecords):
            return self._put_records(op)
        if isinstance(op, GetRecords):
            found = self._read_records(op.namespace, op.keys)
            return [found.get(k) for k in op.keys]
        if isinstance(op, ListRecords):
            return self._list_records(op)
        raise InvalidInputError(f"the Weaviate store does not support {type(op).__name__}")

    # ------------------------------------------------------------------ reading objects

    def _fetch(
        self, tenant: Collection[Any, Any], ids: Sequence[str], *, vectors: bool = False
    ) -> dict[str, _Stored]:
        """Stored items of ``ids`` in one tenant, by item id."""
        from weaviate.classes.query import Filter

        out: dict[str, _Stored] = {}
        uuids = list(dict.fromkeys(object_uuid(i) for i in ids))
        for start in range(0, len(uuids), _PAGE):
            chunk = uuids[start : start + _PAGE]
            res = tenant.query.fetch_objects(
                filters=Filter.by_id().contains_any(chunk),
                limit=len(chunk),
                include_vector=vectors,
                return_properties=["item_json", "seq"],
            )
            for obj in res.objects:
                stored = self._stored(obj, vectors)
                out[stored.item.id] = stored
        return out

    @staticmethod
    def _stored(obj: Any, vectors: bool) -> _Stored:
        item = MemoryItem.from_dict(json.loads(obj.properties["item_json"]))
        vec = obj.vector.get(_VECTOR) if vectors and obj.vector else None
        return _Stored(item, list(vec) if vec else None, int(obj.properties.get("seq") or 0))

    def _fetch_where(
        self, tenant: Collection[Any, Any], where: Any, *, vectors: bool = False
    ) -> list[_Stored]:
        """Every item of a tenant that ``where`` selects (paged by offset)."""
        out: list[_Stored] = []
        offset = 0
        while True:
            res = tenant.query.fetch_objects(
                filters=where,
                limit=_PAGE,
                offset=offset,
                include_vector=vectors,
                return_properties=["item_json", "seq"],
            )
            out += [self._stored(o, vectors) for o in res.objects]
            if len(res.objects) < _PAGE:
                return out
            offset += _PAGE

    def _cubes_of(self, ids: Sequence[str]) -> dict[str, str]:
        """item id -> cube id, from the index records."""
        found = self._read_records(_INDEX_NS, list(dict.fromkeys(ids)))
        return {k: str(v["cube"]) for k, v in found.items() if v is not None}

    def _by_cube(self, ids: Sequence[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for item_id, cube in self._cubes_of(ids).items():
            groups.setdefault(cube, []).append(item_id)
        return groups

    def _get(self, ids: Sequence[str]) -> list[MemoryItem | None]:
        found: dict[str, MemoryItem] = {}
        for cube, cube_ids in self._by_cube(ids).items():
            tenant = self._tenant(cube)
            if tenant is not None:
                found.update({k: s.item for k, s in self._fetch(tenant, cube_ids).items()})
        return [found.get(i) for i in ids]

    def get_embeddings(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._errors("get_embeddings"):
            for cube, cube_ids in self._by_cube(ids).items():
                tenant = self._tenant(cube)
                if tenant is None:
                    continue
                for item_id, stored in self._fetch(tenant, cube_ids, vectors=True).items():
                    if stored.vector is not None:
                        out[item_id] = np.asarray(stored.vector, dtype=np.float32)
        return out

    # ------------------------------------------------------------------ writing objects

    def _write(self, tenant: Collection[Any, Any], rows: Sequence[_Row]) -> None:
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
            result = self._insert(tenant, objects, [item.id for item, _, _ in chunk])
            if result.errors:
                failed = "; ".join(
                    f"item {chunk[i][0].id}: {err.message}" for i, err in sorted(result.errors.items())
                )
                raise StoreError(f"weaviate refused {len(result.errors)} of {len(chunk)} items: {failed}")

    @staticmethod
    def _insert(tenant: Collection[Any, Any], objects: list[Any], ids: list[str]) -> Any:
        from weaviate.exceptions import WeaviateInsertManyAllFailedError

        try:
            return tenant.data.insert_many(objects)
        except WeaviateInsertManyAllFailedError as exc:
            raise StoreError(
                f"weaviate refused every item of the batch ({', '.join(ids[:5])}...): {exc}"
            ) from exc

    def _cube_space(self, tenant: Collection[Any, Any]) -> tuple[int, str | None] | None:
        """(dimension, model) of the cube's live vectors, or None when it has none."""
        from weaviate.classes.query import Filter

        res = tenant.query.fetch_objects(
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

    def _put(self, op: PutItems) -> None:
        n = len(op.items)
        embeddings = [None] * n if op.embeddings is None else list(op.embeddings)
        revisions = [None] * n if op.if_revisions is None else list(op.if_revisions)
        if len(embeddings) != n or len(revisions) != n:
            raise InvalidInputError("PutItems: embeddings/if_revisions must align with items")
        if not n:
            return
        homes = self._cubes_of([i.id for i in op.items])
        for item in op.items:
            if homes.get(item.id, item.cube_id) != item.cube_id:
                raise InvalidInputError(f"item {item.id} belongs to another cube; ids cannot move")
        by_cube: dict[str, list[int]] = {}
        for pos, item in enumerate(op.items):
            by_cube.setdefault(item.cube_id, []).append(pos)
        plans: list[tuple[str, list[_Row], list[_Row] | None]] = []
        seq = time.time_ns()
        for cube, positions in by_cube.items():  # check everything before writing anything
            tenant = self._tenant(cube, create=True)
            assert tenant is not None
            old = self._fetch(
                tenant, [op.items[p].id for p in positions if op.items[p].id in homes], vectors=True
            )
            space = self._cube_space(tenant)
            rebuild: list[_Row] | None = None
            dims = {int(np.asarray(embeddings[p]).shape[-1]) for p in positions if embeddings[p] is not None}
            if op.replace_space and space is not None and dims - {space[0]}:
                # An HNSW index holds one dimension: the cube's tenant is recreated, and the
                # items this batch does not re-embed lose their (old-space) vectors.
                mine = {op.items[p].id for p in positions}
                rebuild = [
                    (s.item, None, s.seq) for s in self._fetch_where(tenant, None) if s.item.id not in mine
                ]
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
            self._write_records(_INDEX_NS, new)
        for cube, rows, rest in plans:
            if rest is not None:
                self._items.tenants.remove([tenant_name(cube)])
                self._tenants.discard(tenant_name(cube))
            tenant = self._tenant(cube, create=True)
            assert tenant is not None
            if rest:
                self._write(tenant, rest)
            self._write(tenant, rows)

    def _delete(self, op: DeleteItems) -> int:
        if op.ids is None and op.where is None:
            raise InvalidInputError("delete needs ids or a filter")
        if not op.cube_ids:
            raise InvalidInputError("at least one cube id is required")
        from weaviate.classes.query import Filter

        where = compile_filter(op.where)
        if op.ids is not None:
            if not op.ids:
                return 0
            by_id = Filter.by_id().contains_any([object_uuid(i) for i in dict.fromkeys(op.ids)])
            where = by_id if where is None else by_id & where
        count = 0
        now = utcnow()
        for cube in dict.fromkeys(op.cube_ids):
            tenant = self._tenant(cube)
            if tenant is None:
                continue
            matched = self._fetch_where(tenant, where, vectors=not op.hard)
            count += len(matched)
            if not matched:
                continue
            if op.hard:
                uuids = [object_uuid(s.item.id) for s in matched]
                for start in range(0, len(uuids), _PAGE):
                    tenant.data.delete_many(where=Filter.by_id().contains_any(uuids[start : start + _PAGE]))
                self._write_records(_INDEX_NS, {s.item.id: None for s in matched})
            else:
                rows = [
                    (
                        s.item.evolve(status=_DELETED, updated_at=now, revision=s.item.revision + 1),
                        s.vector,
                        s.seq,
                    )
                    for s in matched
                ]
                self._write(tenant, rows)
        return count

    def _touch(self, op: TouchItems) -> None:
        for cube, ids in self._by_cube(op.ids).items():
            tenant = self._tenant(cube)
            if tenant is None:
                continue
            rows = [
                (s.item.evolve(access_count=s.item.access_count + 1, last_accessed_at=op.at), s.vector, s.seq)
                for s in self._fetch(tenant, ids, vectors=True).values()
            ]
            self._write(tenant, rows)

    # ------------------------------------------------------------------ queries

    def _tenants_of(self, cube_ids: Sequence[str]) -> list[Collection[Any, Any]]:
        if not cube_ids:
            raise InvalidInputError("at least one cube id is required")
        return [t for t in (self._tenant(c) for c in dict.fromkeys(cube_ids)) if t is not None]

    def _list(self, op: ListItems) -> tuple[list[MemoryItem], int]:
        from weaviate.classes.query import Sort

        where = compile_filter(op.where)
        sort = Sort.by_property("created_at", ascending=False).by_property("seq", ascending=False)
        rows: list[tuple[datetime, int, MemoryItem]] = []
        total = 0
        want = op.offset + op.limit
        for tenant in self._tenants_of(op.cube_ids):
            total += int(tenant.aggregate.over_all(filters=where, total_count=True).total_count or 0)
            if want <= 0:
                continue
            res = tenant.query.fetch_objects(
                filters=where, sort=sort, limit=want, return_properties=["item_json", "seq"]
            )
            for obj in res.objects:
                stored = self._stored(obj, False)
                rows.append((stored.item.created_at, stored.seq, stored.item))
        rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
        return [r[2] for r in rows[op.offset : want]], total

    def _text_search(self, op: TextSearch) -> list[ScoredId]:
        from weaviate.classes.query import MetadataQuery

        terms = search_terms(op.query, query=True)
        tenants = self._tenants_of(op.cube_ids)
        if not terms or op.limit <= 0:
            return []
        where = compile_filter(_scope(op.where))
        hits: list[ScoredId] = []
        for tenant in tenants:
            res = tenant.query.bm25(
                query=" ".join(terms),
                query_properties=["search_text"],
                filters=where,
                limit=op.limit,
                return_metadata=MetadataQuery(score=True),
                return_properties=["item_id"],
            )
            hits += [
                ScoredId(float(o.metadata.score or 0.0), str(o.properties["item_id"])) for o in res.objects
            ]
        hits.sort(key=lambda h: -h.score)
        return hits[: op.limit]

    def _vector_search(self, op: VectorSearch) -> list[ScoredId]:
        from weaviate.classes.query import MetadataQuery

        vec = np.asarray(op.vector, dtype=np.float32)
        if not op.cube_ids:
            raise InvalidInputError("at least one cube id is required")
        where = compile_filter(_scope(op.where))
        hits: list[ScoredId] = []
        for cube in dict.fromkeys(op.cube_ids):
            tenant = self._tenant(cube)
            if tenant is None:
                continue
            space = self._cube_space(tenant)
            if space is None:
                continue
            _space_error(cube, space[0], space[1], int(vec.shape[0]), op.model_id)
            if op.limit <= 0:
                continue
            res = tenant.query.near_vector(
                near_vector=[float(x) for x in vec],
                target_vector=_VECTOR,
                filters=where,
                limit=op.limit,
                return_metadata=MetadataQuery(distance=True),
                return_properties=["item_id"],
            )
            hits += [
                ScoredId(1.0 - float(o.metadata.distance or 0.0), str(o.properties["item_id"]))
                for o in res.objects
            ]
        hits.sort(key=lambda h: -h.score)
        return hits[: op.limit]

    # ------------------------------------------------------------------ records

    def _read_records(self, namespace: str, keys: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        from weaviate.classes.query import Filter

        out: dict[str, dict[str, Any] | None] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _PAGE):
            chunk = unique[start : start + _PAGE]
            res = self._records.query.fetch_objects(
                filters=Filter.by_id().contains_any([record_uuid(namespace, k) for k in chunk]),
                limit=len(chunk),
                return_properties=["key", "value"],
            )
            for obj in res.objects:
                out[str(obj.properties["key"])] = json.loads(str(obj.properties["value"]))
        return out

    def _write_records(self, namespace: str, records: Mapping[str, dict[str, Any] | None]) -> None:
        from weaviate.classes.data import DataObject
        from weaviate.classes.query import Filter

        gone = [record_uuid(namespace, k) for k, v in records.items() if v is None]
        for start in range(0, len(gone), _PAGE):
            self._records.data.delete_many(where=Filter.by_id().contains_any(gone[start : start + _PAGE]))
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
            result = self._insert(self._records, chunk, [str(o.properties["key"]) for o in chunk])
            if result.errors:
                failed = "; ".join(
                    f"record {namespace}/{chunk[i].properties['key']}: {e.message}"
                    for i, e in sorted(result.errors.items())
                )
                raise StoreError(f"weaviate refused {len(result.errors)} records: {failed}")

    def _put_records(self, op: PutRecords) -> None:
        if op.if_absent:
            if any(v is None for v in op.records.values()):
                raise InvalidInputError("PutRecords(if_absent=True) cannot delete")
            # Best-effort: checked by a read just before the write (no transactions).
            if existing := self._read_records(op.namespace, list(op.records)):
                raise ConflictError(f"record {op.namespace}/{next(iter(existing))} exists already")
        self._write_records(op.namespace, op.records)

    def _list_records(self, op: ListRecords) -> list[tuple[str, dict[str, Any]]]:
        from weaviate.classes.query import Filter

        where = Filter.by_property("namespace").equal(op.namespace)
        if op.prefix and "*" not in op.prefix and "?" not in op.prefix:
            where = where & Filter.by_property("key").like(op.prefix + "*")
        rows: list[tuple[str, dict[str, Any]]] = []
        for obj in self._iter_records(where):
            key = str(obj.properties["key"])
            if key.startswith(op.prefix):
                rows.append((key, json.loads(str(obj.properties["value"]))))
        rows.sort(key=lambda r: r[0])
        return rows[: op.limit]

    def _iter_records(self, where: Any) -> Iterator[Any]:
        offset = 0
        while True:
            res = self._records.query.fetch_objects(
                filters=where, limit=_PAGE, offset=offset, return_properties=["key", "value"]
            )
            yield from res.objects
            if len(res.objects) < _PAGE:
                return
            offset += _PAGE
