"""kv_accel: activation memory (KV caches) and parametric memory (LoRA adapters) for Hugging
Face causal LMs, and the migration of memories between plaintext and those forms.

Install with ``pip install 'memos-suite[kv]'``. torch, transformers and peft are imported only
when a model is used.

Example:
    >>> from memos_core import MemOS
    >>> from kv_accel import LocalModel, MemoryAugmentedGenerator, MemoryForms
    >>> mem = MemOS("./memos-data")                                      # doctest: +SKIP
    >>> lm = LocalModel.smollm2()                                        # doctest: +SKIP
    >>> forms = MemoryForms(mem, lm)                                     # doctest: +SKIP
    >>> gen = MemoryAugmentedGenerator(lm.model, lm.tokenizer, mem, "alice", forms=forms)
    >>> gen.generate("Where do I live?").text                            # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from .activation import (
    KVCache,
    Prompt,
    StaleCacheError,
    build_cache,
    common_prefix,
    extend_cache,
    first_token_time,
    greedy,
    render_prompt,
)
from .fingerprint import ModelFingerprint, SourceFingerprint
from .forms import DEFAULT_SYSTEM, MIGRATE, FormPlan, MemoryForms, MigrationPolicy, MigrationReport
from .hook import Generation, MemoryAugmentedGenerator
from .model import LocalModel

__all__ = [
    "DEFAULT_SYSTEM",
    "MIGRATE",
    "FormPlan",
    "Generation",
    "KVCache",
    "LocalModel",
    "MemoryAugmentedGenerator",
    "MemoryForms",
    "MigrationPolicy",
    "MigrationReport",
    "ModelFingerprint",
    "Prompt",
    "SourceFingerprint",
    "StaleCacheError",
    "build_cache",
    "common_prefix",
    "extend_cache",
    "first_token_time",
    "greedy",
    "render_prompt",
]

_LAZY = {
    "parametric": ("AdapterBank", "LoraSettings", "distil", "answer_loss"),
    "compose": ("compose", "rerotate"),
}


def __getattr__(name: str) -> Any:
    for module, names in _LAZY.items():
        if name in names:
            from importlib import import_module

            return getattr(import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
