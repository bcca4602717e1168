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
from dataclasses import dataclass, field
from typing import Any

from memos_core import InvalidInputError, MemOS, user_cube_id

from .activation import greedy, render_prompt
from .forms import DEFAULT_SYSTEM, MemoryForms
from .model import LocalModel

__all__ = ["Generation", "MemoryAugmentedGenerator"]


@dataclass(frozen=True)
class Generation:
    """One answer and how it was made."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    cached_tokens: int  # prompt tokens whose keys and values came from the activation cache
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
        forms: the activation/parametric memory to use (one is made with ``memos`` defaults;
            share one per model across generators so adapters and caches load once).
        top_k: memories retrieved per question (those already in the cached prefix are not
            repeated).
        use_cache: inject the cube's activation cache (off: the same prompt, fully prefilled).
        system: the system prompt (must match ``forms.system`` for the cache to apply).
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
    ) -> None:
        if not isinstance(user_id, str) or not user_id.strip():
            raise InvalidInputError("user_id must be a non-empty string")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise InvalidInputError(f"top_k must be a non-negative integer, not {top_k!r}")
        if forms is not None:
            lm = forms.lm
        elif isinstance(model, LocalModel):
            lm = model
        else:
            if tokenizer is None:
                raise InvalidInputError("a tokenizer is needed with a transformers model")
            lm = LocalModel(model=model, tokenizer=tokenizer)
        self.lm = lm
        self.memos = memos
        self.user_id = user_id
        self.forms = forms or MemoryForms(memos, lm, system=system or DEFAULT_SYSTEM)
        self.system = system or self.forms.system
        self.top_k = top_k
        self.use_cache = use_cache
        self.max_new_tokens = max_new_tokens

    @property
    def cube_id(self) -> str:
        return user_cube_id(self.user_id)

    def generate(
        self, question: str, *, conversation_id: str | None = None, max_new_tokens: int | None = None
    ) -> Generation:
        """Answer ``question`` with the user's memories."""
        started = time.perf_counter()
        with self.lm.lock:  # adapters and caches must not change under one generation
            # The prompt is the same either way; without the cache it is all prefilled.
            stable, cache = self.forms.activation(self.cube_id)
            if not self.use_cache:
                cache = None
            held = {m.id for m in stable}
            retrieved = []
            if self.top_k:
                hits = self.memos.search_memory(
                    question, user_id=self.user_id, conversation_id=conversation_id, top_k=self.top_k
                ).data.memory_detail_list
                retrieved = [h for h in hits if h.id not in held]
            prompt = render_prompt(
                self.lm.tokenizer,
                self.system,
                [m.memory for m in stable],
                [h.memory for h in retrieved],
                question,
            )
            ids = prompt.ids
            out = greedy(self.lm, ids, cache=cache, max_new_tokens=max_new_tokens or self.max_new_tokens)
            adapter = self.lm.active_adapter()
        text = self.lm.tokenizer.decode(out, skip_special_tokens=True).strip()
        cached = cache.n_tokens if cache is not None else 0
        return Generation(
            text=text,
            token_ids=out,
            prompt_tokens=len(ids),
            cached_tokens=min(cached, len(ids) - 1),
            stable_memory_ids=[m.id for m in stable],
            retrieved_memory_ids=[h.id for h in retrieved],
            adapter=adapter,
            seconds=time.perf_counter() - started,
        )
