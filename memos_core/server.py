"""The MemOS API over HTTP: ``memos serve`` (FastAPI + uvicorn, extra ``server``).

Every facade method is a route that answers the seed's envelope ``{code, message, data}``
(errors too: ``{code, message, data: null, error: "<ExceptionClass>"}`` with the same HTTP
status). ``GET /healthz`` needs no key; everything else needs ``Authorization: Token <key>``
(or ``Bearer <key>``).

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
import hashlib
import logging
import re
import secrets
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .embedders import CachingEmbedder, SentenceTransformerEmbedder
from .errors import InvalidInputError, MemosError, MissingDependencyError, PayloadTooLargeError
from .memos import MemOS
from .ports import Embedder
from .reader import Limits
from .schema import AddData, Envelope, MemoryItem, Page, SearchData, Task, utcnow
from .stores.sqlite import SqliteStore

__all__ = ["KeyStore", "ServerLimits", "TenantRegistry", "create_app"]

log = logging.getLogger(__name__)

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEYS, _KEY_IDS = "apikey", "apikey_id"


def _check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise InvalidInputError(
            f"tenant must be 1-64 characters of letters, digits, '_', '.', '-' (not {tenant!r})"
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
        key_id = secrets.token_hex(6)
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


class TenantRegistry:
    """One MemOS per tenant under ``<root>/tenants/<tenant>/``, opened on first use (and all
    existing ones by :meth:`open_existing`), sharing one embedder.

    Args:
        root: the server's data folder.
        embedder: shared by every tenant (default: the packaged MiniLM, cached by text).
        memos_options: passed to every :class:`MemOS` (``limits``, ``llm``, ``scheduler``...).
    """

    def __init__(self, root: str | Path, *, embedder: Embedder | None = None, **memos_options: Any) -> None:
        self.root = Path(root) / "tenants"
        self.root.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder or CachingEmbedder(SentenceTransformerEmbedder())
        self.options = memos_options
        self._open: dict[str, MemOS] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str) -> MemOS:
        _check_tenant(tenant)
        with self._lock:
            mem = self._open.get(tenant)
            if mem is None:
                mem = MemOS(self.root / tenant, embedder=self.embedder, **self.options)
                self._open[tenant] = mem
            return mem

    def open_existing(self) -> list[str]:
        """Open every tenant that has a folder, so its queued background tasks resume."""
        names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and _TENANT.match(p.name))
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
    max_document_bytes: int = 6 * 2**20
    limits: Limits = field(default_factory=Limits)


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddMessageRequest(_Req):
    messages: list[dict[str, Any]] = Field(min_length=1)
    user_id: str
    conversation_id: str | None = None
    agent_id: str | None = None
    app_id: str | None = None
    tags: list[str] | None = None
    info: dict[str, Any] | None = None
    async_mode: bool = True


class SearchRequest(_Req):
    query: str
    user_id: str
    conversation_id: str | None = None
    agent_id: str | None = None
    filter: dict[str, Any] | None = None
    knowledgebase_ids: list[str] | None = None
    cube_ids: list[str] | None = None
    top_k: int = 10


class ListRequest(_Req):
    user_id: str
    filter: dict[str, Any] | None = None
    conversation_id: str | None = None
    agent_id: str | None = None
    limit: int = 50
    offset: int = 0


class UpdateRequest(_Req):
    memory: str | None = None
    tags: list[str] | None = None
    info: dict[str, Any] | None = None
    user_id: str | None = None


class DeleteRequest(_Req):
    memory_ids: list[str] | None = None
    user_id: str | None = None
    filter: dict[str, Any] | None = None
    hard: bool = False


class FeedbackRequest(_Req):
    user_id: str
    conversation_id: str | None = None
    feedback_content: str
    feedback_time: str | None = None
    agent_id: str | None = None
    memory_ids: list[str] | None = None


class CreateKnowledgebaseRequest(_Req):
    user_id: str
    kb_id: str | None = None
    name: str | None = None
    description: str = ""


class AddDocumentRequest(_Req):
    user_id: str
    filename: str
    content_base64: str | None = None
    text: str | None = None
    chunk_size: int = 800
    chunk_overlap: int | None = None
    tags: list[str] | None = None


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


class _BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is refused with 413 before the app reads
    it (by Content-Length, and by counting for chunked bodies)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(send)
            return
        seen = 0

        async def counted() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._too_large(send)

    async def _too_large(self, send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        import json

        body = json.dumps(_error_body(PayloadTooLargeError(f"request body over {self.limit} bytes"))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def create_app(
    root: str | Path,
    *,
    keys: KeyStore | None = None,
    tenants: TenantRegistry | None = None,
    limits: ServerLimits | None = None,
    embedder: Embedder | None = None,
    open_tenants: bool = True,
    **memos_options: Any,
) -> Any:
    """The FastAPI app serving the data folder ``root``.

    Args:
        root: the data folder (``control/`` holds keys, ``tenants/<name>/`` each tenant).
        keys / tenants: injected instead of opened from ``root``.
        limits: request limits.
        embedder: shared by every tenant's MemOS.
        open_tenants: open every existing tenant now, so their queued tasks resume.
        memos_options: passed to every tenant's :class:`MemOS` (``llm``, ``scheduler``...).
    """
    fastapi = _fastapi()
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    limits = limits or ServerLimits()
    keys = keys or KeyStore(Path(root) / "control")
    tenants = tenants or TenantRegistry(
        root, embedder=embedder, limits=limits.limits, allow_local_images=False, **memos_options
    )
    if open_tenants:
        tenants.open_existing()

    app = fastapi.FastAPI(
        title="MemOS",
        version="1",
        description="Memory for AI agents: the MemOS facade over HTTP. Every response is an "
        "envelope {code, message, data}. Authenticate with `Authorization: Token <key>`.",
    )
    app.state.keys, app.state.tenants, app.state.limits = keys, tenants, limits
    idem_lock = threading.Lock()

    @app.exception_handler(MemosError)
    async def _memos_error(request: Any, exc: MemosError) -> Any:
        if exc.code >= 500:
            log.warning("%s %s failed: %s", request.method, request.url.path, exc)
        return JSONResponse(_error_body(exc), status_code=exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Any, exc: Any) -> Any:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where or 'body'}: {err.get('msg')}")
        body = {**_error_body(InvalidInputError("; ".join(parts) or "invalid request")), "code": 422}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(_TooLarge)
    async def _too_large(request: Any, exc: Exception) -> Any:
        return JSONResponse(
            _error_body(PayloadTooLargeError(f"request body over {limits.max_body_bytes} bytes")),
            status_code=413,
        )

    @app.exception_handler(Exception)
    async def _crash(request: Any, exc: Exception) -> Any:
        log.exception("%s %s crashed", request.method, request.url.path)
        body = {"code": 500, "message": "internal error", "data": None, "error": "RuntimeFailure"}
        return JSONResponse(body, status_code=500)

    def tenant_of(authorization: str | None = fastapi.Header(default=None)) -> MemOS:
        token = None
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() in ("token", "bearer") and value.strip():
                token = value.strip()
        tenant = keys.verify(token) if token else None
        if tenant is None:
            raise fastapi.HTTPException(
                status_code=401,
                detail="missing, unknown or revoked API key (Authorization: Token <key>)",
                headers={"WWW-Authenticate": "Token"},
            )
        return tenants.get(tenant)

    @app.exception_handler(fastapi.HTTPException)
    async def _http(request: Any, exc: Any) -> Any:
        name = {401: "AuthenticationError", 404: "NotFoundError", 405: "MethodNotAllowed"}.get(
            exc.status_code, "RequestError"
        )
        body = {"code": exc.status_code, "message": str(exc.detail), "data": None, "error": name}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    Tenant = fastapi.Depends(tenant_of)
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorEnvelope} for code in (400, 401, 403, 404, 409, 413, 422, 500, 503)
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
        if idempotency_key is None:
            return mem.add_message(body.messages, **args)
        with idem_lock:  # one add per key at a time in this process
            return mem.add_message(body.messages, idempotency_key=idempotency_key, **args)

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

    @app.on_event("shutdown")
    def _close() -> None:
        tenants.close()
        keys.close()

    if limits.max_body_bytes:
        app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)
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
