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

__all__ = ["HashEmbedder", "MemosServer", "OpenAICompatServer", "inline_memos"]


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


class MemosServer:
    """A real ``memos serve`` subprocess on loopback, for tests that go over HTTP.

    Creates the data folder's API keys first (one per tenant in ``tenants``), starts
    ``python -m memos_core.cli --path DATA serve`` on a free port, waits for ``/healthz``;
    :meth:`stop` terminates it and :meth:`start` starts it again on the same folder (a
    restart). ``embedder`` is a ``--embedder`` spec (``hash:64`` for speed; ``None``: the
    packaged MiniLM).

    Example:
        >>> with MemosServer(tmp_path, tenants=("acme", "globex")) as srv:   # doctest: +SKIP
        ...     client = MemOSClient(srv.base_url, api_key=srv.keys["acme"])
    """

    def __init__(
        self,
        path: str | Path,
        *,
        tenants: Sequence[str] = ("acme",),
        embedder: str | None = "hash:64",
        extra_args: Sequence[str] = (),
        startup_timeout: float = 90.0,
    ) -> None:
        import socket
        import subprocess
        import sys

        self.path = Path(path)
        self.embedder = embedder
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.keys: dict[str, str] = {}
        self.key_ids: dict[str, str] = {}
        self._cli = [sys.executable, "-m", "memos_core.cli", "--path", str(self.path)]
        for tenant in tenants:
            out = subprocess.run(
                [*self._cli, "keys", "create", "--tenant", tenant, "--json"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            created = json.loads(out.stdout)
            self.keys[tenant], self.key_ids[tenant] = created["key"], created["key_id"]
        self._proc: Any = None
        self.log = self.path / "server.log"

    def start(self) -> MemosServer:
        import subprocess
        import urllib.request

        args = list(self._cli)
        if self.embedder:
            args += ["--embedder", self.embedder]
        args += ["serve", "--port", str(self.port), "--log-level", "warning", *self.extra_args]
        self.path.mkdir(parents=True, exist_ok=True)
        log = open(self.log, "ab")  # noqa: SIM115 - the server process owns it until stop()
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"memos serve exited with {self._proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"memos serve did not answer in {self.startup_timeout}s: {self.log.read_text()[-2000:]}"
        )

    def stop(self, *, kill: bool = False) -> None:
        """Terminate the server (SIGTERM; ``kill=True``: SIGKILL, as a crash)."""
        if self._proc is None:
            return
        if kill:
            self._proc.kill()
        else:
            self._proc.terminate()
        try:
            self._proc.wait(timeout=30)
        except Exception:
            self._proc.kill()
            self._proc.wait(timeout=30)
        self._proc = None

    def revoke(self, tenant: str) -> None:
        import subprocess

        subprocess.run(
            [*self._cli, "keys", "revoke", self.key_ids[tenant]],
            capture_output=True,
            timeout=60,
            check=True,
        )

    def __enter__(self) -> MemosServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
