"""Concurrent clients against a real ``memos serve`` on loopback, and a check that nothing is lost.

    python benchmarks/load.py --clients 8 --adds 200 --searches 200
    python benchmarks/load.py --clients 2 --adds 10 --searches 10 --hash-embedder --no-progress

Starts ``memos serve`` on a fresh data folder (``memos_core.testing.MemosServer``; the
packaged MiniLM, or the hash embedder with ``--hash-embedder``), then ``--clients`` threads,
each with its own ``httpx.Client`` and user, share ``--adds`` single-message adds and
``--searches`` searches, interleaved, until both counts are done or ``--duration`` seconds
have passed. Every add carries an ``Idempotency-Key`` and is retried with it on a transport
error or a 5xx (the retries are counted); the text of each add holds a unique token.

Then the check: wait until every acknowledged add's fine-stage task has finished, read back
every memory id an add returned (``GET /v1/memories/{id}``), and search for each add's token:
its memory (or the memory it was merged into) must be among the hits. Prints a JSON summary
(``--out`` writes it too) and exits 1 when anything acknowledged was lost, a task failed or
a request failed for good. Client and server share the machine's cores: the numbers measure
the pair, as a single-box deployment would see them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Goro", "Hana", "Ivan", "Jo"]
VERBS = ["visited", "cooked", "bought", "painted", "fixed", "learned", "sold", "found", "planted", "wrote"]
THINGS = ["a red bicycle", "sourdough bread", "an old guitar", "a garden shed", "a python script",
          "a wool sweater", "a vintage camera", "tomato seedlings", "a poem", "a wooden table"]  # fmt: skip
PLACES = ["Lisbon", "Osaka", "the market", "the lake house", "Berlin", "the office", "Nairobi", "the park"]
RETRIES = 3


def pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2)


@dataclass
class Added:
    """An acknowledged add: what was sent and what the server answered."""

    user_id: str
    token: str
    task_id: str
    memory_ids: list[str]


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    added: list[Added] = field(default_factory=list)
    add_ms: list[float] = field(default_factory=list)
    search_ms: list[float] = field(default_factory=list)
    retries: int = 0
    errors: list[str] = field(default_factory=list)


def call(
    http: Any, method: str, path: str, stats: Stats, *, headers: dict[str, str] | None = None, **kw: Any
) -> dict[str, Any] | None:
    """One request, retried on transport errors and 5xx; the envelope's data, or None (recorded)."""
    import httpx

    problem = ""
    for attempt in range(RETRIES + 1):
        if attempt:
            with stats.lock:
                stats.retries += 1
            time.sleep(0.1 * 2**attempt)
        try:
            resp = http.request(method, path, headers=headers, **kw)
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            continue
        if resp.status_code >= 500:
            problem = f"HTTP {resp.status_code}: {resp.text[:200]}"
            continue
        if resp.status_code != 200:
            problem = f"HTTP {resp.status_code}: {resp.text[:200]}"
            break
        data: dict[str, Any] = resp.json()
        return data
    with stats.lock:
        stats.errors.append(f"{method} {path}: {problem}")
    return None


def client_loop(
    n: int,
    http: Any,
    adds: int,
    searches: int,
    deadline: float,
    stats: Stats,
    tick: Callable[[int], None],
) -> None:
    """One client: ``adds`` adds and ``searches`` searches, interleaved in proportion."""
    rng = random.Random(n)
    user = f"load-user-{n}"
    done_adds = done_searches = 0
    while (done_adds < adds or done_searches < searches) and time.monotonic() < deadline:
        # Keep the two counts in step, so adds and searches overlap for the whole run.
        add_next = done_searches >= searches or (
            done_adds < adds and done_adds * max(searches, 1) <= done_searches * max(adds, 1)
        )
        if add_next:
            token = f"tok{uuid.uuid4().hex[:12]}"
            text = (
                f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(THINGS)} in "
                f"{rng.choice(PLACES)}, reference {token}"
            )
            body = {
                "messages": [{"role": "user", "content": text}],
                "user_id": user,
                "conversation_id": f"load-conv-{n}",
            }
            t = time.perf_counter()
            env = call(
                http,
                "POST",
                "/v1/memories/add_message",
                stats,
                json=body,
                headers={"Idempotency-Key": token},
            )
            ms = (time.perf_counter() - t) * 1000
            if env is not None:
                data = env["data"]
                with stats.lock:
                    stats.add_ms.append(ms)
                    stats.added.append(Added(user, token, data["task_id"], list(data["memory_ids"])))
            done_adds += 1
        else:
            query = f"what did {rng.choice(NAMES)} do with {rng.choice(THINGS)} in {rng.choice(PLACES)}?"
            t = time.perf_counter()
            env = call(http, "POST", "/v1/memories/search", stats, json={"query": query, "user_id": user})
            ms = (time.perf_counter() - t) * 1000
            if env is not None:
                with stats.lock:
                    stats.search_ms.append(ms)
            done_searches += 1
        tick(1)


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def wait_for_tasks(http: Any, added: list[Added], stats: Stats, timeout: float) -> dict[str, int]:
    """Poll every add's fine-stage task until it is completed or failed (or ``timeout``)."""
    pending = {a.task_id for a in added}
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for task_id in sorted(pending):
            env = call(http, "GET", f"/v1/tasks/{task_id}", stats)
            status = env["data"][0]["status"] if env and env["data"] else "missing"
            if status in ("completed", "failed", "missing"):
                states[task_id] = status
                pending.discard(task_id)
        if pending:
            time.sleep(0.5)
    for task_id in pending:
        states[task_id] = "unfinished"
    counts: dict[str, int] = {}
    for status in states.values():
        counts[status] = counts.get(status, 0) + 1
    return counts


def verify(http: Any, add: Added, stats: Stats) -> list[str]:
    """What of one acknowledged add is missing: unreadable ids, or a token no search finds."""
    problems = []
    survivors = set()
    for memory_id in add.memory_ids:
        env = call(http, "GET", f"/v1/memories/{memory_id}", stats, params={"user_id": add.user_id})
        if env is None:
            problems.append(f"memory {memory_id} of {add.token} is unreadable")
            continue
        item = env["data"]
        survivors.add(item.get("merged_into") or memory_id)
        if add.token not in item["memory"] and item.get("merged_into") is None:
            problems.append(f"memory {memory_id} no longer holds {add.token}")
    env = call(http, "POST", "/v1/memories/search", stats, json={"query": add.token, "user_id": add.user_id})
    hits = {h["id"] for h in env["data"]["memory_detail_list"]} if env else set()
    if not hits & (survivors | set(add.memory_ids)):
        problems.append(f"a search for {add.token} does not find its memory")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--adds", type=int, default=200, help="adds over all clients")
    parser.add_argument("--searches", type=int, default=200, help="searches over all clients")
    parser.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: none)")
    parser.add_argument("--hash-embedder", action="store_true", help="the hash embedder (smoke runs)")
    parser.add_argument("--task-timeout", type=float, default=600, help="seconds to wait for fine stages")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if args.clients < 1 or args.adds < 0 or args.searches < 0:
        parser.error("--clients must be positive, --adds and --searches not negative")

    import httpx
    from tqdm import tqdm

    from memos_core.testing import MemosServer

    embedder = "hash:64" if args.hash_embedder else None
    stats = Stats()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="memos-load-", dir=args.workdir) as tmp:
        server = MemosServer(Path(tmp) / "data", tenants=("bench",), embedder=embedder, startup_timeout=180)
        headers = {"Authorization": f"Token {server.keys['bench']}"}
        with server, contextlib.ExitStack() as stack:
            https = [
                stack.enter_context(httpx.Client(base_url=server.base_url, headers=headers, timeout=120))
                for _ in range(args.clients)
            ]
            # Warm up (loads the embedding model in the server) outside the timed run.
            first = {"messages": [{"role": "user", "content": "warm up"}], "user_id": "warmup"}
            warm = call(https[0], "POST", "/v1/memories/add_message", stats, json=first)
            call(https[0], "POST", "/v1/memories/search", stats, json={"query": "warm", "user_id": "warmup"})
            if warm is None:
                raise SystemExit(f"the server did not take the warm-up add: {stats.errors}")

            bar = tqdm(total=args.adds + args.searches, desc="load", unit="req", disable=args.no_progress)
            bar_lock = threading.Lock()

            def tick(k: int) -> None:
                with bar_lock:
                    bar.update(k)

            deadline = time.monotonic() + (args.duration or float("inf"))
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                jobs = [
                    pool.submit(client_loop, n, https[n], a, s, deadline, stats, tick)
                    for n, (a, s) in enumerate(
                        zip(split(args.adds, args.clients), split(args.searches, args.clients), strict=True)
                    )
                ]
                for job in jobs:
                    job.result()
            wall = time.perf_counter() - t0
            bar.close()

            t1 = time.perf_counter()
            tasks = wait_for_tasks(https[0], stats.added, stats, args.task_timeout)
            drain = time.perf_counter() - t1

            lost: list[str] = []
            with ThreadPoolExecutor(args.clients) as pool:
                checks = [
                    pool.submit(verify, https[i % args.clients], a, stats) for i, a in enumerate(stats.added)
                ]
                for check in tqdm(checks, desc="verify", unit="add", disable=args.no_progress):
                    lost += check.result()
        log_tail = server.log.read_text()[-3000:] if server.log.exists() else ""

    acked = len(stats.added)
    result = {
        "clients": args.clients,
        "adds_acknowledged": acked,
        "searches_answered": len(stats.search_ms),
        "wall_seconds": round(wall, 2),
        "adds_per_second": round(acked / wall, 2) if wall else None,
        "searches_per_second": round(len(stats.search_ms) / wall, 2) if wall else None,
        "add_ms_p50": pct(stats.add_ms, 50),
        "add_ms_p95": pct(stats.add_ms, 95),
        "search_ms_p50": pct(stats.search_ms, 50),
        "search_ms_p95": pct(stats.search_ms, 95),
        "fine_stage_drain_seconds": round(drain, 2),
        "tasks": tasks,
        "retries": stats.retries,
        "errors": len(stats.errors),
        "lost": len(lost),
        "memory_ids_checked": sum(len(a.memory_ids) for a in stats.added),
        "embedder": "hash:64" if args.hash_embedder else "packaged all-MiniLM-L6-v2",
        # Client and server share the cores; other work on the machine skews the numbers too.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "date": datetime.now(timezone.utc).date().isoformat(),
    }
    failed = bool(lost or stats.errors or set(tasks) - {"completed"})
    if failed:
        result["problems"] = (stats.errors + lost)[:20]
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if failed:
        print(f"FAILED: something acknowledged was lost or a request failed; server log tail:\n{log_tail}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
