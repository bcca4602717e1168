"""The SQLite store's text leg when a query's words are common: bounded BM25 (rare words
exact, common words by IDF through AND tiers, newest first) instead of scoring every match;
and a small scope in a large table, scored exactly through the FTS table's cube column.

The budget is lowered so a few dozen rows count as "many"; when a test fails, look at
``_bounded_candidates`` and the filter/fallback loop in ``SqliteStore._text_search``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memos_core import MemoryItem, SqliteStore
from memos_core.filters import parse_filter
from memos_core.ports import TextSearch
from memos_core.stores import sqlite as sqlite_store
from memos_core.stores._sqlite_schema import cube_token

from .store_conformance import T0

CUBE = "cube-a"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteStore]:
    monkeypatch.setattr(sqlite_store, "TEXT_BUDGET", 20)
    s = SqliteStore.from_path(tmp_path)
    s.setup()
    yield s
    s.close()


def put(store: SqliteStore, texts: list[str], **kw: str) -> list[MemoryItem]:
    made = [MemoryItem(cube_id=CUBE, memory=t, created_at=T0, updated_at=T0, **kw) for t in texts]  # type: ignore[arg-type]
    store.put(made)
    return made


def test_small_queries_stay_exact(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below the budget nothing changes: the bounded path is never entered."""
    put(store, ["kites fly high", "a red kite", "tea at noon"])
    monkeypatch.setattr(sqlite_store, "_bounded_candidates", None)  # would fail if called
    assert [h.id for h in store.search_text([CUBE], "kite")]


def test_rare_word_wins_and_common_words_rank_the_rest(store: SqliteStore) -> None:
    """A document with the query's rare word comes first; among documents with common words
    only, those holding more of them come before those holding fewer."""
    filler = put(store, [f"garden walk number {i}" for i in range(60)])
    both = put(store, ["garden party and a long walk"])[0]
    rare = put(store, ["zeppelin over the garden"])[0]
    put(store, [f"the walk to work {i}" for i in range(30)])
    hits = store.search_text([CUBE], "zeppelin garden walk", limit=10)
    assert hits[0].id == rare.id
    assert len(hits) == 10
    assert {h.id for h in hits[1:]} <= {both.id} | {f.id for f in filler}  # hold both common words
    assert hits[0].score > hits[1].score


def test_common_only_query_returns_newest_full_matches(store: SqliteStore) -> None:
    """With common words only, documents holding all of them come first, newest first."""
    old = put(store, [f"apple banana note {i}" for i in range(40)])
    put(store, [f"apple only {i}" for i in range(40)])
    hits = store.search_text([CUBE], "apple banana", limit=5)
    assert [h.id for h in hits] == [i.id for i in reversed(old[-5:])]


def test_filters_apply_and_a_selective_one_falls_back_to_exact(store: SqliteStore) -> None:
    """Candidates pass the scope and filter; when too few do, the exact query runs, so the
    hit count equals exact search's."""
    put(store, [f"apple banana {i}" for i in range(50)], conversation_id="busy")
    rare = put(store, ["apple banana cherry"], conversation_id="quiet")
    put(store, ["apple pie"], conversation_id="quiet")
    quiet = parse_filter({"conversation_id": "quiet"})
    hits = store.search_text([CUBE], "apple banana", quiet, limit=10)
    assert hits[0].id == rare[0].id and len(hits) == 2
    assert all(
        h.id != rare[0].id
        for h in store.search_text(
            [CUBE], "apple banana", parse_filter({"conversation_id": "busy"}), limit=60
        )
    )
    store.delete([CUBE], ids=[rare[0].id])
    assert rare[0].id not in [h.id for h in store.search_text([CUBE], "apple banana", limit=100)]


def test_query_syntax_is_never_interpreted(store: SqliteStore) -> None:
    """Quotes and operators in user text stay words on the bounded path too."""
    put(store, [f'he said "NEAR" AND OR {i}' for i in range(40)])
    assert store.search_text([CUBE], 'said "NEAR" AND OR (', limit=5)


def test_a_small_scope_in_a_large_table_is_scored_exactly_without_other_cubes(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant with few memories in a table full of another tenant's: FTS5 is asked for that
    tenant's cube only, so its search is exact BM25 (the bounded path is never entered) and
    costs what its own rows cost."""
    put(store, [f"apple banana busy {i}" for i in range(80)])  # cube-a: most of the table
    small = [
        MemoryItem(cube_id="cube-b", memory=t, created_at=T0, updated_at=T0)
        for t in ("apple banana split", "banana bread", "apple tart", "plain water")
    ]
    store.put(small)
    monkeypatch.setattr(sqlite_store, "_bounded_candidates", None)  # would fail if called
    hits = store.search_text(["cube-b"], "apple banana", limit=10)
    assert [h.id for h in hits][:1] == [small[0].id]
    assert {h.id for h in hits} == {i.id for i in small[:3]}
    # the same order and scores as scoring every match of the table and keeping cube-b's
    joined = store._run(
        lambda c: store._text_exact(
            c, TextSearch(["cube-b"], "apple banana", None, 10), ["apple", "banana"], None
        ),
        write=False,
    )
    assert [(h.id, round(h.score, 9)) for h in hits] == [(h.id, round(h.score, 9)) for h in joined]


def test_several_cubes_are_searched_together_and_no_other(store: SqliteStore) -> None:
    put(store, [f"kite festival {i}" for i in range(30)])  # cube-a, not searched
    mine = [
        MemoryItem(cube_id=cube, memory=f"kite day in {cube}", created_at=T0, updated_at=T0)
        for cube in ("cube-b", "cube-c")
    ]
    store.put(mine)
    hits = store.search_text(["cube-b", "cube-c"], "kite", limit=10)
    assert {h.id for h in hits} == {i.id for i in mine}


def test_a_cube_token_in_a_query_is_only_a_word(store: SqliteStore) -> None:
    """The cube column is never searched by the query's words: typing another cube's token
    finds nothing (and nothing of that cube)."""
    put(store, ["kites fly high"])
    other = MemoryItem(cube_id="cube-b", memory="secret plans", created_at=T0, updated_at=T0)
    store.put([other])
    assert store.search_text([CUBE], cube_token("cube-b"), limit=10) == []
    assert store.search_text([CUBE], cube_token(CUBE), limit=10) == []  # not even its own
    assert store.search_text([CUBE], f"{cube_token(CUBE)} kites", limit=10)[0].score > 0


def test_cubes_that_share_a_token_still_see_only_their_own_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cube column is a hash: were two cubes' tokens the same, FTS5 would return both
    cubes' rows, and the join on ``items.cube_id`` must still keep the other's out."""
    monkeypatch.setattr(sqlite_store, "cube_token", lambda cube_id: "k42")
    s = SqliteStore.from_path(tmp_path)
    s.setup()
    mine = MemoryItem(cube_id="cube-a", memory="my kite is red", created_at=T0, updated_at=T0)
    theirs = MemoryItem(cube_id="cube-b", memory="their kite is blue", created_at=T0, updated_at=T0)
    s.put([mine, theirs])
    assert [h.id for h in s.search_text(["cube-a"], "kite", limit=10)] == [mine.id]
    assert [h.id for h in s.search_text(["cube-b"], "kite blue", limit=10)] == [theirs.id]
    s.close()


def test_other_cubes_newer_rows_do_not_push_a_large_cube_into_exact_search(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large cube's common-word search takes its candidates from its own rows, however many
    newer rows other cubes wrote with the same words (they used to fill every candidate place,
    be filtered away, and send the search to scoring every match: seconds at a million rows)."""
    mine = put(store, [f"apple banana mine {i}" for i in range(60)])  # cube-a, over the budget
    store.put(
        [
            MemoryItem(cube_id="cube-b", memory=f"apple banana theirs {i}", created_at=T0, updated_at=T0)
            for i in range(60)
        ]
    )
    store.put(
        [
            MemoryItem(cube_id="cube-b", memory=f"zeppelin number {i}", created_at=T0, updated_at=T0)
            for i in range(12)
        ]
    )
    rare = put(store, ["zeppelin over the apple orchard"])[0]

    def no_exact(*args: object, **kwargs: object) -> None:
        raise AssertionError("fell back to exact search")

    monkeypatch.setattr(SqliteStore, "_text_exact", no_exact)
    hits = store.search_text([CUBE], "apple banana", limit=10)
    assert [h.id for h in hits] == [i.id for i in reversed(mine[-10:])]  # newest of its own first
    hits = store.search_text([CUBE], "zeppelin apple", limit=10)
    assert hits[0].id == rare.id and {h.id for h in hits} <= {rare.id} | {i.id for i in mine}


def test_a_table_of_one_cube_asks_fts5_for_no_cube(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every row in the searched cube, the bounded path's AND queries leave the cube out
    (it would only cost time), and find the same candidates."""
    mine = put(store, [f"apple banana mine {i}" for i in range(60)])
    seen: list[str] = []
    real = sqlite_store._bounded_candidates

    def spy(*args: object, **kwargs: object) -> list[tuple[int, float]]:
        seen.append(str(kwargs["scope"]))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite_store, "_bounded_candidates", spy)
    hits = store.search_text([CUBE], "apple banana", limit=10)
    assert seen == ["None"] and [h.id for h in hits] == [i.id for i in reversed(mine[-10:])]
    store.put([MemoryItem(cube_id="cube-b", memory="apple banana theirs", created_at=T0, updated_at=T0)])
    assert [h.id for h in store.search_text([CUBE], "apple banana", limit=10)] == [h.id for h in hits]
    assert seen[1].startswith("cube : (")


def test_a_large_cube_with_few_matches_is_answered_from_its_candidates(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large cube whose query words are common only in another cube: when every single word
    was asked for within the cube and none reached the limit, the candidates are all the
    cube's matches, so fewer hits than asked for is the exact answer (scoring every match of
    the other cube would cost seconds at a million rows)."""
    put(store, [f"garden walk number {i}" for i in range(60)])  # cube-a: large, no apples
    few = put(store, ["apple banana pie", "one apple"])
    store.put(
        [
            MemoryItem(cube_id="cube-b", memory=f"apple banana theirs {i}", created_at=T0, updated_at=T0)
            for i in range(200)
        ]
    )

    def no_exact(*args: object, **kwargs: object) -> None:
        raise AssertionError("fell back to exact search")

    monkeypatch.setattr(SqliteStore, "_text_exact", no_exact)
    hits = store.search_text([CUBE], "apple banana", limit=100)
    assert [h.id for h in hits] == [few[0].id, few[1].id]


def test_a_selective_filter_on_a_ranked_scope_finds_what_the_join_finds(tmp_path: Path) -> None:
    """A small scope's matches are ranked by FTS5 alone and checked against the filter a chunk
    at a time: when the best matches fail it (another conversation, deleted), the later chunks
    are checked until enough pass, with the same hits and scores as joining every match."""
    s = SqliteStore.from_path(tmp_path)  # the real budget: a small table, scored exactly
    s.setup()
    busy = [
        MemoryItem(cube_id=CUBE, memory=f"apple {i}", conversation_id="busy", created_at=T0, updated_at=T0)
        for i in range(90)
    ]
    quiet = [
        MemoryItem(
            cube_id=CUBE,
            memory="apple " + " ".join(["filler"] * (3 + i)),  # longer: ranked below every busy one
            conversation_id="quiet",
            created_at=T0,
            updated_at=T0,
        )
        for i in range(8)
    ]
    s.put(busy + quiet)
    s.delete([CUBE], ids=[quiet[0].id])  # soft: still in the FTS table, never a hit
    where = parse_filter({"conversation_id": "quiet", "status": "activated"})
    op = TextSearch([CUBE], "apple", where, 5)
    hits = s.search_text([CUBE], "apple", where, limit=5)
    joined = s._run(lambda c: s._text_exact(c, op, ["apple"], None), write=False)
    assert [h.id for h in hits] == [q.id for q in quiet[1:6]]
    assert [(h.id, round(h.score, 9)) for h in hits] == [(h.id, round(h.score, 9)) for h in joined]
    s.close()


def test_tied_matches_are_paged_without_overlap_or_gaps(tmp_path: Path) -> None:
    """The ranked head is asked for a page at a time; 200 matches with one and the same score
    span several pages, the first of them failing the filter: the later pages are asked for,
    and none overlaps or skips (ties go by rowid, the older first)."""
    s = SqliteStore.from_path(tmp_path)
    s.setup()
    items = [
        MemoryItem(
            cube_id=CUBE,
            memory="pear tart",
            conversation_id=f"c{int(i >= 150)}",
            created_at=T0,
            updated_at=T0,
        )
        for i in range(200)
    ]
    s.put(items)
    where = parse_filter({"conversation_id": "c1"})
    for limit in (40, 50, 60):  # pages of 80 (all c0), then 320; of 100, then 400; of 120
        hits = s.search_text([CUBE], "pear", where, limit=limit)
        assert len({h.score for h in hits}) == 1
        assert [h.id for h in hits] == [i.id for i in items[150 : 150 + limit]]
    s.close()
