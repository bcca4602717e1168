"""Optional heavy imports, each raising an error that names the ``kv`` extra when missing."""

from __future__ import annotations

from typing import Any

from memos_core import MissingDependencyError


def torch_mod() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "kv") from exc
    return torch


def transformers_mod() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "kv") from exc
    return transformers


def peft_mod() -> Any:
    try:
        import peft
    except ImportError as exc:
        raise MissingDependencyError("peft", "kv") from exc
    return peft


def safetensors_torch() -> Any:
    try:
        import safetensors.torch
    except ImportError as exc:
        raise MissingDependencyError("safetensors", "kv") from exc
    return safetensors.torch
