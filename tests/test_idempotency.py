"""Idempotent adds store once, also when two processes race on one key."""

from __future__ import annotations

from pathlib import Path

import pytest

from memos_core import InvalidInputError, MemOS
from memos_core.testing import HashEmbedder

MSG = [{"role": "user", "content": "I adopted a cat named Miso."}]


def _count(mem: MemOS, user: str) -> int:
    return mem.list_memories(user, limit=100).data.total


def test_a_retried_add_returns_the_first_answer(tmp_path: Path) -> None:
    with MemOS(tmp_path, embedder=HashEmbedder(), scheduler="inline") as mem:
        first = mem.add_message(MSG, user_id="u", idempotency_key="k1").data
        again = mem.add_message(MSG, user_id="u", idempotency_key="k1").data
        assert (again.task_id, again.memory_ids) == (first.task_id, first.memory_ids)
        assert _count(mem, "u") == 1
        with pytest.raises(InvalidInputError, match="another request"):
            mem.add_message(
                [{"role": "user", "content": "something else"}], user_id="u", idempotency_key="k1"
            )
        mem.add_message(MSG, user_id="v", idempotency_key="k1")  # keys are per user
        assert _count(mem, "v") == 1


def test_two_handles_racing_on_one_key_store_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Handle B checks the key before handle A's add commits (simulated: B's first look finds
    nothing), then A commits. B's add must roll back whole and answer A's result: the key is
    created only if absent, in the add's own transaction."""
    a = MemOS(tmp_path, embedder=HashEmbedder(), scheduler="off")
    b = MemOS(tmp_path, embedder=HashEmbedder(), scheduler="off")
    try:
        winner = a.add_message(MSG, user_id="u", idempotency_key="race").data
        real = b.store.get_record
        looks = []

        def stale_first_look(namespace: str, key: str) -> dict | None:  # type: ignore[type-arg]
            looks.append(key)
            return None if namespace == "idempotency" and len(looks) == 1 else real(namespace, key)

        monkeypatch.setattr(b.store, "get_record", stale_first_look)
        loser = b.add_message(MSG, user_id="u", idempotency_key="race").data
        assert (loser.task_id, loser.memory_ids) == (winner.task_id, winner.memory_ids)
        assert _count(a, "u") == 1 and len(looks) == 2
    finally:
        a.close()
        b.close()


def test_knowledge_base_ids_cannot_hold_a_slash(tmp_path: Path) -> None:
    """An id is one URL path segment over HTTP (servers decode %2F before routing)."""
    with (
        MemOS(tmp_path, embedder=HashEmbedder(), scheduler="inline") as mem,
        pytest.raises(InvalidInputError, match="/"),
    ):
        mem.create_knowledgebase("u", kb_id="a/b")
