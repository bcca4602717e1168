"""Memory forms with the real model, store and embedder: the migration policy moves memories
into activation (and parametric) memory from the reads and changes the store tracks; an update
or delete of a source memory invalidates what was built from it, which is rebuilt lazily."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from kv_accel import (
    LocalModel,
    MemoryAugmentedGenerator,
    MemoryForms,
    MigrationPolicy,
)
from memos_core import InvalidInputError, MemOS, SentenceTransformerEmbedder, forms_key, user_cube_id

FACTS = [
    "Alice lives in Paris and works as a nurse.",
    "Alice has a black labrador named Rex.",
    "Alice is allergic to peanuts.",
    "Alice's sister Clara teaches mathematics in Lyon.",
    "Alice plays the cello on Sundays.",
    "Alice drives a green bicycle to work.",
]
CUBE = user_cube_id("alice")


@pytest.fixture(scope="module")
def lm() -> LocalModel:
    return LocalModel.smollm2()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def setup(
    tmp_path: Path, real_embedder: SentenceTransformerEmbedder, lm: LocalModel
) -> Iterator[tuple[MemOS, MemoryForms, Clock, list[str]]]:
    mem = MemOS(tmp_path / "data", embedder=real_embedder, scheduler="inline")
    ids = [mem.add_memory(f, user_id="alice").data.id for f in FACTS]
    clock = Clock()
    forms = MemoryForms(mem, lm, clock=clock, policy=MigrationPolicy(min_parametric=1000))
    yield mem, forms, clock, ids
    forms.bank.deactivate() if forms._bank is not None else None
    mem.close()


def _read(mem: MemOS, ids: list[str], times: int = 3) -> None:
    for _ in range(times):
        mem.store.touch(ids, datetime.now(timezone.utc))


def test_policy_picks_memories_read_often_and_changed_rarely(
    setup: tuple[MemOS, MemoryForms, Clock, list[str]],
) -> None:
    """Read ≥ hot_reads times and unchanged for stable_for → activation; reads alone or
    stability alone are not enough; the prefix keeps creation order (stable across runs)."""
    mem, forms, clock, ids = setup
    _read(mem, ids[:3])
    _read(mem, ids[3:4], times=1)
    assert forms.plan(CUBE).activation == []  # read often, but changed just now
    clock.advance(hours=2)
    plan = forms.plan(CUBE)
    assert [m.id for m in plan.activation] == ids[:3]
    assert plan.form_of(ids[0]) == "activation" and plan.form_of(ids[3]) == "plaintext"
    assert plan.parametric == []
    tight = MemoryForms(
        mem, forms.lm, clock=clock, register=False, policy=MigrationPolicy(max_prefix_tokens=45)
    )
    assert 0 < len(tight.plan(CUBE).activation) < 3  # the token budget keeps the most-read that fit
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        forms.plan(CUBE, now=datetime.now())
    # max_candidates keeps the most-read, not the newest
    _read(mem, ids[:2], times=5)
    top = MemoryForms(mem, forms.lm, clock=clock, register=False, policy=MigrationPolicy(max_candidates=2))
    assert [m.id for m in top.plan(CUBE).activation] == ids[:2]
    with pytest.raises(InvalidInputError):
        MigrationPolicy(hot_reads=-1)
    with pytest.raises(InvalidInputError):
        MigrationPolicy(stable_for=timedelta(hours=-1))


def test_migration_builds_the_cache_and_stats_show_what_lives_where(
    setup: tuple[MemOS, MemoryForms, Clock, list[str]], tmp_path: Path
) -> None:
    """A migration builds the cube's prefix cache (a safetensors file in the cube's activation
    folder) and records it; MemOS.stats() and `memos stats` report 3 memories in activation
    memory out of 6 plaintext; a second run keeps it."""
    mem, forms, clock, ids = setup
    _read(mem, ids[:3])
    clock.advance(hours=2)
    report = forms.migrate(CUBE)
    assert report.activation == "built" and report.cache_tokens > 40
    files = list((forms.root).rglob("activation/*.safetensors"))
    assert len(files) == 1
    summary = mem.stats()["forms"][CUBE]
    assert summary["plaintext"] == 6 and summary["activation"] == 3 and summary["parametric"] == 0
    artefact = summary["artefacts"]["activation/prefix"]
    assert artefact["valid"] and artefact["tokens"] == report.cache_tokens and artefact["bytes"] > 0
    assert forms.migrate(CUBE).activation == "kept"
    out = subprocess.run(
        [sys.executable, "-m", "memos_core.cli", "--path", str(tmp_path / "data"), "stats"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["forms"][CUBE]["activation"] == 3


def test_generation_with_the_cube_cache_equals_generation_without(
    setup: tuple[MemOS, MemoryForms, Clock, list[str]],
) -> None:
    """The transformers hook answers token for token the same with the activation cache as
    with the whole prompt prefilled, and says how many prompt tokens came from the cache."""
    mem, forms, clock, ids = setup
    _read(mem, ids[:3])
    clock.advance(hours=2)
    forms.migrate(CUBE)
    lm = forms.lm
    cached = MemoryAugmentedGenerator(lm.model, lm.tokenizer, mem, "alice", forms=forms, top_k=2)
    plain = MemoryAugmentedGenerator(
        lm.model, lm.tokenizer, mem, "alice", forms=forms, top_k=2, use_cache=False
    )
    for question in ("What is Alice's dog called?", "Where does Alice's sister teach?"):
        a = cached.generate(question, max_new_tokens=20)
        b = plain.generate(question, max_new_tokens=20)
        assert a.token_ids == b.token_ids and a.text
        assert a.cached_tokens > 40 and b.cached_tokens == 0
        assert a.stable_memory_ids == ids[:3]
        assert not set(a.retrieved_memory_ids) & set(ids[:3])  # not repeated in the prompt
        # asked again: the prefix + retrieved memories come from the in-memory LRU
        again = cached.generate(question, max_new_tokens=20)
        assert again.token_ids == a.token_ids and again.retrieved_memory_ids
        assert again.cached_tokens > again.details["prefix_tokens"] == a.details["prefix_tokens"]


def test_update_or_delete_invalidates_and_the_cache_is_rebuilt_lazily(
    setup: tuple[MemOS, MemoryForms, Clock, list[str]],
) -> None:
    """Updating a source memory makes its cache stale at once (stats say so); the next use
    rebuilds it with the new text instead of using the old one; a delete likewise drops the
    memory from the prefix."""
    mem, forms, clock, ids = setup
    _read(mem, ids[:3])
    clock.advance(hours=2)
    forms.migrate(CUBE)
    mem.update_memory(ids[1], memory="Alice has a white poodle named Snow.", user_id="alice")
    assert mem.stats()["forms"][CUBE]["artefacts"]["activation/prefix"]["valid"] is False
    assert mem.stats()["forms"][CUBE]["activation"] == 0
    stable, cache = forms.activation(CUBE)
    assert cache is not None
    assert [m.id for m in stable] == ids[:3]
    assert "Snow" in lm_text(forms, cache.token_ids) and "Rex" not in lm_text(forms, cache.token_ids)
    assert mem.stats()["forms"][CUBE]["artefacts"]["activation/prefix"]["valid"] is True
    mem.delete_memory([ids[0]], user_id="alice")
    stable, cache = forms.activation(CUBE)
    assert cache is not None and [m.id for m in stable] == ids[1:3]
    assert "Paris" not in lm_text(forms, cache.token_ids)
    assert len(list(forms.root.rglob("activation/*.safetensors"))) == 1  # old files removed


def lm_text(forms: MemoryForms, token_ids: list[int]) -> str:
    text: str = forms.lm.tokenizer.decode(token_ids)
    return text


def test_a_grown_prefix_reuses_the_old_cache(setup: tuple[MemOS, MemoryForms, Clock, list[str]]) -> None:
    """When a newer memory becomes hot it is appended to the prefix (creation order), so the
    migration extends the old cache, prefilling only the new memory's tokens."""
    mem, forms, clock, ids = setup
    _read(mem, ids[:2])
    clock.advance(hours=2)
    first = forms.migrate(CUBE)
    _read(mem, ids[4:5])
    second = forms.migrate(CUBE)
    assert second.activation == "extended"
    assert second.reused_tokens >= first.cache_tokens - 1
    assert second.cache_tokens > first.cache_tokens


def test_migration_runs_as_a_durable_scheduler_task(
    setup: tuple[MemOS, MemoryForms, Clock, list[str]],
) -> None:
    """forms.schedule() queues a kv_migrate task on the MemOS scheduler; running it builds
    the cache and completes the task."""
    mem, forms, clock, ids = setup
    _read(mem, ids[:3])
    clock.advance(hours=2)
    task_id = forms.schedule(CUBE)
    mem.run_pending()
    assert mem.get_task_status(task_id).data[0].status.value == "completed"
    assert mem.stats()["forms"][CUBE]["activation"] == 3


def test_a_memory_moves_through_plaintext_activation_and_parametric_and_back(
    tmp_path: Path, real_embedder: SentenceTransformerEmbedder, lm: LocalModel
) -> None:
    """The policy moves memories plaintext → activation (read often, stable an hour) →
    parametric (stable a week): the adapter is trained, the prefix cache is rebuilt under it,
    and the generator answers with the adapter on. Updating a distilled memory makes the
    adapter stale at once (stats), the generator switches it off and queues a migration, which
    retrains it on the changed memory's new version."""
    from kv_accel import LoraSettings

    mem = MemOS(tmp_path / "data", embedder=real_embedder, scheduler="inline")
    try:
        ids = [mem.add_memory(f, user_id="alice").data.id for f in FACTS]
        clock = Clock()
        policy = MigrationPolicy(min_parametric=2)
        forms = MemoryForms(mem, lm, clock=clock, policy=policy, lora=LoraSettings(steps=4, lr=6e-3))
        _read(mem, ids[:3])
        clock.advance(hours=2)
        first = forms.migrate(CUBE)
        assert (first.activation, first.parametric) == ("built", "none")
        assert first.plan.form_of(ids[0]) == "activation"
        clock.advance(days=8)
        second = forms.migrate(CUBE)
        assert second.parametric == "trained" and second.plan.form_of(ids[0]) == "parametric"
        assert second.adapter_metrics["loss_after"] < second.adapter_metrics["loss_before"]
        assert second.activation == "built"  # the same memories, but now under the adapter
        summary = mem.stats()["forms"][CUBE]
        assert (summary["activation"], summary["parametric"]) == (3, 3)
        prefix = summary["artefacts"]["activation/prefix"]
        assert prefix["adapter"] and prefix["adapter"].startswith(forms.adapter_name(CUBE))
        gen = MemoryAugmentedGenerator(lm.model, lm.tokenizer, mem, "alice", forms=forms, top_k=1)
        plain = MemoryAugmentedGenerator(
            lm.model, lm.tokenizer, mem, "alice", forms=forms, top_k=1, use_cache=False
        )
        a = gen.generate("What is Alice allergic to?", max_new_tokens=12)
        assert a.adapter is not None and a.cached_tokens > 40
        assert plain.generate("What is Alice allergic to?", max_new_tokens=12).token_ids == a.token_ids
        assert forms.migrate(CUBE).parametric == "kept"
        # another user's generator, made from the bare model without forms=, never runs on
        # alice's adapter (one holder per model object, adapters off for cubes without one)
        bob = MemoryAugmentedGenerator(lm.model, lm.tokenizer, mem, "bob", top_k=1, migrate=False)
        assert bob.lm is lm and bob.forms is forms
        assert bob.generate("Who am I?", max_new_tokens=4).adapter is None
        with pytest.raises(InvalidInputError):
            gen.generate("Who am I?", max_new_tokens=0)

        mem.update_memory(ids[2], memory="Alice is allergic to cats.", user_id="alice")
        stale = mem.stats()["forms"][CUBE]
        assert stale["artefacts"]["parametric/adapter"]["valid"] is False and stale["parametric"] == 0
        b = gen.generate("What is Alice allergic to?", max_new_tokens=12)
        assert b.adapter is None  # a stale adapter is never used
        mem.run_pending(timeout=300)
        after = mem.stats()["forms"][CUBE]
        assert after["artefacts"]["parametric/adapter"]["valid"] and after["parametric"] == 3
        record = mem.store.get_record("forms", forms_key(CUBE, "parametric", "adapter"))
        assert record is not None and [ids[2], 2] in record["memories"]  # retrained on the new text
        assert gen.generate("What is Alice allergic to?", max_new_tokens=12).adapter is not None
        # an adapter whose files vanished: reported invalid, switched off, no crash
        record = mem.store.get_record("forms", forms_key(CUBE, "parametric", "adapter"))
        assert record is not None
        import shutil

        shutil.rmtree(forms.root / record["folder"])
        fresh = MemoryForms(mem, lm, clock=clock, policy=policy, register=False)
        assert mem.stats()["forms"][CUBE]["artefacts"]["parametric/adapter"]["missing"] is True
        _, cache = fresh.activation(CUBE)
        assert cache is not None and lm.active_adapter() is None
        forms.clear(CUBE)
        assert "forms" not in mem.stats() and not list(forms.root.rglob("*.safetensors"))
    finally:
        mem.close()
