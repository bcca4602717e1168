"""Weaviate's wire protocols over :class:`store.Store`: a gRPC servicer and a small REST server.

The gRPC side subclasses the servicer the installed client generated
(``weaviate.proto.v1.weaviate_pb2_grpc.WeaviateServicer``), so requests and replies are the
client's own protobuf messages; the REST side is ``http.server`` answering the handful of routes
the client calls (meta, readiness, schema, tenants, single objects).
"""

from __future__ import annotations

import json
import struct
import threading
import time
import uuid as uuid_lib
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import grpc
from google.protobuf import json_format
from weaviate.proto.v1 import (
    aggregate_pb2,
    base_pb2,
    base_search_pb2,
    batch_delete_pb2,
    batch_pb2,
    health_weaviate_pb2,
    search_get_pb2,
    tenants_pb2,
    weaviate_pb2_grpc,
)

from .store import (
    DEFAULT_QUERY_LIMIT,
    SCALAR_OF,
    Collection,
    Filter,
    Hit,
    Leaf,
    Node,
    Obj,
    StandInError,
    Store,
)

VERSION = "1.33.0"
GRPC_MAX_MESSAGE = 104_858_000


# --- protobuf <-> Python ---------------------------------------------------------------------


def decode_filter(msg: base_pb2.Filters) -> Filter:
    """A ``base_pb2.Filters`` tree as :class:`Leaf` / :class:`Node` values."""
    op = base_pb2.Filters.Operator.Name(msg.operator).removeprefix("OPERATOR_")
    if op in ("AND", "OR", "NOT"):
        return Node(op, [decode_filter(f) for f in msg.filters])
    if op == "UNSPECIFIED":
        raise StandInError("filter without an operator")
    if op == "WITHIN_GEO_RANGE":
        raise StandInError("the stand-in does not model geo filters")
    if msg.HasField("target"):
        kind = msg.target.WhichOneof("target")
        if kind != "property":
            raise StandInError("the stand-in does not model reference filters")
        prop = msg.target.property
    else:
        prop = msg.on[0] if msg.on else ""
    if prop.startswith("len("):
        raise StandInError("the stand-in does not model property-length filters")
    kind = msg.WhichOneof("test_value")
    value: Any
    if kind is None:
        value = False if op == "IS_NULL" else ""
    elif kind.endswith("_array"):
        value = list(getattr(msg, kind).values)
    else:
        value = getattr(msg, kind)
    return Leaf(op, prop, value)


def _unpack_floats(data: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def batch_properties(msg: batch_pb2.BatchObject.Properties) -> dict[str, Any]:
    """The properties of a gRPC batch object, as the JSON-like values Weaviate validates."""
    if msg.single_target_ref_props or msg.multi_target_ref_props:
        raise StandInError("the stand-in does not model cross-references")
    if msg.object_properties or msg.object_array_properties:
        raise StandInError("the stand-in does not model object properties")
    props: dict[str, Any] = json_format.MessageToDict(msg.non_ref_properties)
    for arr in msg.text_array_properties:
        props[arr.prop_name] = list(arr.values)
    for arr in msg.int_array_properties:
        props[arr.prop_name] = list(arr.values)
    for arr in msg.boolean_array_properties:
        props[arr.prop_name] = list(arr.values)
    for arr in msg.number_array_properties:
        data = arr.values_bytes
        props[arr.prop_name] = (
            list(struct.unpack(f"<{len(data) // 8}d", data)) if data else [float(v) for v in arr.values]
        )
    for name in msg.empty_list_props:
        props[name] = []
    return props


def _sole_vector(coll: Collection) -> str:
    names = list(coll.named_vectors)
    if len(names) != 1:
        raise StandInError(
            f"collection {coll.name} has multiple vectors, but no target vectors were provided"
        )
    return names[0]


def batch_vectors(coll: Collection, msg: batch_pb2.BatchObject) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    if msg.vector_bytes:
        out[_sole_vector(coll)] = _unpack_floats(msg.vector_bytes)
    elif msg.vector:
        out[_sole_vector(coll)] = list(msg.vector)
    for vec in msg.vectors:
        if vec.type == base_pb2.Vectors.VECTOR_TYPE_MULTI_FP32:
            raise StandInError("the stand-in does not model multi-vectors")
        out[vec.name or _sole_vector(coll)] = _unpack_floats(vec.vector_bytes)
    return out


def _target(coll: Collection, names: list[str]) -> str:
    if len(names) > 1:
        raise StandInError("the stand-in does not model multi-target vector search")
    if names:
        if names[0] not in coll.named_vectors:
            raise StandInError(f"collection {coll.name} does not have configured vector {names[0]!r}")
        return names[0]
    return _sole_vector(coll)


def near_vector_query(coll: Collection, nv: base_search_pb2.NearVector) -> tuple[list[float], str]:
    names = list(nv.target_vectors) or list(nv.targets.target_vectors)
    if nv.vectors:
        vec = nv.vectors[0]
        if vec.type == base_pb2.Vectors.VECTOR_TYPE_MULTI_FP32:
            raise StandInError("the stand-in does not model multi-vectors")
        return _unpack_floats(vec.vector_bytes), _target(coll, names or ([vec.name] if vec.name else []))
    if nv.vector_bytes:
        return _unpack_floats(nv.vector_bytes), _target(coll, names)
    if nv.vector:
        return list(nv.vector), _target(coll, names)
    if nv.vector_for_targets:
        vft = nv.vector_for_targets[0]
        data = vft.vectors[0].vector_bytes if vft.vectors else vft.vector_bytes
        return _unpack_floats(data), _target(coll, [vft.name])
    raise StandInError("near vector: no vector given")


def encode_value(out: Any, data_type: str, value: Any) -> None:
    """Set a ``properties_pb2.Value`` the way Weaviate encodes a property of ``data_type``."""
    if data_type in SCALAR_OF:
        lv = out.list_value
        if data_type == "int[]":
            lv.int_values.values = struct.pack(f"<{len(value)}q", *value)
        elif data_type == "number[]":
            lv.number_values.values = struct.pack(f"<{len(value)}d", *value)
        else:
            field_name = {
                "text[]": "text_values",
                "boolean[]": "bool_values",
                "date[]": "date_values",
                "uuid[]": "uuid_values",
            }[data_type]
            getattr(lv, field_name).SetInParent()
            getattr(lv, field_name).values.extend(value)
        return
    field_name = {
        "text": "text_value",
        "int": "int_value",
        "number": "number_value",
        "boolean": "bool_value",
        "date": "date_value",
        "uuid": "uuid_value",
    }[data_type]
    setattr(out, field_name, value)


def _pack_vector(vec: list[float]) -> bytes:
    return struct.pack(f"<{len(vec)}f", *vec)


# --- gRPC ------------------------------------------------------------------------------------


class _Servicer(weaviate_pb2_grpc.WeaviateServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def _fail(context: grpc.ServicerContext, exc: StandInError) -> None:
        # Weaviate returns plain Go errors from its handlers, which gRPC reports as UNKNOWN.
        context.abort(grpc.StatusCode.UNKNOWN, exc.message)

    # search

    def Search(self, request: search_get_pb2.SearchRequest, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            return self._search(request, started)
        except StandInError as exc:
            self._fail(context, exc)

    def _search(self, req: search_get_pb2.SearchRequest, started: float) -> search_get_pb2.SearchReply:
        for unsupported in (
            "group_by",
            "generative",
            "rerank",
            "boost",
            "near_object",
            "near_text",
            "near_image",
            "near_audio",
            "near_video",
            "near_depth",
            "near_thermal",
            "near_imu",
        ):
            if req.HasField(unsupported):
                raise StandInError(f"the stand-in does not model {unsupported}")
        if req.autocut:
            raise StandInError("the stand-in does not model autocut")
        coll = self.store.collection(req.collection)
        where = decode_filter(req.filters) if req.HasField("filters") else None
        limit = req.limit or DEFAULT_QUERY_LIMIT
        window = req.offset + limit
        tenant = req.tenant
        if req.HasField("hybrid_search"):
            hy = req.hybrid_search
            if hy.HasField("near_text"):
                raise StandInError("the stand-in does not model near_text")
            vector: list[float] | None = None
            names = list(hy.target_vectors) or list(hy.targets.target_vectors)
            if hy.vectors:
                vector, target = _unpack_floats(hy.vectors[0].vector_bytes), _target(coll, names)
            elif hy.vector_bytes:
                vector, target = _unpack_floats(hy.vector_bytes), _target(coll, names)
            elif hy.vector:
                vector, target = list(hy.vector), _target(coll, names)
            elif hy.HasField("near_vector"):
                vector, target = near_vector_query(coll, hy.near_vector)
            else:
                target = _target(coll, names)
            if hy.use_alpha_param:
                alpha = hy.alpha_param if hy.HasField("alpha_param") else 0.75
            else:
                alpha = hy.alpha
            fusion = "RANKED" if hy.fusion_type == base_search_pb2.Hybrid.FUSION_TYPE_RANKED else "RELATIVE"
            operator, minimum = _operator(
                hy.bm25_search_operator if hy.HasField("bm25_search_operator") else None
            )
            if operator != "OR" or minimum:
                raise StandInError("the stand-in does not model bm25 operators inside hybrid")
            hits = self.store.hybrid(
                coll,
                tenant,
                where,
                query=hy.query,
                vector=vector,
                target=target,
                alpha=alpha,
                fusion=fusion,
                properties=list(hy.properties),
                max_distance=hy.vector_distance if hy.HasField("vector_distance") else None,
                limit=window,
            )
        elif req.HasField("bm25_search"):
            bm = req.bm25_search
            operator, minimum = _operator(bm.search_operator if bm.HasField("search_operator") else None)
            hits = self.store.bm25(
                coll,
                tenant,
                where,
                bm.query,
                list(bm.properties),
                operator=operator,
                minimum_match=minimum,
                limit=window,
            )
        elif req.HasField("near_vector"):
            nv = req.near_vector
            vector, target = near_vector_query(coll, nv)
            max_distance = nv.distance if nv.HasField("distance") else None
            if nv.HasField("certainty"):
                max_distance = 2 * (1 - nv.certainty)
            hits = self.store.near_vector(
                coll, tenant, where, vector, target, max_distance=max_distance, limit=window
            )
        else:
            sort = [(s.path[0], s.ascending) for s in req.sort_by]
            hits = self.store.fetch(coll, tenant, where, after=req.after, sort=sort)
        hits = hits[req.offset : window]
        reply = search_get_pb2.SearchReply()
        for hit in hits:
            self._result(coll, req, hit, reply.results.add())
        reply.took = time.perf_counter() - started
        return reply

    @staticmethod
    def _result(
        coll: Collection, req: search_get_pb2.SearchRequest, hit: Hit, out: search_get_pb2.SearchResult
    ) -> None:
        obj: Obj = hit.obj
        md = out.metadata
        md.id = obj.uuid
        md.id_as_bytes = uuid_lib.UUID(obj.uuid).bytes
        want = req.metadata
        if want.creation_time_unix:
            md.creation_time_unix, md.creation_time_unix_present = obj.created, True
        if want.last_update_time_unix:
            md.last_update_time_unix, md.last_update_time_unix_present = obj.updated, True
        if want.distance and hit.distance is not None:
            md.distance, md.distance_present = hit.distance, True
        if want.certainty and hit.distance is not None:
            md.certainty, md.certainty_present = 1 - hit.distance / 2, True
        if want.score and hit.score is not None:
            md.score, md.score_present = hit.score, True
        if want.explain_score and hit.explain:
            md.explain_score, md.explain_score_present = hit.explain, True
        if want.vector or want.vectors:
            names = list(want.vectors) or list(obj.vectors)
            if coll.legacy_vector and "default" in obj.vectors:
                md.vector_bytes = _pack_vector(obj.vectors["default"])
            else:
                for name in names:
                    if name in obj.vectors:
                        md.vectors.add(
                            name=name,
                            vector_bytes=_pack_vector(obj.vectors[name]),
                            type=base_pb2.Vectors.VECTOR_TYPE_SINGLE_FP32,
                        )
        props = out.properties
        props.target_collection = coll.name
        if not req.HasField("properties") or req.properties.return_all_nonref_properties:
            names = list(obj.props)
        else:
            names = list(req.properties.non_ref_properties)
            props.ref_props_requested = bool(req.properties.ref_properties)
            if req.properties.ref_properties:
                raise StandInError("the stand-in does not model cross-references")
        for name in names:
            if name in obj.props:
                encode_value(props.non_ref_props.fields[name], coll.data_type(name), obj.props[name])

    # batch

    def BatchObjects(self, request: batch_pb2.BatchObjectsRequest, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        reply = batch_pb2.BatchObjectsReply()
        for index, msg in enumerate(request.objects):
            try:
                coll = self.store.collection(msg.collection)
                self.store.put_object(
                    coll,
                    msg.tenant,
                    msg.uuid or str(uuid_lib.uuid4()),
                    batch_properties(msg.properties),
                    batch_vectors(coll, msg),
                    mode="upsert",
                )
            except StandInError as exc:
                reply.errors.add(index=index, error=exc.message)
        reply.took = time.perf_counter() - started
        return reply

    def BatchDelete(self, request: batch_delete_pb2.BatchDeleteRequest, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            coll = self.store.collection(request.collection)
            if not request.HasField("filters"):
                raise StandInError("batch delete params: filters are required")
            found = self.store.delete_where(
                coll, request.tenant, decode_filter(request.filters), dry_run=request.dry_run
            )
        except StandInError as exc:
            self._fail(context, exc)
        reply = batch_delete_pb2.BatchDeleteReply(
            matches=len(found), successful=0 if request.dry_run else len(found), failed=0
        )
        if request.verbose:
            for obj in found:
                reply.objects.add(uuid=uuid_lib.UUID(obj.uuid).bytes, successful=not request.dry_run)
        reply.took = time.perf_counter() - started
        return reply

    def TenantsGet(self, request: tenants_pb2.TenantsGetRequest, context: grpc.ServicerContext) -> Any:
        try:
            tenants = self.store.tenants(request.collection)
        except StandInError as exc:
            self._fail(context, exc)
        wanted = set(request.names.values) if request.HasField("names") else set(tenants)
        reply = tenants_pb2.TenantsGetReply()
        for name, status in tenants.items():
            if name in wanted:
                reply.tenants.add(
                    name=name,
                    activity_status=(
                        tenants_pb2.TENANT_ACTIVITY_STATUS_ACTIVE
                        if status == "HOT"
                        else tenants_pb2.TENANT_ACTIVITY_STATUS_INACTIVE
                    ),
                )
        return reply

    def Aggregate(self, request: aggregate_pb2.AggregateRequest, context: grpc.ServicerContext) -> Any:
        try:
            for unsupported in ("group_by", "hybrid", "near_vector", "near_object", "near_text"):
                if request.HasField(unsupported):
                    raise StandInError(f"the stand-in does not model aggregate {unsupported}")
            if request.aggregations:
                raise StandInError("the stand-in models only the total count of an aggregation")
            coll = self.store.collection(request.collection)
            where = decode_filter(request.filters) if request.HasField("filters") else None
            count = self.store.count(coll, request.tenant, where)
        except StandInError as exc:
            self._fail(context, exc)
        reply = aggregate_pb2.AggregateReply()
        reply.single_result.objects_count = count
        return reply


def _operator(options: base_search_pb2.SearchOperatorOptions | None) -> tuple[str, int]:
    if options is None:
        return "OR", 0
    name = base_search_pb2.SearchOperatorOptions.Operator.Name(options.operator).removeprefix("OPERATOR_")
    if name not in ("OR", "AND", "UNSPECIFIED"):
        raise StandInError(f"the stand-in does not model bm25 operator {name}")
    minimum = options.minimum_or_tokens_match if options.HasField("minimum_or_tokens_match") else 0
    return ("OR" if name == "UNSPECIFIED" else name), minimum


def _health_handler() -> grpc.GenericRpcHandler:
    def check(request: Any, context: grpc.ServicerContext) -> Any:
        return health_weaviate_pb2.WeaviateHealthCheckResponse(
            status=health_weaviate_pb2.WeaviateHealthCheckResponse.SERVING
        )

    return grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                check,
                request_deserializer=health_weaviate_pb2.WeaviateHealthCheckRequest.FromString,
                response_serializer=health_weaviate_pb2.WeaviateHealthCheckResponse.SerializeToString,
            )
        },
    )


# --- REST ------------------------------------------------------------------------------------


def object_json(coll: Collection, obj: Obj, tenant: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "class": coll.name,
        "id": obj.uuid,
        "properties": dict(obj.props),
        "creationTimeUnix": obj.created,
        "lastUpdateTimeUnix": obj.updated,
    }
    if tenant:
        out["tenant"] = tenant
    if coll.legacy_vector:
        if "default" in obj.vectors:
            out["vector"] = obj.vectors["default"]
    else:
        out["vectors"] = dict(obj.vectors)
    return out


def rest_vectors(coll: Collection, body: dict[str, Any]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    if body.get("vector"):
        out[_sole_vector(coll)] = [float(v) for v in body["vector"]]
    for name, vec in (body.get("vectors") or {}).items():
        out[name] = [float(v) for v in vec]
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: Store  # set on the subclass made per stand-in

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # plumbing

    def _send(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, exc: StandInError) -> None:
        self._send(exc.status, {"error": [{"message": exc.message}]})

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _dispatch(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = [unquote(p) for p in url.path.split("/") if p]
        body = self._body() if self.command in ("POST", "PUT", "PATCH", "DELETE") else None
        try:
            if parts[:1] != ["v1"]:
                raise StandInError("not found", status=404)
            self._route(self.command, parts[1:], query, body)
        except StandInError as exc:
            if exc.status == 404 and self.command in ("HEAD", "GET") and "schema" in parts:
                self._send(404)
            else:
                self._error(exc)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch

    # routes

    def _route(self, method: str, path: list[str], query: dict[str, str], body: Any) -> None:
        if path == ["meta"]:
            return self._send(
                200,
                {
                    "hostname": "http://[::]:8080",
                    "modules": {},
                    "version": VERSION,
                    "grpcMaxMessageSize": GRPC_MAX_MESSAGE,
                },
            )
        if path in ([".well-known", "ready"], [".well-known", "live"]):
            return self._send(200)
        if path == [".well-known", "openid-configuration"]:
            return self._send(404)
        if path[:1] == ["schema"]:
            return self._schema(method, path[1:], body)
        if path[:1] == ["objects"]:
            return self._objects(method, path[1:], query, body)
        raise StandInError(f"the stand-in does not model {method} /v1/{'/'.join(path)}", status=404)

    def _schema(self, method: str, path: list[str], body: Any) -> None:
        store = self.store
        with store.lock:
            if not path:
                if method == "GET":
                    return self._send(200, {"classes": [c.config for c in store.collections.values()]})
                if method == "POST":
                    return self._send(200, store.create_collection(body or {}))
            elif len(path) == 1:
                if method == "GET":
                    return self._send(200, store.collection(path[0]).config)
                if method == "DELETE":
                    store.delete_collection(path[0])
                    return self._send(200)
            elif path[1] == "tenants" and len(path) == 2:
                if method == "GET":
                    return self._send(200, [_tenant_json(n, s) for n, s in store.tenants(path[0]).items()])
                if method == "POST":
                    return self._send(200, store.add_tenants(path[0], [_tenant_in(t) for t in body or []]))
                if method == "PUT":
                    return self._send(200, store.update_tenants(path[0], [_tenant_in(t) for t in body or []]))
                if method == "DELETE":
                    store.remove_tenants(path[0], list(body or []))
                    return self._send(200)
            elif path[1] == "tenants" and len(path) == 3 and method in ("GET", "HEAD"):
                tenants = store.tenants(path[0])
                if path[2] not in tenants:
                    return self._send(404)
                return self._send(200, _tenant_json(path[2], tenants[path[2]]))
        raise StandInError(f"the stand-in does not model {method} /v1/schema/{'/'.join(path)}", status=405)

    def _objects(self, method: str, path: list[str], query: dict[str, str], body: Any) -> None:
        store = self.store
        if not path and method == "POST":
            coll = store.collection(body.get("class", ""))
            tenant = body.get("tenant") or ""
            obj = store.put_object(
                coll,
                tenant,
                body.get("id") or str(uuid_lib.uuid4()),
                body.get("properties") or {},
                rest_vectors(coll, body),
                mode="create",
            )
            return self._send(200, object_json(coll, obj, tenant))
        if len(path) != 2:
            raise StandInError(
                f"the stand-in does not model {method} /v1/objects/{'/'.join(path)}", status=405
            )
        coll = store.collection(path[0])
        uuid = path[1]
        tenant = (
            query.get("tenant", "") if method in ("GET", "HEAD", "DELETE") else (body or {}).get("tenant", "")
        )
        if method in ("GET", "HEAD"):
            obj = store.get_object(coll, tenant, uuid)
            if obj is None:
                return self._send(404)
            if method == "HEAD":
                return self._send(204)
            return self._send(200, object_json(coll, obj, tenant))
        if method == "DELETE":
            return self._send(204 if store.delete_object(coll, tenant, uuid) else 404)
        if method in ("PUT", "PATCH"):
            try:
                obj = store.put_object(
                    coll,
                    tenant,
                    uuid,
                    body.get("properties") or {},
                    rest_vectors(coll, body),
                    mode="replace" if method == "PUT" else "merge",
                )
            except StandInError as exc:
                if exc.status == 404:
                    return self._send(404)
                raise
            if method == "PATCH":
                return self._send(204)
            return self._send(200, object_json(coll, obj, tenant))
        raise StandInError(f"the stand-in does not model {method} /v1/objects", status=405)


def _tenant_json(name: str, status: str) -> dict[str, str]:
    return {"name": name, "activityStatus": "ACTIVE" if status == "HOT" else "INACTIVE"}


def _tenant_in(tenant: Any) -> dict[str, Any]:
    if isinstance(tenant, str):
        return {"name": tenant}
    return {
        "name": tenant.get("name"),
        "activityStatus": tenant.get("activityStatus") or tenant.get("activity_status"),
    }


# --- the stand-in ----------------------------------------------------------------------------


class WeaviateStandIn:
    """An in-process Weaviate for tests: REST on ``http_port``, gRPC on ``grpc_port``.

    Example::

        with WeaviateStandIn() as standin:
            client = standin.connect()
            ...
            client.close()
    """

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.store = Store()
        self.http_port = 0
        self.grpc_port = 0
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: grpc.Server | None = None

    def start(self) -> WeaviateStandIn:
        self._grpc = grpc.server(
            ThreadPoolExecutor(max_workers=8, thread_name_prefix="weaviate-standin-grpc"),
            options=[
                ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE),
                ("grpc.max_send_message_length", GRPC_MAX_MESSAGE),
            ],
        )
        weaviate_pb2_grpc.add_WeaviateServicer_to_server(_Servicer(self.store), self._grpc)
        self._grpc.add_generic_rpc_handlers((_health_handler(),))
        self.grpc_port = self._grpc.add_insecure_port(f"{self.host}:0")
        self._grpc.start()
        handler = type("Handler", (_Handler,), {"store": self.store})
        self._http = ThreadingHTTPServer((self.host, 0), handler)
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        self._http_thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll
            name="weaviate-standin-http",
            daemon=True,
        )
        self._http_thread.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait()
            self._grpc = None

    def __enter__(self) -> WeaviateStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Drop every collection (a fresh, empty server without restarting it)."""
        with self.store.lock:
            self.store.collections.clear()

    def connect(self, **kwargs: Any) -> Any:
        """A real ``weaviate.WeaviateClient`` connected to this stand-in (the caller closes it)."""
        import weaviate

        kwargs.setdefault("skip_init_checks", True)
        return weaviate.connect_to_custom(
            http_host=self.host,
            http_port=self.http_port,
            http_secure=False,
            grpc_host=self.host,
            grpc_port=self.grpc_port,
            grpc_secure=False,
            **kwargs,
        )
