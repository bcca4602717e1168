"""The transformers hook: generate with a user's memories, their activation cache and adapter.

:class:`MemoryAugmentedGenerator` wraps a model and tokenizer (it never patches them). For a
question it retrieves the user's top memories, renders ``system → cached stable memories →
retrieved (volatile) memories → question``, activates the cube's LoRA adapter when it has a
valid one, injects the cube's KV cache for the stable part so only the rest is prefilled, and
greedy-decodes. The answer is token-for-token what the same prompt gives without the cache.

Example:
    >>> gen = MemoryAugmentedGenerator(model, tokenizer, mem, "alice")   # doctest: +SKIP
    >>> gen.generate("Where do I live?").text                            # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from memos_core import InvalidInputError, MemOS, user_cube_id

from .activation import KVCache, StaleCacheError, build_cache, extend_cache, greedy, render_prompt
from .forms import DEFAULT_SYSTEM, MemoryForms
from .model import LocalModel

__all__ = ["Generation", "MemoryAugmentedGenerator"]


@dataclass(frozen=True)
class Generation:
    """One answer and how it was made."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    cached_tokens: int  # prompt tokens whose keys and values were computed before this call
    stable_memory_ids: list[str]
    retrieved_memory_ids: list[str]
    adapter: str | None
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


class MemoryAugmentedGenerator:
    """Memory-augmented greedy generation for one user.

    Args:
        model: a transformers causal LM (or a :class:`LocalModel` as ``model`` with
            ``tokenizer=None``).
        tokenizer: its tokenizer.
        memos: where the user's memories live.
        user_id: whose memories (their own cube).
        forms: the activation/parametric memory to use (default: the one already made for
            ``memos`` and this model, else a new one with default settings).
        top_k: memories retrieved per question (those already in the cached prefix are not
            repeated).
        use_cache: inject the cube's activation cache (off: the same prompt, fully prefilled).
        system: the system prompt (must match ``forms.system`` for the cache to apply).
        migrate: queue a background migration of the cube now and then (every
            ``policy.check_every``) as it is used.
        recent_caches: how many caches of "cube prefix + a question's retrieved memories"
            to keep in memory (a repeated or similar question then prefills only itself), within
            ``recent_bytes`` (256 MiB: ~2.8 caches of 2k tokens for SmolLM2 in fp32).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        memos: MemOS,
        user_id: str,
        *,
        forms: MemoryForms | None = None,
        top_k: int = 5,
        use_cache: bool = True,
        max_new_tokens: int = 64,
        system: str | None = None,
        migrate: bool = True,
        recent_caches: int = 8,
        recent_bytes: int = 256 * 2**20,
    ) -> None:
        if not isinstance(user_id, str) or not user_id.strip():
            raise InvalidInputError("user_id must be a non-empty string")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be a positive integer, not {max_new_tokens!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise InvalidInputError(f"top_k must be a non-negative integer, not {top_k!r}")
        if forms is not None:
            lm = forms.lm
        elif isinstance(model, LocalModel):
            lm = model
        else:
            if tokenizer is None:
                raise InvalidInputError("a tokenizer is needed with a transformers model")
            lm = LocalModel.for_model(model, tokenizer)
        self.lm = lm
        self.memos = memos
        self.user_id = user_id
        self.forms = forms or MemoryForms.of(memos, lm, system=system or DEFAULT_SYSTEM)
        self.system = system or self.forms.system
        self.top_k = top_k
        self.use_cache = use_cache
        self.max_new_tokens = max_new_tokens
        self.migrate = migrate
        self.recent_caches = max(0, recent_caches)
        self.recent_bytes = max(0, recent_bytes)
        self._recent: OrderedDict[tuple[int, ...], KVCache] = OrderedDict()

    @property
    def cube_id(self) -> str:
        return user_cube_id(self.user_id)

    def generate(
        self, question: str, *, conversation_id: str | None = None, max_new_tokens: int | None = None
    ) -> Generation:
        """Answer ``question`` with the user's memories."""
        if not isinstance(question, str) or not question.strip():
            raise InvalidInputError("question must be a non-empty string")
        if max_new_tokens is None:
            max_new_tokens = self.max_new_tokens
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be a positive integer, not {max_new_tokens!r}")
        started = time.perf_counter()
        hits = []
        if self.top_k:  # outside the model lock: other users' generations need not wait for it
            hits = self.memos.search_memory(
                question, user_id=self.user_id, conversation_id=conversation_id, top_k=self.top_k
            ).data.memory_detail_list
        with self.lm.lock:  # adapters and caches must not change under one generation
            # The prompt is the same with or without caches; without them it is all prefilled.
            stable, cache = self.forms.activation(self.cube_id)
            held = {m.id for m in stable}
            retrieved = [h for h in hits if h.id not in held]
            prompt = render_prompt(
                self.lm.tokenizer,
                self.system,
                [m.memory for m in stable],
                [h.memory for h in retrieved],
                question,
            )
            ids = prompt.ids
            use, reused = None, 0
            if self.use_cache:
                use, reused = self._with_retrieved(cache, prompt.prefix_ids(2))
            out = greedy(self.lm, ids, cache=use, max_new_tokens=max_new_tokens)
            adapter = self.lm.active_adapter()
        if self.migrate:
            self.forms.touch(self.cube_id)  # the policy runs in the background now and then
        text = self.lm.tokenizer.decode(out, skip_special_tokens=True).strip()
        return Generation(
            text=text,
            token_ids=out,
            prompt_tokens=len(ids),
            cached_tokens=min(reused, len(ids) - 1),
            stable_memory_ids=[m.id for m in stable],
            retrieved_memory_ids=[h.id for h in retrieved],
            adapter=adapter,
            seconds=time.perf_counter() - started,
            details={"prefix_tokens": cache.n_tokens if cache is not None else 0},
        )

    def _with_retrieved(self, prefix: KVCache | None, ids: list[int]) -> tuple[KVCache | None, int]:
        """A cache of the cube prefix plus this question's retrieved memories, and how many of
        its tokens were computed before this call. Kept in a small LRU keyed by the ids, so a
        question that retrieves the same memories again prefills only itself. Building one
        costs the same prefill generation would pay without it."""
        key = tuple(ids)
        hit = self._recent.get(key)
        if hit is not None:
            try:
                hit.check(self.lm)
                self._recent.move_to_end(key)
                return hit, hit.n_tokens
            except StaleCacheError:
                del self._recent[key]
        if not ids:
            return prefix, 0
        reused = 0
        if prefix is not None:
            built = extend_cache(self.lm, prefix, ids)
            reused = int(built.meta.get("reused_tokens", 0))
        else:
            built = build_cache(self.lm, ids)
        if self.recent_caches and built.nbytes <= self.recent_bytes:
            self._recent[key] = built
            while len(self._recent) > self.recent_caches or (
                sum(c.nbytes for c in self._recent.values()) > self.recent_bytes
            ):
                self._recent.popitem(last=False)
        return built, reused
