"""MemosCheckpointSaver: LangGraph's official conformance suite, real compiled graphs, a graph
resumed by another process after an interrupt or a crash, and threads writing concurrently."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import operator
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.base import WRITES_IDX_MAP, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES, EXTENDED_CAPABILITIES
from langgraph.checkpoint.conformance.report import ProgressCallbacks
from langgraph.checkpoint.serde.types import ERROR, INTERRUPT
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from memos_core import MemOS, NotSupportedError
from memos_core.testing import HashEmbedder

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent  # integrations/memos_langgraph
try:
    from memos_langgraph.checkpoint import MemosCheckpointSaver
except ImportError:  # the package is not installed (editable) yet: use the source tree
    sys.path.insert(0, str(PACKAGE_ROOT))
    from memos_langgraph.checkpoint import MemosCheckpointSaver


def make_mem(folder: Path) -> MemOS:
    return MemOS(folder, embedder=HashEmbedder(), scheduler="inline")


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[MemOS]:
    m = make_mem(tmp_path / "d")
    yield m
    m.close()


@pytest.fixture
def saver(mem: MemOS) -> Iterator[MemosCheckpointSaver]:
    s = MemosCheckpointSaver.from_memos(mem)
    yield s
    s.close()


def config(thread_id: str, checkpoint_id: str | None = None, ns: str = "") -> Any:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def checkpoint(values: dict[str, Any] | None = None) -> Checkpoint:
    values = values or {}
    return Checkpoint(
        v=1,
        id=str(uuid6(clock_seq=-1)),
        ts="2024-01-01T00:00:00+00:00",
        channel_values=values,
        channel_versions=dict.fromkeys(values, 1),
        versions_seen={},
        updated_channels=None,
    )


def metadata(step: int, source: str = "loop", **extra: Any) -> CheckpointMetadata:
    return {"source": source, "step": step, "parents": {}, **extra}  # type: ignore[typeddict-item]


# ---------------------------------------------------------------------- graphs


class Steps(TypedDict, total=False):
    steps: Annotated[list[str], operator.add]
    answer: str


def counting_graph(saver: MemosCheckpointSaver) -> Any:
    """START -> a -> b -> END; each node appends its name."""
    builder = StateGraph(Steps)
    builder.add_node("a", lambda s: {"steps": ["a"]})
    builder.add_node("b", lambda s: {"steps": ["b"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    return builder.compile(checkpointer=saver)


def resumable_graph(saver: MemosCheckpointSaver, *, crash: bool) -> Any:
    """plan -> ask (interrupts for an answer) -> flaky (raises when ``crash``) -> END."""

    def ask(state: Steps) -> Steps:
        return {"steps": ["ask"], "answer": interrupt("approve?")}

    def flaky(state: Steps) -> Steps:
        if crash:
            raise RuntimeError("the process dies here")
        return {"steps": ["flaky"]}

    builder = StateGraph(Steps)
    builder.add_node("plan", lambda s: {"steps": ["plan"]})
    builder.add_node("ask", ask)
    builder.add_node("flaky", flaky)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "ask")
    builder.add_edge("ask", "flaky")
    builder.add_edge("flaky", END)
    return builder.compile(checkpointer=saver)


# ---------------------------------------------------------------------- conformance


def test_langgraph_conformance_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """LangGraph's checkpoint-conformance suite, every capability, each on a fresh data folder.

    On failure the assertion message holds the per-test log and the report: look at the
    failing capability's lines.
    """
    folders = iter(range(100))

    @checkpointer_test(name="MemosCheckpointSaver")
    async def factory() -> AsyncGenerator[MemosCheckpointSaver, None]:
        m = make_mem(tmp_path / f"conformance-{next(folders)}")
        s = MemosCheckpointSaver.from_memos(m)
        try:
            yield s
        finally:
            s.close()
            m.close()

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        report = asyncio.run(validate(factory, progress=ProgressCallbacks.verbose()))
        report.print_report()
    text = out.getvalue()
    with capsys.disabled():
        print(text)

    results = report.results
    failed_base = [c.value for c in BASE_CAPABILITIES if results[c.value].passed is not True]
    assert not failed_base, f"base capabilities failed: {failed_base}\n{text}"
    # The extended ones are implemented too, so they must be detected and pass.
    failed_ext = [c.value for c in EXTENDED_CAPABILITIES if results[c.value].passed is not True]
    assert not failed_ext, f"extended capabilities failed: {failed_ext}\n{text}"
    assert report.conformance_level() == "FULL", text


# ---------------------------------------------------------------------- construction


def test_from_memos_shares_the_store_file_and_leaves_the_store_working(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    with make_mem(folder) as m:
        saver = MemosCheckpointSaver.from_memos(m)
        assert saver.path == m.store.path  # type: ignore[attr-defined]
        saver.setup()  # idempotent
        graph = counting_graph(saver)
        graph.invoke({"steps": []}, config("t1"))
        m.add_message([{"role": "user", "content": "I like green tea"}], user_id="u", async_mode=False)
        saver.close()
    # A fresh process view of the same folder: the store's schema checks accept our tables.
    with make_mem(folder) as m:
        hits = m.search_memory("green tea", user_id="u").data
        assert hits.model_dump()  # the store still answers
        again = MemosCheckpointSaver.from_memos(m)
        assert again.get_tuple(config("t1")) is not None
        again.close()


def test_from_memos_needs_the_sqlite_store() -> None:
    with pytest.raises(NotSupportedError, match="SqliteStore"):
        MemosCheckpointSaver.from_memos(SimpleNamespace(store=object()))  # type: ignore[arg-type]


def test_plain_path_constructor(tmp_path: Path) -> None:
    with MemosCheckpointSaver(tmp_path / "cp.db") as s:
        stored = s.put(config("t"), checkpoint({"x": 1}), metadata(0), {"x": 1})
        tup = s.get_tuple(stored)
        assert tup is not None and tup.checkpoint["channel_values"] == {"x": 1}


# ---------------------------------------------------------------------- sync API


def test_put_get_list_with_filter_before_limit(saver: MemosCheckpointSaver) -> None:
    stored: list[Any] = []
    parent = None
    for i in range(5):
        cfg = config("t1", parent["configurable"]["checkpoint_id"] if parent else None)
        source = "input" if i % 2 == 0 else "loop"
        parent = saver.put(cfg, checkpoint({"n": i}), metadata(i, source, score=i * 10), {"n": 1})
        stored.append(parent)
    saver.put(config("other"), checkpoint({"n": 99}), metadata(0), {"n": 1})

    latest = saver.get_tuple(config("t1"))
    assert latest is not None
    assert latest.config == stored[-1]
    assert latest.checkpoint["channel_values"] == {"n": 4}
    assert latest.metadata["score"] == 40
    assert latest.parent_config is not None
    assert latest.parent_config["configurable"]["checkpoint_id"] == stored[3]["configurable"]["checkpoint_id"]
    first = saver.get_tuple(stored[0])
    assert (
        first is not None and first.parent_config is None and first.checkpoint["channel_values"] == {"n": 0}
    )
    assert saver.get_tuple(config("t1", "no-such-id")) is None
    assert saver.get_tuple(config("t1", ns="child:1")) is None

    ids = [t.checkpoint["id"] for t in saver.list(config("t1"))]
    assert ids == [s["configurable"]["checkpoint_id"] for s in reversed(stored)]  # newest first
    assert [t.metadata["step"] for t in saver.list(config("t1"), filter={"source": "input"})] == [4, 2, 0]
    assert [t.metadata["step"] for t in saver.list(config("t1"), filter={"source": "loop", "score": 10})] == [
        1
    ]
    assert [t.metadata["step"] for t in saver.list(config("t1"), before=stored[2])] == [1, 0]
    assert [t.metadata["step"] for t in saver.list(config("t1"), limit=2)] == [4, 3]
    assert [t.metadata["step"] for t in saver.list(config("t1"), filter={"source": "input"}, limit=2)] == [
        4,
        2,
    ]
    assert [t.metadata["step"] for t in saver.list(config("t1"), before=stored[4], limit=1)] == [3]
    assert list(saver.list(config("t1"), limit=0)) == []
    assert {t.config["configurable"]["thread_id"] for t in saver.list(None)} == {"t1", "other"}
    assert len(list(saver.list(None, filter={"step": 0}))) == 2


def test_list_pages_through_more_rows_than_a_page(saver: MemosCheckpointSaver) -> None:
    parent = None
    for i in range(250):
        cfg = config("long", parent["configurable"]["checkpoint_id"] if parent else None)
        parent = saver.put(cfg, checkpoint(), metadata(i, "input" if i % 3 == 0 else "loop"), {})
    steps = [t.metadata["step"] for t in saver.list(config("long"))]
    assert steps == list(range(249, -1, -1))
    assert len(list(saver.list(config("long"), filter={"source": "input"}))) == 84
    assert [t.metadata["step"] for t in saver.list(config("long"), filter={"source": "input"}, limit=40)][
        -1
    ] == 132


def test_put_writes_idx_semantics(saver: MemosCheckpointSaver) -> None:
    stored = saver.put(config("t"), checkpoint(), metadata(0), {})
    saver.put_writes(stored, [("a", 1), ("b", 2)], task_id="task-2", task_path="~1")
    saver.put_writes(stored, [("a", 1)], task_id="task-1", task_path="~0")
    # A retried regular write for the same (task, idx) keeps the first value...
    saver.put_writes(stored, [("a", "retry")], task_id="task-1", task_path="~0")
    # ...while special channels use fixed negative indices and replace the earlier value.
    saver.put_writes(stored, [(ERROR, "first failure")], task_id="task-1", task_path="~0")
    saver.put_writes(stored, [(ERROR, "second failure")], task_id="task-1", task_path="~0")
    saver.put_writes(stored, [(INTERRUPT, {"why": "ask"})], task_id="task-3", task_path="~2")

    tup = saver.get_tuple(stored)
    assert tup is not None and tup.pending_writes is not None
    # writes_sort_key order: (task_path, task_id, idx); ERROR's idx is -1, before idx 0.
    assert tup.pending_writes == [
        ("task-1", ERROR, "second failure"),
        ("task-1", "a", 1),
        ("task-2", "a", 1),
        ("task-2", "b", 2),
        ("task-3", INTERRUPT, {"why": "ask"}),
    ]
    assert WRITES_IDX_MAP[ERROR] == -1
    # Writes belong to their checkpoint: the next one starts clean.
    nxt = saver.put(config("t", stored["configurable"]["checkpoint_id"]), checkpoint(), metadata(1), {})
    after = saver.get_tuple(nxt)
    assert after is not None and after.pending_writes == []


def test_delete_thread_leaves_other_threads(saver: MemosCheckpointSaver) -> None:
    for tid in ("gone", "kept"):
        for ns in ("", "child:1"):
            stored = saver.put(config(tid, ns=ns), checkpoint(), metadata(0), {})
            saver.put_writes(stored, [("ch", tid)], task_id="t")
    saver.delete_thread("gone")
    assert saver.get_tuple(config("gone")) is None
    assert saver.get_tuple(config("gone", ns="child:1")) is None
    assert list(saver.list(config("gone"))) == []
    kept = saver.get_tuple(config("kept", ns="child:1"))
    assert kept is not None and kept.pending_writes == [("t", "ch", "kept")]
    saver.delete_thread("never-existed")


def test_compiled_graph_keeps_state_per_thread(saver: MemosCheckpointSaver) -> None:
    graph = counting_graph(saver)
    assert graph.invoke({"steps": ["start"]}, config("t1")) == {"steps": ["start", "a", "b"]}
    assert graph.invoke({"steps": ["again"]}, config("t1")) == {
        "steps": ["start", "a", "b", "again", "a", "b"]
    }
    assert graph.invoke({"steps": ["other"]}, config("t2")) == {"steps": ["other", "a", "b"]}

    assert graph.get_state(config("t1")).values == {"steps": ["start", "a", "b", "again", "a", "b"]}
    history = list(graph.get_state_history(config("t1")))
    # Per invoke: an input checkpoint, then one per super-step (START, a, b); newest first.
    assert [(h.metadata["step"], h.metadata["source"], h.next) for h in history if h.metadata] == [
        (6, "loop", ()),
        (5, "loop", ("b",)),
        (4, "loop", ("a",)),
        (3, "input", ("__start__",)),
        (2, "loop", ()),
        (1, "loop", ("b",)),
        (0, "loop", ("a",)),
        (-1, "input", ("__start__",)),
    ]
    assert history[4].values == {"steps": ["start", "a", "b"]}
    assert history[-1].values == {"steps": []}
    # Every snapshot points at its parent, down to the thread's first checkpoint.
    for newer, older in itertools.pairwise(history):
        assert newer.parent_config is not None
        assert (
            newer.parent_config["configurable"]["checkpoint_id"]
            == older.config["configurable"]["checkpoint_id"]
        )
    # Time travel: replaying from the checkpoint before node b runs b again on that state.
    before_b = next(h for h in history if h.next == ("b",))
    assert graph.invoke(None, before_b.config) == {"steps": ["start", "a", "b", "again", "a", "b"]}
    assert len(list(graph.get_state_history(config("t2")))) == 4

    saver.delete_thread("t1")
    assert graph.get_state(config("t1")).values == {}
    assert graph.get_state(config("t2")).values == {"steps": ["other", "a", "b"]}


def test_async_graph_uses_the_same_tables(saver: MemosCheckpointSaver) -> None:
    graph = counting_graph(saver)

    async def run() -> Any:
        await graph.ainvoke({"steps": ["x"]}, config("async"))
        return [s async for s in graph.aget_state_history(config("async"))]

    history = asyncio.run(run())
    assert len(history) == 4
    # Written on the async path, read on the sync one.
    assert graph.get_state(config("async")).values == {"steps": ["x", "a", "b"]}


def test_extended_operations(saver: MemosCheckpointSaver) -> None:
    graph = counting_graph(saver)
    graph.invoke({"steps": []}, config("src"))
    saver.copy_thread("src", "dst")
    assert graph.get_state(config("dst")).values == {"steps": ["a", "b"]}
    assert len(list(saver.list(config("dst")))) == len(list(saver.list(config("src"))))
    saver.prune(["dst"], strategy="keep_latest")
    assert len(list(saver.list(config("dst")))) == 1
    assert graph.get_state(config("dst")).values == {"steps": ["a", "b"]}
    # run_id reaches checkpoint metadata from the config's metadata (as LangGraph servers set it).
    for run in ("run-1", "run-2"):
        graph.invoke({"steps": [run]}, {**config("runs"), "metadata": {"run_id": run}})
    assert {t.metadata.get("run_id") for t in saver.list(config("runs"))} == {"run-1", "run-2"}
    saver.delete_for_runs(["run-1"])
    assert {t.metadata.get("run_id") for t in saver.list(config("runs"))} == {"run-2"}
    assert len(list(saver.list(config("src")))) == 4  # checkpoints without a run_id stay
    with pytest.raises(ValueError, match="strategy"):
        saver.prune(["dst"], strategy="everything")


# ---------------------------------------------------------------------- process restart

CHILD = """
import os, sys
sys.path[:0] = [{here!r}, {pkg!r}]
import test_checkpoint as t
from memos_langgraph.checkpoint import MemosCheckpointSaver

mem = t.make_mem({folder!r})
saver = MemosCheckpointSaver.from_memos(mem)
out = t.resumable_graph(saver, crash=True).invoke({{"steps": []}}, t.config("interrupted"))
print("INTERRUPT", [i.value for i in out["__interrupt__"]], flush=True)
graph = t.resumable_graph(saver, crash=True)
graph.invoke({{"steps": []}}, t.config("crashed"))
print("PAUSED AGAIN", flush=True)
try:
    graph.invoke(t.Command(resume="yes"), t.config("crashed"))
except RuntimeError as exc:
    print("CRASHED", exc, flush=True)
os._exit(0)  # no close, no cleanup: the process just ends
"""


def test_thread_resumes_in_another_process(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    script = CHILD.format(here=str(HERE), pkg=str(PACKAGE_ROOT), folder=str(folder))
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "INTERRUPT ['approve?']" in proc.stdout, proc.stdout + proc.stderr
    assert "CRASHED the process dies here" in proc.stdout, proc.stdout + proc.stderr

    with make_mem(folder) as m:
        saver = MemosCheckpointSaver.from_memos(m)
        graph = resumable_graph(saver, crash=False)

        # 1. Interrupted by interrupt(): the answer comes from this process.
        state = graph.get_state(config("interrupted"))
        assert state.next == ("ask",)
        assert state.values == {"steps": ["plan"]}
        assert [i.value for i in state.interrupts] == ["approve?"]
        final = graph.invoke(Command(resume="yes"), config("interrupted"))
        assert final == {"steps": ["plan", "ask", "flaky"], "answer": "yes"}

        # 2. Crashed in a node: resume from the last checkpoint; finished nodes do not rerun.
        state = graph.get_state(config("crashed"))
        assert state.next == ("flaky",)
        assert state.values == {"steps": ["plan", "ask"], "answer": "yes"}
        assert state.tasks[0].error is not None  # the stored ERROR write
        final = graph.invoke(None, config("crashed"))
        assert final == {"steps": ["plan", "ask", "flaky"], "answer": "yes"}
        assert graph.get_state(config("crashed")).next == ()
        saver.close()


# ---------------------------------------------------------------------- concurrency


def test_two_threads_write_different_thread_ids(saver: MemosCheckpointSaver) -> None:
    graph = counting_graph(saver)
    rounds = 15
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(thread_id: str) -> None:
        try:
            barrier.wait()
            for i in range(rounds):
                graph.invoke({"steps": [f"{thread_id}-{i}"]}, config(thread_id))
                saver.list(config(thread_id), limit=1)
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(tid,)) for tid in ("left", "right")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors, errors
    for tid in ("left", "right"):
        expected = [s for i in range(rounds) for s in (f"{tid}-{i}", "a", "b")]
        assert graph.get_state(config(tid)).values == {"steps": expected}
        assert len(list(saver.list(config(tid)))) == 4 * rounds


WRITER = """
import sys
sys.path[:0] = [{here!r}, {pkg!r}]
import test_checkpoint as t
from memos_langgraph.checkpoint import MemosCheckpointSaver

saver = MemosCheckpointSaver({db!r})
graph = t.counting_graph(saver)
for i in range({rounds}):
    graph.invoke({{"steps": [str(i)]}}, t.config({thread_id!r}))
saver.close()
"""


def test_processes_write_the_same_file_concurrently(mem: MemOS, saver: MemosCheckpointSaver) -> None:
    """Two other processes and this one write to one database file at the same time."""
    rounds = 10
    db = str(saver.path)
    scripts = [
        WRITER.format(here=str(HERE), pkg=str(PACKAGE_ROOT), db=db, rounds=rounds, thread_id=f"proc-{n}")
        for n in range(2)
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for script in scripts
    ]
    graph = counting_graph(saver)
    for i in range(rounds):
        graph.invoke({"steps": [str(i)]}, config("here"))
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    for tid in ("proc-0", "proc-1", "here"):
        expected = [s for i in range(rounds) for s in (str(i), "a", "b")]
        assert graph.get_state(config(tid)).values == {"steps": expected}
