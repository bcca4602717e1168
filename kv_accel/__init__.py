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
from .compose import answer_kl, compose, rerotate
from .fingerprint import ModelFingerprint, SourceFingerprint
from .forms import DEFAULT_SYSTEM, MIGRATE, FormPlan, MemoryForms, MigrationPolicy, MigrationReport
from .hook import Generation, MemoryAugmentedGenerator
from .model import LocalModel
from .parametric import (
    Adapter,
    AdapterBank,
    AdapterNotLoadedError,
    LoraSettings,
    StaleAdapterError,
    answer_loss,
    distil,
    training_examples,
)

__all__ = [
    "DEFAULT_SYSTEM",
    "MIGRATE",
    "Adapter",
    "AdapterBank",
    "AdapterNotLoadedError",
    "FormPlan",
    "Generation",
    "KVCache",
    "LocalModel",
    "LoraSettings",
    "MemoryAugmentedGenerator",
    "MemoryForms",
    "MigrationPolicy",
    "MigrationReport",
    "ModelFingerprint",
    "Prompt",
    "SourceFingerprint",
    "StaleAdapterError",
    "StaleCacheError",
    "answer_kl",
    "answer_loss",
    "build_cache",
    "common_prefix",
    "compose",
    "distil",
    "extend_cache",
    "first_token_time",
    "greedy",
    "render_prompt",
    "rerotate",
    "training_examples",
]
