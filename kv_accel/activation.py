"""Activation memory: the KV cache of a memory prefix, built once and injected at generation.

A :class:`KVCache` is a value: per-layer key and value tensors, the token ids they were
computed from, and the fingerprints of the model and memories behind them. It is stored as
one safetensors file (tensors + JSON metadata; never a pickled ``DynamicCache``) and turned
into a fresh ``transformers.DynamicCache`` for every use, because generation mutates a cache
in place.

Exactness rules (``shared/notes/KV_AND_LORA.md``): the prompt is a list of segments tokenised
one by one and concatenated, so the ids of a cached prefix are exactly the first ids of the
full prompt; generation with a cache gets the whole id sequence and a mask of ones over it
(transformers feeds only the ids past the cache); a cache whose ids are a prefix of a new
prompt is reused and extended by prefilling only the rest, which is exact.

Example:
    >>> lm = LocalModel.smollm2()                                   # doctest: +SKIP
    >>> prompt = render_prompt(lm.tokenizer, "Be brief.", ["Alice lives in Paris."], [], "Where?")
    >>> cache = build_cache(lm, prompt.prefix_ids(1))               # doctest: +SKIP
    >>> greedy(lm, prompt.ids, cache=cache, max_new_tokens=16)      # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memos_core import InvalidInputError, RuntimeFailure

from ._deps import safetensors_torch, torch_mod, transformers_mod
from .fingerprint import ModelFingerprint, SourceFingerprint
from .model import LocalModel

__all__ = [
    "FORMAT_VERSION",
    "KVCache",
    "Prompt",
    "StaleCacheError",
    "build_cache",
    "common_prefix",
    "extend_cache",
    "greedy",
    "render_prompt",
]

#: The safetensors layout this module writes and reads.
FORMAT_VERSION = 1

_DTYPES = ("float32", "bfloat16", "float16")


class StaleCacheError(RuntimeFailure):
    """A stored cache does not match the model or memories it is about to be used with."""


# ----------------------------------------------------------------------------- prompt


@dataclass(frozen=True)
class Prompt:
    """A chat prompt as segments, each tokenised on its own; ``ids`` is their concatenation.

    Segments come in a stable order (system and stable memories, then volatile memories,
    then the question), so the ids of the first ``k`` segments are a prefix that a cache can
    hold and a later prompt can extend."""

    segments: tuple[str, ...]
    segment_ids: tuple[tuple[int, ...], ...]

    @property
    def ids(self) -> list[int]:
        return [i for seg in self.segment_ids for i in seg]

    @property
    def text(self) -> str:
        return "".join(self.segments)

    def prefix_ids(self, k: int) -> list[int]:
        """The ids of the first ``k`` segments."""
        return [i for seg in self.segment_ids[:k] for i in seg]


def neutralise(text: str, specials: Sequence[str]) -> str:
    """``text`` with the tokenizer's special tokens broken up (``<|im_end|>`` becomes
    ``<| im_end|>``), so a memory or question can never close the system turn or open a fake
    one: its words stay, its power over the prompt's structure goes."""
    for token in specials:
        if token and token in text:
            text = text.replace(token, token[:2] + " " + token[2:] if len(token) > 2 else " ")
    return text


def render_memories(memories: Sequence[str], specials: Sequence[str] = ()) -> str:
    return "".join(f"- {' '.join(neutralise(m, specials).split())}\n" for m in memories)


def render_prompt(
    tokenizer: Any,
    system: str,
    stable: Sequence[str],
    volatile: Sequence[str],
    question: str,
) -> Prompt:
    """Render system prompt, memories and question through the tokenizer's chat template and
    cut it into three segments: ``[system + stable memories]``, ``[volatile memories + end of
    system turn]``, ``[question turn + generation prompt]``.

    Stable memories come first and in the caller's (stable) order, so their cache stays valid
    while volatile memories change. Special tokens inside memories and the question are
    broken up (:func:`neutralise`): stored text cannot rewrite the prompt's turns."""
    if not isinstance(question, str) or not question.strip():
        raise InvalidInputError("question must be a non-empty string")
    specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if isinstance(t, str)]
    question = neutralise(question, specials)
    head = system.strip() + "\n\nMemories:\n" if (stable or volatile) else system.strip()
    stable_block, volatile_block = render_memories(stable, specials), render_memories(volatile, specials)
    marker = "\x00MEMOS-CUT\x00"
    content = head + stable_block + marker + volatile_block
    messages = [{"role": "system", "content": content}, {"role": "user", "content": question.strip()}]
    full = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if full.count(marker) != 1:
        raise RuntimeFailure("the chat template changed the memory block; cannot cut the prompt")
    first, rest = full.split(marker)
    # The question turn (role header included) starts where the system turn alone ends.
    system_only = tokenizer.apply_chat_template(messages[:1], tokenize=False).split(marker)
    cut = len(system_only[1]) if len(system_only) == 2 and rest.startswith(system_only[1]) else -1
    if cut < 0:  # a template that renders the system turn differently alone: cut at the question
        cut = rest.rfind(question.strip())
    second, third = rest[:cut], rest[cut:]
    segments = (first, second, third)
    encode = tokenizer.encode if hasattr(tokenizer, "encode") else None
    if encode is None:
        raise InvalidInputError("tokenizer has no encode()")
    segment_ids = tuple(
        tuple(int(i) for i in encode(s, add_special_tokens=False)) if s else () for s in segments
    )
    return Prompt(segments=segments, segment_ids=segment_ids)


# ----------------------------------------------------------------------------- the cache value


@dataclass
class KVCache:
    """Per-layer keys and values (``[1, kv_heads, tokens, head_dim]`` each), the token ids they
    encode, and the fingerprints of the model and memories they came from."""

    keys: list[Any]
    values: list[Any]
    token_ids: list[int]
    model: ModelFingerprint
    source: SourceFingerprint | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def nbytes(self) -> int:
        return sum(int(t.numel() * t.element_size()) for t in (*self.keys, *self.values))

    def to_dynamic(self, *, length: int | None = None) -> Any:
        """A fresh ``DynamicCache`` in the model's dtype (fp32), optionally cut to ``length``
        tokens; this cache's tensors are never handed out to be mutated."""
        torch, transformers = torch_mod(), transformers_mod()
        n = self.n_tokens if length is None else length
        data = [
            (k[:, :, :n, :].to(torch.float32).clone(), v[:, :, :n, :].to(torch.float32).clone())
            for k, v in zip(self.keys, self.values, strict=True)
        ]
        return transformers.DynamicCache(ddp_cache_data=data)

    def astype(self, dtype: str) -> KVCache:
        """The same cache with its tensors stored as ``dtype`` (``float32`` or ``bfloat16``)."""
        if dtype not in _DTYPES:
            raise InvalidInputError(f"dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
        torch = torch_mod()
        target = getattr(torch, dtype)
        model = ModelFingerprint.from_dict({**self.model.to_dict(), "dtype": dtype})
        return KVCache(
            keys=[k.to(target) for k in self.keys],
            values=[v.to(target) for v in self.values],
            token_ids=list(self.token_ids),
            model=model,
            source=self.source,
            meta=dict(self.meta),
        )

    # -- files

    def save(self, path: str | Path) -> Path:
        """Write one safetensors file atomically (temp file, fsync, rename)."""
        st = safetensors_torch()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, Any] = {}
        for i, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            tensors[f"k.{i}"] = k.contiguous()
            tensors[f"v.{i}"] = v.contiguous()
        metadata = {
            "format": str(FORMAT_VERSION),
            "layers": str(len(self.keys)),
            "token_ids": json.dumps(self.token_ids),
            "model": json.dumps(self.model.to_dict(), sort_keys=True),
            "source": json.dumps(self.source.to_dict() if self.source else None),
            "meta": json.dumps(self.meta, sort_keys=True, default=str),
        }
        fd, tmp = tempfile.mkstemp(prefix=".kv-", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            st.save_file(tensors, tmp, metadata=metadata)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target

    @classmethod
    def load(cls, path: str | Path) -> KVCache:
        """Read a file written by :meth:`save`."""
        from safetensors import SafetensorError, safe_open

        target = Path(path)
        try:
            with safe_open(str(target), framework="pt") as fh:
                metadata = fh.metadata() or {}
                if metadata.get("format") != str(FORMAT_VERSION):
                    raise StaleCacheError(
                        f"{target}: cache format {metadata.get('format')!r}, want {FORMAT_VERSION}"
                    )
                layers = int(metadata["layers"])
                keys = [fh.get_tensor(f"k.{i}") for i in range(layers)]
                values = [fh.get_tensor(f"v.{i}") for i in range(layers)]
        except (OSError, KeyError, ValueError, SafetensorError) as exc:
            raise StaleCacheError(f"{target}: unreadable cache: {exc}") from exc
        source = json.loads(metadata["source"])
        return cls(
            keys=keys,
            values=values,
            token_ids=[int(i) for i in json.loads(metadata["token_ids"])],
            model=ModelFingerprint.from_dict(json.loads(metadata["model"])),
            source=None if source is None else SourceFingerprint.from_dict(source),
            meta=json.loads(metadata.get("meta") or "{}"),
        )

    def check(self, lm: LocalModel, source: SourceFingerprint | None = None) -> None:
        """Raise :class:`StaleCacheError` unless this cache fits ``lm`` as it is now (same
        weights, config, transformers version, active adapter) and, when given, ``source``."""
        now = lm.fingerprint(dtype=self.model.dtype)
        wrong = self.model.mismatch(now)
        if wrong:
            raise StaleCacheError(f"cache built for another model state ({', '.join(wrong)} differ)")
        if source is not None and source != self.source:
            raise StaleCacheError("cache built from other memories (ids, versions or text changed)")


# ----------------------------------------------------------------------------- build and use


def _forward(lm: LocalModel, ids: Sequence[int], cache: Any | None) -> Any:
    torch = torch_mod()
    past = 0 if cache is None else int(cache.get_seq_length())
    input_ids = torch.tensor([list(ids)], dtype=torch.long)
    mask = torch.ones((1, past + len(ids)), dtype=torch.long)
    with torch.no_grad():
        return lm.model(input_ids=input_ids, attention_mask=mask, cache=cache, use_cache=True)


def _from_dynamic(cache: Any, token_ids: Sequence[int], model: ModelFingerprint, **kw: Any) -> KVCache:
    keys = [layer.keys.detach().clone() for layer in cache.layers]
    values = [layer.values.detach().clone() for layer in cache.layers]
    return KVCache(keys=keys, values=values, token_ids=list(token_ids), model=model, **kw)


def build_cache(
    lm: LocalModel,
    token_ids: Sequence[int],
    *,
    source: SourceFingerprint | None = None,
    chunk: int = 512,
) -> KVCache:
    """Prefill ``token_ids`` once and keep the resulting keys and values (fp32).

    The prefill runs in chunks of ``chunk`` tokens on top of each other, which is exact (a
    cached prefix extended by prefilling the rest equals one joint prefill) and bounds the
    attention matrix for long prefixes."""
    if not token_ids:
        raise InvalidInputError("cannot build a cache of zero tokens")
    transformers = transformers_mod()
    started = time.perf_counter()
    with lm.lock:
        fingerprint = lm.fingerprint()
        cache = transformers.DynamicCache()
        ids = list(token_ids)
        for start in range(0, len(ids), chunk):
            _forward(lm, ids[start : start + chunk], cache)
    built = _from_dynamic(cache, ids, fingerprint, source=source)
    built.meta["build_seconds"] = round(time.perf_counter() - started, 4)
    return built


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def extend_cache(
    lm: LocalModel, cache: KVCache, token_ids: Sequence[int], *, source: SourceFingerprint | None = None
) -> KVCache:
    """A cache of ``token_ids`` made from ``cache`` by keeping the longest common prefix and
    prefilling only the ids after it (exact: equal to building it from scratch)."""
    cache.check(lm)
    keep = common_prefix(cache.token_ids, token_ids)
    if keep == 0:
        return build_cache(lm, token_ids, source=source)
    dynamic = cache.to_dynamic(length=keep)
    rest = list(token_ids[keep:])
    with lm.lock:
        if rest:
            _forward(lm, rest, dynamic)
        out = _from_dynamic(dynamic, token_ids, cache.model, source=source)
    # an approximate (composed) prefix stays marked as such in everything grown from it
    out.meta.update({k: cache.meta[k] for k in ("composed", "exact", "method") if k in cache.meta})
    out.meta["reused_tokens"] = keep
    out.meta["prefilled_tokens"] = len(rest)
    return out


def greedy(
    lm: LocalModel,
    token_ids: Sequence[int],
    *,
    cache: KVCache | None = None,
    max_new_tokens: int = 64,
    source: SourceFingerprint | None = None,
) -> list[int]:
    """Greedy-decode after ``token_ids``; with ``cache``, only the ids past the longest prefix
    it shares with ``token_ids`` are prefilled. Returns the new token ids.

    The cache is checked against the model (and ``source`` when given) first; a stale one
    raises :class:`StaleCacheError` rather than producing subtly different text."""
    torch = torch_mod()
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidInputError(f"max_new_tokens must be a positive integer, not {max_new_tokens!r}")
    ids = list(token_ids)
    if not ids:
        raise InvalidInputError("cannot generate from an empty prompt")
    kwargs: dict[str, Any] = {}
    if cache is not None:
        cache.check(lm, source)
        # at least one id must be fed to get the next-token logits
        keep = min(common_prefix(cache.token_ids, ids), len(ids) - 1)
        if keep > 0:
            kwargs["cache"] = cache.to_dynamic(length=keep)
    input_ids = torch.tensor([ids], dtype=torch.long)
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with lm.lock, torch.no_grad():
        out = lm.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=pad,
            **kwargs,
        )
    return [int(i) for i in out[0, len(ids) :].tolist()]


def first_token_time(lm: LocalModel, token_ids: Sequence[int], *, cache: KVCache | None = None) -> float:
    """Seconds to the first generated token's logits (prefill of whatever the cache lacks,
    plus turning the stored cache into a live one)."""
    torch = torch_mod()
    ids = list(token_ids)
    started = time.perf_counter()
    dynamic = None
    keep = 0
    if cache is not None:
        keep = min(common_prefix(cache.token_ids, ids), len(ids) - 1)
        dynamic = cache.to_dynamic(length=keep) if keep > 0 else None
    with lm.lock:
        out = _forward(lm, ids[keep:], dynamic)
        int(torch.argmax(out.logits[0, -1]))
    return time.perf_counter() - started
