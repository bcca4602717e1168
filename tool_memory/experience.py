"""Experience: what past tool calls teach — per-tool summaries and search over tool memory."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from memos_core import MemoryHit, MemoryItem, MemOS

__all__ = ["ToolSummary", "render_experience", "search_tool_memory", "tool_experience"]


@dataclass
class ToolSummary:
    """How one tool has behaved for a user."""

    tool: str
    calls: int = 0
    ok: int = 0
    errors: int = 0
    latency_ms_p50: float | None = None
    common_errors: list[tuple[str, int]] = field(default_factory=list)
    good_examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.ok / self.calls if self.calls else 0.0


def _tool_items(memos: MemOS, user_id: str, tool: str | None, limit: int) -> list[MemoryItem]:
    where: dict[str, Any] = {"memory_type": "tool"}
    if tool is not None:
        where["tool"] = tool
    out: list[MemoryItem] = []
    offset: int | None = 0
    while offset is not None and len(out) < limit:
        page = memos.list_memories(
            user_id, filter=where, limit=min(1000, limit - len(out)), offset=offset
        ).data
        out += page.items
        offset = page.next_offset
    return out


def tool_experience(
    memos: MemOS, *, user_id: str, tool: str | None = None, limit: int = 5000, examples: int = 3
) -> list[ToolSummary]:
    """Per-tool call count, success rate, median latency, most common errors and example
    arguments that worked, from the user's newest ``limit`` tool memories; most-used first."""
    by_tool: dict[str, list[MemoryItem]] = {}
    for item in _tool_items(memos, user_id, tool, limit):
        by_tool.setdefault(str(item.info.get("tool", item.key or "?")), []).append(item)
    out = []
    for name, items in by_tool.items():
        oks = [i for i in items if i.info.get("outcome") == "ok"]
        errors = Counter(str(i.info.get("error")) for i in items if i.info.get("outcome") == "error")
        latencies = [float(i.info["duration_ms"]) for i in items if i.info.get("duration_ms") is not None]
        seen: list[str] = []
        good: list[dict[str, Any]] = []
        for i in oks:  # newest first
            args = i.info.get("args") or {}
            text = json.dumps(args, sort_keys=True)
            if text not in seen and len(good) < examples:
                seen.append(text)
                good.append(args)
        out.append(
            ToolSummary(
                tool=name,
                calls=len(items),
                ok=len(oks),
                errors=sum(errors.values()),
                latency_ms_p50=statistics.median(latencies) if latencies else None,
                common_errors=errors.most_common(3),
                good_examples=good,
            )
        )
    return sorted(out, key=lambda s: (-s.calls, s.tool))


def render_experience(summaries: list[ToolSummary]) -> str:
    """The summaries as short prompt text, one block per tool."""
    lines = []
    for s in summaries:
        latency = f", typically {s.latency_ms_p50:.0f} ms" if s.latency_ms_p50 is not None else ""
        calls = f"{s.calls} call" + ("" if s.calls == 1 else "s")
        lines.append(f"- {s.tool}: {calls}, {s.success_rate:.0%} succeeded{latency}.")
        for args in s.good_examples:
            lines.append(f"  worked with: {json.dumps(args, ensure_ascii=False)}")
        for error, count in s.common_errors:
            lines.append(f"  failed {count}x: {error}")
    return "\n".join(lines) if lines else "(no tool experience yet)"


def search_tool_memory(memos: MemOS, query: str, *, user_id: str, top_k: int = 5) -> list[MemoryHit]:
    """Past tool calls relevant to ``query`` ("how did we get the weather for Paris?")."""
    return memos.search_memory(
        query, user_id=user_id, filter={"memory_type": "tool"}, top_k=top_k
    ).data.memory_detail_list
