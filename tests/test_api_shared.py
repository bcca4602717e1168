"""One API suite, two backends: ``MemOS`` in this process and ``MemOSClient`` over HTTP.

Every test runs a scenario (a sequence of facade calls) on the backend under test and
asserts what the scenario must show; then it compares the backend's normalised outcome with
the same scenario run on the reference (a fresh in-process ``MemOS``). Both sides start from
an empty database (the client gets a fresh tenant of one ``memos serve`` per test) with the
same hash embedder, so ids aside, every answer must be the same: texts, order, scores,
versions, counts, error classes and messages.

When a comparison fails, the message names the path in the outcome where the backends part
(``$.search[2].score``, say): a server route that drops or renames an argument, a type the
client parses differently, or an answer the server builds itself instead of the facade's.
"""

from __future__ import annotations

import io
import math
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from memos_core import MemOS, MemosError
from memos_core.client import MemOSClient
from memos_core.server import KeyStore
from memos_core.testing import HashEmbedder, MemosServer

Api = MemOS | MemOSClient
Scenario = Callable[[Api, str], dict[str, Any]]

pytestmark = pytest.mark.slow

T0 = datetime(2024, 5, 8, 9, 0, tzinfo=timezone.utc)
TENANTS = 24  # one fresh tenant per client-side test


def turns(*texts: str, start: datetime = T0) -> list[dict[str, Any]]:
    """Alternating user/assistant turns a minute apart (fixed times: the texts render them)."""
    return [
        {
            "role": "user" if n % 2 == 0 else "assistant",
            "content": text,
            "id": f"m{n + 1}",
            "chat_time": (start + timedelta(minutes=n)).isoformat(),
        }
        for n, text in enumerate(texts)
    ]


def in_process(path: Path) -> MemOS:
    """The facade as the server builds it for a tenant (hash:64, thread scheduler, no local images)."""
    return MemOS(path, embedder=HashEmbedder(dim=64), scheduler="thread", allow_local_images=False)


# ----------------------------------------------------------------------------- normalising

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?$")


class Normal:
    """JSON of an outcome with what legitimately differs between two runs taken out: random
    ids become ``<id0>``, ``<id1>``... in order of first appearance, times of "now" become
    ``<now>``, floats are rounded (recency moves by ~1e-9 a second)."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return self(value.model_dump(mode="json"))
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self(v) for v in value]
        if isinstance(value, float):
            return round(value, 4)
        if isinstance(value, str):
            if _TIME.match(value):
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
                if abs((when - datetime.now(timezone.utc)).total_seconds()) < 3600:
                    return "<now>"
            return _UUID.sub(lambda m: self.ids.setdefault(m.group(0), f"<id{len(self.ids)}>"), value)
        return value


def hits(envelope: Any) -> list[dict[str, Any]]:
    """The parts of search hits a caller relies on (the rest is compared via ``Normal`` too)."""
    return [
        {
            "id": h.id,
            "memory": h.memory,
            "score": h.score,
            "details": h.score_details,
            "origin": h.origin,
            "cube_id": h.cube_id,
            "tags": h.tags,
            "info": h.info,
            "messages": [s.message_id for s in h.sources],
        }
        for h in envelope.data.memory_detail_list
    ]


def failure(call: Callable[[], Any]) -> dict[str, Any]:
    """The error a call raises, as class name, message and code."""
    try:
        call()
    except MemosError as exc:
        return {"error": type(exc).__name__, "message": str(exc), "code": exc.code}
    raise AssertionError("the call did not fail")


def assert_same(got: Any, want: Any, path: str = "$") -> None:
    """Deep equality with the first differing path in the message."""
    if isinstance(want, dict) and isinstance(got, dict):
        assert list(got) == list(want), f"{path}: keys {list(got)} != {list(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list) and isinstance(got, list):
        assert len(got) == len(want), f"{path}: {len(got)} items != {len(want)}\n{got}\n{want}"
        for n, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{n}]")
    elif isinstance(want, float) and isinstance(got, float):
        assert math.isclose(got, want, abs_tol=2e-4), f"{path}: {got} != {want}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def wait_for(api: Api, task_id: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.get_task_status(task_id).data[0].status
        if status in ("completed", "failed"):
            return str(status)
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} still not done after {timeout}s")


# ----------------------------------------------------------------------------- backends


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemosServer]:
    srv = MemosServer(tmp_path_factory.mktemp("server"), tenants=("shared",))
    keys = KeyStore(srv.path / "control")  # more tenants, before the server opens the folder
    try:
        for n in range(TENANTS):
            srv.keys[f"t{n}"] = keys.create(f"t{n}")[1]
    finally:
        keys.close()
    with srv:
        yield srv


@pytest.fixture(scope="module")
def fresh_keys(server: MemosServer) -> Iterator[str]:
    return iter(server.keys[f"t{n}"] for n in range(TENANTS))


@pytest.fixture(params=["memos", "client"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    """The backend under test, on an empty database."""
    if request.param == "memos":
        with in_process(tmp_path / "backend") as mem:
            yield mem
        return
    server: MemosServer = request.getfixturevalue("server")
    key = next(request.getfixturevalue("fresh_keys"))
    with MemOSClient(server.base_url, key) as client:
        yield client


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Scenario, str], Any]:
    """The scenario's normalised outcome on a fresh in-process MemOS (run once per scenario)."""
    done: dict[Scenario, Any] = {}

    def run(scenario: Scenario, user: str) -> Any:
        if scenario not in done:
            with in_process(tmp_path_factory.mktemp("reference")) as mem:
                done[scenario] = Normal()(scenario(mem, user))
        return done[scenario]

    return run


@pytest.fixture
def check(api: Api, reference: Callable[[Scenario, str], Any]) -> Callable[[Scenario], dict[str, Any]]:
    """Run a scenario on the backend under test, compare it with the reference, return it."""

    def run(scenario: Scenario) -> dict[str, Any]:
        user = f"user-{scenario.__name__}"  # unique per test; the same on both sides
        outcome = scenario(api, user)
        assert_same(Normal()(outcome), reference(scenario, user))
        return outcome

    return run


# ----------------------------------------------------------------------------- scenarios


def add_sync_then_read(api: Api, user: str) -> dict[str, Any]:
    r = api.add_message(
        turns(
            "I'm learning Python and want beginner projects", "Start with a scraper or a small data analysis"
        ),
        user_id=user,
        conversation_id="conv-1",
        tags=["study"],
        info={"scene": "chat"},
        async_mode=False,
    )
    return {
        "add": r,
        "task": api.get_task_status(r.data.task_id),
        "items": [api.get_memory(i, user_id=user) for i in r.data.memory_ids],
        "list": api.list_memories(user),
    }


def test_add_and_wait_then_task_get_and_list(check: Callable[[Scenario], dict[str, Any]]) -> None:
    """async_mode=False: the fine stage has run when add returns. Look at the add route's
    arguments (tags, info, conversation_id, async_mode) if the items differ."""
    out = check(add_sync_then_read)
    assert out["add"].data.status == "completed" and len(out["add"].data.memory_ids) == 2
    assert out["task"].data[0].status == "completed"
    assert [e.data.tags for e in out["items"]] == [["study"], ["study"]]
    assert [e.data.sources[0].message_id for e in out["items"]] == ["m1", "m2"]
    assert out["list"].data.total >= 2


def add_async_then_poll(api: Api, user: str) -> dict[str, Any]:
    r = api.add_message(
        turns("My sister Ines moved to Lisbon last year", "Lisbon is lovely in spring"),
        user_id=user,
        conversation_id="conv-a",
    )
    searchable_at_once = hits(api.search_memory("Ines Lisbon", user_id=user, top_k=10))
    status = wait_for(api, r.data.task_id)
    return {
        "add": r,
        # The fine stage may or may not have run yet: only what holds either way is compared.
        "at_once": sorted({m for h in searchable_at_once for m in h["messages"] if m}),
        "final": status,
        "task": api.get_task_status(r.data.task_id).data[0].model_dump(mode="json", exclude={"attempts"}),
        "list": api.list_memories(user, conversation_id="conv-a"),
    }


def test_add_async_is_searchable_at_once_and_its_task_completes(
    check: Callable[[Scenario], dict[str, Any]],
) -> None:
    """The fast stage answers before the fine stage; the task id resolves on both backends."""
    out = check(add_async_then_poll)
    assert out["add"].data.status == "queued"
    assert out["at_once"] == ["m1", "m2"]
    assert out["final"] == "completed"
    assert out["task"]["memory_ids"] == out["add"].data.memory_ids


def search_with_filters(api: Api, user: str) -> dict[str, Any]:
    api.add_message(
        turns("I'm learning Python for data analysis", "pandas is a good start"),
        user_id=user,
        conversation_id="c-study",
        tags=["study"],
        info={"scene": "chat"},
        async_mode=False,
    )
    api.add_message(
        turns("The Python migration at work is due on Friday", "I'll book the review"),
        user_id=user,
        conversation_id="c-work",
        tags=["work"],
        info={"scene": "office", "priority": 2},
        async_mode=False,
    )
    q = "what is the user doing with Python"
    return {
        "all": hits(api.search_memory(q, user_id=user, top_k=5)),
        "tag_and_info": hits(
            api.search_memory(
                q, user_id=user, filter={"and": [{"tags": {"contains": "study"}}, {"scene": "chat"}]}
            )
        ),
        "info_gte": hits(api.search_memory(q, user_id=user, filter={"priority": {"gte": 2}})),
        "conversation": hits(api.search_memory(q, user_id=user, conversation_id="c-work", top_k=3)),
    }


def test_search_with_tags_and_info_filters(check: Callable[[Scenario], dict[str, Any]]) -> None:
    """Same hits, order and scores on both backends; the filter and scope reach the facade."""
    out = check(search_with_filters)
    assert out["all"]
    assert out["tag_and_info"] and all("study" in h["tags"] for h in out["tag_and_info"])
    assert out["info_gte"] and all(h["info"]["priority"] >= 2 for h in out["info_gte"])
    assert out["conversation"] and all("work" in h["tags"] for h in out["conversation"])
    scores = [h["score"] for h in out["all"]]
    assert scores == sorted(scores, reverse=True)


def search_lexical(api: Api, user: str) -> dict[str, Any]:
    api.add_message(
        turns("My locksmith is called Octavio Brandt", "I'll remember Octavio"),
        user_id=user,
        async_mode=False,
    )
    api.add_message(
        turns("We adopted a greyhound named Pepper", "Pepper is a lovely name"),
        user_id=user,
        async_mode=False,
    )
    return {
        "lexical": hits(api.search_memory("Octavio locksmith", user_id=user, top_k=3, mode="lexical")),
        "hybrid": hits(api.search_memory("Octavio locksmith", user_id=user, top_k=3, mode="hybrid")),
        "keyword": hits(api.search_memory("Octavio locksmith", user_id=user, top_k=3, mode="keyword")),
        "keyword_none": hits(api.search_memory("zzyzx qwv", user_id=user, top_k=3, mode="keyword")),
        # no word in common with any memory: the vector leg answers instead
        "fallback": hits(api.search_memory("zzyzx qwv", user_id=user, top_k=3, mode="lexical")),
    }


def test_search_lexical_mode(check: Callable[[Scenario], dict[str, Any]], api: Api) -> None:
    """mode="lexical" reaches the facade (BM25 alone: no hit has a vector rank) and an
    unknown mode is refused: by the facade (400) in process, by the request schema (422)
    over HTTP, both as InvalidInputError. Look at SearchRequest and the client's body if
    the lexical hits carry vector ranks through the client."""
    out = check(search_lexical)
    assert out["lexical"] and "Octavio" in out["lexical"][0]["memory"]
    assert all(h["details"]["vector_rank"] == 0 for h in out["lexical"])
    assert any(h["details"]["vector_rank"] > 0 for h in out["hybrid"])
    assert out["fallback"] and all(h["details"]["vector_rank"] > 0 for h in out["fallback"])
    # mode="keyword": the plain BM25 ranking, its scores the BM25 scores; no fallback to vectors
    assert out["keyword"] and "Octavio" in out["keyword"][0]["memory"]
    assert [h["details"] for h in out["keyword"]] == [
        {"bm25": round(h["score"], 6), "bm25_rank": float(rank)} for rank, h in enumerate(out["keyword"], 1)
    ]
    assert out["keyword_none"] == []
    bad = failure(lambda: api.search_memory("x", user_id="u-mode", mode="fuzzy"))  # type: ignore[arg-type]
    assert bad["error"] == "InvalidInputError" and "mode" in bad["message"]
    assert bad["code"] == (400 if isinstance(api, MemOS) else 422)


def list_in_pages(api: Api, user: str) -> dict[str, Any]:
    api.add_message(
        turns(*(f"note number {n} about gardening" for n in range(7))), user_id=user, async_mode=False
    )
    pages = []
    offset: int | None = 0
    while offset is not None:
        page = api.list_memories(user, limit=3, offset=offset).data
        pages.append(page)
        offset = page.next_offset
    return {
        "pages": pages,
        "filtered": api.list_memories(user, filter={"memory": {"like": "%number 3%"}}, limit=10),
    }


def test_list_pages(check: Callable[[Scenario], dict[str, Any]]) -> None:
    """Paging by limit/offset: every memory once, newest first, the same pages on both."""
    out = check(list_in_pages)
    pages = out["pages"]
    total = pages[0].total
    ids = [i.id for p in pages for i in p.items]
    assert len(ids) == len(set(ids)) == total >= 7
    assert [p.offset for p in pages] == list(range(0, total, 3))
    assert pages[-1].next_offset is None
    assert out["filtered"].data.total >= 1


def update_then_read(api: Api, user: str) -> dict[str, Any]:
    r = api.add_message(turns("My favourite colour is green"), user_id=user, async_mode=False)
    mid = r.data.memory_ids[0]
    text = api.update_memory(mid, memory="My favourite colour is blue", user_id=user)
    tags = api.update_memory(mid, tags=["prefs"], info={"checked": True}, user_id=user)
    return {
        "text": text,
        "tags": tags,
        "get": api.get_memory(mid, user_id=user),
        "search": hits(api.search_memory("favourite colour blue", user_id=user, top_k=3)),
    }


def test_update_makes_versions(check: Callable[[Scenario], dict[str, Any]]) -> None:
    """Each update is a new version with the previous one in history (sent once: an update
    is not retried after the server may have acted)."""
    out = check(update_then_read)
    item = out["get"].data
    assert item.memory == "My favourite colour is blue"
    assert item.version == 3 and [v.version for v in item.history] == [1, 2]
    assert item.tags == ["prefs"] and item.info == {"checked": True}


def delete_by_ids_and_filter(api: Api, user: str) -> dict[str, Any]:
    a = api.add_message(turns("Buy milk", "ok"), user_id=user, tags=["errand"], async_mode=False)
    b = api.add_message(turns("Call the bank", "noted"), user_id=user, tags=["todo"], async_mode=False)
    soft = api.delete_memory([a.data.memory_ids[0]], user_id=user)
    hard = api.delete_memory([a.data.memory_ids[1]], user_id=user, hard=True)
    by_filter = api.delete_memory(user_id=user, filter={"tags": {"contains": "todo"}})
    return {
        "soft": soft,
        "soft_get": api.get_memory(a.data.memory_ids[0], user_id=user),
        "hard": hard,
        "hard_get": failure(lambda: api.get_memory(a.data.memory_ids[1], user_id=user)),
        "by_filter": by_filter,
        "todo_left": [api.get_memory(i, user_id=user).data.status for i in b.data.memory_ids],
        "list": api.list_memories(user),
    }


def test_delete_by_ids_and_by_filter(check: Callable[[Scenario], dict[str, Any]]) -> None:
    out = check(delete_by_ids_and_filter)
    assert out["soft"].data == {"deleted": 1} and out["soft_get"].data.status == "deleted"
    assert out["hard"].data == {"deleted": 1}
    assert out["hard_get"]["error"] == "MemoryNotFoundError" and out["hard_get"]["code"] == 404
    assert out["by_filter"].data["deleted"] >= 2 and set(out["todo_left"]) == {"deleted"}


def memories_shares_and_working_set(api: Api, user: str) -> dict[str, Any]:
    friend = user + "-friend"
    note = api.add_memory("Tool result: the invoice total is 99 EUR", user_id=user, tags=["tool"])
    api.update_memory(note.data.id, memory="Tool result: the invoice total is 109 EUR", user_id=user)
    back = api.rollback_memory(note.data.id, 1, user_id=user)
    api.add_message(
        turns("Plan the trip to Lisbon", "ok"), user_id=user, conversation_id="w1", async_mode=False
    )
    api.search_memory("trip", user_id=user, conversation_id="w1", top_k=2)
    shared = api.share_cube(f"user:{user}", friend, "read", user_id=user)
    friend_sees = hits(api.search_memory("invoice total", user_id=friend, cube_ids=[f"user:{user}"], top_k=2))
    shares = api.list_shares(user)
    unshared = api.unshare_cube(f"user:{user}", friend, user_id=user)
    return {
        "add_memory": note,
        "rollback": back,
        "working": api.get_working_memory(user, "w1"),
        "share": shared,
        "friend_sees": friend_sees,
        "shares": shares,
        "unshare": unshared,
        "after": failure(lambda: api.search_memory("invoice", user_id=friend, cube_ids=[f"user:{user}"])),
    }


def test_add_memory_rollback_working_set_and_shares(check: Callable[[Scenario], dict[str, Any]]) -> None:
    """The rest of the facade over HTTP: add_memory, rollback, the working set, sharing a cube
    with another user of the tenant and taking it back."""
    out = check(memories_shares_and_working_set)
    assert out["rollback"].data.memory.endswith("99 EUR") and out["rollback"].data.version == 3
    assert out["working"].data and out["share"].data and out["unshare"].data is True
    assert out["friend_sees"] and out["after"]["error"] == "PermissionDeniedError"


def feedback_corrects(api: Api, user: str) -> dict[str, Any]:
    api.add_message(turns("I live in Paris"), user_id=user, conversation_id="c1", async_mode=False)
    fb = api.add_feedback(user, "c1", "No, I moved to Berlin in May", feedback_time=T0 + timedelta(days=30))
    return {
        "feedback": fb,
        "search": hits(api.search_memory("where does the user live", user_id=user, top_k=4)),
        "list": api.list_memories(user, filter={"status": {"in": ["activated", "archived"]}}),
    }


def test_feedback(check: Callable[[Scenario], dict[str, Any]]) -> None:
    """Feedback is stored as its own memory and supersedes the fact it contradicts."""
    out = check(feedback_corrects)
    data = out["feedback"].data
    assert data["feedback_id"] and set(data) >= {"added", "superseded", "archived"}
    assert any("Berlin" in h["memory"] for h in out["search"])


def make_docx() -> bytes:
    """A small DOCX, byte for byte the same every time (python-docx stamps the zip entries
    with the current time, so they are rewritten with a fixed one)."""
    import docx

    document = docx.Document()
    document.add_heading("Travel policy", 1)
    document.add_paragraph("Trains are booked in second class for trips under four hours.")
    document.add_paragraph("Hotel nights in Lisbon are refunded up to 140 euros.")
    raw, out = io.BytesIO(), io.BytesIO()
    document.save(raw)
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=(2024, 1, 1, 0, 0, 0)), src.read(info))
    return out.getvalue()


def knowledge_base(api: Api, user: str) -> dict[str, Any]:
    kb = api.create_knowledgebase(user, kb_id=f"kb-{user}", name="Handbook", description="company rules")
    kb_id = kb.data["kb_id"]
    text = (
        "# Expenses\n\nMeals on trips are refunded up to 40 euros a day.\n\n"
        "# Holidays\n\nEveryone gets 27 days of paid holiday a year."
    )
    md = api.add_document(kb_id, text.encode(), user_id=user, filename="handbook.md", tags=["hr"])
    path = Path(tempfile.mkdtemp()) / "travel.docx"
    path.write_bytes(make_docx())
    docx = api.add_document(kb_id, path, user_id=user, chunk_size=200)
    api.add_message(turns("I travel to Lisbon next week"), user_id=user, async_mode=False)
    q = "hotel refund Lisbon"
    out = {
        "kb": kb,
        "md": md,
        "docx": docx,
        "kbs": api.list_knowledgebases(user),
        "docs": api.list_documents(kb_id, user_id=user),
        "search_kb": hits(api.search_memory(q, user_id=user, knowledgebase_ids=[kb_id], top_k=5)),
        "search_own": hits(api.search_memory(q, user_id=user, top_k=5)),
        "stranger": failure(lambda: api.list_documents(kb_id, user_id=f"{user}-stranger")),
        "delete_doc": api.delete_document(kb_id, md.data["doc_id"], user_id=user),
        "docs_after": api.list_documents(kb_id, user_id=user),
        "delete_kb": api.delete_knowledgebase(kb_id, user_id=user),
        "kbs_after": api.list_knowledgebases(user),
        "gone": failure(lambda: api.search_memory(q, user_id=user, knowledgebase_ids=[kb_id])),
    }
    return out


def test_knowledge_base_documents_and_search(check: Callable[[Scenario], dict[str, Any]]) -> None:
    """Text and DOCX uploads (bytes with a filename, and a path), searched next to the user's
    memories, listed, deleted. Look at the document route's base64 and filename if the
    doc ids or chunks differ."""
    out = check(knowledge_base)
    assert out["md"].data["filename"] == "handbook.md" and out["md"].data["chunks"] >= 1
    assert out["docx"].data["filename"] == "travel.docx" and out["docx"].data["kind"] == "docx"
    assert [k["kb_id"] for k in out["kbs"].data] == [out["kb"].data["kb_id"]]
    assert len(out["docs"].data) == 2 and len(out["docs_after"].data) == 1
    origins = {h["origin"] for h in out["search_kb"]}
    assert origins == {"knowledgebase", "memory"}
    assert "140 euros" in out["search_kb"][0]["memory"]
    assert all(h["origin"] == "memory" for h in out["search_own"])
    assert out["stranger"]["error"] == "PermissionDeniedError"
    assert out["delete_doc"].data["deleted"] == out["md"].data["chunks"]
    assert out["kbs_after"].data == []
    assert out["gone"]["error"] == "KnowledgeBaseNotFoundError"


def errors_alike(api: Api, user: str) -> dict[str, Any]:
    r = api.add_message(turns("secret plans"), user_id=user, async_mode=False)
    mid = r.data.memory_ids[0]
    return {
        "missing_memory": failure(lambda: api.get_memory("no-such-id", user_id=user)),
        "missing_task": failure(lambda: api.get_task_status("no-such-task")),
        "bad_filter": failure(lambda: api.search_memory("x", user_id=user, filter={"tags": {"near": 1}})),
        "top_k": failure(lambda: api.search_memory("x", user_id=user, top_k=10_000)),
        "other_user": failure(lambda: api.get_memory(mid, user_id=f"{user}-other")),
        "other_user_update": failure(lambda: api.update_memory(mid, memory="x", user_id=f"{user}-other")),
        "nothing_to_update": failure(lambda: api.update_memory(mid, user_id=user)),
        "missing_kb": failure(lambda: api.list_documents("no-such-kb", user_id=user)),
        "delete_ids_and_filter": failure(lambda: api.delete_memory([mid], user_id=user, filter={"a": 1})),
        "missing_delete": failure(lambda: api.delete_memory(["no-such-id"], user_id=user)),
    }


def test_errors_are_the_same_classes_and_messages(check: Callable[[Scenario], dict[str, Any]]) -> None:
    """A caller catches the same exception with the same message on both backends."""
    out = check(errors_alike)
    assert out["missing_memory"]["error"] == "MemoryNotFoundError"
    assert out["missing_task"]["error"] == "TaskNotFoundError"
    assert out["bad_filter"]["error"] == "FilterError"
    assert out["top_k"]["error"] == "PayloadTooLargeError" and out["top_k"]["code"] == 413
    assert out["other_user"]["error"] == out["other_user_update"]["error"] == "PermissionDeniedError"
    assert out["nothing_to_update"]["error"] == "InvalidInputError"
    assert out["missing_kb"]["error"] == "KnowledgeBaseNotFoundError"
    assert out["missing_delete"]["error"] == "MemoryNotFoundError"
