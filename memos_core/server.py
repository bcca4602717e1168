"""The MemOS API over HTTP: ``memos serve`` (FastAPI + uvicorn, extra ``server``).

The facade's seed methods are routes under ``/v1`` that answer the seed's envelope
``{code, message, data}`` (errors too: ``{code, message, data: null, error: "<ExceptionClass>"}``
with the same HTTP status; docs/server.md lists them). ``GET /healthz`` and the OpenAPI schema
(``/openapi.json``, ``/docs``) need no key; every ``/v1`` request needs
``Authorization: Token <key>`` (or ``Bearer <key>``), checked before its body is read.

Tenants. An API key is bound to one tenant, and each tenant has its own MemOS on its own data
folder (``<data>/tenants/<tenant>/``): the isolation boundary is a separate database, not a
filter. Two tenants' ``user_123`` are different users in different files; no id, filter or
cube name in a request can reach another tenant's memory, because the tenant's MemOS holds
nothing else. Every tenant's MemOS runs its fine stage in this process (a scheduler thread
each); its tasks are durable, and all tenants are opened at start-up so tasks queued before a
restart resume.

Keys are created, listed and revoked with ``memos keys`` (they live hashed in
``<data>/control/``, a SQLite store of their own) and shown in full only once.

Example:
    $ memos --path ./memos-data keys create --tenant acme
    $ memos --path ./memos-data serve --port 8765
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .embedders import CachingEmbedder, SentenceTransformerEmbedder
from .errors import InvalidInputError, MemosError, MissingDependencyError, PayloadTooLargeError
from .memos import MemOS
from .ports import Embedder, MemoryStore
from .reader import Limits
from .retrieval import SearchMode
from .schema import AddData, ContentPart, Envelope, MemoryItem, Page, SearchData, Task, utcnow
from .stores.sqlite import SqliteStore

try:  # the 'server' extra; create_app() names it when it is missing
    from starlette.requests import Request
except ImportError:  # pragma: no cover
    Request = Any  # type: ignore[misc,assignment]

__all__ = ["KeyStore", "ServerLimits", "TenantRegistry", "create_app"]

log = logging.getLogger(__name__)

#: lower case only, no dots: a tenant is a folder name, and case-insensitive file systems
#: (macOS, Windows) must not map two tenants onto one database
_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_KEYS, _KEY_IDS = "apikey", "apikey_id"


def _check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise InvalidInputError(
            f"tenant must be 1-64 characters: lower-case letters, digits, '_', '-' (not {tenant!r})"
        )
    return tenant


# ----------------------------------------------------------------------------- keys


class KeyStore:
    """API keys, stored as sha256 digests (a key is 190 random bits: a plain digest is the
    standard for tokens of that strength), each bound to a tenant.

    Args:
        folder: where the keys live (``<data>/control``).
    """

    def __init__(self, folder: str | Path) -> None:
        self.store = SqliteStore.from_path(folder)
        self.store.setup()

    def close(self) -> None:
        self.store.close()

    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def create(self, tenant: str, *, name: str = "") -> tuple[str, str]:
        """A new key for ``tenant``: returns ``(key_id, token)``; the token is not stored."""
        _check_tenant(tenant)
        key_id = secrets.token_hex(8)
        while self.store.get_record(_KEY_IDS, key_id) is not None:  # never overwrite a key's record
            key_id = secrets.token_hex(8)
        token = f"mk_{key_id}_{secrets.token_urlsafe(24)}"
        record = {"key_id": key_id, "tenant": tenant, "name": name, "created_at": utcnow().isoformat()}
        self.store.put_records(_KEYS, {self._digest(token): record})
        self.store.put_records(_KEY_IDS, {key_id: {**record, "digest": self._digest(token)}})
        return key_id, token

    def list(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every key's id, tenant, name and dates (never the token or its digest)."""
        out = []
        for _, record in self.store.list_records(_KEY_IDS):
            if tenant is None or record["tenant"] == tenant:
                out.append({k: v for k, v in record.items() if k != "digest"})
        return out

    def revoke(self, key_id: str) -> bool:
        """Revoke a key (at once: the next request with it is a 401). False when unknown."""
        record = self.store.get_record(_KEY_IDS, key_id)
        if record is None:
            return False
        revoked = {**record, "revoked_at": utcnow().isoformat()}
        self.store.put_records(_KEY_IDS, {key_id: revoked})
        self.store.put_records(_KEYS, {record["digest"]: None})
        return True

    def verify(self, token: str) -> str | None:
        """The tenant of a valid, unrevoked key, else ``None``."""
        if not token or len(token) > 256:
            return None
        record = self.store.get_record(_KEYS, self._digest(token))
        return None if record is None else str(record["tenant"])


# ----------------------------------------------------------------------------- tenants


#: Builds the (already set-up) store of a tenant; see :func:`weaviate_store_factory`.
StoreFactory = Callable[[str], MemoryStore]


def weaviate_collection(tenant: str) -> str:
    """The Weaviate collection of a server tenant: ``Memos_<tenant>_``, with ``_`` written
    ``__`` and ``-`` written ``_x`` (collection names allow no ``-``). The store keeps its
    records in ``<collection>Record``, and Weaviate compares collection names ignoring case,
    so the name ends in ``_``: an item collection then never equals a records collection
    (``Memos_bob_Record`` ends in ``record``, ``Memos_bobrecord_`` in ``_``), and the mapping
    is one-to-one, so no two tenants share either collection."""
    _check_tenant(tenant)
    return "Memos_" + tenant.replace("_", "__").replace("-", "_x") + "_"


def weaviate_api_key() -> str | None:
    """The Weaviate API key, from the ``WEAVIATE_API_KEY`` environment variable (never from
    the store URL, which shows up in process lists and logs); ``None`` when unset or empty."""
    return os.environ.get("WEAVIATE_API_KEY") or None


def weaviate_store_factory(url: str) -> StoreFactory:
    """A :data:`StoreFactory` giving each tenant its own collection
    (:func:`weaviate_collection`) on the Weaviate at ``url``
    (``weaviate://host:port[?grpc_port=50051]``, see :func:`parse_weaviate_url`; the API key
    from :func:`weaviate_api_key`).

    Raises:
        InvalidInputError: ``url`` is malformed or names a ``collection`` (the server names
            one per tenant).
    """
    from .stores.weaviate import WeaviateStore

    http_url, options = parse_weaviate_url(url)
    if "collection" in options:
        raise InvalidInputError(
            "serve gives each tenant its own Weaviate collection (Memos_<tenant>_): "
            f"drop ?collection= from the store URL {url!r}"
        )
    api_key = weaviate_api_key()

    def make(tenant: str) -> MemoryStore:
        store = WeaviateStore.from_url(
            http_url, collection=weaviate_collection(tenant), api_key=api_key, **options
        )
        try:
            store.setup()
        except BaseException:
            store.close()
            raise
        return store

    return make


def parse_weaviate_url(url: str) -> tuple[str, dict[str, Any]]:
    """``weaviate://host:port[?grpc_port=50051]`` (``weaviates://`` for TLS) -> the HTTP URL
    and the keyword arguments of :meth:`WeaviateStore.from_url`. ``collection=NAME`` is
    passed on too (the CLI's commands other than ``serve`` use it; ``serve`` names a
    collection per tenant and refuses it). The API key is not taken from the URL: see
    :func:`weaviate_api_key`."""
    from urllib.parse import parse_qs, urlparse

    parsed = urlparse(url)
    if parsed.scheme not in ("weaviate", "weaviates") or not parsed.hostname:
        raise InvalidInputError(f"a Weaviate store URL is weaviate://host:port[?grpc_port=N], not {url!r}")
    query = parse_qs(parsed.query)
    unknown = set(query) - {"grpc_port", "collection"}
    if unknown:
        raise InvalidInputError(f"unknown Weaviate URL option(s): {', '.join(sorted(unknown))}")
    options: dict[str, Any] = {}
    try:
        port = parsed.port
        if "grpc_port" in query:
            options["grpc_port"] = int(query["grpc_port"][-1])
    except ValueError as exc:
        raise InvalidInputError(f"bad port in {url!r}") from exc
    if "collection" in query:
        options["collection"] = query["collection"][-1]
    scheme = "https" if parsed.scheme == "weaviates" else "http"
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{scheme}://{host}:{port or (443 if scheme == 'https' else 8080)}", options


class TenantRegistry:
    """One MemOS per tenant under ``<root>/tenants/<tenant>/``, opened on first use (and all
    existing ones by :meth:`open_existing`), sharing one embedder.

    Args:
        root: the server's data folder.
        embedder: shared by every tenant (default: the packaged MiniLM, cached by text).
        store_factory: tenant -> its store (e.g. :func:`weaviate_store_factory`); by default
            each tenant's SQLite store in its folder. The folder is made either way: a store
            without a task queue keeps the tenant's background tasks there.
        memos_options: passed to every :class:`MemOS` (``limits``, ``llm``, ``scheduler``...).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        embedder: Embedder | None = None,
        store_factory: StoreFactory | None = None,
        **memos_options: Any,
    ) -> None:
        self.root = Path(root) / "tenants"
        self.root.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder or CachingEmbedder(SentenceTransformerEmbedder())
        self.store_factory = store_factory
        self.options = memos_options
        self._open: dict[str, MemOS] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str) -> MemOS:
        _check_tenant(tenant)
        with self._lock:
            mem = self._open.get(tenant)
            if mem is None:
                store = self.store_factory(tenant) if self.store_factory is not None else None
                try:
                    mem = MemOS(self.root / tenant, store=store, embedder=self.embedder, **self.options)
                except BaseException:
                    if store is not None:
                        store.close()
                    raise
                self._open[tenant] = mem
            return mem

    def open_existing(self) -> list[str]:
        """Open every tenant that has a folder, so its queued background tasks resume."""
        names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and _TENANT.fullmatch(p.name))
        for name in names:
            self.get(name)
        return names

    def close(self) -> None:
        with self._lock:
            for mem in self._open.values():
                mem.close()
            self._open.clear()


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class ServerLimits:
    """Request limits of the server, on top of the facade's :class:`~memos_core.Limits`
    (messages per add, text lengths, top_k), which the server passes to every tenant.

    Args:
        max_body_bytes: the largest request body (413 beyond).
        max_document_bytes: the largest decoded document upload.
        limits: the facade's limits.
    """

    max_body_bytes: int = 8 * 2**20
    max_document_bytes: int = 5 * 2**20  # base64 of 5 MiB fits the 8 MiB body
    limits: Limits = field(default_factory=Limits)


def _reject_surrogates(data: Any) -> None:
    """ValueError for a lone surrogate anywhere in ``data``: JSON's ``\\ud800`` escapes decode
    to strings that cannot be encoded as UTF-8 (nor stored, embedded or hashed)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise ValueError(f"text is not valid Unicode (a lone surrogate: {value[:40]!r})") from exc
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: Any) -> Any:
        _reject_surrogates(data)
        return data


#: An id in a request (users, conversations, agents, knowledge bases, memories): the facade
#: also refuses control characters and blank ids (400).
Id = Annotated[str, Field(min_length=1, max_length=256)]
Tags = Annotated[list[str], Field(description="at most Limits.max_tags tags (413 beyond)")]
Filter = Annotated[
    dict[str, Any],
    Field(description='the filter DSL (docs/filters.md), e.g. {"tags": {"contains": "work"}}'),
]


class MessageIn(BaseModel):
    """An OpenAI-style chat message. ``content`` is a string or a list of parts
    (``{"type": "text", "text": ...}``, ``{"type": "image_url", "image_url": {"url": ...}}``,
    ``{"type": "file", "file": {...}}``); ``chat_time`` is ISO 8601 (default: now, UTC)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system", "tool"]
    content: str | list[ContentPart]
    name: str | None = None
    id: str | None = None
    chat_time: datetime | None = None


class AddMessageRequest(_Req):
    """``POST /v1/memories/add_message``: at most ``Limits.max_messages`` messages of at most
    ``Limits.max_message_chars`` characters each (413 beyond)."""

    messages: list[MessageIn] = Field(min_length=1)
    user_id: Id
    conversation_id: Id | None = None
    agent_id: Id | None = None
    app_id: Id | None = None
    tags: Tags | None = None
    info: dict[str, Any] | None = None
    async_mode: bool = True
    cube_id: Id | None = None  # a cube shared with user_id read-write (default: their own)


class SearchRequest(_Req):
    """``POST /v1/memories/search``: ``top_k`` up to ``Limits.max_top_k`` and a query of at
    most ``Limits.max_query_chars`` characters (413 beyond)."""

    query: str = Field(min_length=1)
    user_id: Id
    conversation_id: Id | None = None
    agent_id: Id | None = None
    filter: Filter | None = None
    knowledgebase_ids: list[Id] | None = None
    cube_ids: list[Id] | None = None
    top_k: int = Field(10, ge=1)
    mode: SearchMode = Field(
        "hybrid",
        description='"hybrid" (BM25 and vectors fused: the best recall), "lexical" (BM25 alone, '
        'no query embedding: faster) or "keyword" (the plain BM25 ranking: the fastest)',
    )


class ListRequest(_Req):
    user_id: Id
    filter: Filter | None = None
    conversation_id: Id | None = None
    agent_id: Id | None = None
    limit: int = Field(50, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=2**53)


class UpdateRequest(_Req):
    """Give at least one of ``memory``, ``tags``, ``info``; with ``user_id`` the memory's
    cube must be writable by that user (403)."""

    memory: str | None = None
    tags: Tags | None = None
    info: dict[str, Any] | None = None
    user_id: Id | None = None


class DeleteRequest(_Req):
    """``memory_ids`` (with ``user_id``: each must be writable by that user), or every memory
    of ``user_id``'s own cube that ``filter`` selects."""

    memory_ids: list[Id] | None = None
    user_id: Id | None = None
    filter: Filter | None = None
    hard: bool = False


class FeedbackRequest(_Req):
    user_id: Id
    conversation_id: Id | None = None
    feedback_content: str = Field(min_length=1)
    feedback_time: str | None = None
    agent_id: Id | None = None
    memory_ids: list[Id] | None = None
    name: str | None = None


class AddMemoryRequest(_Req):
    """``POST /v1/memories/add_memory``: one clean memory as given (no fine stage)."""

    memory: str = Field(min_length=1)
    user_id: Id
    memory_type: str = "long_term"
    key: str | None = None
    tags: Tags | None = None
    info: dict[str, Any] | None = None
    conversation_id: Id | None = None
    agent_id: Id | None = None
    app_id: Id | None = None
    event_time: datetime | None = None
    cube_id: Id | None = None


class RollbackRequest(_Req):
    version: int = Field(ge=1, le=2**31)
    user_id: Id | None = None


class ShareRequest(_Req):
    cube_id: Id
    with_user_id: Id
    mode: Literal["read", "write"] = "read"
    user_id: Id | None = None


class UnshareRequest(_Req):
    cube_id: Id
    with_user_id: Id
    user_id: Id | None = None


class CreateKnowledgebaseRequest(_Req):
    user_id: Id
    kb_id: Id | None = None
    name: str | None = None
    description: str = ""


class AddDocumentRequest(_Req):
    """Exactly one of ``content_base64`` (PDF, DOCX, HTML, Markdown, text) and ``text``;
    ``filename``'s extension picks the reader."""

    user_id: Id
    filename: str = Field(min_length=1, max_length=512)
    content_base64: str | None = None
    text: str | None = None
    chunk_size: int = Field(800, ge=50, le=1_000_000)
    chunk_overlap: int | None = Field(None, ge=0)
    tags: Tags | None = None


class ErrorEnvelope(BaseModel):
    code: int
    message: str
    data: None = None
    error: str


# ----------------------------------------------------------------------------- the app


def _fastapi() -> Any:
    try:
        import fastapi
    except ImportError as exc:
        raise MissingDependencyError("fastapi", "server") from exc
    return fastapi


def _error_body(exc: MemosError) -> dict[str, Any]:
    return {"code": exc.code, "message": str(exc), "data": None, "error": type(exc).__name__}


_HTTP_ERRORS = {
    401: "AuthenticationError",
    404: "NotFoundError",
    405: "MethodNotAllowed",
    413: "PayloadTooLargeError",
}


def _api_key_header() -> Any:
    from fastapi.security import APIKeyHeader

    return APIKeyHeader(
        name="Authorization",
        scheme_name="Token",
        description="`Token <key>` or `Bearer <key>` (keys: `memos keys create --tenant T`)",
        auto_error=False,
    )


_UNAUTHORIZED = "missing, malformed, unknown or revoked API key (send Authorization: Token <key>)"


def _token(header: bytes | None) -> str | None:
    """The key in ``Token <key>`` or ``Bearer <key>`` (any case), else ``None``."""
    if not header:
        return None
    scheme, _, value = header.decode("latin-1").strip().partition(" ")
    value = value.strip()
    if scheme.lower() not in ("token", "bearer") or not value or " " in value:
        return None
    return value


Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class _Gate:
    """ASGI middleware in front of the app: authenticates every ``/v1`` request (401 before
    anything of the request is read, so a bad key never learns whether its body was valid) and
    refuses a body over ``limit`` bytes with 413 (by Content-Length, and by counting for chunked
    bodies). The tenant of the key goes to the route as ``scope["state"]["memos_tenant"]``."""

    def __init__(self, app: Any, *, keys: KeyStore, limit: int) -> None:
        self.app, self.keys, self.limit = app, keys, limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        path = str(scope.get("path", ""))
        if path == "/v1" or path.startswith("/v1/"):
            token = _token(headers.get(b"authorization"))
            tenant = self.keys.verify(token) if token else None
            if tenant is None:
                await _send_error(send, 401, "AuthenticationError", _UNAUTHORIZED, www_authenticate=True)
                return
            scope.setdefault("state", {})["memos_tenant"] = tenant
        if not self.limit:
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _send_error(send, 413, "PayloadTooLargeError", f"request body over {self.limit} bytes")
            return
        seen = 0
        limit = self.limit

        async def counted() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException, so FastAPI's body parsing passes it on instead of
                    # turning it into a 400; the app's handler answers it as a 413 envelope.
                    from starlette.exceptions import HTTPException

                    raise HTTPException(413, f"request body over {limit} bytes")
            return message

        await self.app(scope, counted, send)


async def _send_error(
    send: Send, status: int, error: str, message: str, *, www_authenticate: bool = False
) -> None:
    import json

    body = json.dumps({"code": status, "message": message, "data": None, "error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if www_authenticate:
        headers.append((b"www-authenticate", b"Token"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(
    root: str | Path,
    *,
    keys: KeyStore | None = None,
    tenants: TenantRegistry | None = None,
    limits: ServerLimits | None = None,
    embedder: Embedder | None = None,
    store_factory: StoreFactory | None = None,
    open_tenants: bool = True,
    **memos_options: Any,
) -> Any:
    """The FastAPI app serving the data folder ``root``.

    Args:
        root: the data folder (``control/`` holds keys, ``tenants/<name>/`` each tenant).
        keys / tenants: injected instead of opened from ``root``.
        limits: request limits.
        embedder: shared by every tenant's MemOS.
        store_factory: each tenant's store (default: SQLite in its folder), e.g.
            :func:`weaviate_store_factory`; ignored when ``tenants`` is given.
        open_tenants: open every existing tenant now, so their queued tasks resume.
        memos_options: passed to every tenant's :class:`MemOS` (``llm``, ``scheduler``...).
    """
    fastapi = _fastapi()
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    limits = limits or ServerLimits()
    keys = keys or KeyStore(Path(root) / "control")
    # A caller's image URL must not read the server's files or probe its network.
    memos_options = {"allow_local_images": False, "allow_private_image_hosts": False, **memos_options}
    tenants = tenants or TenantRegistry(
        root, embedder=embedder, store_factory=store_factory, limits=limits.limits, **memos_options
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if open_tenants:  # every tenant's scheduler starts, so tasks queued earlier resume
            tenants.open_existing()
        try:
            yield
        finally:
            tenants.close()
            keys.close()

    app = fastapi.FastAPI(
        lifespan=lifespan,
        title="MemOS",
        version="1",
        description="Memory for AI agents: the MemOS facade over HTTP. Every response is an "
        "envelope {code, message, data}. Authenticate with `Authorization: Token <key>`.",
    )
    app.state.keys, app.state.tenants, app.state.limits = keys, tenants, limits

    @app.exception_handler(MemosError)
    async def _memos_error(request: Any, exc: MemosError) -> Any:
        if exc.code >= 500:
            log.warning("%s %s failed: %s", request.method, request.url.path, exc)
        # A store busy past its timeout is worth retrying soon (MemOSClient honours this).
        headers = {"Retry-After": "1"} if exc.code == 503 else None
        return JSONResponse(_error_body(exc), status_code=exc.code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Any, exc: Any) -> Any:
        parts = []
        for err in exc.errors()[:5]:
            if err.get("type") == "json_invalid":
                detail = (err.get("ctx") or {}).get("error", "")
                parts.append(
                    f"the body is not valid JSON ({detail})" if detail else "the body is not valid JSON"
                )
                continue
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{where or 'body'}: {msg}")
        body = {**_error_body(InvalidInputError("; ".join(parts) or "invalid request")), "code": 422}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Any, exc: Any) -> Any:
        name = _HTTP_ERRORS.get(
            exc.status_code, "RequestError" if exc.status_code < 500 else "RuntimeFailure"
        )
        body = {"code": exc.status_code, "message": str(exc.detail), "data": None, "error": name}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Any, exc: Exception) -> Any:
        log.exception("%s %s crashed", request.method, request.url.path)
        body = {"code": 500, "message": "internal error", "data": None, "error": "RuntimeFailure"}
        return JSONResponse(body, status_code=500)

    def tenant_of(
        request: Request,
        authorization: str | None = fastapi.Security(_api_key_header()),
    ) -> MemOS:
        # The gate authenticated the key before the body was read; ``authorization`` is
        # declared only so that the OpenAPI schema names the scheme.
        tenant = request.scope.get("state", {}).get("memos_tenant")
        if tenant is None:
            raise StarletteHTTPException(401, _UNAUTHORIZED, headers={"WWW-Authenticate": "Token"})
        return tenants.get(tenant)

    Tenant = fastapi.Depends(tenant_of)
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorEnvelope} for code in (400, 401, 403, 404, 409, 413, 422, 500, 501, 503)
    }

    KB = "knowledgebases"

    def route(method: str, path: str, model: Any, tag: str) -> Any:
        return getattr(app, method)(path, response_model=model, responses=errors, tags=[tag])

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, Any]:
        return {"code": 200, "message": "ok", "data": {"status": "ok"}}

    @route("post", "/v1/memories/add_message", Envelope[AddData], "memories")
    def add_message(
        body: AddMessageRequest,
        mem: MemOS = Tenant,
        idempotency_key: str | None = fastapi.Header(default=None, max_length=200),
    ) -> Any:
        """Add chat messages (fast stage now; the fine stage runs in the background). With an
        ``Idempotency-Key`` header a retried add returns the first add's answer and stores
        nothing twice."""
        args = body.model_dump(exclude={"messages"})
        # The messages as the caller sent them (no defaults filled in), so that a retried add
        # is the same request to the idempotency check.
        messages = [m.model_dump(exclude_unset=True) for m in body.messages]
        return mem.add_message(messages, idempotency_key=idempotency_key, **args)

    @route("post", "/v1/memories/search", Envelope[SearchData], "memories")
    def search_memory(body: SearchRequest, mem: MemOS = Tenant) -> Any:
        return mem.search_memory(body.query, **body.model_dump(exclude={"query"}))

    @route("get", "/v1/tasks/{task_id}", Envelope[list[Task]], "tasks")
    def get_task_status(task_id: str, mem: MemOS = Tenant) -> Any:
        return mem.get_task_status(task_id)

    @route("get", "/v1/memories/{memory_id}", Envelope[MemoryItem], "memories")
    def get_memory(memory_id: str, user_id: str | None = None, mem: MemOS = Tenant) -> Any:
        return mem.get_memory(memory_id, user_id=user_id)

    @route("post", "/v1/memories/list", Envelope[Page], "memories")
    def list_memories(body: ListRequest, mem: MemOS = Tenant) -> Any:
        return mem.list_memories(body.user_id, **body.model_dump(exclude={"user_id"}))

    @route("post", "/v1/memories/{memory_id}/update", Envelope[MemoryItem], "memories")
    def update_memory(memory_id: str, body: UpdateRequest, mem: MemOS = Tenant) -> Any:
        return mem.update_memory(memory_id, **body.model_dump())

    @route("post", "/v1/memories/delete", Envelope[dict[str, int]], "memories")
    def delete_memory(body: DeleteRequest, mem: MemOS = Tenant) -> Any:
        return mem.delete_memory(body.memory_ids, **body.model_dump(exclude={"memory_ids"}))

    @route("post", "/v1/feedback", Envelope[dict[str, Any]], "memories")
    def add_feedback(body: FeedbackRequest, mem: MemOS = Tenant) -> Any:
        args = body.model_dump(exclude={"user_id", "conversation_id", "feedback_content"})
        return mem.add_feedback(body.user_id, body.conversation_id, body.feedback_content, **args)

    @route("post", "/v1/memories/add_memory", Envelope[MemoryItem], "memories")
    def add_memory(body: AddMemoryRequest, mem: MemOS = Tenant) -> Any:
        """Store one memory as given (a tool result, a note): searchable at once, no fine stage."""
        return mem.add_memory(body.memory, **body.model_dump(exclude={"memory"}))

    @route("post", "/v1/memories/{memory_id}/rollback", Envelope[MemoryItem], "memories")
    def rollback_memory(memory_id: str, body: RollbackRequest, mem: MemOS = Tenant) -> Any:
        return mem.rollback_memory(memory_id, body.version, user_id=body.user_id)

    @route("get", "/v1/working_memory", Envelope[list[MemoryItem]], "memories")
    def get_working_memory(user_id: str, conversation_id: str, mem: MemOS = Tenant) -> Any:
        return mem.get_working_memory(user_id, conversation_id)

    @route("post", "/v1/cubes/share", Envelope[dict[str, str]], "cubes")
    def share_cube(body: ShareRequest, mem: MemOS = Tenant) -> Any:
        """Let another user of this tenant read (or write) a cube."""
        return mem.share_cube(body.cube_id, body.with_user_id, body.mode, user_id=body.user_id)

    @route("post", "/v1/cubes/unshare", Envelope[bool], "cubes")
    def unshare_cube(body: UnshareRequest, mem: MemOS = Tenant) -> Any:
        return mem.unshare_cube(body.cube_id, body.with_user_id, user_id=body.user_id)

    @route("get", "/v1/shares", Envelope[dict[str, list[dict[str, Any]]]], "cubes")
    def list_shares(user_id: str, mem: MemOS = Tenant) -> Any:
        return mem.list_shares(user_id)

    @route("get", "/v1/stats", Envelope[dict[str, Any]], "meta")
    def stats(mem: MemOS = Tenant) -> Any:
        """The tenant's counts per cube and status, tasks per status, size, forms."""
        return Envelope(data=mem.stats())

    @route("post", "/v1/knowledgebases", Envelope[dict[str, Any]], KB)
    def create_knowledgebase(body: CreateKnowledgebaseRequest, mem: MemOS = Tenant) -> Any:
        return mem.create_knowledgebase(body.user_id, **body.model_dump(exclude={"user_id"}))

    @route("get", "/v1/knowledgebases", Envelope[list[dict[str, Any]]], KB)
    def list_knowledgebases(user_id: str, mem: MemOS = Tenant) -> Any:
        return mem.list_knowledgebases(user_id)

    @route("post", "/v1/knowledgebases/{kb_id}/documents", Envelope[dict[str, Any]], KB)
    def add_document(kb_id: str, body: AddDocumentRequest, mem: MemOS = Tenant) -> Any:
        """Add a document: ``content_base64`` (PDF, DOCX, HTML...) or ``text``, named by
        ``filename`` (its extension picks the reader)."""
        if (body.content_base64 is None) == (body.text is None):
            raise InvalidInputError("give exactly one of content_base64 and text")
        if body.text is not None:
            data = body.text.encode()
        else:
            try:
                data = base64.b64decode(body.content_base64 or "", validate=True)
            except ValueError as exc:
                raise InvalidInputError(f"content_base64 is not valid base64: {exc}") from exc
        if len(data) > limits.max_document_bytes:
            raise PayloadTooLargeError(f"document over {limits.max_document_bytes} bytes")
        return mem.add_document(
            kb_id,
            data,
            user_id=body.user_id,
            filename=body.filename,
            chunk_size=body.chunk_size,
            chunk_overlap=body.chunk_overlap,
            tags=body.tags,
        )

    @route("get", "/v1/knowledgebases/{kb_id}/documents", Envelope[list[dict[str, Any]]], KB)
    def list_documents(kb_id: str, user_id: str, mem: MemOS = Tenant) -> Any:
        return mem.list_documents(kb_id, user_id=user_id)

    @route(
        "delete", "/v1/knowledgebases/{kb_id}/documents/{doc_id}", Envelope[dict[str, int]], "knowledgebases"
    )
    def delete_document(kb_id: str, doc_id: str, user_id: str, mem: MemOS = Tenant) -> Any:
        return mem.delete_document(kb_id, doc_id, user_id=user_id)

    @route("delete", "/v1/knowledgebases/{kb_id}", Envelope[dict[str, int]], KB)
    def delete_knowledgebase(kb_id: str, user_id: str, mem: MemOS = Tenant) -> Any:
        return mem.delete_knowledgebase(kb_id, user_id=user_id)

    app.add_middleware(_Gate, keys=keys, limit=limits.max_body_bytes)
    return app


def serve(
    root: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Run the server until interrupted (``memos serve``)."""
    try:
        import uvicorn
    except ImportError as exc:
        raise MissingDependencyError("uvicorn", "server") from exc
    app = create_app(root, **options)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
