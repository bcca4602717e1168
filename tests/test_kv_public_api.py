"""kv_accel's public surface changes only on purpose, and importing it loads no torch."""

from __future__ import annotations

import subprocess
import sys

import kv_accel

EXPECTED = {
    "DEFAULT_SYSTEM", "MIGRATE", "Adapter", "AdapterBank", "AdapterNotLoadedError", "FormPlan",
    "Generation", "KVCache", "LocalModel", "LoraSettings", "MemoryAugmentedGenerator", "MemoryForms",
    "MigrationPolicy", "MigrationReport", "ModelFingerprint", "Prompt", "SourceFingerprint",
    "StaleAdapterError", "StaleCacheError", "answer_kl", "answer_loss", "build_cache", "common_prefix",
    "compose", "distil", "extend_cache", "first_token_time", "greedy", "render_prompt", "rerotate",
    "training_examples",
}  # fmt: skip


def test_exported_members() -> None:
    assert set(kv_accel.__all__) == EXPECTED
    for name in kv_accel.__all__:
        assert hasattr(kv_accel, name), name


def test_import_is_light() -> None:
    """torch, transformers and peft load only when a model is used."""
    heavy = "('torch', 'transformers', 'peft')"
    code = f"import sys, kv_accel; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
