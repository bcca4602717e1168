"""The HTTP server (``memos_core.server``): auth, tenant isolation on every route, limits,
error envelopes, background tasks across a restart, and a bounded schemathesis run.

Most tests run the real app in-process with FastAPI's TestClient, a real KeyStore and real
tenant MemOS folders (hash embedder, inline scheduler so adds are deterministic). The restart
test runs a real ``memos serve`` subprocess (``memos_core.testing.MemosServer``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from memos_core import InvalidInputError, MemOS
from memos_core.reader import Limits
from memos_core.server import KeyStore, ServerLimits, create_app
from memos_core.testing import HashEmbedder, MemosServer

#: Every route of the API (method, path template): a new route must be added here, and so
#: to the auth and isolation tests below.
ROUTES = {
    ("POST", "/v1/memories/add_message"),
    ("POST", "/v1/memories/search"),
    ("GET", "/v1/tasks/{task_id}"),
    ("GET", "/v1/memories/{memory_id}"),
    ("POST", "/v1/memories/list"),
    ("POST", "/v1/memories/{memory_id}/update"),
    ("POST", "/v1/memories/delete"),
    ("POST", "/v1/feedback"),
    ("POST", "/v1/knowledgebases"),
    ("GET", "/v1/knowledgebases"),
    ("POST", "/v1/knowledgebases/{kb_id}/documents"),
    ("GET", "/v1/knowledgebases/{kb_id}/documents"),
    ("DELETE", "/v1/knowledgebases/{kb_id}/documents/{doc_id}"),
    ("DELETE", "/v1/knowledgebases/{kb_id}"),
    ("POST", "/v1/memories/add_memory"),
    ("POST", "/v1/memories/{memory_id}/rollback"),
    ("GET", "/v1/working_memory"),
    ("POST", "/v1/cubes/share"),
    ("POST", "/v1/cubes/unshare"),
    ("GET", "/v1/shares"),
    ("GET", "/v1/stats"),
}


class Api:
    """A TestClient bound to one key: ``api.post(path, json=...)`` returns the parsed body
    after checking that the HTTP status and the envelope's ``code`` agree."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client, self.key = client, key

    def call(self, method: str, path: str, *, status: int | None = None, **kwargs: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Token {self.key}", **kwargs.pop("headers", {})}
        resp = self.client.request(method, path, headers=headers, **kwargs)
        body: dict[str, Any] = resp.json()
        assert body["code"] == resp.status_code, body
        if status is not None:
            assert resp.status_code == status, body
        if resp.status_code >= 400:
            assert body["data"] is None and body["error"] and body["message"], body
        return body

    def get(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.call("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.call("DELETE", path, **kwargs)


class Server:
    def __init__(self, root: Path, limits: ServerLimits | None = None) -> None:
        self.root = root
        self.keys = KeyStore(root / "control")
        self.tokens = {t: self.keys.create(t)[1] for t in ("acme", "globex")}
        revoked_id, self.revoked = self.keys.create("acme", name="old")
        self.keys.revoke(revoked_id)
        self.app = create_app(
            root, keys=self.keys, limits=limits, embedder=HashEmbedder(), scheduler="inline"
        )
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def api(self, tenant: str) -> Api:
        return Api(self.client, self.tokens[tenant])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data")
    with srv.client:
        yield srv


def _add(api: Api, user_id: str, *texts: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": t} for t in texts]
    body = {"messages": messages, "user_id": user_id, "async_mode": False, **extra}
    data: dict[str, Any] = api.post("/v1/memories/add_message", json=body, status=200)["data"]
    assert data["status"] == "completed", data
    return data


# ----------------------------------------------------------------------------- meta


def test_healthz_and_openapi_need_no_key(server: Server) -> None:
    """/healthz and the schema are public; the schema lists exactly ROUTES (a new route
    fails here until the auth and isolation tests cover it) and names the Token scheme."""
    c = server.client
    assert c.get("/healthz").json() == {"code": 200, "message": "ok", "data": {"status": "ok"}}
    schema = c.get("/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops if p.startswith("/v1")}
    assert routes == ROUTES
    assert schema["components"]["securitySchemes"]["Token"]["name"] == "Authorization"


def test_unknown_route_and_method_answer_the_envelope(server: Server) -> None:
    api = server.api("acme")
    assert api.get("/v1/nope", status=404)["error"] == "NotFoundError"
    assert api.call("PUT", "/v1/memories/search", status=405)["error"] == "MethodNotAllowed"


# ----------------------------------------------------------------------------- auth


def _bad_headers(server: Server) -> dict[str, dict[str, str]]:
    good = server.tokens["acme"]
    return {
        "missing": {},
        "basic": {"Authorization": "Basic x"},
        "token-empty": {"Authorization": "Token"},
        "token-blank": {"Authorization": "Token   "},
        "bearer-empty": {"Authorization": "Bearer"},
        "no-scheme": {"Authorization": good},
        "wrong": {"Authorization": "Token mk_0000_wrong"},
        "two-words": {"Authorization": f"Token {good} extra"},
        "revoked": {"Authorization": f"Token {server.revoked}"},
        "too-long": {"Authorization": "Token " + "x" * 5000},
        "other-header": {"X-Api-Key": good},
    }


def test_every_route_refuses_bad_keys_with_401(server: Server) -> None:
    """Every /v1 route answers 401 with the envelope (and WWW-Authenticate) for a missing,
    malformed, unknown or revoked key, before the body is even read: a malformed body with a
    bad key is still a 401, not a 422."""
    for method, template in sorted(ROUTES):
        path = template.format(task_id="t", memory_id="m", kb_id="k", doc_id="d")
        for name, headers in _bad_headers(server).items():
            for body in (
                {"json": {}},
                {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            ):
                extra = dict(body)
                resp = server.client.request(
                    method, path, headers={**headers, **extra.pop("headers", {})}, **extra
                )
                assert resp.status_code == 401, (method, path, name, resp.text)
                assert resp.headers["www-authenticate"] == "Token"
                assert resp.json() == {
                    "code": 401,
                    "message": resp.json()["message"],
                    "data": None,
                    "error": "AuthenticationError",
                }, (method, path, name)
    # unknown /v1 paths do not reveal which routes exist
    assert server.client.get("/v1/secret").status_code == 401


def test_key_schemes_and_revocation(server: Server) -> None:
    """``Token`` and ``Bearer`` in any case work; a key revoked while the server runs is
    refused at its next request."""
    token = server.tokens["globex"]
    for header in (f"Token {token}", f"Bearer {token}", f"token {token}", f"BEARER  {token} "):
        resp = server.client.get("/v1/knowledgebases?user_id=u1", headers={"Authorization": header})
        assert resp.status_code == 200, header
    [row] = server.keys.list("globex")
    assert server.keys.revoke(row["key_id"])
    resp = server.client.get("/v1/knowledgebases?user_id=u1", headers={"Authorization": f"Token {token}"})
    assert resp.status_code == 401
    assert not server.keys.revoke("no-such-key")
    assert "digest" not in row and token not in json.dumps(server.keys.list())


# ----------------------------------------------------------------------------- tenants


def test_tenant_b_cannot_reach_tenant_a_on_any_route(server: Server) -> None:
    """Tenant B (globex) tries every route against tenant A's (acme) ids, user ids, cube ids,
    knowledge bases and documents; nothing of A ever shows up in B's answers and A's data is
    unchanged afterwards. Two tenants' ``user_123`` are different users."""
    a, b = server.api("acme"), server.api("globex")
    secret = "I live in Paris and my PIN is QZX4711"
    added = _add(a, "user_123", secret, conversation_id="c1", tags=["private"], info={"team": "red"})
    a_task, a_ids = added["task_id"], added["memory_ids"]
    a_all = [m["id"] for m in a.post("/v1/memories/list", json={"user_id": "user_123"})["data"]["items"]]
    assert set(a_ids) <= set(a_all) and len(a_all) > len(a_ids)  # the fine stage added facts
    a.post("/v1/knowledgebases", json={"user_id": "user_123", "kb_id": "x"}, status=200)
    doc = a.post(
        "/v1/knowledgebases/x/documents",
        json={
            "user_id": "user_123",
            "filename": "handbook.md",
            "text": "# Handbook\n\nThe vault code is VLT4711Q.",
        },
        status=200,
    )["data"]
    # B has its own user_123, with its own memory
    _add(b, "user_123", "I live in Berlin")

    def leaks(body: dict[str, Any]) -> bool:
        # A's words anywhere; A's ids in the data (an error may echo the id B sent)
        text, data = json.dumps(body), json.dumps(body["data"])
        return any(s in text for s in ("Paris", "QZX4711", "VLT4711Q", "Handbook")) or any(
            s in data for s in (*a_all, a_task, doc["doc_id"])
        )

    seen: list[dict[str, Any]] = []

    def check(body: dict[str, Any]) -> dict[str, Any]:
        assert not leaks(body), body
        seen.append(body)
        return body

    # read
    for mid in a_all:
        assert check(b.get(f"/v1/memories/{mid}"))["code"] == 404
        assert check(b.get(f"/v1/memories/{mid}", params={"user_id": "user_123"}))["code"] == 404
    assert check(b.get(f"/v1/tasks/{a_task}"))["code"] == 404
    # list, by every way of naming A's user
    for flt in (
        None,
        {"user_id": "user_123"},
        {"cube_id": "user:user_123"},
        {"id": {"in": a_all}},
        {"tags": {"contains": "private"}},
        {"info.team": "red"},
        {"conversation_id": "c1"},
    ):
        body = check(b.post("/v1/memories/list", json={"user_id": "user_123", "filter": flt}, status=200))
        assert all("Berlin" in i["memory"] or "berlin" in i["memory"].lower() for i in body["data"]["items"])
    # search: plain, by filter on any field, and naming A's cubes and knowledge bases
    for flt in (
        None,
        {"user_id": "user_123"},
        {"cube_id": "user:user_123"},
        {"id": {"in": a_all}},
        {"tags": {"contains": "private"}},
        {"info.team": "red"},
        {"memory_type": {"exists": True}},
    ):
        for user in ("user_123", "u1"):
            body = {"query": "where do I live, PIN, Paris", "user_id": user, "filter": flt}
            hits = check(b.post("/v1/memories/search", json=body, status=200))["data"]["memory_detail_list"]
            assert all("Berlin" in h["memory"] for h in hits), hits
    q = {"query": "vault code", "user_id": "user_123"}
    assert check(b.post("/v1/memories/search", json={**q, "knowledgebase_ids": ["x"]}))["code"] == 404
    assert check(b.post("/v1/memories/search", json={**q, "cube_ids": ["kb:x"]}))["code"] == 403
    assert (
        check(b.post("/v1/memories/search", json={**q, "user_id": "u2", "cube_ids": ["user:user_123"]}))[
            "code"
        ]
        == 403
    )
    own = check(b.post("/v1/memories/search", json={**q, "cube_ids": ["user:user_123"]}, status=200))
    assert all("Berlin" in h["memory"] for h in own["data"]["memory_detail_list"])
    # write: update, delete by id and by filter, feedback naming or retracting A's memories
    for mid in a_all:
        assert check(b.post(f"/v1/memories/{mid}/update", json={"memory": "hacked"}))["code"] == 404
    assert check(b.post("/v1/memories/delete", json={"memory_ids": a_all, "hard": True}))["code"] == 404
    assert (
        check(b.post("/v1/memories/delete", json={"memory_ids": a_all[:1], "user_id": "user_123"}))["code"]
        == 404
    )
    fb = {"user_id": "user_123", "feedback_content": "forget that I live in Paris"}
    assert check(b.post("/v1/feedback", json={**fb, "memory_ids": a_all[:1]}))["code"] == 404
    assert check(b.post("/v1/feedback", json=fb, status=200))["data"]["archived"] == []
    deleted = check(b.post("/v1/memories/delete", json={"user_id": "user_123", "hard": True}, status=200))
    assert deleted["data"]["deleted"] >= 1  # B's own user_123 only
    # knowledge bases and documents
    assert check(b.get("/v1/knowledgebases", params={"user_id": "user_123"}, status=200))["data"] == []
    assert check(b.get("/v1/knowledgebases/x/documents", params={"user_id": "user_123"}))["code"] == 404
    add_doc = {"user_id": "user_123", "filename": "evil.md", "text": "overwritten"}
    assert check(b.post("/v1/knowledgebases/x/documents", json=add_doc))["code"] == 404
    path = f"/v1/knowledgebases/x/documents/{doc['doc_id']}"
    assert check(b.delete(path, params={"user_id": "user_123"}))["code"] == 404
    assert check(b.delete("/v1/knowledgebases/x", params={"user_id": "user_123"}))["code"] == 404
    # B may create its own "x": another knowledge base in another database
    check(b.post("/v1/knowledgebases", json={"user_id": "mallory", "kb_id": "x"}, status=200))
    assert check(b.delete("/v1/knowledgebases/x", params={"user_id": "mallory"}, status=200))
    covered = Counter(body["code"] for body in seen)
    assert covered[404] >= 10 and covered[403] >= 2 and covered[200] >= 10

    # A is untouched
    for mid in a_all:
        item = a.get(f"/v1/memories/{mid}", status=200)["data"]
        assert item["status"] == "activated" and item["memory"] != "hacked"
    hits = a.post("/v1/memories/search", json={"query": "where do I live", "user_id": "user_123"}, status=200)
    assert any("Paris" in h["memory"] for h in hits["data"]["memory_detail_list"])
    assert all("Berlin" not in h["memory"] for h in hits["data"]["memory_detail_list"])
    assert a.get(f"/v1/tasks/{a_task}", status=200)["data"][0]["status"] == "completed"
    [kb] = a.get("/v1/knowledgebases", params={"user_id": "user_123"}, status=200)["data"]
    assert kb["kb_id"] == "x" and kb["owner"] == "user_123"
    [d] = a.get("/v1/knowledgebases/x/documents", params={"user_id": "user_123"}, status=200)["data"]
    assert d["doc_id"] == doc["doc_id"]
    kb_hits = a.post("/v1/memories/search", json={**q, "knowledgebase_ids": ["x"]}, status=200)
    assert any("VLT4711Q" in h["memory"] for h in kb_hits["data"]["memory_detail_list"])
    # each tenant lives in its own folder
    assert (server.root / "tenants" / "acme").is_dir() and (server.root / "tenants" / "globex").is_dir()


def test_idempotency_keys_are_per_tenant(server: Server) -> None:
    """A retried add with the same Idempotency-Key returns the first answer and stores
    nothing twice; the same key with another body is a 400; another tenant's same key is its
    own add."""
    a, b = server.api("acme"), server.api("globex")
    body = {
        "messages": [{"role": "user", "content": "I like tea", "chat_time": "2024-05-01T10:00:00Z"}],
        "user_id": "u1",
        "async_mode": False,
    }
    h = {"Idempotency-Key": "add-1"}

    def total() -> int:
        return int(a.post("/v1/memories/list", json={"user_id": "u1"}, status=200)["data"]["total"])

    first = a.post("/v1/memories/add_message", json=body, headers=h, status=200)["data"]
    stored = total()
    again = a.post("/v1/memories/add_message", json=body, headers=h, status=200)["data"]
    assert again["task_id"] == first["task_id"] and again["memory_ids"] == first["memory_ids"]
    assert again["status"] == "completed" and total() == stored
    other = {**body, "messages": [{"role": "user", "content": "I like coffee"}]}
    err = a.post("/v1/memories/add_message", json=other, headers=h, status=400)
    assert "idempotency key" in err["message"]
    theirs = b.post("/v1/memories/add_message", json=body, headers=h, status=200)["data"]
    assert theirs["task_id"] != first["task_id"]
    assert a.post("/v1/memories/add_message", json=body, headers={"Idempotency-Key": "k" * 201}, status=422)


# ----------------------------------------------------------------------------- limits and errors


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Server]:
    limits = ServerLimits(
        max_body_bytes=20_000,
        max_document_bytes=2_000,
        limits=Limits(max_messages=5, max_message_chars=300, max_top_k=20, max_query_chars=100, max_tags=3),
    )
    srv = Server(tmp_path / "data", limits)
    with srv.client:
        yield srv


def test_limits_answer_413_with_a_clear_message(small: Server) -> None:
    api = small.api("acme")

    def msgs(n: int, size: int = 10) -> list[dict[str, str]]:
        return [{"role": "user", "content": "x" * size} for _ in range(n)]

    add = "/v1/memories/add_message"
    r = api.post(add, json={"messages": msgs(6), "user_id": "u"}, status=413)
    assert (
        r["error"] == "PayloadTooLargeError" and "6 messages" in r["message"] and "limit is 5" in r["message"]
    )
    r = api.post(add, json={"messages": msgs(1, 301), "user_id": "u"}, status=413)
    assert "301 characters" in r["message"] and "300" in r["message"]
    r = api.post(add, json={"messages": msgs(1), "user_id": "u", "tags": ["a", "b", "c", "d"]}, status=413)
    assert "at most 3 tags" in r["message"]
    search = {"query": "tea", "user_id": "u"}
    r = api.post("/v1/memories/search", json={**search, "top_k": 21}, status=413)
    assert "top_k=21" in r["message"] and "20" in r["message"]
    r = api.post("/v1/memories/search", json={**search, "query": "q" * 101}, status=413)
    assert "101 characters" in r["message"]
    assert (
        api.post("/v1/memories/search", json={**search, "top_k": 0}, status=422)["error"]
        == "InvalidInputError"
    )
    assert api.post("/v1/memories/search", json={**search, "top_k": 10**30}, status=413)
    # the body limit, declared and chunked
    r = api.post(add, json={"messages": msgs(1, 30_000), "user_id": "u"}, status=413)
    assert r["error"] == "PayloadTooLargeError" and "20000 bytes" in r["message"]

    def chunks() -> Iterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"y" * 1000
        yield b'"}], "user_id": "u"}'

    r = api.post(add, content=chunks(), headers={"Content-Type": "application/json"}, status=413)
    assert "20000 bytes" in r["message"]
    # documents: decoded size
    api.post("/v1/knowledgebases", json={"user_id": "u", "kb_id": "k"}, status=200)
    r = api.post(
        "/v1/knowledgebases/k/documents",
        json={"user_id": "u", "filename": "a.txt", "text": "z" * 2001},
        status=413,
    )
    assert "2000 bytes" in r["message"]
    # within the limits everything works
    assert _add(api, "u", *["hello there"] * 5)["memory_ids"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/memories/add_message", b"{not json"),
        ("/v1/memories/add_message", b""),
        ("/v1/memories/add_message", b"[]"),
        ("/v1/memories/add_message", b'"hello"'),
        ("/v1/memories/add_message", b"[" * 50_000 + b"]" * 50_000),
        ("/v1/memories/add_message", b'{"messages": "hi", "user_id": "u"}'),
        ("/v1/memories/add_message", b'{"messages": [], "user_id": "u"}'),
        ("/v1/memories/add_message", b'{"messages": [{"role": "boss", "content": "x"}], "user_id": "u"}'),
        ("/v1/memories/add_message", b'{"messages": [{"role": "user", "content": 5}], "user_id": "u"}'),
        ("/v1/memories/add_message", b'{"messages": [{"role": "user", "content": "x"}], "user_id": 5}'),
        (
            "/v1/memories/add_message",
            b'{"messages": [{"role": "user", "content": "x"}], "user_id": "u", "tags": "a"}',
        ),
        (
            "/v1/memories/add_message",
            b'{"messages": [{"role": "user", "content": "x"}], "user_id": "u", "extra": 1}',
        ),
        (
            "/v1/memories/add_message",
            b'{"messages": [{"role": "user", "content": "x\\ud800"}], "user_id": "u"}',
        ),
        (
            "/v1/memories/add_message",
            b'{"messages": [{"role": "user", "content": "x"}], "user_id": "u", "info": {"\\udc00": 1}}',
        ),
        ("/v1/memories/search", b'{"query": "x", "user_id": "u", "top_k": "ten"}'),
        ("/v1/memories/search", b'{"query": "x", "user_id": "u", "top_k": 1e400}'),
        ("/v1/memories/search", b'{"query": "x", "user_id": "u", "filter": "tags"}'),
        ("/v1/memories/search", b'{"query": "x", "user_id": "u", "filter": {"and": "x"}}'),
        (
            "/v1/memories/search",
            b'{"query": "x", "user_id": "u", "filter": {"info.n": {"gt": 99999999999999999999999}}}',
        ),
        ("/v1/memories/search", b'{"query": "x", "user_id": "u\\ud800"}'),
        ("/v1/memories/search", b'{"query": "x", "user_id": "u\\u0000"}'),
        ("/v1/memories/search", b'{"query": "x", "user_id": "u", "knowledgebase_ids": "kb"}'),
        ("/v1/memories/list", b'{"user_id": "u", "offset": 99999999999999999999999999}'),
        ("/v1/memories/list", b'{"user_id": "u", "limit": -1}'),
        ("/v1/memories/m/update", b"{}"),
        ("/v1/memories/delete", b"{}"),
        ("/v1/memories/delete", b'{"memory_ids": "m"}'),
        ("/v1/feedback", b'{"user_id": "u", "feedback_content": "x", "feedback_time": "yesterday-ish"}'),
        ("/v1/knowledgebases", b'{"user_id": ""}'),
        ("/v1/knowledgebases/k/documents", b'{"user_id": "u", "filename": "a.txt"}'),
        ("/v1/knowledgebases/k/documents", b'{"user_id": "u", "filename": "a.txt", "text": "\\ud800"}'),
        ("/v1/knowledgebases/k/documents", b'{"user_id": "u", "filename": "a.txt", "content_base64": "%%%"}'),
        ("/v1/knowledgebases/k/documents", b'{"user_id": "u", "filename": "a.exe", "text": "hi"}'),
        (
            "/v1/knowledgebases/k/documents",
            b'{"user_id": "u", "filename": "a.txt", "text": "hi", "chunk_size": 99999999999999999999}',
        ),
    ],
)
def test_bad_requests_are_4xx_envelopes_never_500(server: Server, path: str, body: bytes) -> None:
    """Malformed JSON and wrong types are 422 envelopes (``InvalidInputError``); values the
    facade refuses are 400/404/413; never a 500."""
    api = server.api("acme")
    api.post("/v1/knowledgebases", json={"user_id": "u", "kb_id": "k"})
    resp = server.client.post(
        path,
        content=body,
        headers={"Authorization": f"Token {server.tokens['acme']}", "Content-Type": "application/json"},
    )
    assert 400 <= resp.status_code < 500, resp.text
    envelope = resp.json()
    assert envelope["code"] == resp.status_code and envelope["data"] is None and envelope["error"], envelope
    assert len(envelope["message"]) < 1000


def test_json_errors_say_where(server: Server) -> None:
    api = server.api("acme")
    r = api.post(
        "/v1/memories/add_message", content=b"{oops", headers={"Content-Type": "application/json"}, status=422
    )
    assert r["error"] == "InvalidInputError" and "not valid JSON" in r["message"]
    r = api.post("/v1/memories/search", json={"query": "x", "user_id": "u", "top_k": "ten"}, status=422)
    assert r["message"].startswith("top_k:")
    raw = b'{"query": "x\\ud800", "user_id": "u"}'
    r = api.post("/v1/memories/search", content=raw, headers={"Content-Type": "application/json"}, status=422)
    assert "lone surrogate" in r["message"]


# ----------------------------------------------------------------------------- background tasks


def test_fine_stage_runs_in_the_server_process(tmp_path: Path) -> None:
    """With the default thread scheduler an async add returns at once (``queued``) and the
    server's own scheduler completes the task; the facts it refines are searchable."""
    keys = KeyStore(tmp_path / "control")
    _, token = keys.create("acme")
    app = create_app(tmp_path, keys=keys, embedder=HashEmbedder())
    with TestClient(app) as client:
        api = Api(client, token)
        body = {"messages": [{"role": "user", "content": "I moved to Lisbon last year"}], "user_id": "u1"}
        added = api.post("/v1/memories/add_message", json=body, status=200)["data"]
        assert added["status"] in ("queued", "running", "completed")
        status = _wait_task(lambda: api.get(f"/v1/tasks/{added['task_id']}", status=200)["data"][0]["status"])
        assert status == "completed"
        hits = api.post(
            "/v1/memories/search", json={"query": "Lisbon", "user_id": "u1", "filter": {"mode": "fine"}}
        )
        assert hits["data"]["memory_detail_list"]


def _wait_task(status: Any, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        now: str = status()
        if now in ("completed", "failed") or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def _http(
    srv: MemosServer, method: str, path: str, body: Any = None, tenant: str = "acme"
) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        srv.base_url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Token {srv.keys[tenant]}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_tasks_survive_a_crash_and_run_after_restart(tmp_path: Path) -> None:
    """A real ``memos serve``: a big add keeps the tenant's scheduler busy, a second add is
    queued behind it, and the server is SIGKILLed; another task is queued into the tenant's
    folder while no server runs (``MemOS(scheduler="off")``). After the restart both queued
    tasks complete in the server process and their facts are searchable. (The task that was
    *running* at the crash is claimed again when its 60 s lease runs out; not waited for.)
    Then a key revoked with ``memos keys revoke`` is refused by the running server."""
    srv = MemosServer(tmp_path / "data", tenants=("acme",))
    srv.start()
    try:
        big = [
            {"role": "user", "content": f"On day {i} I visited museum number {i} in town {i % 7}"}
            for i in range(1000)
        ]
        code, first = _http(srv, "POST", "/v1/memories/add_message", {"messages": big, "user_id": "u1"})
        assert code == 200, first
        small = [{"role": "user", "content": "I adopted a dog called Biscuit"}]
        code, second = _http(srv, "POST", "/v1/memories/add_message", {"messages": small, "user_id": "u1"})
        assert code == 200, second
        srv.stop(kill=True)

        folder = srv.path / "tenants" / "acme"
        with MemOS(folder, embedder=HashEmbedder(64), scheduler="off") as offline:
            before = offline.get_task_status(second["data"]["task_id"]).data[0].status
            queued = offline.add_message(
                [{"role": "user", "content": "My sister Ada lives in Oslo"}], user_id="u1"
            ).data
            assert queued.status == "queued"
        assert before == "queued", before  # behind the big add, still running at the crash

        srv.start()
        for task_id in (second["data"]["task_id"], queued.task_id):

            def status(task_id: str = task_id) -> str:
                code, body = _http(srv, "GET", f"/v1/tasks/{task_id}")
                assert code == 200, body
                return str(body["data"][0]["status"])

            assert _wait_task(status, timeout=60) == "completed", task_id
        for query, word in (("dog", "Biscuit"), ("sister", "Oslo")):
            code, hits = _http(
                srv,
                "POST",
                "/v1/memories/search",
                {"query": query, "user_id": "u1", "filter": {"mode": "fine"}},
            )
            assert code == 200 and any(word in h["memory"] for h in hits["data"]["memory_detail_list"]), hits

        srv.revoke("acme")
        code, body = _http(srv, "GET", "/v1/knowledgebases?user_id=u1")
        assert code == 401 and body["error"] == "AuthenticationError"
    finally:
        srv.stop()


# ----------------------------------------------------------------------------- schemathesis


def test_schemathesis_finds_no_server_errors(server: Server) -> None:
    """Property-based requests from the OpenAPI schema (positive and negative, a bounded
    number per operation) with a valid key: no 5xx, responses match the declared schema,
    status codes and content types. Reproduce a failure with the curl line it prints."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    api = server.api("acme")
    _add(api, "u1", "I like green tea")  # something to find, so searches return hits
    schema = schemathesis.openapi.from_asgi("/openapi.json", server.app)
    auth = {"Authorization": f"Token {server.tokens['acme']}"}
    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]
    calls: Counter[str] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if op.path.startswith("/v1") else [])
        for mode in modes:

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=20,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                resp = case.call_and_validate(headers=auth, checks=checks)
                calls[f"{resp.status_code // 100}xx"] += 1

            run()
    assert operations == len(ROUTES) + 1  # and /healthz
    assert calls["5xx"] == 0 and calls["2xx"] > 0 and calls["4xx"] > 0


def test_add_into_another_cube_and_named_feedback_are_served(server: Server) -> None:
    """add_message's cube_id and add_feedback's name reach the facade: writing into another
    user's cube without a grant is a 403 (not a 422 for an unknown field), and feedback with
    a name is accepted."""
    api = server.api("acme")
    _add(api, "bob", "Bob keeps bees.")
    body = {"messages": [{"role": "user", "content": "hi"}], "user_id": "alice", "cube_id": "user:bob"}
    denied = api.post("/v1/memories/add_message", json=body, status=403)
    assert denied["error"] == "PermissionDeniedError"
    fb = {"user_id": "bob", "feedback_content": "I keep wasps, not bees.", "name": "Bob"}
    assert api.post("/v1/feedback", json=fb, status=200)["code"] == 200


def test_image_urls_cannot_reach_the_servers_own_network(server: Server) -> None:
    """An image part naming a loopback or private host is refused before any request is sent
    (the host never sees a hit), and the memory records why; a redirect to such a host is
    refused too. Tenants cannot make the server probe its network."""
    import http.server
    import threading

    from memos_core.images import _PublicRedirects, fetch_image

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    internal = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=internal.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{internal.server_address[1]}/admin/metadata"
        api = server.api("acme")
        parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]
        body = {"messages": [{"role": "user", "content": parts}], "user_id": "eve", "async_mode": False}
        added = api.post("/v1/memories/add_message", json=body, status=200)["data"]
        stored = [api.get(f"/v1/memories/{i}", status=200)["data"] for i in added["memory_ids"]]
        errors = [s.get("error") for item in stored for s in item["sources"] if s.get("error")]
        assert hits == [] and any("not a public address" in e for e in errors), errors
        for private in ("http://10.0.0.1/x.png", "http://localhost/x.png", "http://[::1]/x.png"):
            with pytest.raises(InvalidInputError, match="not a public address"):
                fetch_image(private, allow_private_hosts=False)
        with pytest.raises(InvalidInputError):
            _PublicRedirects().redirect_request(None, None, 302, "Found", {}, "http://169.254.169.254/")
    finally:
        internal.shutdown()
        internal.server_close()


def test_tenant_names_are_folder_safe_and_key_ids_unique(tmp_path: Path) -> None:
    """Tenant names are lower-case letters, digits, '_' and '-' only (no trailing newline, no
    case variants that a case-insensitive file system would merge, no dots)."""
    keys = KeyStore(tmp_path / "control")
    try:
        for bad in ("Acme", "acme\n", "acme.", "../x", "a/b", "", "x" * 65):
            with pytest.raises(InvalidInputError):
                keys.create(bad)
        ids = {keys.create("acme")[0] for _ in range(20)}
        assert len(ids) == 20 and len(keys.list("acme")) == 20
    finally:
        keys.close()


def test_tenant_b_cannot_reach_tenant_a_through_shares_rollback_working_set_or_stats(server: Server) -> None:
    """The routes for the rest of the facade stay inside the key's tenant: B sharing "A's"
    cube shares B's own cube of that name, B cannot roll back or see A's memories or working
    set, and B's stats list no cube of A."""
    a, b = server.api("acme"), server.api("globex")
    note = a.post(
        "/v1/memories/add_memory", json={"memory": "Acme secret: launch on Friday", "user_id": "alice"}
    )
    mid = note["data"]["id"]
    a.post(f"/v1/memories/{mid}/update", json={"memory": "Acme secret: launch on Monday", "user_id": "alice"})
    _add(a, "alice", "the plan", conversation_id="c1")
    a.post("/v1/memories/search", json={"query": "plan", "user_id": "alice", "conversation_id": "c1"})
    b.post(f"/v1/memories/{mid}/rollback", json={"version": 1}, status=404)
    assert b.get("/v1/working_memory", params={"user_id": "alice", "conversation_id": "c1"})["data"] == []
    b.post("/v1/cubes/share", json={"cube_id": "user:alice", "with_user_id": "mallory"}, status=200)
    search = {"query": "secret launch", "user_id": "mallory", "cube_ids": ["user:alice"]}
    assert b.post("/v1/memories/search", json=search, status=200)["data"]["memory_detail_list"] == []
    assert a.get("/v1/shares", params={"user_id": "alice"})["data"] == {"shared_with_me": [], "granted": []}
    assert "user:alice" not in b.get("/v1/stats")["data"].get("cubes", {})
    assert "user:alice" in a.get("/v1/stats")["data"]["cubes"]
    assert a.get(f"/v1/memories/{mid}")["data"]["memory"].endswith("Monday")
