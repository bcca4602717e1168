"""Over HTTP, step 3: tags, info and filtered search (English and Chinese).

    export MEMOS_BASE_URL=http://127.0.0.1:8765 MEMOS_API_KEY=<key>   # see client_add_and_search.py
    python cookbook/client_filters.py

Every add can carry ``tags`` and an ``info`` dict; a search or a listing narrows by them with
one filter grammar (``and``/``or``/``not``; ``eq ne gt gte lt lte in nin contains like
exists``; a bare value means ``eq``; info keys are addressed by name, like ``scene``). Chinese
tags, keys and values work as written. A malformed filter is an error that names the bad part.
"""

from __future__ import annotations

import sys
from typing import Any

from memos_core.client import MemOSClient

USER = "user_789"


def search(client: MemOSClient, query: str, flt: dict[str, Any]) -> list[str]:
    hits = client.search_memory(query, user_id=USER, filter=flt, top_k=5).data.memory_detail_list
    print(f"search {query!r} filter={flt}")
    for h in hits:
        print(f"  {h.score:.3f} tags={h.tags} info={h.info}: {h.memory}")
    return [h.memory for h in hits]


def main() -> None:
    with MemOSClient() as client:  # MEMOS_BASE_URL and MEMOS_API_KEY from the environment
        adds = [
            ("I'm learning Python for data analysis", ["study"], {"scene": "chat"}),
            ("I'm learning Python at a weekend bootcamp", ["study"], {"scene": "class"}),
            ("I want to learn Python to automate reports at work", ["work"], {"scene": "chat"}),
            ("下周一要准备季度汇报的幻灯片", ["工作"], {"custom_status": "待准备"}),
            ("季度汇报的预算表已经做完了", ["工作"], {"custom_status": "已完成"}),
            ("周末准备去爬山", ["生活"], {"custom_status": "待准备"}),
        ]
        for i, (text, tags, info) in enumerate(adds):
            client.add_message(
                [{"role": "user", "content": text, "id": f"f{i}"}], user_id=USER, tags=tags, info=info
            )
        print(f"added {len(adds)} memories with tags and info")

        found = search(
            client, "learning Python", {"and": [{"tags": {"contains": "study"}}, {"scene": "chat"}]}
        )
        if not any("data analysis" in m for m in found) or any(
            "bootcamp" in m or "reports" in m for m in found
        ):
            sys.exit("expected the study/chat memory and neither the class nor the work one")

        found = search(
            client, "季度汇报", {"and": [{"tags": {"contains": "工作"}}, {"custom_status": "待准备"}]}
        )
        if not any("幻灯片" in m for m in found) or any("预算表" in m or "爬山" in m for m in found):
            sys.exit("expected the 工作/待准备 memory and neither the finished one nor the 生活 one")

        page = client.list_memories(USER, filter={"tags": {"contains": "工作"}}).data
        print(f"list_memories with tag 工作: {page.total} memories")
        if page.total < 2 or any("工作" not in item.tags for item in page.items):
            sys.exit("the listing ignored the filter")
        print("filters ok")


if __name__ == "__main__":
    main()
