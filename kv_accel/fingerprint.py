"""What a cache or an adapter was built from, so a stale one is never used.

A :class:`ModelFingerprint` names the weights (model id, config hash, dtype, transformers
version, the active LoRA adapter); a :class:`SourceFingerprint` names the memories (their ids
in order, each one's version, and a sha256 of the text rendered from them). Both are plain
values stored as JSON next to the artefact they describe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ModelFingerprint", "SourceFingerprint", "text_hash"]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ModelFingerprint:
    """The weights a KV cache or an adapter depends on: the model's name, config, dtype,
    transformers version, a digest of its base weights and the active LoRA adapter."""

    model_id: str
    config_hash: str
    dtype: str
    transformers_version: str
    adapter: str | None = None
    #: a digest of the base weights (a fine-tune with the same config is another model)
    weights: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelFingerprint:
        return cls(
            model_id=str(data["model_id"]),
            config_hash=str(data["config_hash"]),
            dtype=str(data["dtype"]),
            transformers_version=str(data["transformers_version"]),
            adapter=None if data.get("adapter") is None else str(data["adapter"]),
            weights=None if data.get("weights") is None else str(data["weights"]),
        )

    def mismatch(self, other: ModelFingerprint) -> list[str]:
        """The fields that differ (empty when the two match)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if mine[k] != theirs[k]]


@dataclass(frozen=True)
class SourceFingerprint:
    """The memories an artefact was built from: ``(id, version)`` pairs in render order and
    the sha256 of the rendered text."""

    memories: tuple[tuple[str, int], ...]
    text_sha256: str

    @classmethod
    def of(cls, memories: Iterable[tuple[str, int]], text: str) -> SourceFingerprint:
        return cls(tuple((str(i), int(v)) for i, v in memories), text_hash(text))

    @property
    def memory_ids(self) -> list[str]:
        return [i for i, _ in self.memories]

    def to_dict(self) -> dict[str, Any]:
        return {"memories": [[i, v] for i, v in self.memories], "text_sha256": self.text_sha256}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceFingerprint:
        return cls(tuple((str(i), int(v)) for i, v in data["memories"]), str(data["text_sha256"]))
