"""Over HTTP, step 1: remember a conversation and search it.

    memos --path ./memos-data keys create --tenant acme      # prints the key once
    memos --path ./memos-data serve --port 8765 &
    export MEMOS_BASE_URL=http://127.0.0.1:8765 MEMOS_API_KEY=<the key>
    python cookbook/client_add_and_search.py

The README's walkthrough through ``MemOSClient``, the HTTP SDK with the same methods and
return types as ``MemOS``. ``add_message`` returns once the fast stage has stored one memory
per turn: they are searchable at once, while the fine stage refines them in the background.
Every hit says why it ranked (``score_details``) and which message said it (``sources``).
"""

from __future__ import annotations

import sys

from memos_core.client import MemOSClient


def main() -> None:
    with MemOSClient() as client:  # MEMOS_BASE_URL and MEMOS_API_KEY from the environment
        r = client.add_message(
            [
                {"role": "user", "content": "I'm learning Python and want beginner projects", "id": "m1"},
                {"role": "assistant", "content": "Start with a scraper or a small data analysis", "id": "m2"},
            ],
            user_id="user_123",
            conversation_id="conv_001",
            tags=["study"],
            info={"scene": "chat"},
        )
        print(
            f"added: {len(r.data.memory_ids)} memories, fine stage task {r.data.task_id} is {r.data.status}"
        )

        hits = client.search_memory("what language is the user learning", user_id="user_123", top_k=3)
        for h in hits.data.memory_detail_list:
            details = ", ".join(f"{k}={v:.2f}" for k, v in h.score_details.items())
            print(f"hit {h.score:.3f} [{details}] from {[s.message_id for s in h.sources]}: {h.memory}")
        if not any("Python" in h.memory for h in hits.data.memory_detail_list):
            sys.exit("the Python turn was not found")
        print("found the Python turn")


if __name__ == "__main__":
    main()
