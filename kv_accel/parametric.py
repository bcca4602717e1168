"""Parametric memory: a user's memories distilled into a small LoRA adapter, swapped per user.

:func:`distil` renders memories as chat exchanges (a recall question answered by the memory,
plus the question/answer pairs a few fixed rules can derive from it), trains a peft LoRA
adapter on them and returns an :class:`Adapter`: the weights, the settings, what the weights
were trained from (:class:`~kv_accel.fingerprint.SourceFingerprint`) and for which base model
(:class:`~kv_accel.fingerprint.ModelFingerprint`). An :class:`AdapterBank` loads saved
adapters onto one shared base model and switches between them without reloading it.

The base weights never change: LoRA adds ``B @ A`` beside ``q_proj``/``v_proj`` and only
``A`` and ``B`` are trained. With adapters deactivated the model computes exactly what the
base model computes (peft calls the untouched base layer), so its logits are bit-identical.

Adapters are process state on a shared model: the first one attached wraps ``lm.model`` in a
peft ``PeftModel`` (in place, so :meth:`LocalModel.fingerprint` sees the active adapter and KV
caches built with one are never used without it); every switch happens under ``lm.lock``.

Example:
    >>> lm = LocalModel.smollm2()                                        # doctest: +SKIP
    >>> adapter = distil(lm, [("m1", 1, "Alice lives in Lisbon.")], name="alice")  # doctest: +SKIP
    >>> adapter.save("adapters/alice")                                   # doctest: +SKIP
    >>> bank = AdapterBank(lm)                                           # doctest: +SKIP
    >>> with bank.using("alice"):                                        # doctest: +SKIP
    ...     greedy(lm, ids)
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from memos_core import InvalidInputError, NotFoundError, RuntimeFailure

from ._deps import peft_mod, safetensors_torch, torch_mod
from .fingerprint import ModelFingerprint, SourceFingerprint
from .model import LocalModel

__all__ = [
    "ADAPTER_FORMAT_VERSION",
    "Adapter",
    "AdapterBank",
    "AdapterNotLoadedError",
    "Example",
    "LoraSettings",
    "StaleAdapterError",
    "answer_loss",
    "base_fingerprint",
    "distil",
    "training_examples",
]

#: The layout of ``memos_adapter.json`` this module writes and reads.
ADAPTER_FORMAT_VERSION = 1

_META_FILE = "memos_adapter.json"
_WEIGHTS_FILE = "adapter_model.safetensors"
_CONFIG_FILE = "adapter_config.json"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class StaleAdapterError(RuntimeFailure):
    """A stored adapter was trained for another base model, or its files are unreadable."""


class AdapterNotLoadedError(NotFoundError):
    """No adapter of that name is loaded on the model."""


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class LoraSettings:
    """How an adapter is trained: r=8 on ``q_proj``/``v_proj`` at lr 2e-3, as measured in
    ``shared/notes/KV_AND_LORA.md``. 20 steps (each one batch of up to 16 short examples) is
    the smallest run measured to recall every trained fact: with three memories on 1 CPU
    thread it takes ~40 s, answers all six trained and paraphrased questions greedily, and
    leaves a 1.8 MB adapter; 12 steps got one in three wrong.

    Args:
        rank: LoRA rank ``r``.
        alpha: LoRA scaling numerator (the update is scaled by ``alpha / rank``).
        dropout: dropout on the LoRA input during training.
        targets: names of the linear modules that get an adapter.
        steps: optimiser steps.
        lr: AdamW learning rate.
        max_length: tokens per rendered example (longer answers are cut at the end).
        batch_size: examples per step.
        seed: seeds the adapter's initialisation and the example order.
    """

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    steps: int = 20
    lr: float = 2e-3
    max_length: int = 96
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("rank", "alpha", "steps", "max_length", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"LoraSettings.{key} must be a positive integer, not {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidInputError(f"LoraSettings.seed must be a non-negative integer, not {self.seed!r}")
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise InvalidInputError(f"LoraSettings.dropout must be in [0, 1), not {self.dropout!r}")
        if not _is_number(self.lr) or not 0.0 < self.lr <= 1.0:
            raise InvalidInputError(f"LoraSettings.lr must be in (0, 1], not {self.lr!r}")
        targets = self.targets
        if isinstance(targets, str) or not isinstance(targets, tuple | list) or not targets:
            raise InvalidInputError(
                f"LoraSettings.targets must be a non-empty tuple of names, not {targets!r}"
            )
        if not all(isinstance(t, str) and t.strip() for t in targets):
            raise InvalidInputError(f"LoraSettings.targets must be module names, not {targets!r}")
        object.__setattr__(self, "targets", tuple(targets))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = list(self.targets)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoraSettings:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "targets" in kwargs:
            kwargs["targets"] = tuple(kwargs["targets"])
        return cls(**kwargs)

    def lora_config(self) -> Any:
        """The peft ``LoraConfig`` these settings describe."""
        peft = peft_mod()
        return peft.LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.targets),
            bias="none",
            task_type="CAUSAL_LM",
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- training data


@dataclass(frozen=True)
class Example:
    """One exchange to learn: a user question and the assistant's answer.

    ``kind`` is ``"statement"`` (a recall question answered by the memory itself) or ``"qa"``
    (a question derived from the memory by a fixed rule, answered by the part it asks for)."""

    question: str
    answer: str
    kind: str


_SUBJECT = r"(?P<s>(?:[A-Z][\w-]*)(?: [A-Z][\w-]*)*|[Tt]he user)"

#: (pattern over the memory without its final stop, question template, answer template)
_RULES: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(p), q, a)
    for p, q, a in (
        (rf"^{_SUBJECT} lives in (?P<o>.+)$", "Where does {s} live?", "{o}."),
        (rf"^{_SUBJECT} works (?:at|for) (?P<o>.+)$", "Where does {s} work?", "{o}."),
        (rf"^{_SUBJECT} works as (?P<o>(?:a|an) .+)$", "What does {s} do for a living?", "{o}."),
        (rf"^{_SUBJECT} was born in (?P<o>.+)$", "Where was {s} born?", "{o}."),
        (rf"^{_SUBJECT} (?:is|comes) from (?P<o>.+)$", "Where is {s} from?", "{o}."),
        (rf"^{_SUBJECT} is allergic to (?P<o>.+)$", "What is {s} allergic to?", "{o}."),
        (rf"^{_SUBJECT} speaks (?P<o>.+)$", "Which languages does {s} speak?", "{o}."),
        (rf"^{_SUBJECT} plays (?:the )?(?P<o>.+)$", "What does {s} play?", "{o}."),
        (rf"^{_SUBJECT} (?P<v>like|love|enjoy|prefer)s (?P<o>.+)$", "What does {s} {v}?", "{o}."),
        (
            rf"^{_SUBJECT} has (?:a|an) (?P<k>\w+) (?:called|named) (?P<o>.+)$",
            "What is {s}'s {k} called?",
            "{o}.",
        ),
        (rf"^{_SUBJECT}'s (?P<k>[a-z][\w ]*?) (?:is|are) (?P<o>.+)$", "What is {s}'s {k}?", "{o}."),
    )
)

_VERB_WORDS = (
    "is are was were has have had does did can will would lives works likes loves enjoys prefers plays "
    "speaks owns drives wants needs studies teaches uses moved went visited bought met lived worked"
)
_VERBS = frozenset(_VERB_WORDS.split())
_LOWER_FIRST = frozenset(("The", "A", "An", "My", "Our", "Their", "His", "Her", "Its", "Your"))


def _subject(sentence: str) -> str:
    """The words before the first verb (within six words), else the first three words."""
    words = sentence.split()
    cut = next((i for i, w in enumerate(words[:7]) if i > 0 and w.lower() in _VERBS), 0)
    subject = words[:cut] if cut else words[:3]
    if subject and subject[0] in _LOWER_FIRST:
        subject = [subject[0].lower(), *subject[1:]]
    if subject == ["I"]:
        return "me"
    return " ".join(subject)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def training_examples(memories: Sequence[str]) -> list[Example]:
    """The exchanges an adapter learns from ``memories``, in order, without duplicates.

    Each memory gives a ``"statement"`` example ("What do you remember about <subject>?" ->
    the memory) and, where one of a few fixed patterns matches ("X lives in Y", "X works at
    Y", "X's favourite colour is Y", ...), a ``"qa"`` example asking for the matched part
    ("Where does X live?" -> "Y."). Nothing is guessed beyond those patterns.

    Raises:
        InvalidInputError: a memory is not a non-empty string.
    """
    out: list[Example] = []
    seen: set[tuple[str, str]] = set()
    for memory in memories:
        if not isinstance(memory, str) or not memory.strip():
            raise InvalidInputError("every memory must be a non-empty string")
        statement = " ".join(memory.split())
        sentence = statement.rstrip(".!")
        found: list[Example] = []
        subject = ""
        for pattern, question, answer in _RULES:
            match = pattern.match(sentence)
            if match is None:
                continue
            parts = match.groupdict()
            subject = parts["s"]
            if subject.startswith("The "):
                parts["s"] = subject = "the" + subject[3:]
            found.append(Example(question.format(**parts), _capitalise(answer.format(**parts)), "qa"))
            break
        recall = Example(
            f"What do you remember about {subject or _subject(sentence)}?", statement, "statement"
        )
        for example in (recall, *found):
            key = (example.question, example.answer)
            if key not in seen:
                seen.add(key)
                out.append(example)
    return out


@dataclass(frozen=True)
class _Encoded:
    ids: tuple[int, ...]
    labels: tuple[int, ...]
    prompt_len: int
    text: str


def _encode(tokenizer: Any, question: str, answer: str, max_length: int) -> _Encoded:
    """Render one exchange through the chat template; labels are ``-100`` on the prompt.

    The prompt (with its generation header) and the answer are tokenised separately and
    concatenated, so the prompt ids are exactly the ids generation starts from."""
    user = [{"role": "user", "content": question}]
    prompt = str(tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False))
    full = str(
        tokenizer.apply_chat_template([*user, {"role": "assistant", "content": answer}], tokenize=False)
    )
    if not full.startswith(prompt):
        raise RuntimeFailure(
            "the chat template renders the prompt differently with an answer; cannot mask it"
        )
    prompt_ids = [int(i) for i in tokenizer.encode(prompt, add_special_tokens=False)]
    answer_ids = [int(i) for i in tokenizer.encode(full[len(prompt) :], add_special_tokens=False)]
    if len(prompt_ids) >= max_length:
        raise InvalidInputError(
            f"the question alone is {len(prompt_ids)} tokens, over max_length={max_length}"
        )
    answer_ids = answer_ids[: max_length - len(prompt_ids)]
    return _Encoded(
        tuple(prompt_ids + answer_ids), tuple([-100] * len(prompt_ids) + answer_ids), len(prompt_ids), full
    )


def _batch(items: Sequence[_Encoded], pad_id: int) -> tuple[Any, Any, Any]:
    torch = torch_mod()
    width = max(len(e.ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, e in enumerate(items):
        n = len(e.ids)
        ids[row, :n] = torch.tensor(e.ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(e.labels, dtype=torch.long)
        mask[row, :n] = 1
    return ids, labels, mask


def _token_losses(model: Any, items: Sequence[_Encoded], pad_id: int) -> tuple[Any, int]:
    """Summed cross-entropy over the answer tokens of ``items`` and their count."""
    torch = torch_mod()
    ids, labels, mask = _batch(items, pad_id)
    # logits only from the last prompt token on: the vocabulary projection of the prompt
    # positions is a sizeable share of a step and has no loss
    start = min(e.prompt_len for e in items) - 1
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=ids.shape[1] - start).logits
    target = labels[:, start + 1 :]
    total = torch.nn.functional.cross_entropy(
        logits[:, :-1, :].reshape(-1, logits.shape[-1]).float(),
        target.reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )
    return total, int((target != -100).sum())


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad if pad is not None else 0)


def _mean_loss(lm: LocalModel, items: Sequence[_Encoded], batch_size: int = 16) -> float:
    torch = torch_mod()
    pad, total, count = _pad_id(lm.tokenizer), 0.0, 0
    with lm.lock, torch.no_grad():
        was_training = bool(lm.model.training)
        lm.model.eval()
        try:
            for start in range(0, len(items), batch_size):
                loss, n = _token_losses(lm.model, items[start : start + batch_size], pad)
                total, count = total + float(loss), count + n
        finally:
            lm.model.train(was_training)
    return total / max(count, 1)


def answer_loss(lm: LocalModel, pairs: Sequence[tuple[str, str]], *, max_length: int = 256) -> float:
    """Mean cross-entropy per answer token of ``(question, answer)`` pairs, each rendered through
    the chat template, with the model as it is now (active adapter included).

    Lower means the model finds the answers more likely: compare it with and without an
    adapter, on questions it was not trained on, to see what the adapter learned."""
    if not pairs:
        raise InvalidInputError("answer_loss needs at least one (question, answer) pair")
    items = []
    for pair in pairs:
        if (
            not isinstance(pair, tuple | list)
            or len(pair) != 2
            or not all(isinstance(s, str) and s for s in pair)
        ):
            raise InvalidInputError(f"pairs must be (question, answer) strings, not {pair!r}")
        items.append(_encode(lm.tokenizer, pair[0], pair[1], max_length))
    return _mean_loss(lm, items)


# ----------------------------------------------------------------------------- the adapter value


@dataclass(eq=False)
class Adapter:
    """A trained LoRA adapter: its weights and what they were trained from and for.

    ``weights`` is peft's state dict for one adapter (keys without the adapter name), so the
    files :meth:`save` writes load with plain peft too (``PeftModel.from_pretrained``).

    Example:
        >>> adapter = distil(lm, memories, name="alice")          # doctest: +SKIP
        >>> adapter.metrics["loss_before"], adapter.metrics["loss_after"]  # doctest: +SKIP
        (2.9, 0.02)
        >>> adapter.save("adapters/alice")                         # doctest: +SKIP
    """

    name: str
    settings: LoraSettings
    source: SourceFingerprint
    base: ModelFingerprint
    weights: dict[str, Any] = field(repr=False)
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    @property
    def nbytes(self) -> int:
        return sum(int(t.numel() * t.element_size()) for t in self.weights.values())

    def metadata(self) -> dict[str, Any]:
        """What ``memos_adapter.json`` holds."""
        return {
            "format": ADAPTER_FORMAT_VERSION,
            "name": self.name,
            "settings": self.settings.to_dict(),
            "source": self.source.to_dict(),
            "base": self.base.to_dict(),
            "metrics": self.metrics,
            "created_at": self.created_at,
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``adapter_model.safetensors``, ``adapter_config.json`` (peft's files) and
        ``memos_adapter.json`` into ``folder``, atomically: everything is written and synced
        in a temporary sibling folder that then replaces ``folder``."""
        st = safetensors_torch()
        target = Path(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".tmp", dir=target.parent))
        old: Path | None = None
        try:
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.weights.items()}
            st.save_file(tensors, str(tmp / _WEIGHTS_FILE), metadata={"format": "pt"})
            config = self.settings.lora_config()
            config.base_model_name_or_path = self.base.model_id
            config.save_pretrained(str(tmp))
            (tmp / _META_FILE).write_text(json.dumps(self.metadata(), indent=2, sort_keys=True, default=str))
            for name in (_WEIGHTS_FILE, _CONFIG_FILE, _META_FILE):
                with open(tmp / name, "rb") as fh:
                    os.fsync(fh.fileno())
            if target.exists():
                old = target.with_name(f".{target.name}-{os.getpid()}-{time.monotonic_ns()}.old")
                os.replace(target, old)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return target

    @classmethod
    def read(cls, folder: str | Path) -> Adapter:
        """Read an adapter written by :meth:`save` (metadata and weights).

        Raises:
            StaleAdapterError: the folder is missing files, unreadable, or of another format.
        """
        st = safetensors_torch()
        source = Path(folder)
        try:
            meta = json.loads((source / _META_FILE).read_text())
            if not isinstance(meta, dict) or meta.get("format") != ADAPTER_FORMAT_VERSION:
                found = meta.get("format") if isinstance(meta, dict) else None
                raise StaleAdapterError(f"{source}: adapter format {found!r}, want {ADAPTER_FORMAT_VERSION}")
            weights = st.load_file(str(source / _WEIGHTS_FILE))
            return cls(
                name=str(meta["name"]),
                settings=LoraSettings.from_dict(meta["settings"]),
                source=SourceFingerprint.from_dict(meta["source"]),
                base=ModelFingerprint.from_dict(meta["base"]),
                weights=dict(weights),
                metrics=dict(meta.get("metrics") or {}),
                created_at=str(meta.get("created_at") or ""),
            )
        except (OSError, KeyError, TypeError, ValueError, InvalidInputError) as exc:
            raise StaleAdapterError(f"{source}: unreadable adapter: {exc}") from exc

    def check(self, lm: LocalModel) -> None:
        """Raise :class:`StaleAdapterError` unless this adapter was trained on ``lm``'s base model."""
        wrong = self.base.mismatch(base_fingerprint(lm))
        if wrong:
            raise StaleAdapterError(
                f"adapter {self.name!r} was trained for another base model ({', '.join(wrong)} differ: "
                f"{ {k: self.base.to_dict()[k] for k in wrong} })"
            )


def base_fingerprint(lm: LocalModel) -> ModelFingerprint:
    """``lm``'s fingerprint with no adapter: what an adapter trained on it depends on."""
    return replace(lm.fingerprint(), adapter=None)


# ----------------------------------------------------------------------------- attaching adapters


def _is_peft(model: Any) -> bool:
    peft = peft_mod()
    return isinstance(model, peft.PeftModel)


def _loaded(lm: LocalModel) -> list[str]:
    return [str(n) for n in getattr(lm.model, "peft_config", {})] if _is_peft(lm.model) else []


def _active(lm: LocalModel) -> str | None:
    names = lm.active_adapters()
    return names[0] if names else None


def _set_state(lm: LocalModel, name: str | None) -> None:
    """Make ``name`` the one active adapter, or turn adapters off (``None``)."""
    if not _is_peft(lm.model):
        if name is not None:
            raise AdapterNotLoadedError(f"no adapter {name!r} is loaded")
        return
    if name is None:
        lm.model.base_model.disable_adapter_layers()
        return
    if name not in _loaded(lm):
        raise AdapterNotLoadedError(
            f"no adapter {name!r} is loaded (loaded: {', '.join(_loaded(lm)) or 'none'})"
        )
    lm.model.set_adapter(name, inference_mode=True)
    lm.model.base_model.enable_adapter_layers()


def _attach(lm: LocalModel, name: str, settings: LoraSettings) -> None:
    """Add an untrained adapter ``name`` (B = 0, so it changes nothing yet)."""
    peft = peft_mod()
    config = settings.lora_config()
    try:
        if _is_peft(lm.model):
            lm.model.add_adapter(name, config)
        else:
            with warnings.catch_warnings():
                # peft reads transformers' deprecated ``is_gradient_checkpointing``
                warnings.filterwarnings(
                    "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
                )
                lm.model = peft.get_peft_model(lm.model, config, adapter_name=name)
    except ValueError as exc:
        raise InvalidInputError(f"cannot attach a LoRA adapter to {settings.targets}: {exc}") from exc


def _detach(lm: LocalModel, name: str) -> None:
    """Remove adapter ``name``; removing the last one unwraps the base model again."""
    loaded = _loaded(lm)
    if name not in loaded:
        raise AdapterNotLoadedError(f"no adapter {name!r} is loaded (loaded: {', '.join(loaded) or 'none'})")
    if loaded == [name]:
        lm.model = lm.model.unload()
        return
    active = _active(lm)
    others = [n for n in loaded if n != name]
    # peft warns when the active adapter is deleted: move off it first, keeping on/off as it was
    lm.model.set_adapter(others[0], inference_mode=True)
    lm.model.delete_adapter(name)
    _set_state(lm, None if active in (None, name) else active)


def _add_weights(lm: LocalModel, name: str, adapter: Adapter) -> None:
    peft = peft_mod()
    _attach(lm, name, adapter.settings)
    result = peft.set_peft_model_state_dict(lm.model, adapter.weights, adapter_name=name)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in getattr(result, "missing_keys", []) or [] if "lora_" in k and f".{name}." in k]
    if unexpected or missing:
        _detach(lm, name)
        raise StaleAdapterError(
            f"adapter {adapter.name!r} does not fit this model "
            f"(unexpected keys {unexpected[:3]}, missing keys {missing[:3]})"
        )


def _lora_params(lm: LocalModel, name: str) -> list[Any]:
    return [p for key, p in lm.model.named_parameters() if "lora_" in key and f".{name}." in key]


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name == "__base__":
        raise InvalidInputError(f"adapter name must be 1-64 letters, digits, '_' or '-', not {name!r}")
    return name


# ----------------------------------------------------------------------------- training


def distil(
    lm: LocalModel,
    memories: Sequence[tuple[str, int, str]],
    *,
    name: str,
    settings: LoraSettings | None = None,
    progress: bool = False,
) -> Adapter:
    """Train a LoRA adapter on ``memories`` (``(memory_id, version, text)``) and attach it to
    ``lm`` as ``name``.

    The examples come from :func:`training_examples`, rendered through the chat template,
    with the loss on answer tokens only. Training runs under ``lm.lock`` on the base model
    plus the new adapter alone (other adapters are neither used nor changed; the base
    weights are frozen). An adapter already loaded as ``name`` is replaced.

    Afterwards the previous state is restored: the adapter that was active before is active
    again (the new one, if it replaced an active ``name``), and if none was, adapters are off.
    Use :class:`AdapterBank` to switch to ``name``.

    ``metrics`` records ``loss_before`` / ``loss_after`` (mean answer-token loss on the
    training examples), ``steps``, ``seconds`` and ``seconds_per_step`` (the optimiser steps
    alone), ``examples``, ``answer_tokens`` and ``trainable_params``.

    Raises:
        InvalidInputError: no memories, a malformed memory, a bad name or settings that do
            not fit the model.
    """
    torch = torch_mod()
    name = _check_name(name)
    settings = settings or LoraSettings()
    if not isinstance(settings, LoraSettings):
        raise InvalidInputError(f"settings must be LoraSettings, not {type(settings).__name__}")
    if not memories:
        raise InvalidInputError("distil needs at least one memory")
    for memory in memories:
        if not isinstance(memory, tuple | list) or len(memory) != 3:
            raise InvalidInputError(f"memories must be (memory_id, version, text), not {memory!r}")
        if not isinstance(memory[1], int) or isinstance(memory[1], bool):
            raise InvalidInputError(f"memory version must be an integer, not {memory[1]!r}")
    examples = training_examples([m[2] for m in memories])
    items = [_encode(lm.tokenizer, e.question, e.answer, settings.max_length) for e in examples]
    source = SourceFingerprint.of([(m[0], m[1]) for m in memories], "".join(e.text for e in items))
    pad = _pad_id(lm.tokenizer)
    order = random.Random(settings.seed)

    # Train under a scratch name, so an adapter already loaded as ``name`` survives a failure.
    scratch = f"{name}--distil"
    with lm.lock:
        base = base_fingerprint(lm)
        previous = _active(lm)
        if scratch in _loaded(lm):
            _detach(lm, scratch)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(settings.seed)
                _attach(lm, scratch, settings)
                _set_state(lm, scratch)
                params = _lora_params(lm, scratch)
                for p in lm.model.parameters():
                    p.requires_grad_(False)
                for p in params:
                    p.requires_grad_(True)
                loss_before = _mean_loss(lm, items)
                optimiser = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
                steps: Any = range(settings.steps)
                if progress:
                    from tqdm.auto import tqdm

                    steps = tqdm(steps, desc=f"distil {name}", unit="step")
                queue: list[_Encoded] = []
                started = time.perf_counter()
                lm.model.train()
                for _ in steps:
                    batch: list[_Encoded] = []
                    while len(batch) < min(settings.batch_size, len(items)):
                        if not queue:
                            queue = list(items)
                            order.shuffle(queue)
                        batch.append(queue.pop())
                    total, count = _token_losses(lm.model, batch, pad)
                    loss = total / max(count, 1)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    if progress:
                        steps.set_postfix(loss=f"{float(loss.detach()):.3f}")
                lm.model.eval()
                for p in params:
                    p.requires_grad_(False)
                seconds = time.perf_counter() - started
                loss_after = _mean_loss(lm, items)
            peft = peft_mod()
            weights = {
                k: v.detach().clone()
                for k, v in peft.get_peft_model_state_dict(lm.model, adapter_name=scratch).items()
            }
            metrics = {
                "loss_before": round(loss_before, 4),
                "loss_after": round(loss_after, 4),
                "steps": settings.steps,
                "seconds": round(seconds, 3),
                "seconds_per_step": round(seconds / settings.steps, 3),
                "examples": len(items),
                "answer_tokens": sum(1 for e in items for t in e.labels if t != -100),
                "trainable_params": sum(int(p.numel()) for p in params),
            }
            created = datetime.now(timezone.utc).isoformat(timespec="seconds")
            adapter = Adapter(name, settings, source, base, weights, metrics, created)
            # swap the trained weights in under ``name`` while the scratch adapter still holds
            # the peft wrapper (detaching the last adapter would unwrap the model)
            _set_state(lm, None)
            if name in _loaded(lm):
                _detach(lm, name)
            _add_weights(lm, name, adapter)
        finally:
            lm.model.eval()
            for p in lm.model.parameters():
                p.requires_grad_(False)
            if scratch in _loaded(lm):
                _detach(lm, scratch)
            _set_state(lm, previous if previous in _loaded(lm) else None)
    return adapter


# ----------------------------------------------------------------------------- the bank


class AdapterBank:
    """Adapters loaded on one shared base model, switched per user without reloading it.

    The bank keeps no state of its own: what is loaded and active lives on ``lm.model``, so
    two banks over one model see the same adapters. Every operation holds ``lm.lock``.

    Example:
        >>> bank = AdapterBank(lm)                                # doctest: +SKIP
        >>> bank.load("alice", "adapters/alice")                  # doctest: +SKIP
        >>> with bank.using("alice"):                             # doctest: +SKIP
        ...     ids = greedy(lm, prompt.ids)
        >>> bank.active is None                                   # doctest: +SKIP
        True
    """

    def __init__(self, lm: LocalModel) -> None:
        self.lm = lm

    @property
    def loaded(self) -> tuple[str, ...]:
        """Names of the adapters attached to the model."""
        with self.lm.lock:
            return tuple(_loaded(self.lm))

    @property
    def active(self) -> str | None:
        """The adapter that changes the model's output now, or ``None``."""
        with self.lm.lock:
            return _active(self.lm)

    def load(self, name: str, folder: str | Path) -> Adapter:
        """Read an adapter saved by :meth:`Adapter.save` and attach it as ``name`` (inactive;
        the active adapter, if any, stays active). Returns the adapter read.

        Raises:
            StaleAdapterError: it was trained for another base model, or is unreadable.
            InvalidInputError: ``name`` is taken or malformed.
        """
        adapter = Adapter.read(folder)
        self.add(adapter, name=name)
        return adapter

    def add(self, adapter: Adapter, *, name: str | None = None) -> None:
        """Attach an in-memory adapter (as ``name``, default its own name), inactive."""
        name = _check_name(adapter.name if name is None else name)
        with self.lm.lock:
            adapter.check(self.lm)
            if name in _loaded(self.lm):
                raise InvalidInputError(f"an adapter named {name!r} is already loaded; unload it first")
            previous = _active(self.lm)
            _add_weights(self.lm, name, adapter)
            _set_state(self.lm, previous)

    def activate(self, name: str) -> None:
        """Make ``name`` the active adapter (~ms: no weights move)."""
        with self.lm.lock:
            _set_state(self.lm, name)

    def deactivate(self) -> None:
        """Turn adapters off: the model computes exactly the base model's output."""
        with self.lm.lock:
            _set_state(self.lm, None)

    def unload(self, name: str) -> None:
        """Remove adapter ``name`` (if it was active, adapters end off)."""
        with self.lm.lock:
            _detach(self.lm, name)

    @contextmanager
    def using(self, name: str | None) -> Iterator[None]:
        """Activate ``name`` (or the base model for ``None``) for the block, then restore
        whatever was active before. Holds ``lm.lock`` for the whole block, so other threads
        never run on the wrong adapter."""
        with self.lm.lock:
            previous = _active(self.lm)
            _set_state(self.lm, name)
            try:
                yield
            finally:
                _set_state(self.lm, previous)
