"""The fine stage on real chat: facts per window and seconds per window, rules vs an LLM.

    python benchmarks/fine_stage.py --data ../shared/bench/locomo/locomo_dev.json --windows 40

Chat windows (4 turns, as the fast stage makes them) are taken from the LoCoMo conversations
in order; each goes through the deterministic rules (``rule_facts``) and through the LLM
(``llm_facts``; default: the packaged SmolLM2-135M-Instruct, ``--llm-url`` for an
OpenAI-compatible endpoint). For the LLM it counts how often the answer was unusable (bad JSON
after retries, or no grounded fact: the fine stage then falls back to the rules). Prints a
JSON summary and a few example facts (and writes the summary to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any


def _when(text: str) -> datetime:
    # LoCoMo session times look like "1:56 pm on 8 May, 2023".
    return datetime.strptime(text.replace(" on ", " ").replace(",", ""), "%I:%M %p %d %B %Y")


def windows(data: list[dict[str, Any]], limit: int, size: int = 4) -> list[Any]:
    from memos_core.reader import Limits, WindowConfig, fast_items, validate_messages

    out = []
    for sample in data:
        conv = sample["conversation"]
        n = 1
        while f"session_{n}" in conv and len(out) < limit:
            when = _when(conv[f"session_{n}_date_time"])
            msgs = [
                {
                    "role": "user",
                    "name": t["speaker"],
                    "content": t["text"],
                    "id": t["dia_id"],
                    "chat_time": when,
                }
                for t in conv[f"session_{n}"]
            ]
            items = fast_items(
                validate_messages(msgs, Limits()),
                cube_id="bench",
                user_id="bench",
                conversation_id=sample["sample_id"],
                agent_id=None,
                app_id=None,
                tags=[],
                info={},
                embedding_model="none",
                window=WindowConfig(size=size, overlap=1),
            )
            out += items[: limit - len(out)]
            n += 1
        if len(out) >= limit:
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="locomo_dev.json")
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument("--llm-url", help="an OpenAI-compatible base URL instead of the local SmolLM2")
    parser.add_argument("--llm-model", default="default")
    parser.add_argument("--skip-llm", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from memos_core.errors import LLMError
    from memos_core.llms import OpenAIChatLLM, TransformersLLM
    from memos_core.reader import llm_facts, rule_facts

    data = json.loads(args.data.read_text("utf-8"))
    items = windows(data, args.windows)
    summary: dict[str, Any] = {
        "windows": len(items),
        "machine": f"{platform.machine()}, {platform.processor()}",
    }

    t0 = time.perf_counter()
    rules = [rule_facts(item) for item in items]
    summary["rules"] = {
        "seconds_per_window": (time.perf_counter() - t0) / max(1, len(items)),
        "facts": sum(len(r) for r in rules),
        "windows_with_facts": sum(bool(r) for r in rules),
        "examples": [f.text for r in rules for f in r][:8],
    }
    if not args.skip_llm:
        llm = (
            OpenAIChatLLM(args.llm_model, base_url=args.llm_url)
            if args.llm_url
            else TransformersLLM.smollm2()
        )
        llm.chat([{"role": "user", "content": "hi"}], max_tokens=2)  # load outside the timing
        times, facts, failed, empty = [], [], 0, 0
        for item in items:
            t = time.perf_counter()
            try:
                found = llm_facts(llm, item)
            except LLMError:
                found, failed = [], failed + 1
            else:
                empty += not found
            times.append(time.perf_counter() - t)
            facts.append(found)
        summary["llm"] = {
            "model": llm.model_id,
            "seconds_per_window_median": statistics.median(times),
            "seconds_per_window_max": max(times),
            "bad_json_after_retries": failed,
            "no_grounded_fact": empty,
            "usable_windows": len(items) - failed - empty,
            "facts": sum(len(f) for f in facts),
            "examples": [f.text for r in facts for f in r][:8],
        }
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
