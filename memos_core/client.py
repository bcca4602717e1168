"""``MemOSClient``: the MemOS API over HTTP, with the same methods as :class:`~memos_core.MemOS`.

The client speaks to ``memos serve`` (see :mod:`memos_core.server`) with ``httpx`` (extra
``server``) and parses every answer into the same pydantic types the in-process facade
returns, so code written against :class:`~memos_core.MemOS` runs unchanged against a server::

    client = MemOSClient("http://127.0.0.1:8765", api_key="mk_...")   # or MEMOS_BASE_URL / MEMOS_API_KEY
    r = client.add_message([{"role": "user", "content": "I live in Paris"}], user_id="u1")
    client.search_memory("where does the user live", user_id="u1").data.memory_detail_list

Errors. The server names the exception class of every error (``{"error": "MemoryNotFoundError"}``);
the client raises that class of :mod:`memos_core.errors` with the server's message, and
``exc.code`` is the HTTP status. A missing, unknown or revoked key is an
:class:`AuthenticationError` (401, a :class:`~memos_core.errors.PermissionDeniedError`). A
server that cannot be reached, after the retries, is a
:class:`~memos_core.errors.RuntimeFailure` raised from the ``httpx`` error.

Retries. A request the server refused without acting on it (429, 503, or a connection that
could not be opened) is retried with exponential backoff, ``max_retries`` times, honouring
``Retry-After``. A request that is safe to repeat (reads, searches, a document upload, which
replaces its earlier import, and an add, which carries an ``Idempotency-Key``) is retried on
any 5xx but 501 and on any transport error too. The other writes (update, delete, feedback,
knowledge base creation) are not repeated after the server may have acted: a second update
would make a second version.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from . import errors as _errors
from .errors import (
    InvalidInputError,
    MemosError,
    MissingDependencyError,
    NotSupportedError,
    PermissionDeniedError,
    RequestError,
    RuntimeFailure,
)
from .retrieval import SearchMode
from .schema import AddData, Envelope, MemoryItem, Page, SearchData, Task

if TYPE_CHECKING:
    import httpx

__all__ = ["AuthenticationError", "MemOSClient"]

M = TypeVar("M", bound=BaseModel)


class AuthenticationError(PermissionDeniedError):
    """The server refused the API key: missing, malformed, unknown or revoked (HTTP 401)."""

    code = 401


#: The error classes a server may name, by name.
_ERROR_CLASSES: dict[str, type[MemosError]] = {
    name: cls
    for name in _errors.__all__
    if isinstance(cls := getattr(_errors, name), type) and issubclass(cls, MemosError)
}
_ERROR_CLASSES[AuthenticationError.__name__] = AuthenticationError

#: Statuses that mean "not acted on, try again later" for any request.
_REFUSED = frozenset({429, 503})


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:
        raise MissingDependencyError("httpx", "server") from exc
    return httpx


def _error_of(status: int, body: Any) -> MemosError:
    """The exception for an error answer: the class the server names, with its message."""
    name = body.get("error") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message:
        message = f"HTTP {status}"
    if status == 401:
        cls: type[MemosError] = AuthenticationError
    elif isinstance(name, str) and name in _ERROR_CLASSES:
        cls = _ERROR_CLASSES[name]
    elif status == 501:
        cls = NotSupportedError
    elif status == 404:
        cls = _errors.NotFoundError
    elif 400 <= status < 500:
        cls = RequestError
    else:
        cls = RuntimeFailure
    # Built around the server's message as it is: constructors such as FilterError's and
    # MissingDependencyError's would format it a second time.
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    if isinstance(exc, _errors.FilterError):
        at = re.search(r"\(at ([^)]*)\)$", message)
        exc.path = at.group(1) if at else "$"
    if isinstance(exc, MissingDependencyError):
        exc.package, exc.extra = "", ""
    exc.code = status
    return exc


class _Transient(Exception):
    """A failed attempt worth another try (internal: never leaves the client)."""

    def __init__(self, error: BaseException, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class MemOSClient:
    """The MemOS API of a ``memos serve`` server, with the methods of :class:`~memos_core.MemOS`.

    Args:
        base_url: the server (``http://host:port``; a trailing ``/v1`` is accepted). Default:
            the environment variable ``MEMOS_BASE_URL``.
        api_key: the tenant's key (``memos keys create``). Default: ``MEMOS_API_KEY``.
        timeout: seconds per request.
        max_retries: further attempts for a request the server refused or could not take
            (see the module docstring for which requests are retried when).
        backoff: the first wait between attempts in seconds, doubled each time (at most 8 s).
        transport: an ``httpx`` transport to use instead of the network
            (``httpx.MockTransport`` in tests).
        http_client: a configured ``httpx.Client`` to use (its ``base_url`` and headers are
            left alone; :meth:`close` does not close it).

    Example:
        >>> with MemOSClient("http://127.0.0.1:8765", api_key="mk_...") as client:  # doctest: +SKIP
        ...     r = client.add_message([{"role": "user", "content": "hi"}], user_id="u1")
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff: float = 0.25,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        base_url = base_url if base_url is not None else os.environ.get("MEMOS_BASE_URL")
        api_key = api_key if api_key is not None else os.environ.get("MEMOS_API_KEY")
        if not base_url:
            raise InvalidInputError("MemOSClient needs base_url (or the environment variable MEMOS_BASE_URL)")
        if not api_key:
            raise InvalidInputError("MemOSClient needs api_key (or the environment variable MEMOS_API_KEY)")
        _check_header("api_key", api_key)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidInputError("max_retries must be an integer >= 0")
        if backoff < 0:
            raise InvalidInputError("backoff must be >= 0")
        hx = _httpx()
        self.base_url = re.sub(r"/v1/?$", "", base_url.rstrip("/"))
        self.max_retries = max_retries
        self.backoff = backoff
        self._headers = {"Authorization": f"Token {api_key}", "Accept": "application/json"}
        self._owns_http = http_client is None
        self._http: httpx.Client = http_client or hx.Client(timeout=timeout, transport=transport)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the connection pool (not an injected ``http_client``)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> MemOSClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemOSClient({self.base_url!r})"

    # ------------------------------------------------------------------ transport

    def _wait(self, state: RetryCallState) -> float:
        delay = float(min(self.backoff * 2 ** (state.attempt_number - 1), 8.0))
        outcome = state.outcome
        failure = outcome.exception() if outcome is not None else None
        if isinstance(failure, _Transient) and failure.retry_after is not None:
            delay = max(delay, min(failure.retry_after, 30.0))
        return delay

    def _request(
        self,
        model: type[M],
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        safe: bool,
    ) -> M:
        """One API call: the answer parsed as ``model``, or the server's error raised.

        ``safe``: the request may be repeated after the server might have acted on it."""
        httpx = _httpx()
        body = None if json is None else to_jsonable_python(json)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, _Transient)),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    try:
                        resp = self._http.request(
                            method,
                            self.base_url + path,
                            json=body,
                            params=query,
                            headers={**self._headers, **(headers or {})},
                        )
                    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                        raise _Transient(exc) from exc  # never reached the server
                    except httpx.LocalProtocolError as exc:  # a request we cannot even send
                        raise InvalidInputError(f"the request cannot be sent: {exc}") from exc
                    except httpx.TransportError as exc:
                        if safe:
                            raise _Transient(exc) from exc
                        raise
                    if resp.status_code < 400:
                        return model.model_validate(resp.json())
                    try:
                        answer = resp.json()
                    except ValueError:
                        answer = None
                    error = _error_of(resp.status_code, answer)
                    status = resp.status_code
                    if status in _REFUSED or (safe and status >= 500 and status != 501):
                        raise _Transient(error, _retry_after(resp.headers.get("Retry-After")))
                    raise error
        except _Transient as exc:
            if isinstance(exc.error, MemosError):
                raise exc.error from None
            raise RuntimeFailure(
                f"cannot reach the MemOS server at {self.base_url}: {exc.error}"
            ) from exc.error
        except httpx.TransportError as exc:
            raise RuntimeFailure(f"request to the MemOS server at {self.base_url} failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover - Retrying returns or raises

    # ------------------------------------------------------------------ memories

    def add_message(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        user_id: str,
        conversation_id: str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
        tags: Sequence[str] | None = None,
        info: Mapping[str, Any] | None = None,
        async_mode: bool = True,
        cube_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Envelope[AddData]:
        """Remember a conversation turn (or several); see :meth:`MemOS.add_message`.

        Every call carries an ``Idempotency-Key`` (``idempotency_key``, else a fresh UUID4
        reused by this call's retries), so a retried add never stores twice."""
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise InvalidInputError("messages must be a list of message objects")
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        _check_header("idempotency_key", key)
        body = _drop_none(
            messages=list(messages),
            user_id=user_id,
            conversation_id=conversation_id,
            agent_id=agent_id,
            app_id=app_id,
            tags=_list(tags),
            info=info,
            async_mode=async_mode,
            cube_id=cube_id,
        )
        return self._request(
            Envelope[AddData],
            "POST",
            "/v1/memories/add_message",
            json=body,
            headers={"Idempotency-Key": key},
            safe=True,
        )

    def search_memory(
        self,
        query: str,
        *,
        user_id: str,
        conversation_id: str | None = None,
        agent_id: str | None = None,
        filter: Mapping[str, Any] | None = None,
        knowledgebase_ids: Sequence[str] | None = None,
        cube_ids: Sequence[str] | None = None,
        top_k: int = 10,
        mode: SearchMode = "hybrid",
    ) -> Envelope[SearchData]:
        """Hybrid search over the user's memories (``mode="lexical"``: BM25 alone;
        ``"keyword"``: the plain BM25 ranking); see :meth:`MemOS.search_memory`."""
        body = _drop_none(
            query=query,
            user_id=user_id,
            conversation_id=conversation_id,
            agent_id=agent_id,
            filter=filter,
            knowledgebase_ids=_list(knowledgebase_ids),
            cube_ids=_list(cube_ids),
            top_k=top_k,
            # Sent only when not the default: a default search still works on a server that
            # predates the field (its request models forbid unknown fields).
            mode=None if mode == "hybrid" else mode,
        )
        return self._request(Envelope[SearchData], "POST", "/v1/memories/search", json=body, safe=True)

    def get_task_status(self, task_id: str) -> Envelope[list[Task]]:
        """``data[0].status`` is ``queued | running | completed | failed``."""
        return self._request(Envelope[list[Task]], "GET", f"/v1/tasks/{_seg(task_id)}", safe=True)

    def get_memory(self, memory_id: str, *, user_id: str | None = None) -> Envelope[MemoryItem]:
        """One memory by id, whatever its status; see :meth:`MemOS.get_memory`."""
        return self._request(
            Envelope[MemoryItem],
            "GET",
            f"/v1/memories/{_seg(memory_id)}",
            params={"user_id": user_id},
            safe=True,
        )

    def list_memories(
        self,
        user_id: str,
        *,
        filter: Mapping[str, Any] | None = None,
        conversation_id: str | None = None,
        agent_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Envelope[Page]:
        """A page of the user's memories, newest first; follow ``data.next_offset``."""
        body = _drop_none(
            user_id=user_id,
            filter=filter,
            conversation_id=conversation_id,
            agent_id=agent_id,
            limit=limit,
            offset=offset,
        )
        return self._request(Envelope[Page], "POST", "/v1/memories/list", json=body, safe=True)

    def update_memory(
        self,
        memory_id: str,
        *,
        memory: str | None = None,
        tags: Sequence[str] | None = None,
        info: Mapping[str, Any] | None = None,
        user_id: str | None = None,
    ) -> Envelope[MemoryItem]:
        """Change a memory's text, tags or info (a new version); see :meth:`MemOS.update_memory`."""
        body = _drop_none(memory=memory, tags=_list(tags), info=info, user_id=user_id)
        return self._request(
            Envelope[MemoryItem], "POST", f"/v1/memories/{_seg(memory_id)}/update", json=body, safe=False
        )

    def delete_memory(
        self,
        memory_ids: Sequence[str] | None = None,
        *,
        user_id: str | None = None,
        filter: Mapping[str, Any] | None = None,
        hard: bool = False,
    ) -> Envelope[dict[str, int]]:
        """Delete by ids, or a user's memories narrowed by ``filter``; see :meth:`MemOS.delete_memory`."""
        if isinstance(memory_ids, str):
            raise InvalidInputError("memory_ids must be a non-empty list of ids")
        body = _drop_none(memory_ids=_list(memory_ids), user_id=user_id, filter=filter, hard=hard)
        return self._request(Envelope[dict[str, int]], "POST", "/v1/memories/delete", json=body, safe=False)

    def add_feedback(
        self,
        user_id: str,
        conversation_id: str | None,
        feedback_content: str,
        *,
        feedback_time: str | datetime | None = None,
        agent_id: str | None = None,
        memory_ids: Sequence[str] | None = None,
        name: str | None = None,
    ) -> Envelope[dict[str, Any]]:
        """Correct memories from what the user says; see :meth:`MemOS.add_feedback`."""
        body = _drop_none(
            user_id=user_id,
            conversation_id=conversation_id,
            feedback_content=feedback_content,
            feedback_time=feedback_time.isoformat() if isinstance(feedback_time, datetime) else feedback_time,
            agent_id=agent_id,
            memory_ids=_list(memory_ids),
            name=name,
        )
        return self._request(Envelope[dict[str, Any]], "POST", "/v1/feedback", json=body, safe=False)

    # ------------------------------------------------------------------ knowledge bases

    def create_knowledgebase(
        self, user_id: str, *, kb_id: str | None = None, name: str | None = None, description: str = ""
    ) -> Envelope[dict[str, Any]]:
        """A knowledge base owned by ``user_id``; see :meth:`MemOS.create_knowledgebase`."""
        body = _drop_none(user_id=user_id, kb_id=kb_id, name=name, description=description)
        return self._request(Envelope[dict[str, Any]], "POST", "/v1/knowledgebases", json=body, safe=False)

    def list_knowledgebases(self, user_id: str) -> Envelope[list[dict[str, Any]]]:
        """Knowledge bases ``user_id`` owns or was granted."""
        return self._request(
            Envelope[list[dict[str, Any]]],
            "GET",
            "/v1/knowledgebases",
            params={"user_id": user_id},
            safe=True,
        )

    def add_document(
        self,
        kb_id: str,
        source: str | Path | bytes,
        *,
        user_id: str,
        filename: str | None = None,
        chunk_size: int = 800,
        chunk_overlap: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> Envelope[dict[str, Any]]:
        """Upload a PDF, DOCX, HTML, Markdown or text document into a knowledge base.

        ``source`` is a local path (read here and sent; ``filename`` defaults to its name) or
        the document's bytes (then ``filename``, whose extension picks the reader, is needed).
        Adding the same bytes again replaces the earlier import; see :meth:`MemOS.add_document`.
        """
        if isinstance(source, bytes):
            data = source
            if not filename:
                raise InvalidInputError(
                    "add_document needs filename= with bytes (its extension picks the reader)"
                )
        elif isinstance(source, (str, Path)):
            path = Path(source)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise InvalidInputError(f"cannot read document {str(path)!r}: {exc}") from exc
            filename = filename or path.name
        else:
            raise InvalidInputError("source must be a path or bytes")
        body = _drop_none(
            user_id=user_id,
            filename=filename,
            content_base64=base64.b64encode(data).decode("ascii"),
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            tags=_list(tags),
        )
        return self._request(
            Envelope[dict[str, Any]],
            "POST",
            f"/v1/knowledgebases/{_seg(kb_id)}/documents",
            json=body,
            safe=True,
        )

    def list_documents(self, kb_id: str, *, user_id: str) -> Envelope[list[dict[str, Any]]]:
        """The documents of a knowledge base."""
        return self._request(
            Envelope[list[dict[str, Any]]],
            "GET",
            f"/v1/knowledgebases/{_seg(kb_id)}/documents",
            params={"user_id": user_id},
            safe=True,
        )

    def delete_document(self, kb_id: str, doc_id: str, *, user_id: str) -> Envelope[dict[str, int]]:
        """Remove a document and all its chunks (hard delete)."""
        return self._request(
            Envelope[dict[str, int]],
            "DELETE",
            f"/v1/knowledgebases/{_seg(kb_id)}/documents/{_seg(doc_id)}",
            params={"user_id": user_id},
            safe=False,
        )

    def delete_knowledgebase(self, kb_id: str, *, user_id: str) -> Envelope[dict[str, int]]:
        """Remove a knowledge base, its documents, memories and grants (owner only)."""
        return self._request(
            Envelope[dict[str, int]],
            "DELETE",
            f"/v1/knowledgebases/{_seg(kb_id)}",
            params={"user_id": user_id},
            safe=False,
        )

    # ------------------------------------------------------------------ more of the facade

    def add_memory(
        self,
        memory: str,
        *,
        user_id: str,
        memory_type: str = "long_term",
        key: str | None = None,
        tags: Sequence[str] | None = None,
        info: Mapping[str, Any] | None = None,
        conversation_id: str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
        event_time: datetime | None = None,
        cube_id: str | None = None,
    ) -> Envelope[MemoryItem]:
        """Store one memory as given, searchable at once; see :meth:`MemOS.add_memory`
        (``sources`` is not served)."""
        body = _drop_none(
            memory=memory,
            user_id=user_id,
            memory_type=memory_type,
            key=key,
            tags=_list(tags),
            info=info,
            conversation_id=conversation_id,
            agent_id=agent_id,
            app_id=app_id,
            event_time=event_time,
            cube_id=cube_id,
        )
        return self._request(Envelope[MemoryItem], "POST", "/v1/memories/add_memory", json=body, safe=False)

    def rollback_memory(
        self, memory_id: str, version: int, *, user_id: str | None = None
    ) -> Envelope[MemoryItem]:
        """Restore an earlier version (as a new version); see :meth:`MemOS.rollback_memory`."""
        body = _drop_none(version=version, user_id=user_id)
        path = f"/v1/memories/{_seg(memory_id)}/rollback"
        return self._request(Envelope[MemoryItem], "POST", path, json=body, safe=False)

    def get_working_memory(self, user_id: str, conversation_id: str) -> Envelope[list[MemoryItem]]:
        """A conversation's working set; see :meth:`MemOS.get_working_memory`."""
        params = {"user_id": user_id, "conversation_id": conversation_id}
        return self._request(
            Envelope[list[MemoryItem]], "GET", "/v1/working_memory", params=params, safe=True
        )

    def share_cube(
        self,
        cube_id: str,
        with_user_id: str,
        mode: Literal["read", "write"] = "read",
        *,
        user_id: str | None = None,
    ) -> Envelope[dict[str, str]]:
        """Let another user of the tenant read (or write) a cube; see :meth:`MemOS.share_cube`."""
        body = _drop_none(cube_id=cube_id, with_user_id=with_user_id, mode=mode, user_id=user_id)
        return self._request(Envelope[dict[str, str]], "POST", "/v1/cubes/share", json=body, safe=True)

    def unshare_cube(self, cube_id: str, with_user_id: str, *, user_id: str | None = None) -> Envelope[bool]:
        """Take a grant back; see :meth:`MemOS.unshare_cube`."""
        body = _drop_none(cube_id=cube_id, with_user_id=with_user_id, user_id=user_id)
        return self._request(Envelope[bool], "POST", "/v1/cubes/unshare", json=body, safe=False)

    def list_shares(self, user_id: str) -> Envelope[dict[str, list[dict[str, Any]]]]:
        """Grants a user gave and received; see :meth:`MemOS.list_shares`."""
        model = Envelope[dict[str, list[dict[str, Any]]]]
        return self._request(model, "GET", "/v1/shares", params={"user_id": user_id}, safe=True)

    def stats(self) -> dict[str, Any]:
        """The tenant's counts per cube and status, tasks, size and forms; see :meth:`MemOS.stats`."""
        answer = self._request(Envelope[dict[str, Any]], "GET", "/v1/stats", safe=True)
        return answer.data


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _list(values: Sequence[str] | None) -> list[str] | str | None:
    """A list for the wire; a bare string stays a string so the server names the mistake."""
    if values is None or isinstance(values, str):
        return values
    return list(values)


def _seg(value: str) -> str:
    """One path segment: an id with ``?`` or ``#`` must not change the route, and one with
    ``/`` is refused (servers decode ``%2F`` before routing, so it would reach another route;
    no id the server makes contains one, and knowledge-base ids may not)."""
    from urllib.parse import quote

    if not isinstance(value, str) or not value:
        raise InvalidInputError("an id must be a non-empty string")
    if "/" in value:
        raise InvalidInputError(f"an id sent over HTTP cannot contain '/': {value!r}")
    return quote(value, safe="")


def _check_header(name: str, value: str) -> None:
    """Header values are printable ASCII; anything else is the caller's mistake, said now."""
    if not isinstance(value, str) or not value or not all(" " <= c <= "~" for c in value):
        raise InvalidInputError(f"{name} must be printable ASCII (it travels in an HTTP header)")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None  # an HTTP date: the backoff is used instead
