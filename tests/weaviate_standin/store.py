"""The stand-in's data: collections, tenants, objects, filters and ranking, with no I/O.

``server.py`` translates Weaviate's REST and gRPC messages into calls on :class:`Store` and
back; everything here works on plain Python values so that it can be read (and checked) without
knowing the wire formats. Errors are :class:`StandInError` carrying Weaviate's own message text,
so the real client reports them the way it would report the server's.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
import time
import uuid as uuid_lib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

TEXT_TYPES = ("text", "text[]")
SCALAR_OF = {
    "text[]": "text",
    "int[]": "int",
    "number[]": "number",
    "boolean[]": "boolean",
    "date[]": "date",
    "uuid[]": "uuid",
}
SUPPORTED_TYPES = {"text", "int", "number", "boolean", "date", "uuid", *SCALAR_OF}

# Weaviate's "en" stopword preset (adapters/repos/db/inverted/stopwords/presets.go): removed from
# BM25 queries only, never from the indexed text.
EN_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "  # noqa: SIM905
    "there these they this to was will with".split()
)
HYBRID_SUBSEARCH_LIMIT = 100  # hybrid.DefaultLimit in Weaviate
DEFAULT_QUERY_LIMIT = 10  # QUERY_DEFAULTS_LIMIT


class StandInError(Exception):
    """A request Weaviate would refuse; ``status`` is the REST status code to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_date(value: str) -> dt.datetime:
    """RFC 3339 as Go's ``time.Parse(time.RFC3339, ...)`` accepts it (a zone is required)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None or "T" not in value.upper():
        raise ValueError(value)
    return parsed


def tokenize(text: str, tokenization: str | None) -> list[str]:
    """Weaviate's tokenizers for the tokenizations the stand-in models."""
    if tokenization in (None, "word"):
        return [t for t in re.split(r"[^\w]|_", text.lower()) if t]
    if tokenization == "lowercase":
        return text.lower().split()
    if tokenization == "whitespace":
        return text.split()
    if tokenization in ("field", "trim"):
        stripped = text.strip()
        return [stripped] if stripped else []
    raise StandInError(f"tokenization {tokenization!r} is not modelled by the stand-in")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return "<nil>"


def _go_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    return str(value)


@dataclass
class Obj:
    """One stored object; ``props`` hold validated values (dates as their RFC 3339 text)."""

    uuid: str
    props: dict[str, Any]
    vectors: dict[str, list[float]]
    created: int
    updated: int
    doc_id: int


@dataclass
class Shard:
    """A tenant's objects (``""`` for a collection without multi-tenancy)."""

    objects: dict[str, Obj] = field(default_factory=dict)
    status: str = "HOT"


@dataclass
class Collection:
    name: str
    config: dict[str, Any]
    shards: dict[str, Shard] = field(default_factory=dict)

    @property
    def multi_tenant(self) -> bool:
        return bool(self.config["multiTenancyConfig"]["enabled"])

    @property
    def auto_tenant_creation(self) -> bool:
        return bool(self.config["multiTenancyConfig"].get("autoTenantCreation"))

    @property
    def properties(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.config["properties"]}

    @property
    def named_vectors(self) -> dict[str, dict[str, Any]]:
        """Vector name -> its config; a legacy (unnamed) vector is listed as ``default``."""
        if self.config.get("vectorConfig"):
            return self.config["vectorConfig"]
        return {"default": {"vectorIndexConfig": self.config["vectorIndexConfig"]}}

    @property
    def legacy_vector(self) -> bool:
        return not self.config.get("vectorConfig")

    def data_type(self, prop: str) -> str:
        return self.properties[prop]["dataType"][0]


def _hnsw_defaults(distance: str = "cosine") -> dict[str, Any]:
    return {
        "skip": False,
        "cleanupIntervalSeconds": 300,
        "maxConnections": 32,
        "efConstruction": 128,
        "ef": -1,
        "dynamicEfMin": 100,
        "dynamicEfMax": 500,
        "dynamicEfFactor": 8,
        "vectorCacheMaxObjects": 1000000000000,
        "flatSearchCutoff": 40000,
        "distance": distance,
        "filterStrategy": "sweeping",
        "pq": {"enabled": False},
        "bq": {"enabled": False},
        "sq": {"enabled": False},
    }


def complete_class(body: dict[str, Any]) -> dict[str, Any]:
    """The class JSON Weaviate answers with: the posted class plus the server's defaults."""
    name = body.get("class") or ""
    if not name or not re.fullmatch(r"[A-Z][_0-9A-Za-z]*", name):
        raise StandInError(f"'{name}' is not a valid class name")
    mt = {"enabled": False, "autoTenantCreation": False, "autoTenantActivation": False}
    mt.update(body.get("multiTenancyConfig") or {})
    inverted = {
        "bm25": {"b": 0.75, "k1": 1.2},
        "cleanupIntervalSeconds": 60,
        "stopwords": {"preset": "en", "additions": None, "removals": None},
        "indexNullState": False,
        "indexPropertyLength": False,
        "indexTimestamps": False,
        "usingBlockMaxWAND": True,
    }
    given_inverted = body.get("invertedIndexConfig") or {}
    for key, value in given_inverted.items():
        if isinstance(value, dict) and isinstance(inverted.get(key), dict):
            inverted[key] = {**inverted[key], **value}
        else:
            inverted[key] = value
    properties = []
    for prop in body.get("properties") or []:
        data_type = prop["dataType"][0]
        if data_type not in SUPPORTED_TYPES:
            raise StandInError(f"the stand-in does not model data type {data_type!r}")
        text = data_type in TEXT_TYPES
        properties.append(
            {
                "name": prop["name"],
                "dataType": [data_type],
                "description": prop.get("description", ""),
                "indexFilterable": prop.get("indexFilterable", True),
                "indexSearchable": prop.get("indexSearchable", text),
                "indexRangeFilters": prop.get("indexRangeFilters", False),
                "tokenization": prop.get("tokenization") or ("word" if text else None),
            }
        )
    names = [p["name"] for p in properties]
    if len(set(names)) != len(names):
        raise StandInError(f"class {name!r} has duplicate property names")
    out: dict[str, Any] = {
        "class": name,
        "description": body.get("description", ""),
        "invertedIndexConfig": inverted,
        "multiTenancyConfig": mt,
        "properties": properties,
        "replicationConfig": {
            "factor": 1,
            "asyncEnabled": False,
            "deletionStrategy": "NoAutomatedResolution",
        },
        "shardingConfig": (
            {
                "virtualPerPhysical": 0,
                "desiredCount": 0,
                "actualCount": 0,
                "desiredVirtualCount": 0,
                "actualVirtualCount": 0,
                "key": "",
                "strategy": "",
                "function": "",
            }
            if mt["enabled"]
            else {
                "virtualPerPhysical": 128,
                "desiredCount": 1,
                "actualCount": 1,
                "desiredVirtualCount": 128,
                "actualVirtualCount": 128,
                "key": "_id",
                "strategy": "hash",
                "function": "murmur3",
            }
        ),
    }
    if body.get("vectorConfig"):
        vector_config = {}
        for vname, vc in body["vectorConfig"].items():
            vectorizer = vc.get("vectorizer") or {"none": {}}
            if list(vectorizer) != ["none"]:
                raise StandInError("the stand-in only models self-provided vectors (vectorizer 'none')")
            index_type = vc.get("vectorIndexType", "hnsw")
            index_config = _hnsw_defaults()
            index_config.update(vc.get("vectorIndexConfig") or {})
            vector_config[vname] = {
                "vectorizer": vectorizer,
                "vectorIndexType": index_type,
                "vectorIndexConfig": index_config,
            }
        out["vectorConfig"] = vector_config
    else:
        if body.get("vectorizer", "none") != "none":
            raise StandInError("the stand-in only models self-provided vectors (vectorizer 'none')")
        index_config = _hnsw_defaults()
        index_config.update(body.get("vectorIndexConfig") or {})
        out.update(
            {
                "vectorizer": "none",
                "vectorIndexType": body.get("vectorIndexType", "hnsw"),
                "vectorIndexConfig": index_config,
                "moduleConfig": body.get("moduleConfig") or {},
            }
        )
    for vc in (out.get("vectorConfig") or {"": out}).values():
        distance = vc["vectorIndexConfig"]["distance"]
        if distance not in DISTANCES:
            raise StandInError(f"the stand-in does not model distance {distance!r}")
    return out


# --- vectors ---------------------------------------------------------------------------------


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    if na == 0 or nb == 0:
        return 1.0
    return 1.0 - dot / (na * nb)


DISTANCES: dict[str, Callable[[list[float], list[float]], float]] = {
    "cosine": _cosine,
    "dot": lambda a, b: -sum(x * y for x, y in zip(a, b, strict=True)),
    "l2-squared": lambda a, b: sum((x - y) ** 2 for x, y in zip(a, b, strict=True)),
}


# --- property validation ---------------------------------------------------------------------


def validate_property(coll: Collection, name: str, value: Any) -> Any:
    """Check one property value the way Weaviate's validator does and return the stored form."""
    props = coll.properties
    if name not in props:
        raise StandInError(
            f"no such prop with name '{name}' found in class '{coll.name}' in the schema. Check your "
            "schema files for which properties in this class are available"
        )
    data_type = props[name]["dataType"][0]
    if value is None:
        return None
    label = {
        "text": "text",
        "int": "integer",
        "number": "number",
        "boolean": "boolean",
        "date": "date",
        "uuid": "uuid",
        "text[]": "text array",
        "int[]": "integer array",
        "number[]": "number array",
        "boolean[]": "boolean array",
        "date[]": "date array",
        "uuid[]": "uuid array",
    }[data_type]
    prefix = f"invalid {label} property '{name}' on class '{coll.name}': "
    if data_type in SCALAR_OF:
        if not isinstance(value, list):
            kind = "an integer" if data_type in ("int[]", "number[]") else f"a {label.split()[0]}"
            raise StandInError(prefix + f"not {kind} array, but {_go_type(value)}")
        out = []
        for item in value:
            try:
                out.append(_scalar(SCALAR_OF[data_type], item))
            except ValueError:
                word = "integer" if data_type in ("int[]", "number[]") else label.split()[0]
                raise StandInError(prefix + f"invalid {word} array value: {_go_value(value)}") from None
        return out
    try:
        return _scalar(data_type, value)
    except ValueError as exc:
        raise StandInError(prefix + str(exc)) from None


def _scalar(data_type: str, value: Any) -> Any:
    if data_type == "text":
        if not isinstance(value, str):
            raise ValueError(f"not a string, but {_go_type(value)}")
        return value
    if data_type == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ValueError(f"requires an integer, the given value is '{_go_value(value)}'")
        return int(value)
    if data_type == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"requires a float, the given value is '{_go_value(value)}'")
        return float(value)
    if data_type == "boolean":
        if not isinstance(value, bool):
            raise ValueError(f"not a bool, but {_go_type(value)}")
        return value
    if data_type == "date":
        try:
            parse_date(value)
        except (TypeError, ValueError, AttributeError):
            raise ValueError(
                "requires a string with a RFC3339 formatted date, but the given value is "
                f"'{_go_value(value)}'"
            ) from None
        return value
    if data_type == "uuid":
        try:
            return str(uuid_lib.UUID(value))
        except (TypeError, ValueError, AttributeError):
            raise ValueError(
                f"requires a string of UUID format, but the given value is '{_go_value(value)}'"
            ) from None
    raise ValueError(f"unrecognized data type '{data_type}'")


# --- filters ---------------------------------------------------------------------------------


@dataclass
class Leaf:
    """One filter condition: ``op`` is EQUAL, LIKE, IS_NULL, ...; ``value`` is a Python value."""

    op: str
    prop: str
    value: Any


@dataclass
class Node:
    op: str  # AND, OR, NOT
    children: list[Any]


Filter = Leaf | Node | None

_RANGE = {
    "GREATER_THAN": lambda a, b: a > b,
    "GREATER_THAN_EQUAL": lambda a, b: a >= b,
    "LESS_THAN": lambda a, b: a < b,
    "LESS_THAN_EQUAL": lambda a, b: a <= b,
}
_VALUE_KIND = {
    "text": "text",
    "date": "text",
    "uuid": "text",
    "int": "int",
    "number": "number",
    "boolean": "boolean",
}


def check_filter(coll: Collection, node: Filter) -> None:
    """Refuse filters Weaviate refuses: unknown properties, wrong value types, unindexed state."""
    if node is None:
        return
    if isinstance(node, Node):
        for child in node.children:
            check_filter(coll, child)
        return
    inverted = coll.config["invertedIndexConfig"]
    if node.prop == "_id":
        return
    if node.prop in ("_creationTimeUnix", "_lastUpdateTimeUnix"):
        if not inverted.get("indexTimestamps"):
            raise StandInError(
                "timestamps must be indexed to be filterable! add `IndexTimestamps: true` to the "
                "invertedIndexConfig"
            )
        return
    if node.prop not in coll.properties:
        raise StandInError(
            f"no such prop with name '{node.prop}' found in class '{coll.name}' in the schema. Check "
            "your schema files for which properties in this class are available"
        )
    prop = coll.properties[node.prop]
    if node.op == "IS_NULL":
        if not inverted.get("indexNullState"):
            raise StandInError(
                "Nullstate must be indexed to be filterable! Add `indexNullState: true` to the "
                "invertedIndexConfig"
            )
        return
    if not prop["indexFilterable"] and not (node.op in _RANGE and prop["indexRangeFilters"]):
        raise StandInError(
            f"Filtering by property '{node.prop}' requires inverted index. Is `indexFilterable` option "
            "of property enabled? Set it to `true` or leave empty"
        )
    base = SCALAR_OF.get(prop["dataType"][0], prop["dataType"][0])
    values = node.value if isinstance(node.value, list) else [node.value]
    want = _VALUE_KIND[base]
    for value in values:
        got = (
            "boolean"
            if isinstance(value, bool)
            else "int"
            if _is_int(value)
            else "number"
            if isinstance(value, float)
            else "text"
        )
        if got != want:
            raise StandInError(
                f'data type filter cannot use "value{got.capitalize()}" on type "{base}", use '
                f'"value{("Date" if base == "date" else want.capitalize())}" instead'
            )
    if base == "date":
        for value in values:
            try:
                parse_date(value)
            except ValueError:
                raise StandInError(f"parse date filter value {value!r}: not RFC3339") from None


def _like(pattern: str) -> re.Pattern[str]:
    out = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(out, re.DOTALL)


def _text_tokens(coll: Collection, prop: str, value: Any) -> set[str]:
    tokenization = coll.properties[prop]["tokenization"]
    items = value if isinstance(value, list) else [value]
    return {tok for item in items for tok in tokenize(item, tokenization)}


def _comparable(base: str, value: Any) -> Any:
    if base == "date":
        return parse_date(value)
    return value


def matches(coll: Collection, obj: Obj, node: Filter) -> bool:
    """Evaluate a filter over one stored object, with Weaviate's inverted-index semantics."""
    if node is None:
        return True
    if isinstance(node, Node):
        results = (matches(coll, obj, child) for child in node.children)
        if node.op == "AND":
            return all(results)
        if node.op == "OR":
            return any(results)
        return not any(results)  # NOT
    if node.prop == "_id":
        targets = node.value if isinstance(node.value, list) else [node.value]
        hit = obj.uuid in {str(uuid_lib.UUID(t)) for t in targets}
        return not hit if node.op == "NOT_EQUAL" else hit
    if node.prop in ("_creationTimeUnix", "_lastUpdateTimeUnix"):
        stamp = obj.created if node.prop == "_creationTimeUnix" else obj.updated
        value = node.value
        if isinstance(value, str) and not value.isdigit():
            value = int(parse_date(value).timestamp() * 1000)
        return _compare_scalar(node.op, [stamp], int(value))
    stored = obj.props.get(node.prop)
    if node.op == "IS_NULL":
        is_null = stored is None or stored == []
        return is_null == bool(node.value)
    data_type = coll.data_type(node.prop)
    if node.op == "NOT_EQUAL":
        return not matches(coll, obj, Leaf("EQUAL", node.prop, node.value))
    if stored is None:
        return False
    if data_type in TEXT_TYPES and node.op in (
        "EQUAL",
        "LIKE",
        "CONTAINS_ANY",
        "CONTAINS_ALL",
        "CONTAINS_NONE",
    ):
        tokens = _text_tokens(coll, node.prop, stored)
        tokenization = coll.properties[node.prop]["tokenization"]
        if node.op == "LIKE":
            pattern = node.value.lower() if tokenization in (None, "word", "lowercase") else node.value
            regex = _like(pattern)
            return any(regex.fullmatch(tok) for tok in tokens)
        wanted = node.value if isinstance(node.value, list) else [node.value]
        hits = [set(tokenize(w, tokenization)) <= tokens for w in wanted]
        if node.op == "EQUAL":
            return all(hits)
        if node.op == "CONTAINS_ANY":
            return any(hits)
        if node.op == "CONTAINS_NONE":
            return not any(hits)
        return all(hits)
    base = SCALAR_OF.get(data_type, data_type)
    have = [_comparable(base, v) for v in (stored if isinstance(stored, list) else [stored])]
    if node.op in ("CONTAINS_ANY", "CONTAINS_ALL", "CONTAINS_NONE"):
        wanted = [_comparable(base, v) for v in node.value]
        if node.op == "CONTAINS_ANY":
            return any(w in have for w in wanted)
        if node.op == "CONTAINS_NONE":
            return not any(w in have for w in wanted)
        return all(w in have for w in wanted)
    if node.op == "LIKE":
        regex = _like(str(node.value))
        return any(regex.fullmatch(str(v)) for v in have)
    return _compare_scalar(node.op, have, _comparable(base, node.value))


def _compare_scalar(op: str, have: list[Any], value: Any) -> bool:
    if op == "EQUAL":
        return value in have
    if op == "NOT_EQUAL":
        return value not in have
    if op in _RANGE:
        return any(_RANGE[op](v, value) for v in have)
    raise StandInError(f"operator {op} is not modelled by the stand-in")


# --- the store -------------------------------------------------------------------------------


@dataclass
class Hit:
    obj: Obj
    score: float | None = None
    distance: float | None = None
    explain: str = ""


class Store:
    """All collections of one stand-in; every public method takes the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.collections: dict[str, Collection] = {}
        self._doc_ids = iter(range(1, 1 << 62))

    # schema

    def create_collection(self, body: dict[str, Any]) -> dict[str, Any]:
        config = complete_class(body)
        with self.lock:
            if config["class"].lower() in {n.lower() for n in self.collections}:
                raise StandInError(f'class name "{config["class"]}" already exists')
            coll = Collection(config["class"], config)
            if not coll.multi_tenant:
                coll.shards[""] = Shard()
            self.collections[coll.name] = coll
            return config

    def collection(self, name: str) -> Collection:
        coll = self.collections.get(name)
        if coll is None:
            raise StandInError(f"could not find class {name} in schema", status=404)
        return coll

    def delete_collection(self, name: str) -> None:
        with self.lock:
            self.collections.pop(name, None)

    # tenants

    def add_tenants(self, name: str, tenants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self.lock:
            coll = self.collection(name)
            if not coll.multi_tenant:
                raise StandInError(f"multi-tenancy is not enabled for class {name!r}")
            for tenant in tenants:
                tname = tenant.get("name") or ""
                if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", tname):
                    raise StandInError(f"tenant name {tname!r} is not valid")
                status = _status(tenant.get("activityStatus"))
                shard = coll.shards.setdefault(tname, Shard())
                shard.status = status
            return tenants

    def remove_tenants(self, name: str, names: list[str]) -> None:
        with self.lock:
            coll = self.collection(name)
            if not coll.multi_tenant:
                raise StandInError(f"multi-tenancy is not enabled for class {name!r}")
            for tname in names:
                coll.shards.pop(tname, None)

    def update_tenants(self, name: str, tenants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self.lock:
            coll = self.collection(name)
            for tenant in tenants:
                if tenant["name"] not in coll.shards:
                    raise StandInError(f'tenant not found: "{tenant["name"]}"', status=422)
                coll.shards[tenant["name"]].status = _status(tenant.get("activityStatus"))
            return tenants

    def tenants(self, name: str) -> dict[str, str]:
        with self.lock:
            coll = self.collection(name)
            if not coll.multi_tenant:
                raise StandInError(f"multi-tenancy is not enabled for class {name!r}")
            return {t: s.status for t, s in coll.shards.items()}

    def shard(self, coll: Collection, tenant: str, *, create: bool = False) -> Shard:
        """The tenant's shard, with Weaviate's errors for a missing or unexpected tenant."""
        if coll.multi_tenant and not tenant:
            raise StandInError(f"class {coll.name} has multi-tenancy enabled, but request was without tenant")
        if not coll.multi_tenant and tenant:
            raise StandInError(f"class {coll.name} has multi-tenancy disabled, but request was with tenant")
        shard = coll.shards.get(tenant)
        if shard is None:
            if create and coll.auto_tenant_creation:
                shard = coll.shards[tenant] = Shard()
            else:
                raise StandInError(f'tenant not found: "{tenant}"')
        if shard.status != "HOT":
            raise StandInError(f'tenant not active: "{tenant}"')
        return shard

    # objects

    def put_object(
        self,
        coll: Collection,
        tenant: str,
        uuid: str,
        props: dict[str, Any],
        vectors: dict[str, list[float]],
        *,
        mode: str,
    ) -> Obj:
        """Write one object; ``mode`` is ``upsert`` (batch), ``create`` (POST), ``replace`` (PUT)
        or ``merge`` (PATCH)."""
        with self.lock:
            shard = self.shard(coll, tenant, create=mode in ("upsert", "create"))
            uuid = str(uuid_lib.UUID(uuid))
            existing = shard.objects.get(uuid)
            if mode == "create" and existing is not None:
                raise StandInError(f"id '{uuid}' already exists")
            if mode in ("replace", "merge") and existing is None:
                raise StandInError(f"no object with id '{uuid}'", status=404)
            clean = {k: validate_property(coll, k, v) for k, v in props.items()}
            clean = {k: v for k, v in clean.items() if v is not None}
            checked = self._check_vectors(coll, shard, vectors, uuid)
            if mode == "merge" and existing is not None:
                clean = {**existing.props, **clean}
                checked = {**existing.vectors, **checked}
            stamp = now_ms()
            obj = Obj(
                uuid=uuid,
                props=clean,
                vectors=checked,
                created=existing.created if existing else stamp,
                updated=stamp,
                doc_id=next(self._doc_ids),
            )
            shard.objects[uuid] = obj
            return obj

    def _check_vectors(
        self, coll: Collection, shard: Shard, vectors: dict[str, list[float]], uuid: str
    ) -> dict[str, list[float]]:
        known = coll.named_vectors
        for name, vec in vectors.items():
            if name not in known:
                raise StandInError(f"collection {coll.name} does not have configured vector {name!r}")
            for other in shard.objects.values():
                if other.uuid != uuid and name in other.vectors:
                    if len(other.vectors[name]) != len(vec):
                        raise StandInError(
                            f"insert to vector index: new node has a vector with length {len(vec)}. "
                            f"Existing nodes have vectors with length {len(other.vectors[name])}"
                        )
                    break
        return {name: list(vec) for name, vec in vectors.items() if vec}

    def get_object(self, coll: Collection, tenant: str, uuid: str) -> Obj | None:
        with self.lock:
            shard = self.shard(coll, tenant)
            return shard.objects.get(str(uuid_lib.UUID(uuid)))

    def delete_object(self, coll: Collection, tenant: str, uuid: str) -> bool:
        with self.lock:
            shard = self.shard(coll, tenant)
            return shard.objects.pop(str(uuid_lib.UUID(uuid)), None) is not None

    def delete_where(self, coll: Collection, tenant: str, where: Filter, *, dry_run: bool) -> list[Obj]:
        with self.lock:
            shard = self.shard(coll, tenant)
            check_filter(coll, where)
            found = [o for o in self._by_doc_id(shard) if matches(coll, o, where)]
            if not dry_run:
                for obj in found:
                    del shard.objects[obj.uuid]
            return found

    @staticmethod
    def _by_doc_id(shard: Shard) -> list[Obj]:
        return sorted(shard.objects.values(), key=lambda o: o.doc_id)

    # queries

    def filtered(self, coll: Collection, tenant: str, where: Filter) -> tuple[Shard, list[Obj]]:
        shard = self.shard(coll, tenant)
        check_filter(coll, where)
        return shard, [o for o in self._by_doc_id(shard) if matches(coll, o, where)]

    def fetch(
        self,
        coll: Collection,
        tenant: str,
        where: Filter,
        *,
        after: str = "",
        sort: list[tuple[str, bool]] | None = None,
    ) -> list[Hit]:
        """Objects in Weaviate's order: by UUID without a filter (the object store's key order),
        by internal doc id with one (the allow list's order), or by the given sort keys."""
        with self.lock:
            _, objs = self.filtered(coll, tenant, where)
            if where is None:
                objs.sort(key=lambda o: uuid_lib.UUID(o.uuid).bytes)
            if after:
                if where is not None or sort:
                    raise StandInError("cursor api: invalid 'after' parameter: after cannot be combined")
                cut = uuid_lib.UUID(after).bytes
                objs = [o for o in objs if uuid_lib.UUID(o.uuid).bytes > cut]
            for prop, ascending in reversed(sort or []):
                objs.sort(key=lambda o, p=prop: _sort_key(coll, o, p), reverse=not ascending)
            return [Hit(o) for o in objs]

    def near_vector(
        self,
        coll: Collection,
        tenant: str,
        where: Filter,
        vector: list[float],
        target: str,
        *,
        max_distance: float | None = None,
        limit: int | None = None,
    ) -> list[Hit]:
        """Exact nearest neighbours by the target vector's configured distance, ascending."""
        with self.lock:
            _, objs = self.filtered(coll, tenant, where)
            distance_of = DISTANCES[coll.named_vectors[target]["vectorIndexConfig"]["distance"]]
            hits = []
            for obj in objs:
                have = obj.vectors.get(target)
                if have is None:
                    continue
                if len(have) != len(vector):
                    raise StandInError(
                        "vector search: knn search: distance between entrypoint and query node: vector "
                        f"lengths don't match: {len(have)} vs {len(vector)}"
                    )
                dist = distance_of(vector, have)
                if max_distance is not None and dist > max_distance:
                    continue
                hits.append(Hit(obj, distance=dist))
            hits.sort(key=lambda h: (h.distance, h.obj.doc_id))
            return hits[:limit] if limit is not None else hits

    def bm25(
        self,
        coll: Collection,
        tenant: str,
        where: Filter,
        query: str,
        properties: list[str],
        *,
        operator: str = "OR",
        minimum_match: int = 0,
        limit: int | None = None,
    ) -> list[Hit]:
        """BM25 (k1, b from the class) summed over the searched properties, each with its own
        document frequencies and average length over the whole tenant; stopwords are dropped from
        the query and a repeated query term counts as often as it is repeated."""
        with self.lock:
            shard, objs = self.filtered(coll, tenant, where)
            bm25 = coll.config["invertedIndexConfig"]["bm25"]
            k1, b = float(bm25["k1"]), float(bm25["b"])
            searched = self._searched_properties(coll, properties)
            all_objs = list(shard.objects.values())
            n_docs = len(all_objs)
            scores: dict[str, float] = {}
            matched_terms: dict[str, set[str]] = {}
            explain: dict[str, list[str]] = {}
            query_terms_all: set[str] = set()
            for prop, boost in searched:
                tokenization = coll.properties[prop]["tokenization"]
                terms = Counter(
                    t
                    for t in tokenize(query, tokenization)
                    if not (tokenization in (None, "word") and t in EN_STOPWORDS)
                )
                query_terms_all.update(terms)
                doc_tokens = {
                    o.uuid: tokenize_value(o.props.get(prop), tokenization)
                    for o in all_objs
                    if o.props.get(prop) not in (None, [])
                }
                if not doc_tokens:
                    continue
                avg_len = sum(len(t) for t in doc_tokens.values()) / len(doc_tokens)
                for term, repeats in terms.items():
                    df = sum(1 for toks in doc_tokens.values() if term in toks)
                    if df == 0:
                        continue
                    idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
                    for obj in objs:
                        toks = doc_tokens.get(obj.uuid)
                        if not toks:
                            continue
                        tf = toks.count(term)
                        if tf == 0:
                            continue
                        norm = tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(toks) / max(avg_len, 1e-9)))
                        scores[obj.uuid] = scores.get(obj.uuid, 0.0) + boost * repeats * idf * norm
                        matched_terms.setdefault(obj.uuid, set()).add(term)
                        explain.setdefault(obj.uuid, []).append(
                            f"BM25F_{term}_frequency:{tf}, BM25F_{term}_propLength:{len(toks)}"
                        )
            by_id = {o.uuid: o for o in objs}
            hits = []
            for uuid, score in scores.items():
                got = matched_terms[uuid]
                if operator == "AND" and got != query_terms_all:
                    continue
                if operator == "OR" and minimum_match and len(got) < minimum_match:
                    continue
                hits.append(Hit(by_id[uuid], score=score, explain=", ".join(explain[uuid])))
            hits.sort(key=lambda h: (-(h.score or 0.0), h.obj.doc_id))
            return hits[:limit] if limit is not None else hits

    @staticmethod
    def _searched_properties(coll: Collection, properties: list[str]) -> list[tuple[str, float]]:
        out = []
        if not properties:
            properties = [
                p["name"]
                for p in coll.config["properties"]
                if p["dataType"][0] in TEXT_TYPES and p["indexSearchable"]
            ]
        for spec in properties:
            name, _, boost = spec.partition("^")
            if name not in coll.properties:
                raise StandInError(
                    f"no such prop with name '{name}' found in class '{coll.name}' in the schema. Check "
                    "your schema files for which properties in this class are available"
                )
            prop = coll.properties[name]
            if prop["dataType"][0] not in TEXT_TYPES or not prop["indexSearchable"]:
                raise StandInError(
                    f"Property '{name}' is not indexed for keyword search (indexSearchable is false or it is "
                    "not a text property)"
                )
            out.append((name, float(boost) if boost else 1.0))
        return out

    def hybrid(
        self,
        coll: Collection,
        tenant: str,
        where: Filter,
        *,
        query: str,
        vector: list[float] | None,
        target: str,
        alpha: float,
        fusion: str,
        properties: list[str],
        max_distance: float | None,
        limit: int,
    ) -> list[Hit]:
        """Weaviate's hybrid: a keyword and a vector result set, fused by ``RANKED`` (weight /
        (rank + 60)) or ``RELATIVE_SCORE`` (min-max normalised, weighted, summed)."""
        with self.lock:
            if not query and vector is not None:
                return self.near_vector(
                    coll, tenant, where, vector, target, max_distance=max_distance, limit=limit
                )
            sets: list[tuple[str, float, list[Hit], list[float]]] = []
            sub_limit = max(HYBRID_SUBSEARCH_LIMIT, limit)
            if alpha < 1:
                keyword = self.bm25(coll, tenant, where, query, properties, limit=sub_limit)
                sets.append(("keyword", 1 - alpha, keyword, [h.score or 0.0 for h in keyword]))
            if alpha > 0:
                if vector is None:
                    raise StandInError(
                        "hybrid: no vector given and the collection has no vectorizer (the stand-in "
                        "models self-provided vectors only)"
                    )
                dense = self.near_vector(
                    coll, tenant, where, vector, target, max_distance=max_distance, limit=sub_limit
                )
                sets.append(("vector", alpha, dense, [1 - (h.distance or 0.0) for h in dense]))
            fused: dict[str, Hit] = {}
            secondary: dict[str, float] = {}
            for name, weight, hits, values in sets:
                lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
                for rank, (hit, value) in enumerate(zip(hits, values, strict=True)):
                    if fusion == "RANKED":
                        part = weight / (rank + 60)
                    else:
                        part = weight * ((value - lo) / (hi - lo) if hi != lo else 1.0)
                    prev = fused.get(hit.obj.uuid)
                    total = part + (prev.score or 0.0 if prev else 0.0)
                    note = (
                        f"Hybrid (Result Set {name}) Document {hit.obj.uuid} contributed {part} to the score"
                    )
                    fused[hit.obj.uuid] = Hit(
                        hit.obj,
                        score=total,
                        distance=hit.distance
                        if hit.distance is not None
                        else (prev.distance if prev else None),
                        explain=((prev.explain + "\n") if prev else "") + note,
                    )
                    secondary[hit.obj.uuid] = value
            out = list(fused.values())
            out.sort(key=lambda h: (-(h.score or 0.0), -secondary[h.obj.uuid], h.obj.uuid))
            return out

    def count(self, coll: Collection, tenant: str, where: Filter) -> int:
        with self.lock:
            return len(self.filtered(coll, tenant, where)[1])


def tokenize_value(value: Any, tokenization: str | None) -> list[str]:
    if value is None:
        return []
    items: Iterable[str] = value if isinstance(value, list) else [value]
    return [tok for item in items for tok in tokenize(item, tokenization)]


def _sort_key(coll: Collection, obj: Obj, prop: str) -> tuple[int, Any]:
    if prop == "_id":
        return (1, obj.uuid)
    if prop in ("_creationTimeUnix", "_lastUpdateTimeUnix"):
        return (1, obj.created if prop == "_creationTimeUnix" else obj.updated)
    value = obj.props.get(prop)
    if value is None:
        return (0, 0)
    base = SCALAR_OF.get(coll.data_type(prop), coll.data_type(prop))
    if isinstance(value, list):
        value = value[0] if value else None
        if value is None:
            return (0, 0)
    return (1, _comparable(base, value))


def _status(given: str | None) -> str:
    if given in (None, "", "HOT", "ACTIVE"):
        return "HOT"
    if given in ("COLD", "INACTIVE"):
        return "COLD"
    raise StandInError(f"the stand-in does not model tenant status {given!r}")
