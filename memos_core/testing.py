"""Test doubles that ship with the library, for your own tests as well as ours.

- :class:`HashEmbedder`: a deterministic, dependency-free embedder (bag of hashed tokens).
  Similar texts get similar vectors, so search still behaves sensibly; no model to load.
- :func:`inline_memos`: a :class:`~memos_core.MemOS` whose fine stage runs only when asked
  (``async_mode=False`` or ``run_pending()``), so tests are deterministic.
- :class:`OpenAICompatServer`: a real HTTP server on loopback that speaks the OpenAI
  chat-completions wire format and answers from any :class:`~memos_core.llms.LLM` (the local
  SmolLM2, say), so code that talks to an OpenAI-compatible endpoint is tested end to end.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .errors import RequestError
from .llms import LLM
from .memos import MemOS
from .text import tokenize

__all__ = ["HashEmbedder", "OpenAICompatServer", "inline_memos"]


class HashEmbedder:
    """Deterministic embedder for unit tests of logic that does not depend on the model."""

    def __init__(self, dim: int = 64) -> None:
        self._dim = dim

    @property
    def model_id(self) -> str:
        return f"hash/{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for tok in tokenize(text) or [text]:
                h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
                out[row, h % self._dim] += 1.0 if (h >> 63) else -1.0
            norm = float(np.linalg.norm(out[row]))
            out[row] = out[row] / norm if norm else 1.0 / np.sqrt(self._dim)
        return out


def inline_memos(path: str | Path, **kwargs: Any) -> MemOS:
    """A MemOS on ``path`` with the hash embedder and an inline scheduler (overridable)."""
    kwargs.setdefault("embedder", HashEmbedder())
    kwargs.setdefault("scheduler", "inline")
    return MemOS(path, **kwargs)


class OpenAICompatServer:
    """``POST /v1/chat/completions`` on ``127.0.0.1`` answered by ``llm``.

    Every request body is kept in ``requests`` and every answer the LLM gave in ``answers``.
    With ``api_key`` set, other bearer tokens get 401. ``fail_next`` answers that many
    requests with HTTP 503 first (to test retries). An LLM that raises gets HTTP 500 (400 for a
    :class:`~memos_core.errors.RequestError`, such as a bad ``max_tokens``).

    Example:
        >>> with OpenAICompatServer(TransformersLLM.smollm2()) as server:
        ...     llm = OpenAIChatLLM("smollm2", base_url=server.base_url)
    """

    def __init__(self, llm: LLM, *, api_key: str | None = None, fail_next: int = 0) -> None:
        self.llm = llm
        self.api_key = api_key
        self.fail_next = fail_next
        self.requests: list[dict[str, Any]] = []
        self.answers: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> OpenAICompatServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread.is_alive():  # shutdown() waits forever for a loop never started
            self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                # Read the body before any early answer: a reply that leaves it unread can
                # reach the client as a connection reset instead of the status sent.
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if outer.api_key and self.headers.get("Authorization") != f"Bearer {outer.api_key}":
                    return self._send(401, {"error": {"message": "invalid api key"}})
                try:
                    body = json.loads(raw)
                    messages = body["messages"]
                except (ValueError, KeyError, TypeError) as exc:
                    return self._send(400, {"error": {"message": f"bad request body: {exc}"}})
                with outer._lock:
                    outer.requests.append(body)
                    failing = outer.fail_next > 0
                    outer.fail_next -= int(failing)
                if failing:
                    return self._send(503, {"error": {"message": "try again"}})
                fmt = body.get("response_format") or {}
                max_tokens = body.get("max_tokens")
                try:
                    text = outer.llm.chat(
                        messages,
                        max_tokens=256 if max_tokens is None else max_tokens,
                        temperature=float(body.get("temperature") or 0.0),
                        json_mode=fmt.get("type") == "json_object",
                    )
                except RequestError as exc:  # the request was wrong: 400, as from a real server
                    return self._send(400, {"error": {"message": str(exc)}})
                except Exception as exc:  # the model failed: the client sees a server error
                    return self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}"}})
                with outer._lock:
                    outer.answers.append(text)
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{len(outer.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", ""),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                    },
                )

        return Handler
