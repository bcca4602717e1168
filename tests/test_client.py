"""MemOSClient: retries, idempotency, configuration and errors.

The retry and error-mapping logic is tested on ``httpx.MockTransport`` (a scripted server);
everything that needs the real thing (a retried add stored once, keys refused, the README
example) runs against a real ``memos serve`` subprocess (:class:`MemosServer`).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from memos_core import (
    FilterError,
    InvalidInputError,
    MemoryNotFoundError,
    MissingDependencyError,
    NotFoundError,
    NotSupportedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RequestError,
    RuntimeFailure,
    StoreBusyError,
    TaskNotFoundError,
)
from memos_core.client import AuthenticationError, MemOSClient
from memos_core.testing import MemosServer

README = Path(__file__).resolve().parent.parent / "README.md"
MSG = [{"role": "user", "content": "I live in Paris", "chat_time": "2024-05-08T10:00:00+00:00"}]
ADD_OK = {"code": 200, "message": "ok", "data": {"task_id": "t1", "memory_ids": ["a"], "status": "queued"}}

# ----------------------------------------------------------------------------- scripted server

Handler = Callable[[httpx.Request], httpx.Response]


class Script:
    """A MockTransport that answers with ``responses`` in turn and records every request."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def client(self, **kwargs: Any) -> MemOSClient:
        kwargs.setdefault("backoff", 0.0)
        return MemOSClient("http://memos.test", "k1", transport=httpx.MockTransport(self), **kwargs)


def error(status: int, name: str, message: str = "nope", **headers: str) -> httpx.Response:
    body = {"code": status, "message": message, "data": None, "error": name}
    return httpx.Response(status, json=body, headers=headers)


def test_retries_a_503_then_succeeds() -> None:
    """A refused request (503, 429) is retried; look at ``_REFUSED`` and ``_request`` if not."""
    script = Script(
        error(503, "StoreBusyError", "busy"),
        error(429, "RequestError", "slow down"),
        httpx.Response(200, json=ADD_OK),
    )
    r = script.client().add_message(MSG, user_id="u1")
    assert r.data.task_id == "t1" and r.data.memory_ids == ["a"]
    assert len(script.requests) == 3


def test_gives_up_after_max_retries_with_the_servers_error() -> None:
    script = Script(error(503, "StoreBusyError", "store busy"))
    with pytest.raises(StoreBusyError, match="store busy") as info:
        script.client(max_retries=2).search_memory("q", user_id="u1")
    assert info.value.code == 503
    assert len(script.requests) == 3


def test_retry_after_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr("tenacity.nap.time.sleep", waits.append)
    script = Script(error(429, "RequestError", **{"Retry-After": "2"}), httpx.Response(200, json=ADD_OK))
    script.client().add_message(MSG, user_id="u1")
    assert waits == [2.0]


@pytest.mark.parametrize(
    ("status", "name", "exc"),
    [
        (400, "InvalidInputError", InvalidInputError),
        (404, "MemoryNotFoundError", MemoryNotFoundError),
        (409, "ConflictError", RuntimeFailure),
        (413, "PayloadTooLargeError", PayloadTooLargeError),
        (422, "InvalidInputError", InvalidInputError),
    ],
)
def test_no_retry_on_4xx(status: int, name: str, exc: type[Exception]) -> None:
    """A request the server judged wrong fails the same way again: one attempt only."""
    script = Script(error(status, name, "bad"))
    with pytest.raises(exc, match="bad"):
        script.client().add_message(MSG, user_id="u1")
    assert len(script.requests) == 1


def test_the_idempotency_key_is_the_same_across_retries_and_new_per_call() -> None:
    script = Script(
        error(503, "StoreBusyError"), error(500, "RuntimeFailure"), httpx.Response(200, json=ADD_OK)
    )
    client = script.client()
    client.add_message(MSG, user_id="u1")
    keys = [r.headers["Idempotency-Key"] for r in script.requests]
    assert len(keys) == 3 and len(set(keys)) == 1
    assert re.fullmatch(r"[0-9a-f-]{36}", keys[0])
    client.add_message(MSG, user_id="u1")
    assert script.requests[-1].headers["Idempotency-Key"] != keys[0]
    client.add_message(MSG, user_id="u1", idempotency_key="order-42")
    assert script.requests[-1].headers["Idempotency-Key"] == "order-42"


def test_writes_that_are_not_idempotent_are_not_repeated_after_the_server_may_have_acted() -> None:
    """An update retried after a 500 or a lost answer could make two versions; a 503 or a
    connection never opened is safe to retry for every request."""
    item_ok = error(500, "RuntimeFailure", "boom")
    script = Script(item_ok)
    with pytest.raises(RuntimeFailure, match="boom"):
        script.client().update_memory("m1", memory="x")
    assert len(script.requests) == 1

    script = Script(httpx.ReadError("connection reset"))
    with pytest.raises(RuntimeFailure, match="connection reset") as info:
        script.client().delete_memory(["m1"])
    assert isinstance(info.value.__cause__, httpx.ReadError)
    assert len(script.requests) == 1

    script = Script(
        error(503, "StoreBusyError"),
        httpx.Response(200, json={"code": 200, "message": "ok", "data": {"deleted": 1}}),
    )
    assert script.client().delete_memory(["m1"]).data == {"deleted": 1}
    assert len(script.requests) == 2


def test_connection_errors_are_retried_then_a_runtime_failure() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.Response(200, json=ADD_OK))
    assert script.client().add_message(MSG, user_id="u1").data.task_id == "t1"
    assert len(script.requests) == 2

    script = Script(httpx.ConnectError("refused"))
    with pytest.raises(RuntimeFailure, match="cannot reach") as info:
        script.client(max_retries=1).get_task_status("t1")
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(script.requests) == 2


@pytest.mark.parametrize(
    ("status", "name", "exc"),
    [
        (404, "MemoryNotFoundError", MemoryNotFoundError),
        (404, "TaskNotFoundError", TaskNotFoundError),
        (404, "NotFoundError", NotFoundError),
        (403, "PermissionDeniedError", PermissionDeniedError),
        (413, "PayloadTooLargeError", PayloadTooLargeError),
        (401, "AuthenticationError", AuthenticationError),
        (401, "SomethingElse", AuthenticationError),
        (405, "MethodNotAllowed", RequestError),
        (418, "Teapot", RequestError),
        (501, "NotSupportedError", NotSupportedError),
        (500, "RuntimeFailure", RuntimeFailure),
    ],
)
def test_error_mapping(status: int, name: str, exc: type[Exception]) -> None:
    """The class the server names, with its message and the HTTP status as ``code``."""
    script = Script(error(status, name, "the server says so"))
    with pytest.raises(exc, match="the server says so") as info:
        script.client(max_retries=0).get_memory("m1")
    assert type(info.value) is exc
    assert info.value.code == status  # type: ignore[attr-defined]


def test_error_mapping_keeps_messages_as_sent() -> None:
    script = Script(error(400, "FilterError", "unknown operator 'between' (at $.and[0].age)"))
    with pytest.raises(FilterError) as info:
        script.client().search_memory("q", user_id="u1", filter={"and": [{"age": {"between": 1}}]})
    assert str(info.value) == "unknown operator 'between' (at $.and[0].age)"
    assert info.value.path == "$.and[0].age"

    script = Script(httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(RuntimeFailure, match="HTTP 502"):
        script.client(max_retries=1).list_memories("u1")
    assert len(script.requests) == 2  # a read: retried on any 5xx


def test_base_url_and_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMOS_BASE_URL", raising=False)
    monkeypatch.delenv("MEMOS_API_KEY", raising=False)
    with pytest.raises(InvalidInputError, match="MEMOS_BASE_URL"):
        MemOSClient()
    monkeypatch.setenv("MEMOS_BASE_URL", "http://env.test:9000/v1/")
    with pytest.raises(InvalidInputError, match="MEMOS_API_KEY"):
        MemOSClient()
    monkeypatch.setenv("MEMOS_API_KEY", "mk_env")
    script = Script(httpx.Response(200, json={"code": 200, "message": "ok", "data": []}))
    with MemOSClient(transport=httpx.MockTransport(script)) as client:
        assert client.list_knowledgebases("u 1").data == []
    (request,) = script.requests
    assert str(request.url) == "http://env.test:9000/v1/knowledgebases?user_id=u+1"
    assert request.headers["Authorization"] == "Token mk_env"
    # Explicit arguments win over the environment.
    with MemOSClient("http://arg.test", "mk_arg", transport=httpx.MockTransport(script)) as client:
        client.list_knowledgebases("u1")
    assert str(script.requests[-1].url).startswith("http://arg.test/v1/")
    assert script.requests[-1].headers["Authorization"] == "Token mk_arg"


def test_ids_stay_one_path_segment() -> None:
    """'?' and '#' are escaped; '/' is refused before sending (servers decode %2F before
    routing, so an id with one would reach another route)."""
    script = Script(error(404, "MemoryNotFoundError"), error(404, "MemoryNotFoundError"))
    with pytest.raises(MemoryNotFoundError):
        script.client().get_memory("..x?y#z", user_id="u1")
    assert script.requests[0].url.raw_path == b"/v1/memories/..x%3Fy%23z?user_id=u1"
    for call in (
        lambda c: c.get_memory("../tasks/x"),
        lambda c: c.delete_knowledgebase("kb/documents/d1", user_id="u1"),
        lambda c: c.get_task_status("a/b"),
    ):
        with pytest.raises(InvalidInputError, match="/"):
            call(script.client())
    assert len(script.requests) == 1


def test_header_values_are_checked_before_sending() -> None:
    """API keys and idempotency keys travel in headers: non-ASCII or control characters are
    the caller's mistake, reported at once instead of retried as transport errors."""
    with pytest.raises(InvalidInputError, match="api_key"):
        MemOSClient("http://127.0.0.1:1", api_key="mk_é")
    script = Script(error(500, "RuntimeFailure"))
    for bad in ("clé", "a\nb"):
        with pytest.raises(InvalidInputError, match="idempotency_key"):
            script.client().add_message([{"role": "user", "content": "x"}], user_id="u", idempotency_key=bad)
    assert script.requests == []


def test_add_document_sends_the_bytes_and_the_files_name(tmp_path: Path) -> None:
    doc = tmp_path / "notes.md"
    doc.write_bytes(b"# Notes\n\nThe launch is on Friday.")
    script = Script(httpx.Response(200, json={"code": 200, "message": "ok", "data": {"doc_id": "d"}}))
    client = script.client()
    client.add_document("kb1", doc, user_id="u1", tags=["x"])
    client.add_document("kb1", str(doc), user_id="u1", filename="other.txt")
    client.add_document("kb1", b"raw", user_id="u1", filename="raw.txt")
    bodies = [json.loads(r.content) for r in script.requests]
    assert [b["filename"] for b in bodies] == ["notes.md", "other.txt", "raw.txt"]
    assert base64.b64decode(bodies[0]["content_base64"]) == doc.read_bytes()
    assert bodies[0]["tags"] == ["x"] and bodies[0]["chunk_size"] == 800
    with pytest.raises(InvalidInputError, match="filename"):
        client.add_document("kb1", b"raw", user_id="u1")
    with pytest.raises(InvalidInputError, match="cannot read"):
        client.add_document("kb1", tmp_path / "missing.pdf", user_id="u1")


def test_without_httpx_the_package_imports_and_the_client_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(MissingDependencyError, match=r"memos-suite\[server\]"):
        MemOSClient("http://x.test", "k")
    code = (
        "import sys; sys.modules['httpx'] = None; import memos_core; print(memos_core.MemOSClient.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "MemOSClient"


# ----------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemosServer]:
    with MemosServer(tmp_path_factory.mktemp("srv"), tenants=("acme", "globex", "initech")) as srv:
        yield srv


class LoseFirstAnswer(httpx.BaseTransport):
    """Sends each request to the server, but loses the first answer (a connection reset
    after the server acted), as a flaky network would."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = self.inner.handle_request(request)
        if len(self.sent) == 1:
            response.read()
            response.close()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


@pytest.mark.slow
def test_a_retried_add_is_stored_once(server: MemosServer) -> None:
    """The add reached the server, its answer was lost, the client retried with the same
    Idempotency-Key: the server answers with the first add and stores nothing twice."""
    turns = [
        {"role": "user", "content": "My sister is called Ines", "chat_time": "2024-05-08T10:00:00Z"},
        {"role": "assistant", "content": "Nice name!", "chat_time": "2024-05-08T10:00:05Z"},
    ]
    lossy = LoseFirstAnswer()
    with MemOSClient(server.base_url, server.keys["acme"], transport=lossy, backoff=0.0) as client:
        r = client.add_message(turns, user_id="idem-lossy", async_mode=False)
        assert len(lossy.sent) == 2
        assert lossy.sent[0].headers["Idempotency-Key"] == lossy.sent[1].headers["Idempotency-Key"]
        lossy_page = client.list_memories("idem-lossy").data
    with MemOSClient(server.base_url, server.keys["acme"]) as client:
        client.add_message(turns, user_id="idem-once", async_mode=False)
        once_page = client.list_memories("idem-once").data
    assert len(r.data.memory_ids) == 2
    assert lossy_page.total == once_page.total  # what one add stores, not two adds
    assert sorted(i.memory for i in lossy_page.items) == sorted(i.memory for i in once_page.items)
    assert set(r.data.memory_ids) <= {i.id for i in lossy_page.items}


@pytest.mark.slow
def test_wrong_missing_and_revoked_keys_are_authentication_errors(server: MemosServer) -> None:
    with MemOSClient(server.base_url, "mk_nothing_wrong", max_retries=0) as client:
        with pytest.raises(AuthenticationError, match="API key") as info:
            client.list_knowledgebases("u1")
        assert info.value.code == 401
        assert isinstance(info.value, PermissionDeniedError)

    inner = httpx.HTTPTransport()

    def strip_key(request: httpx.Request) -> httpx.Response:
        del request.headers["Authorization"]
        return inner.handle_request(request)

    with (
        inner,
        MemOSClient(server.base_url, "ignored", transport=httpx.MockTransport(strip_key)) as client,
        pytest.raises(AuthenticationError),
    ):
        client.search_memory("anything", user_id="u1")

    with MemOSClient(server.base_url, server.keys["initech"]) as client:
        assert client.list_knowledgebases("u1").data == []
        server.revoke("initech")
        with pytest.raises(AuthenticationError, match="revoked"):
            client.list_knowledgebases("u1")


@pytest.mark.slow
def test_the_servers_errors_arrive_as_our_classes(server: MemosServer) -> None:
    with MemOSClient(server.base_url, server.keys["acme"]) as client:
        with pytest.raises(MemoryNotFoundError, match="no memory 'missing'"):
            client.get_memory("missing", user_id="err-user")
        with pytest.raises(TaskNotFoundError):
            client.get_task_status("missing")
        with pytest.raises(FilterError):
            client.search_memory("q", user_id="err-user", filter={"tags": {"between": [1, 2]}})
        with pytest.raises(PayloadTooLargeError):
            client.search_memory("q", user_id="err-user", top_k=10**6)
        with pytest.raises(InvalidInputError) as info:
            client.add_message([], user_id="err-user")
        assert info.value.code == 422
        r = client.add_message(MSG, user_id="err-user", async_mode=False)
        mid = r.data.memory_ids[0]
        with pytest.raises(PermissionDeniedError):
            client.get_memory(mid, user_id="someone-else")
    # Another tenant: another database.
    with MemOSClient(server.base_url, server.keys["globex"]) as other, pytest.raises(MemoryNotFoundError):
        other.get_memory(mid, user_id="err-user")


@pytest.mark.slow
def test_the_readme_example_runs_with_the_client(
    server: MemosServer, capsys: pytest.CaptureFixture[str]
) -> None:
    block = re.search(r"```python\n(.*?)```", README.read_text("utf-8"), re.S)
    assert block is not None
    code = block.group(1)
    assert 'MemOS("./memos-data")' in code
    code = code.replace("import MemOS\n", "import MemOSClient\n")
    code = code.replace(
        'MemOS("./memos-data")', f"MemOSClient({server.base_url!r}, api_key={server.keys['globex']!r})"
    )
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"\b(queued|running|completed)\b", out)
    lines = [x for x in out.splitlines() if x.endswith("']")]
    assert [x.rsplit(" ", 1)[-1] for x in lines] == ["['m1']", "['m2']"]
