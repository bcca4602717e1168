"""The seed API through MemOS, with the real SQLite store and the real packaged MiniLM."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from memos_core import (
    ConflictError,
    FilterError,
    InvalidInputError,
    KnowledgeBaseNotFoundError,
    MemoryNotFoundError,
    MemOS,
    NotSupportedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RequestError,
    TaskNotFoundError,
    TaskStatus,
    WindowConfig,
)
from memos_core.reader import Limits

CONV = [
    {"role": "user", "content": "I'm learning Python and want beginner projects", "id": "m1",
     "name": "Ana", "chat_time": "2023-05-08T13:56:00Z"},
    {"role": "assistant", "content": "Start with a scraper or a small data analysis", "id": "m2",
     "chat_time": "2023-05-08T13:57:00Z"},
]  # fmt: skip


def ids_of(resp) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.id for h in resp.data.memory_detail_list]


def test_add_is_searchable_at_once_with_full_hit_shape(mem: MemOS) -> None:
    r = mem.add_message(
        CONV, user_id="user_123", conversation_id="conv_001", tags=["study"], info={"scene": "chat"}
    )
    assert r.code == 200 and r.data.status == TaskStatus.QUEUED and len(r.data.memory_ids) == 2  # one a turn
    assert mem.get_task_status(r.data.task_id).data[0].status == TaskStatus.QUEUED  # fine stage not run yet

    hits = mem.search_memory("what language is Ana learning", user_id="user_123").data.memory_detail_list
    assert {h.id for h in hits} == set(r.data.memory_ids)
    hit = hits[0]
    assert hit.id == r.data.memory_ids[0]
    assert "Python" in hit.memory and "Ana (8 May 2023, 13:56)" in hit.memory
    assert hit.memory_type == "long_term" and hit.tags == ["study"] and hit.info == {"scene": "chat"}
    assert {"bm25", "vector", "fused", "recency", "usage", "final"} <= set(hit.score_details)
    assert hit.score == pytest.approx(hit.score_details["final"], abs=1e-5)
    assert all(v == round(v, 6) for h in hits for v in h.score_details.values())  # shown rounded
    src = hit.sources[0]
    assert (src.message_id, src.role, src.name, src.conversation_id) == ("m1", "user", "Ana", "conv_001")
    assert src.chat_time == datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)
    assert hit.created_at is not None and hit.event_time is not None


def test_fine_stage_keeps_ids_and_resolves_dates(mem: MemOS) -> None:
    r = mem.add_message(
        [{"role": "user", "content": "I went to the LGBTQ support group yesterday", "id": "d1",
          "chat_time": "2023-05-08T13:56:00Z"}],
        user_id="u", async_mode=False,
    )  # fmt: skip
    assert r.data.status == TaskStatus.COMPLETED
    assert mem.get_task_status(r.data.task_id).data[0].status == TaskStatus.COMPLETED
    item = mem.get_memory(r.data.memory_ids[0]).data
    assert item.event_time is not None and item.event_time.date().isoformat() == "2023-05-07"
    assert "support" in item.keywords and "7 May 2023" in item.keywords
    assert ids_of(mem.search_memory("support group", user_id="u")) == r.data.memory_ids


def test_every_turn_is_one_memory_traced_to_it(mem: MemOS) -> None:
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} about topic {i}", "id": f"t{i}"}
        for i in range(10)
    ]
    r = mem.add_message(turns, user_id="u")
    items = [mem.get_memory(i).data for i in r.data.memory_ids]
    assert [[s.message_id for s in it.sources] for it in items] == [[f"t{i}"] for i in range(10)]
    assert items[5].context is not None and len(items[5].context.before) == len(items[5].context.after) == 3


def test_windows_of_several_turns_overlap_when_configured(tmp_path, real_embedder) -> None:  # type: ignore[no-untyped-def]
    turns = [{"role": "user", "content": f"turn {i} about topic {i}", "id": f"t{i}"} for i in range(10)]
    with MemOS(tmp_path / "w", embedder=real_embedder, window=WindowConfig(size=4, overlap=1)) as m:
        items = [m.get_memory(i).data for i in m.add_message(turns, user_id="u").data.memory_ids]
    assert {s.message_id for it in items for s in it.sources} == {f"t{i}" for i in range(10)}
    assert all(len(it.sources) <= 4 for it in items)
    assert items[0].sources[-1].message_id == items[1].sources[0].message_id  # overlap


def test_seed_filter_example_and_chinese(mem: MemOS) -> None:
    work = mem.add_message(
        [{"role": "user", "content": "下周三我要在上海给客户做季度汇报，需要准备幻灯片"}],
        user_id="u", tags=["工作"], info={"custom_status": "待准备"},
    )  # fmt: skip
    mem.add_message([{"role": "user", "content": "周末去上海看展览"}], user_id="u", tags=["生活"])
    flt = {"and": [{"tags": {"contains": "工作"}}, {"custom_status": "待准备"}]}
    assert ids_of(mem.search_memory("上海", user_id="u", filter=flt)) == work.data.memory_ids
    hits = mem.search_memory("客户汇报", user_id="u").data.memory_detail_list
    assert hits[0].id == work.data.memory_ids[0] and hits[0].score_details["bm25_rank"] == 1


def test_scopes_isolate_users_conversations_and_agents(mem: MemOS) -> None:
    a = mem.add_message(
        [{"role": "user", "content": "my cat is called Miso"}],
        user_id="alice",
        conversation_id="c1",
        agent_id="bot1",
    )
    b = mem.add_message(
        [{"role": "user", "content": "my cat is called Tofu"}],
        user_id="alice",
        conversation_id="c2",
        agent_id="bot2",
    )
    mem.add_message([{"role": "user", "content": "my cat is called Pixel"}], user_id="bob")
    assert set(ids_of(mem.search_memory("cat name", user_id="alice"))) == set(
        a.data.memory_ids + b.data.memory_ids
    )
    assert ids_of(mem.search_memory("cat name", user_id="alice", conversation_id="c2")) == b.data.memory_ids
    assert ids_of(mem.search_memory("cat name", user_id="alice", agent_id="bot1")) == a.data.memory_ids
    assert all(
        "Pixel" not in h.memory for h in mem.search_memory("Pixel", user_id="alice").data.memory_detail_list
    )
    assert ids_of(mem.search_memory("cat", user_id="nobody")) == []


def test_search_counts_access(mem: MemOS) -> None:
    r = mem.add_message([{"role": "user", "content": "I play the violin"}], user_id="u")
    for _ in range(3):
        mem.search_memory("violin", user_id="u")
    item = mem.get_memory(r.data.memory_ids[0]).data
    assert item.access_count == 3 and item.last_accessed_at is not None


def test_list_memories_pages_newest_first(mem: MemOS) -> None:
    ids = [
        mem.add_message([{"role": "user", "content": f"fact number {i}"}], user_id="u").data.memory_ids[0]
        for i in range(5)
    ]
    first = mem.list_memories("u", limit=2).data
    assert first.total == 5 and [i.id for i in first.items] == ids[::-1][:2] and first.next_offset == 2
    last = mem.list_memories("u", limit=2, offset=4).data
    assert [i.id for i in last.items] == [ids[0]] and last.next_offset is None


def test_update_keeps_history_and_reembeds(mem: MemOS) -> None:
    r = mem.add_message([{"role": "user", "content": "I live in Paris"}], user_id="u")
    mid = r.data.memory_ids[0]
    updated = mem.update_memory(mid, memory="The user lives in Berlin", tags=["home"]).data
    assert updated.version == 2 and updated.history[0].memory.endswith("I live in Paris")
    assert updated.tags == ["home"]
    hit = mem.search_memory("Which city is the user's home, Berlin?", user_id="u").data.memory_detail_list[0]
    assert hit.id == mid and hit.memory == "The user lives in Berlin" and hit.version == 2
    with pytest.raises(InvalidInputError, match="nothing to update"):
        mem.update_memory(mid)


def test_delete_soft_hard_and_selectors(mem: MemOS) -> None:
    a = mem.add_message(
        [{"role": "user", "content": "secret plan alpha"}], user_id="u", tags=["x"]
    ).data.memory_ids[0]
    b = mem.add_message(
        [{"role": "user", "content": "secret plan beta"}], user_id="u", tags=["y"]
    ).data.memory_ids[0]
    with pytest.raises(PermissionDeniedError):
        mem.delete_memory([a], user_id="someone-else")  # ids with a user: that user must own them
    with pytest.raises(InvalidInputError, match="give memory_ids"):
        mem.delete_memory()
    assert mem.delete_memory([a]).data == {"deleted": 1}
    assert mem.get_memory(a).data.status == "deleted"  # the id still resolves
    assert ids_of(mem.search_memory("secret plan", user_id="u")) == [b]
    assert mem.delete_memory(user_id="u", filter={"tags": "y"}, hard=True).data == {"deleted": 1}
    with pytest.raises(MemoryNotFoundError):
        mem.get_memory(b)
    with pytest.raises(MemoryNotFoundError):
        mem.delete_memory(["no-such-id"])


def test_duplicate_adds_merge_without_losing_ids(mem: MemOS) -> None:
    firsts = mem.add_message(CONV, user_id="u", conversation_id="c1", async_mode=False).data.memory_ids
    resent = [{**m, "id": m["id"] + "-resent"} for m in CONV]
    seconds = mem.add_message(resent, user_id="u", conversation_id="c1", async_mode=False).data.memory_ids
    for first, second, mid in zip(firsts, seconds, ("m1", "m2"), strict=True):  # one memory a turn
        merged = mem.get_memory(second).data
        assert merged.merged_into == first and merged.status == "archived"
        assert merged.history[-1].reason == f"merged into {first}"
        survivor = mem.get_memory(first).data
        assert [s.message_id for s in survivor.sources] == [mid, f"{mid}-resent"]
        assert survivor.mode == "fine"
    assert ids_of(mem.search_memory("Python projects", user_id="u")) == firsts
    assert ids_of(mem.search_memory("Python projects", user_id="u", conversation_id="c1")) == firsts


def test_merging_never_crosses_scopes(mem: MemOS) -> None:
    """The same words in another conversation, agent or with other tags stay separate, so a
    scoped search or a tag filter keeps finding them."""
    a = mem.add_message(CONV, user_id="u", conversation_id="c1", async_mode=False).data.memory_ids[0]
    b = mem.add_message(CONV, user_id="u", conversation_id="c2", async_mode=False).data.memory_ids[0]
    c = mem.add_message(
        CONV, user_id="u", conversation_id="c1", tags=["work"], async_mode=False
    ).data.memory_ids[0]
    d = mem.add_message(
        CONV, user_id="u", conversation_id="c1", agent_id="bot", async_mode=False
    ).data.memory_ids[0]
    assert all(mem.get_memory(i).data.status == "activated" for i in (a, b, c, d))
    in_c2 = ids_of(mem.search_memory("Python projects", user_id="u", conversation_id="c2"))
    assert in_c2[0] == b and all(mem.get_memory(i).data.conversation_id == "c2" for i in in_c2)
    tagged = ids_of(mem.search_memory("Python projects", user_id="u", filter={"tags": "work"}))
    assert tagged[0] == c and all(mem.get_memory(i).data.tags == ["work"] for i in tagged)


def test_fine_stage_never_resurrects_a_deleted_memory(mem: MemOS) -> None:
    """The fine stage read the item, then the user deleted it: the stale write is refused,
    the task completes, and the memory stays deleted."""
    from memos_core.reader import refine

    r = mem.add_message(CONV, user_id="u")
    stale_write, _ = refine(mem.store, r.data.memory_ids)
    mem.delete_memory(r.data.memory_ids)
    with pytest.raises(ConflictError):
        mem.store.batch([stale_write])
    mem.run_pending()
    assert mem.get_task_status(r.data.task_id).data[0].status == TaskStatus.COMPLETED
    assert mem.get_memory(r.data.memory_ids[0]).data.status == "deleted"


def test_a_stale_fine_stage_write_is_refused_then_redone(mem: MemOS) -> None:
    """The fine stage read an item, then the user updated it: the stale enrichment must not
    overwrite the update (revision check), and a re-run enriches the new text."""
    from memos_core.reader import refine

    mid = mem.add_message(CONV, user_id="u").data.memory_ids[0]
    stale_write, _ = refine(mem.store, [mid])
    mem.update_memory(mid, memory="The user learns Rust since yesterday")
    with pytest.raises(ConflictError):
        mem.store.batch([stale_write])
    assert mem.get_memory(mid).data.memory == "The user learns Rust since yesterday"
    mem.run_pending()
    item = mem.get_memory(mid).data
    assert item.memory == "The user learns Rust since yesterday" and "rust" in item.keywords


def test_bad_requests_raise_specific_errors(tmp_path: Path, mem: MemOS) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        mem.add_message([], user_id="u")
    with pytest.raises(InvalidInputError, match=r"messages\[0\].*role"):
        mem.add_message([{"role": "wizard", "content": "hi"}], user_id="u")
    with pytest.raises(InvalidInputError, match="no content"):
        mem.add_message([{"role": "user", "content": "   "}], user_id="u")
    with pytest.raises(InvalidInputError, match="user_id"):
        mem.add_message(CONV, user_id="")
    with pytest.raises(InvalidInputError, match="chat_time"):
        mem.add_message([{"role": "user", "content": "x", "chat_time": "not a date"}], user_id="u")
    with pytest.raises(FilterError, match="bogus"):
        mem.search_memory("x", user_id="u", filter={"tags": {"bogus": 1}})
    with pytest.raises(PayloadTooLargeError):
        mem.search_memory("x", user_id="u", top_k=10_000)
    with pytest.raises(InvalidInputError):
        mem.search_memory("   ", user_id="u")
    with pytest.raises(TaskNotFoundError):
        mem.get_task_status("nope")
    with pytest.raises(MemoryNotFoundError):
        mem.get_memory("nope")
    with pytest.raises(KnowledgeBaseNotFoundError):
        mem.search_memory("x", user_id="u", knowledgebase_ids=["kb1"])
    with pytest.raises(InvalidInputError):
        mem.add_feedback("u", "c", "   ")
    with pytest.raises(InvalidInputError, match="scheduler"):
        MemOS(tmp_path / "x", embedder=mem.embedder, scheduler="threads")  # type: ignore[arg-type]
    small = MemOS(
        tmp_path / "small",
        embedder=mem.embedder,
        scheduler="inline",
        limits=Limits(max_messages=2, max_message_chars=10),
    )
    with pytest.raises(PayloadTooLargeError, match="limit is 2"):
        small.add_message(CONV * 2, user_id="u")
    with pytest.raises(PayloadTooLargeError, match="characters"):
        small.add_message([{"role": "user", "content": "x" * 11}], user_id="u")
    small.close()
    with pytest.raises(InvalidInputError, match="JSON"):
        mem.add_message(CONV, user_id="u", info={"o": object()})
    with pytest.raises(InvalidInputError, match="chat_time"):
        mem.add_message(
            [{"role": "user", "content": "x", "chat_time": "9999-12-31T23:00:00-05:00"}], user_id="u"
        )
    with pytest.raises(PayloadTooLargeError, match="tags"):
        mem.add_message(CONV, user_id="u", tags=[f"t{i}" for i in range(101)])
    with pytest.raises(PayloadTooLargeError, match="info"):
        mem.add_message(CONV, user_id="u", info={"blob": "x" * 70_000})
    with pytest.raises(FilterError, match="limited"):
        mem.search_memory("x", user_id="u", filter={"memory": {"like": "%" * 5000}})
    with pytest.raises(InvalidInputError, match="user_id"):
        mem.add_message(CONV, user_id="u\n")
    assert mem.list_memories("u").data.total == 0  # none of the refused adds wrote anything
    assert issubclass(FilterError, RequestError) and issubclass(PayloadTooLargeError, RequestError)


def test_odd_dates_in_text_never_fail_the_fine_stage(mem: MemOS) -> None:
    r = mem.add_message(
        [{"role": "user", "content": "we met 10000 years ago, see you in 999999999999 days, on 2023-02-30"}],
        user_id="u", async_mode=False,
    )  # fmt: skip
    assert r.data.status == TaskStatus.COMPLETED


def test_async_false_without_scheduler_writes_nothing(tmp_path: Path, real_embedder) -> None:  # type: ignore[no-untyped-def]
    with MemOS(tmp_path / "off", embedder=real_embedder, scheduler="off") as m:
        with pytest.raises(NotSupportedError, match="scheduler"):
            m.add_message(CONV, user_id="u", async_mode=False)
        assert m.list_memories("u").data.total == 0


def test_content_parts_are_kept_as_text(mem: MemOS) -> None:
    r = mem.add_message(
        [{"role": "user", "content": [
            {"type": "text", "text": "Here is my dog Rex"},
            {"type": "image_url", "image_url": {"url": "https://example.invalid/rex.png"}},
            {"type": "file", "file": {"filename": "vet-report.pdf"}},
        ]}],
        user_id="u",
    )  # fmt: skip
    memory = mem.get_memory(r.data.memory_ids[0]).data.memory
    assert (
        "Rex" in memory
        and "[image: https://example.invalid/rex.png]" in memory
        and "vet-report.pdf" in memory
    )


def test_reopening_the_folder_keeps_everything(tmp_path: Path, real_embedder) -> None:  # type: ignore[no-untyped-def]
    with MemOS(tmp_path / "d", embedder=real_embedder, scheduler="inline") as m1:
        r = m1.add_message(CONV, user_id="u")
    with MemOS(tmp_path / "d", embedder=real_embedder, scheduler="inline") as m2:
        assert ids_of(m2.search_memory("Python", user_id="u")) == r.data.memory_ids
        m2.run_pending()
        assert m2.get_task_status(r.data.task_id).data[0].status == TaskStatus.COMPLETED


def test_a_folder_refuses_another_embedding_model(tmp_path: Path, real_embedder) -> None:  # type: ignore[no-untyped-def]
    """Opening a folder with another embedder is a clear error, never a silent mix of spaces."""
    from memos_core.testing import HashEmbedder

    with MemOS(tmp_path / "d", embedder=real_embedder, scheduler="inline") as m:
        m.add_message(CONV, user_id="u")
    with MemOS(tmp_path / "d", embedder=HashEmbedder(dim=384), scheduler="inline") as other:
        with pytest.raises(InvalidInputError, match="all-MiniLM-L6-v2"):
            other.add_message(CONV, user_id="u")
        with pytest.raises(InvalidInputError, match="all-MiniLM-L6-v2"):
            other.search_memory("Python", user_id="u")
        other.add_message(CONV, user_id="someone-else")  # a new cube may use any model
