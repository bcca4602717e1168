"""Parametric memory with the real SmolLM2-135M-Instruct: a LoRA adapter distilled from a
user's memories learns them (held-out questions included), saves and loads exactly, swaps
per user on one base model, and never touches the base weights.

Two CI-sized adapters are trained once per module (~20 s on 2 shared CPUs): ``alice`` on
three memories (8 steps), ``bob`` on two (3 steps), both at lr 6e-3: fewer steps at a higher
rate than the defaults (20 at 2e-3), to keep the file within about a minute.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch
from transformers import DynamicCache

from kv_accel.model import LocalModel
from kv_accel.parametric import (
    Adapter,
    AdapterBank,
    AdapterNotLoadedError,
    LoraSettings,
    StaleAdapterError,
    answer_loss,
    distil,
    training_examples,
)
from memos_core import InvalidInputError

ALICE = [
    ("a1", 1, "Alice lives in Lisbon."),
    ("a2", 3, "Alice works at Nordwind Labs."),
    ("a3", 1, "Alice has a dog named Biscuit."),
]
#: paraphrases: none of these questions is in the training set
ALICE_HELD_OUT = [
    ("Which city is Alice's home?", "Lisbon."),
    ("Who is Alice's employer?", "Nordwind Labs."),
    ("What is the name of Alice's dog?", "Biscuit."),
]
BOB = [("b1", 1, "Bob lives in Tromso."), ("b2", 2, "Bob's favourite colour is teal.")]
BOB_HELD_OUT = [("In which town does Bob live?", "Tromso."), ("Which colour does Bob like best?", "Teal.")]

#: base parameters the adapters sit beside (LoRA targets) and one they do not touch
WATCHED = (
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.v_proj.weight",
    "model.layers.29.self_attn.v_proj.weight",
    "model.embed_tokens.weight",
)


@dataclass
class Trained:
    lm: LocalModel
    alice: Adapter
    bob: Adapter
    base_logits: Any
    base_held_out: float
    watched_before: dict[str, Any]
    checksum_before: float


def _base_params(lm: LocalModel) -> dict[str, Any]:
    """The base model's own parameters under their plain names (peft renames a wrapped
    layer's weight to ``...q_proj.base_layer.weight``)."""
    return {
        name.replace(".base_layer", ""): p for name, p in lm.base.named_parameters() if "lora_" not in name
    }


def _checksum(lm: LocalModel) -> float:
    return float(sum(p.detach().double().sum() for p in _base_params(lm).values()))


def _probe(lm: LocalModel, question: str = "Where does Alice live?") -> Any:
    text = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    return torch.tensor([lm.tokenizer.encode(text, add_special_tokens=False)])


def _logits(lm: LocalModel, ids: Any | None = None) -> Any:
    ids = _probe(lm) if ids is None else ids
    with lm.lock, torch.no_grad():
        return lm.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.fixture(scope="module")
def trained() -> Trained:
    lm = LocalModel.smollm2()
    base_logits = _logits(lm)
    base_held_out = answer_loss(lm, ALICE_HELD_OUT)
    watched = {k: _base_params(lm)[k].detach().clone() for k in WATCHED}
    checksum = _checksum(lm)
    alice = distil(lm, ALICE, name="alice", settings=LoraSettings(steps=8, lr=6e-3))
    bob = distil(lm, BOB, name="bob", settings=LoraSettings(steps=3, lr=6e-3))
    return Trained(lm, alice, bob, base_logits, base_held_out, watched, checksum)


@pytest.fixture
def bank(trained: Trained) -> AdapterBank:
    bank = AdapterBank(trained.lm)
    bank.deactivate()
    return bank


def test_distil_lowers_the_answer_loss_on_held_out_questions(trained: Trained, bank: AdapterBank) -> None:
    """The adapter learns the facts, not just the training questions: paraphrased questions
    it never saw get a much lower answer loss than with the base model (measured 3.38 ->
    0.08; training set 3.75 -> 0.12). If this fails, look at the loss mask (labels -100 on
    the prompt) and whether the optimiser sees the adapter's parameters."""
    metrics = trained.alice.metrics
    assert metrics["loss_after"] < metrics["loss_before"] - 1.5
    assert metrics["steps"] == 8 and metrics["examples"] == 6 and metrics["trainable_params"] == 460_800
    with bank.using("alice"):
        held_out = answer_loss(trained.lm, ALICE_HELD_OUT)
    assert held_out < trained.base_held_out - 1.0
    assert held_out < 0.6 * trained.base_held_out
    # distil restored the state it found (adapters off)
    assert bank.active is None


def test_training_never_changes_the_base_weights(trained: Trained) -> None:
    """Only LoRA's A and B are trained: the targeted q_proj/v_proj weights, an untouched
    embedding and a checksum over every base parameter are as before. If this fails, look at
    which parameters require grad during distil."""
    now = _base_params(trained.lm)
    for key, before in trained.watched_before.items():
        assert torch.equal(now[key], before), key
    assert _checksum(trained.lm) == trained.checksum_before
    assert not any(p.requires_grad for p in trained.lm.model.parameters())


def test_deactivate_restores_the_base_logits_exactly(trained: Trained, bank: AdapterBank) -> None:
    """With adapters off the wrapped model computes the base model bit for bit, and the
    model fingerprint (which KV caches are keyed by) names the active adapter and only it."""
    lm = trained.lm
    assert set(bank.loaded) >= {"alice", "bob"}
    assert lm.fingerprint().adapter is None
    bank.activate("alice")
    assert bank.active == "alice"
    with_alice = _logits(lm)
    fp_alice = lm.fingerprint().adapter
    assert fp_alice is not None and fp_alice.startswith("alice:")
    assert not torch.equal(with_alice, trained.base_logits)
    bank.activate("bob")
    fp_bob = lm.fingerprint().adapter
    assert fp_bob is not None and fp_bob.startswith("bob:") and fp_bob != fp_alice
    bank.deactivate()
    assert bank.active is None
    assert lm.fingerprint().adapter is None
    assert torch.equal(_logits(lm), trained.base_logits)
    # the adapter's own fingerprint is the base model's (it depends on the base weights only)
    assert trained.alice.base == lm.fingerprint()


def test_each_user_gets_their_own_adapter(trained: Trained, bank: AdapterBank) -> None:
    """Swapping adapters on one base model: each user's adapter answers that user's facts
    (measured held-out loss: alice's 0.08 with hers vs 2.91 with bob's; bob's 0.98 with his
    vs 4.66 with alice's), and ``using`` restores whatever was active before."""
    lm = trained.lm
    losses = {}
    for user in ("alice", "bob"):
        with bank.using(user):
            assert bank.active == user
            losses[user] = (answer_loss(lm, ALICE_HELD_OUT), answer_loss(lm, BOB_HELD_OUT))
    assert losses["alice"][0] < losses["bob"][0] - 1.5
    assert losses["bob"][1] < losses["alice"][1] - 1.5
    bank.activate("bob")
    with bank.using("alice"):
        assert bank.active == "alice"
        with bank.using(None):
            assert bank.active is None
            assert torch.equal(_logits(lm), trained.base_logits)
        assert bank.active == "alice"
    assert bank.active == "bob"
    with pytest.raises(AdapterNotLoadedError), bank.using("carol"):
        pass
    assert bank.active == "bob"
    bank.deactivate()


def test_generation_and_cached_forward_work_on_the_wrapped_model(trained: Trained, bank: AdapterBank) -> None:
    """Wrapping the model in peft keeps ``generate`` and ``forward(cache=..., use_cache=True)``
    working; with alice's adapter the greedy answer to a trained question names her city."""
    lm = trained.lm
    ids = _probe(lm)
    with bank.using("alice"), torch.no_grad():
        out = lm.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=6,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=lm.tokenizer.eos_token_id,
        )
        answer = lm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        cache = DynamicCache()
        step = lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), cache=cache, use_cache=True)
        assert cache.get_seq_length() == ids.shape[1]
        assert torch.allclose(step.logits, _logits(lm, ids), atol=1e-5)
    assert "Lisbon" in answer


def test_save_and_load_give_identical_logits(trained: Trained, bank: AdapterBank, tmp_path: Path) -> None:
    """An adapter saved and loaded into a fresh bank under another name computes exactly what
    the trained one does; the folder holds peft's two files plus memos_adapter.json."""
    lm = trained.lm
    folder = trained.alice.save(tmp_path / "alice")
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "memos_adapter.json",
    ]
    assert (folder / "adapter_model.safetensors").stat().st_size < 2_000_000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    meta = Adapter.read(folder)
    assert meta.source == trained.alice.source and meta.base == trained.alice.base
    assert meta.settings == trained.alice.settings and meta.metrics == trained.alice.metrics
    assert meta.source.memory_ids == ["a1", "a2", "a3"] and meta.source.memories[1] == ("a2", 3)
    # saving over an existing folder replaces it
    trained.alice.save(folder)

    fresh = AdapterBank(lm)
    started = time.perf_counter()
    fresh.load("alice_copy", folder)
    load_seconds = time.perf_counter() - started
    try:
        assert "alice_copy" in fresh.loaded and fresh.active is None
        with fresh.using("alice"):
            trained_logits = _logits(lm)
        with fresh.using("alice_copy"):
            loaded_logits = _logits(lm)
        assert torch.equal(loaded_logits, trained_logits)
        with pytest.raises(InvalidInputError, match="already loaded"):
            fresh.load("alice_copy", folder)
    finally:
        fresh.unload("alice_copy")
    assert "alice_copy" not in bank.loaded
    assert load_seconds < 5


def test_a_stale_adapter_is_refused(trained: Trained, bank: AdapterBank, tmp_path: Path) -> None:
    """An adapter trained for another base model (here: its recorded config hash edited) is
    refused with an error naming what differs, and nothing is attached."""
    folder = trained.bob.save(tmp_path / "bob")
    meta_file = folder / "memos_adapter.json"
    meta = json.loads(meta_file.read_text())
    meta["base"]["config_hash"] = "0" * 16
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(StaleAdapterError, match="config_hash"):
        bank.load("bob_stale", folder)
    assert "bob_stale" not in bank.loaded

    meta["format"] = 99
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(StaleAdapterError, match="format"):
        Adapter.read(folder)
    with pytest.raises(StaleAdapterError, match="unreadable"):
        Adapter.read(tmp_path / "missing")


def test_unload_removes_adapters_and_the_last_one_unwraps_the_model(
    trained: Trained, bank: AdapterBank
) -> None:
    """Unloading every adapter leaves the plain transformers model with base logits; adding
    the in-memory adapters back restores them as they were."""
    lm = trained.lm
    with bank.using("alice"):
        alice_logits = _logits(lm)
    bank.activate("bob")
    bank.unload("bob")
    assert bank.active is None and "bob" not in bank.loaded
    for name in bank.loaded:
        bank.unload(name)
    assert bank.loaded == () and not hasattr(lm.model, "peft_config")
    assert torch.equal(_logits(lm), trained.base_logits)
    with pytest.raises(AdapterNotLoadedError):
        bank.activate("alice")
    with pytest.raises(AdapterNotLoadedError):
        bank.unload("alice")
    bank.add(trained.alice)
    bank.add(trained.bob)
    assert set(bank.loaded) == {"alice", "bob"} and bank.active is None
    with bank.using("alice"):
        assert torch.equal(_logits(lm), alice_logits)


def test_threads_each_get_their_own_adapter(trained: Trained, bank: AdapterBank) -> None:
    """``using`` holds the model lock for its block: concurrent users never compute on each
    other's adapter."""
    lm = trained.lm
    expected = {}
    for user in ("alice", "bob", None):
        with bank.using(user):
            expected[user] = _logits(lm)
    results: dict[str | None, list[bool]] = {"alice": [], "bob": [], None: []}

    def work(user: str | None) -> None:
        for _ in range(2):
            with bank.using(user):
                results[user].append(torch.equal(_logits(lm), expected[user]))

    threads = [threading.Thread(target=work, args=(u,)) for u in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(all(r) and len(r) == 2 for r in results.values())
    assert bank.active is None


def test_training_examples_follow_fixed_rules() -> None:
    """Every memory gives a recall example; a memory matching a pattern also gives the
    question it answers. Nothing else is made up."""
    examples = training_examples(
        [
            "Alice lives in Lisbon.",
            "Carol's favourite colour is teal.",
            "The user prefers dark mode.",
            "I moved to Berlin last year.",
        ]
    )
    pairs = [(e.question, e.answer, e.kind) for e in examples]
    assert pairs == [
        ("What do you remember about Alice?", "Alice lives in Lisbon.", "statement"),
        ("Where does Alice live?", "Lisbon.", "qa"),
        ("What do you remember about Carol?", "Carol's favourite colour is teal.", "statement"),
        ("What is Carol's favourite colour?", "Teal.", "qa"),
        ("What do you remember about the user?", "The user prefers dark mode.", "statement"),
        ("What does the user prefer?", "Dark mode.", "qa"),
        ("What do you remember about me?", "I moved to Berlin last year.", "statement"),
    ]
    assert training_examples(["Alice lives in Lisbon.", "Alice lives in Lisbon."]) == examples[:2]
    with pytest.raises(InvalidInputError):
        training_examples(["  "])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rank": 0},
        {"alpha": -1},
        {"dropout": 1.0},
        {"lr": 0.0},
        {"steps": 0},
        {"max_length": 2.5},
        {"batch_size": True},
        {"seed": -1},
        {"targets": ()},
        {"targets": "q_proj"},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        LoraSettings(**kwargs)


def test_bad_distil_arguments_are_refused(trained: Trained) -> None:
    lm = trained.lm
    with pytest.raises(InvalidInputError):
        distil(lm, [], name="x")
    with pytest.raises(InvalidInputError):
        distil(lm, ALICE, name="no.dots")
    with pytest.raises(InvalidInputError):
        distil(lm, [("m", "1", "Alice lives in Lisbon.")], name="x")  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        answer_loss(lm, [])
    bank = AdapterBank(lm)
    with bank.using("alice"):
        alice_logits = _logits(lm)
    # a failed retraining leaves the adapter it would have replaced as it was
    with pytest.raises(InvalidInputError, match="attach"):
        distil(lm, ALICE, name="alice", settings=LoraSettings(targets=("no_such_module",), steps=1))
    assert bank.active is None and set(bank.loaded) == {"alice", "bob"}
    with bank.using("alice"):
        assert torch.equal(_logits(lm), alice_logits)
    assert "x" not in AdapterBank(lm).loaded


def test_retraining_an_active_adapter_replaces_it_and_keeps_it_active(trained: Trained) -> None:
    """Distilling again under a loaded name replaces that adapter; if it was the active one,
    the new one is active afterwards (the user's adapter, refreshed)."""
    lm, bank = trained.lm, AdapterBank(trained.lm)
    first = distil(lm, BOB[:1], name="carol", settings=LoraSettings(steps=1, lr=6e-3))
    bank.activate("carol")
    before = lm.fingerprint().adapter
    second = distil(lm, BOB[:1], name="carol", settings=LoraSettings(steps=1, lr=6e-3, seed=1), progress=True)
    assert bank.active == "carol" and list(bank.loaded).count("carol") == 1
    assert lm.fingerprint().adapter != before
    assert first.source == second.source and first.settings != second.settings
    bank.unload("carol")
    assert bank.active is None
