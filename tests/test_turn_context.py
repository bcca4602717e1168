"""One memory per turn, found through the turns around it; z-score fusion; the speaker bonus.

The recipe these tests pin down is the one measured on LoCoMo (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from memos_core import Context, InvalidInputError, MemCube, MemoryItem, MemOS, RetrievalConfig, WindowConfig
from memos_core.reader import (
    context_lines,
    extend_context,
    fast_items,
    item_vectors,
    validate_messages,
    vector_texts,
)
from memos_core.testing import HashEmbedder

T0 = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)


def turns(*pairs: tuple[str, str]) -> list[dict[str, object]]:
    return [
        {"role": "user", "name": who, "content": text, "id": f"m{i}", "chat_time": T0.isoformat()}
        for i, (who, text) in enumerate(pairs)
    ]


SHOW = turns(
    ("Joanna", "Your cooking show looked like so much fun to host!"),
    ("Joanna", "What was your favourite dish from it?"),
    ("Nate", "Coconut milk ice cream is at the top of my list. Smooth, creamy and dairy-free."),
    ("Joanna", "Yum. I spent the weekend repainting the garden shed a bright blue."),
    ("Nate", "Blue sheds are the best. My turtles would love a garden like that."),
    ("Joanna", "I also started a new screenplay about a lighthouse keeper."),
)


def items_of(messages: list[dict[str, object]], window: WindowConfig, previous: list[str] | None = None):
    msgs = validate_messages(messages, __import__("memos_core").Limits())
    return fast_items(
        msgs, cube_id="c", user_id="u", conversation_id="conv", agent_id=None, app_id=None, tags=[],
        info={}, embedding_model="m", window=window, previous=previous or [],
    )  # fmt: skip


def test_one_item_per_turn_with_turns_of_context_each_side() -> None:
    items = items_of(SHOW, WindowConfig(context=2))
    assert len(items) == len(SHOW)
    assert [[s.message_id for s in i.sources] for i in items] == [[f"m{n}"] for n in range(len(SHOW))]
    reply = items[2]
    assert reply.memory.startswith("Nate (8 May 2023, 13:56): Coconut milk")
    assert reply.context is not None
    assert reply.context.before_ids == [items[0].id, items[1].id]
    assert reply.context.after_ids == [items[3].id, items[4].id]
    assert reply.context.model_copy(update={"before_ids": [], "after_ids": []}) == Context(
        before=["Joanna: Your cooking show looked like so much fun to host!",
                "Joanna: What was your favourite dish from it?"],
        after=["Joanna: Yum. I spent the weekend repainting the garden shed a bright blue.",
               "Nate: Blue sheds are the best. My turtles would love a garden like that."],
    )  # fmt: skip
    assert items[0].context is not None and items[0].context.before == []
    assert items[-1].context is not None and items[-1].context.after == []


def test_previous_turns_of_the_conversation_come_before_the_first_ones() -> None:
    earlier = items_of(SHOW[:2], WindowConfig())
    items = items_of(SHOW[2:3], WindowConfig(), previous=earlier)
    assert items[0].context is not None
    assert items[0].context.before == [*context_lines(earlier[0]), *context_lines(earlier[1])]
    assert items[0].context.before_ids == [earlier[0].id, earlier[1].id] and items[0].context.after == []
    one = items_of(SHOW[2:3], WindowConfig(context=1), previous=earlier)[0].context
    assert one is not None and one.before_ids == [earlier[1].id]


def test_no_context_and_windows_are_still_possible() -> None:
    assert all(i.context is None for i in items_of(SHOW, WindowConfig(context=0)))
    windows = items_of(SHOW, WindowConfig(size=4, overlap=1, context=0))
    assert [len(i.sources) for i in windows] == [4, 3]
    with pytest.raises(InvalidInputError):
        WindowConfig(context=-1)


def test_vector_texts_are_the_turn_its_neighbourhood_and_its_answer() -> None:
    reply = items_of(SHOW, WindowConfig())[2]
    own = 'Nate said, "Coconut milk ice cream is at the top of my list. Smooth, creamy and dairy-free."'
    assert vector_texts(reply) == [
        own,
        f'Joanna said, "What was your favourite dish from it?"\n{own}\n'
        'Joanna said, "Yum. I spent the weekend repainting the garden shed a bright blue."',
        f'{own}\nJoanna said, "Yum. I spent the weekend repainting the garden shed a bright blue."',
    ]
    plain = MemoryItem(cube_id="c", memory="a note without context")
    assert vector_texts(plain) == ["a note without context"]


def test_item_vectors_are_the_normalised_sum_of_the_views() -> None:
    emb = HashEmbedder()
    reply = items_of(SHOW, WindowConfig())[2]
    got = item_vectors(emb, [reply])[0]
    views = emb.embed(vector_texts(reply))
    want = views.sum(axis=0) / np.linalg.norm(views.sum(axis=0))
    assert np.allclose(got, want, atol=1e-6) and abs(float(np.linalg.norm(got)) - 1) < 1e-5


def test_extend_context_fills_what_follows_without_touching_complete_items() -> None:
    first = items_of(SHOW[:2], WindowConfig())
    later = items_of(SHOW[2:4], WindowConfig())
    changed = extend_context(first, later, 2)
    assert [c.id for c in changed] == [first[0].id, first[1].id]
    nate = "Nate: Coconut milk ice cream is at the top of my list. Smooth, creamy and dairy-free."
    assert changed[0].context is not None and changed[0].context.after == [*context_lines(first[1]), nate]
    assert changed[1].context is not None and changed[1].context.after == context_lines(
        later[0]
    ) + context_lines(later[1])
    assert extend_context(changed, later, 2) == []  # complete: nothing to write again


MOVE = turns(
    ("Joanna", "Congratulations on the offer! Which city are you moving to for the new job?"),
    ("Nate", "Lisbon! We sign the lease next week."),
    ("Joanna", "I spent the weekend repainting the garden shed a bright blue."),
    ("Nate", "Blue sheds are the best. My turtles would love a garden like that."),
    ("Joanna", "I also started a new screenplay about a lighthouse keeper."),
    ("Nate", "A lighthouse keeper! I want to read it when it is done."),
)
MOVE_QUERY = "Where is Nate moving for his new job?"


def top_message(m: MemOS, query: str) -> str | None:
    hits = m.search_memory(query, user_id="u1", top_k=3).data.memory_detail_list
    return hits[0].sources[0].message_id


def test_a_reply_is_found_by_the_question_it_answered(tmp_path: Path, real_embedder: object) -> None:
    """ "Lisbon! We sign the lease next week." shares no word with the query; its context
    does. Without context the question outranks its answer."""
    for context, want in ((2, "m1"), (0, "m0")):
        with MemOS(
            tmp_path / str(context), embedder=real_embedder, scheduler="inline",  # type: ignore[arg-type]
            window=WindowConfig(context=context),
        ) as m:  # fmt: skip
            m.add_message(MOVE, user_id="u1", conversation_id="c")
            m.run_pending()
            assert top_message(m, MOVE_QUERY) == want, context


def test_turns_added_one_by_one_get_the_same_context(mem: MemOS) -> None:
    for msg in MOVE:
        mem.add_message([msg], user_id="u1", conversation_id="c")
    mem.run_pending()
    listed = mem.list_memories(user_id="u1", limit=50).data.items
    by_message = {i.sources[0].message_id: i for i in listed if i.sources and i.sources[0].type == "chat"}
    for n, want in enumerate(items_of(MOVE, WindowConfig())):
        got = by_message[f"m{n}"]
        assert got.context is not None and want.context is not None
        assert (got.context.before, got.context.after) == (want.context.before, want.context.after), n
        vec = mem.store.get_embeddings([got.id])[got.id]
        assert np.allclose(vec, item_vectors(mem.embedder, [got])[0], atol=1e-5)
    assert top_message(mem, MOVE_QUERY) == "m1"


def test_the_speaker_a_query_names_comes_first(fast_mem: MemOS) -> None:
    fast_mem.add_message(
        turns(("Ana", "I adopted a grey cat called Pixel"), ("Ben", "I adopted a grey cat called Pixel too")),
        user_id="u1", conversation_id="c",
    )  # fmt: skip
    for who in ("Ana", "Ben"):
        hits = fast_mem.search_memory(f"Which cat did {who} adopt?", user_id="u1").data.memory_detail_list
        assert hits[0].sources[0].name == who
        assert hits[0].score_details["speaker"] == RetrievalConfig().speaker_weight
        assert hits[1].score_details["speaker"] == 0.0


def test_scores_stay_in_zero_one_and_rrf_is_still_offered(tmp_path: Path) -> None:
    for fusion in ("zscore", "rrf"):
        with MemOS(
            tmp_path / fusion, embedder=HashEmbedder(), scheduler="inline",
            retrieval=RetrievalConfig(fusion=fusion, speaker_weight=0.0),  # type: ignore[arg-type]
        ) as m:  # fmt: skip
            m.add_message(SHOW, user_id="u1", conversation_id="show")
            hits = m.search_memory("garden shed painted blue", user_id="u1", top_k=6).data.memory_detail_list
            assert hits and all(0.0 < h.score_details["fused"] < 1.0 + 1e-9 for h in hits)
            assert "shed" in hits[0].memory
    with pytest.raises(InvalidInputError):
        RetrievalConfig(fusion="max")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        RetrievalConfig(bm25_weight=0.0, vector_weight=0.0)


def test_update_and_reindex_use_the_same_vector_recipe(mem: MemOS, tmp_path: Path) -> None:
    mem.add_message(SHOW, user_id="u1", conversation_id="show")
    mem.run_pending()
    reply = next(
        i for i in mem.list_memories(user_id="u1", limit=50).data.items if i.sources[0].message_id == "m2"
    )
    new = mem.update_memory(reply.id, memory="Nate (8 May 2023, 13:56): Mango sorbet, no contest.").data
    assert new.context == reply.context
    assert np.allclose(
        mem.store.get_embeddings([new.id])[new.id], item_vectors(mem.embedder, [new])[0], atol=1e-5
    )
    cube = MemCube(mem.store, reply.cube_id)
    cube.reindex(mem.embedder)
    assert np.allclose(
        mem.store.get_embeddings([new.id])[new.id], item_vectors(mem.embedder, [new])[0], atol=1e-5
    )


def test_the_fast_stage_embeds_the_turn_alone_and_the_fine_stage_adds_its_context(tmp_path: Path) -> None:
    """An add stays one short embedding a turn (the fast-add budget); the fine stage writes the
    full sum, so search is exact for the turn at once and contextual once refined."""
    emb = HashEmbedder()
    with MemOS(tmp_path / "d", embedder=emb, scheduler="off") as m:
        ids = m.add_message(MOVE, user_id="u1", conversation_id="c").data.memory_ids
        reply = m.get_memory(ids[1]).data
        assert reply.context is not None
        stored = m.store.get_embeddings([reply.id])[reply.id]
        assert np.allclose(stored, item_vectors(emb, [reply], fast=True)[0], atol=1e-6)
        assert not np.allclose(stored, item_vectors(emb, [reply])[0], atol=1e-3)
    with MemOS(tmp_path / "d", embedder=emb, scheduler="inline") as m:
        m.run_pending()
        stored = m.store.get_embeddings([reply.id])[reply.id]
        assert np.allclose(stored, item_vectors(emb, [m.get_memory(reply.id).data])[0], atol=1e-6)


# ---- review findings: order, scope, deletes and edits, merges, names, numerics -----------------


def chat_items(m: MemOS, user: str = "u1") -> dict[str, MemoryItem]:
    listed = m.list_memories(user_id=user, limit=100, filter={"status": {"in": ["activated", "archived"]}})
    return {
        i.sources[0].message_id: i for i in listed.data.items if i.sources and i.sources[0].type == "chat"
    }


def test_context_keeps_conversation_order_across_adds_of_any_size(fast_mem: MemOS) -> None:
    fast_mem.add_message(MOVE[:3], user_id="u1", conversation_id="c")
    fast_mem.add_message(MOVE[3:4], user_id="u1", conversation_id="c")
    fast_mem.add_message(MOVE[4:], user_id="u1", conversation_id="c")
    fast_mem.run_pending()
    got = chat_items(fast_mem)
    for n, want in enumerate(items_of(MOVE, WindowConfig())):
        assert got[f"m{n}"].context is not None and want.context is not None
        assert (got[f"m{n}"].context.before, got[f"m{n}"].context.after) == (
            want.context.before,
            want.context.after,
        )
        ids = [got[f"m{k}"].id for k in range(len(MOVE))]
        assert got[f"m{n}"].context.before_ids == ids[max(0, n - 3) : n]
        assert got[f"m{n}"].context.after_ids == ids[n + 1 : n + 4]


def test_context_never_crosses_agents_apps_or_tags(fast_mem: MemOS) -> None:
    fast_mem.add_message(
        turns(("Ana", "my bank pin is 4921")), user_id="u1", conversation_id="c", agent_id="bank"
    )  # fmt: skip
    fast_mem.add_message(
        turns(("Ana", "recommend a movie")), user_id="u1", conversation_id="c", agent_id="movies"
    )
    fast_mem.add_message(turns(("Ana", "a secret note")), user_id="u1", conversation_id="c", tags=["private"])
    fast_mem.run_pending()
    for item in chat_items(fast_mem).values():
        assert item.context is None, item


@pytest.mark.parametrize("hard", [False, True])
def test_a_deleted_turn_leaves_its_neighbours_context(fast_mem: MemOS, hard: bool) -> None:
    secret = turns(("Ana", "hello"), ("Ana", "my social security number is 078-05-1120"), ("Ben", "noted"))
    fast_mem.add_message(secret, user_id="u1", conversation_id="c")
    fast_mem.run_pending()
    got = chat_items(fast_mem)
    fast_mem.delete_memory([got["m1"].id], hard=hard)
    for key in ("m0", "m2"):
        item = fast_mem.get_memory(got[key].id).data
        assert item.context is not None and not any(
            "078-05" in x for x in item.context.before + item.context.after
        )
        assert got["m1"].id not in item.context.neighbours()
        vec = fast_mem.store.get_embeddings([item.id])[item.id]
        assert np.allclose(vec, item_vectors(fast_mem.embedder, [item])[0], atol=1e-6)
    hits = fast_mem.search_memory("social security number", user_id="u1").data.memory_detail_list
    assert all("078-05" not in h.memory for h in hits) and all(
        h.score_details["bm25_rank"] == 0 for h in hits
    )


def test_a_delete_by_filter_rewrites_the_neighbours_that_stay(fast_mem: MemOS) -> None:
    fast_mem.add_message(turns(("Ana", "hello"), ("Ana", "the wifi password is hunter2")), user_id="u1",
                         conversation_id="c", tags=["a"])  # fmt: skip
    fast_mem.add_message(turns(("Ana", "bye")), user_id="u1", conversation_id="c2")
    fast_mem.run_pending()
    hello = chat_items(fast_mem)["m0"]
    fast_mem.update_memory(hello.id, tags=["keep"])
    fast_mem.delete_memory(user_id="u1", filter={"tags": {"contains": "a"}})
    assert fast_mem.get_memory(hello.id).data.context is None


def test_an_edited_turn_is_rewritten_in_its_neighbours_context(fast_mem: MemOS) -> None:
    fast_mem.add_message(
        turns(("Ana", "my password is hunter2"), ("Ben", "ok")), user_id="u1", conversation_id="c"
    )
    fast_mem.run_pending()
    got = chat_items(fast_mem)
    fast_mem.update_memory(got["m0"].id, memory="Ana (8 May 2023, 13:56): my password is [redacted]")
    after = fast_mem.get_memory(got["m1"].id).data
    assert after.context is not None and after.context.before == ["Ana: my password is [redacted]"]
    fast_mem.rollback_memory(got["m0"].id, 1)
    assert fast_mem.get_memory(got["m1"].id).data.context.before == ["Ana: my password is hunter2"]  # type: ignore[union-attr]


def test_the_same_words_from_another_speaker_are_not_merged(fast_mem: MemOS) -> None:
    for who in ("Alice", "Bob"):
        fast_mem.add_message(
            turns((who, "I live in Paris with my two cats")), user_id="u1", conversation_id="c"
        )
    fast_mem.run_pending()
    listed = fast_mem.list_memories(user_id="u1", limit=50).data.items
    said = [i for i in listed if not any(s.type == "memory" for s in i.sources)]  # the turns, not facts
    assert sorted(i.sources[0].name or "" for i in said) == ["Alice", "Bob"]
    assert all(i.merged_into is None for i in said)
    assert {i.memory for i in listed} >= {"Alice lives in Paris.", "Bob lives in Paris."}


def test_a_merged_repeat_keeps_its_place_in_the_context(fast_mem: MemOS) -> None:
    said = turns(("A", "I really love hiking in the Alps every summer"), ("B", "nice"), ("B", "where?"))
    fast_mem.add_message(said, user_id="u1", conversation_id="c")
    fast_mem.run_pending()
    fast_mem.add_message(turns(("A", "I really love hiking in the Alps every summer")), user_id="u1",
                         conversation_id="c")  # fmt: skip
    fast_mem.run_pending()
    fast_mem.add_message(turns(("B", "me too")), user_id="u1", conversation_id="c")
    fast_mem.run_pending()
    items = fast_mem.list_memories(
        user_id="u1", limit=50, filter={"status": {"in": ["activated", "archived"]}}
    )
    last = next(i for i in items.data.items if i.memory.endswith("me too"))
    assert (
        last.context is not None
        and last.context.before[-1] == "A: I really love hiking in the Alps every summer"
    )
    first = next(i for i in items.data.items if "hiking" in i.memory and i.merged_into is None and i.context)
    assert first.context is not None and first.context.after == [
        "B: nice",
        "B: where?",
        "A: I really love hiking in the Alps every summer",  # the repeat was said, merged or not
    ]


def test_a_lower_case_common_word_names_no_speaker(fast_mem: MemOS) -> None:
    fast_mem.add_message(turns(("Will", "new bike helmet"), ("Ana", "lasagna from my grandmother")),
                         user_id="u1", conversation_id="c")  # fmt: skip
    hits = fast_mem.search_memory("what will be cooked for dinner", user_id="u1").data.memory_detail_list
    assert all(h.score_details["speaker"] == 0.0 for h in hits)
    hits = fast_mem.search_memory("What did Will buy?", user_id="u1").data.memory_detail_list
    assert hits[0].sources[0].name == "Will" and hits[0].score_details["speaker"] > 0
    from memos_core.retrieval import _query_names, _said_by

    dr = MemoryItem(cube_id="c", memory="x", sources=[{"type": "chat", "name": "Dr Smith"}])  # type: ignore[list-item]
    assert _said_by(dr, _query_names("What did Smith say?")) and not _said_by(dr, _query_names("Dr. Who?"))


def test_near_tied_scores_never_overflow() -> None:
    from memos_core.ports import ScoredId
    from memos_core.retrieval import _Standard

    std = _Standard.of([ScoredId(0.9, "a"), ScoredId(0.9000001, "b"), ScoredId(0.9000002, "c")])
    assert std.floor - 3.0 <= std.z(-1.0) <= 50.0 and np.isfinite(std.z(None))  # unbounded: -1.2e7
    wide = _Standard.of([ScoredId(s, str(s)) for s in (0.1, 0.5, 0.9)])
    assert wide.z(-1e9) >= wide.floor - 3.0


def test_facts_read_from_turns_are_not_context(fast_mem: MemOS) -> None:
    fast_mem.add_message(turns(("Ana", "I live in Paris")), user_id="u1", conversation_id="c")
    fast_mem.run_pending()  # the rules read the fact "Ana lives in Paris." from it
    reply = fast_mem.add_message(turns(("Ben", "lovely city")), user_id="u1", conversation_id="c")
    item = fast_mem.get_memory(reply.data.memory_ids[0]).data
    assert item.context is not None and item.context.before == ["Ana: I live in Paris"]


def test_a_question_ranks_below_the_answer_it_asks_for(fast_mem: MemOS) -> None:
    fast_mem.add_message(turns(("Ana", "I live in Porto"), ("Ana", "Where do I live?")), user_id="u1",
                         conversation_id="c")  # fmt: skip
    hits = fast_mem.search_memory("where does Ana live", user_id="u1").data.memory_detail_list
    asks = next(h for h in hits if h.memory.endswith("Where do I live?"))
    assert asks.score_details["question"] == -RetrievalConfig().question_weight
    assert next(h for h in hits if h.memory.endswith("Porto")).score_details["question"] == 0.0
