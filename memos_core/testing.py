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

    Every request body is kept in ``requests``. With ``api_key`` set, other bearer tokens get
    401. ``fail_next`` answers that many requests with HTTP 503 first (to test retries).

    Example:
        >>> with OpenAICompatServer(TransformersLLM.smollm2()) as server:
        ...     llm = OpenAIChatLLM("smollm2", base_url=server.base_url)
    """

    def __init__(self, llm: LLM, *, api_key: str | None = None, fail_next: int = 0) -> None:
        self.llm = llm
        self.api_key = api_key
        self.fail_next = fail_next
        self.requests: list[dict[str, Any]] = []
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
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if outer.api_key and self.headers.get("Authorization") != f"Bearer {outer.api_key}":
                    return self._send(401, {"error": {"message": "invalid api key"}})
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                outer.requests.append(body)
                if outer.fail_next > 0:
                    outer.fail_next -= 1
                    return self._send(503, {"error": {"message": "try again"}})
                fmt = body.get("response_format") or {}
                text = outer.llm.chat(
                    body["messages"],
                    max_tokens=int(body.get("max_tokens") or 256),
                    temperature=float(body.get("temperature") or 0.0),
                    json_mode=fmt.get("type") == "json_object",
                )
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
