"""Over HTTP, step 2: the two-stage add, and polling its background task.

    export MEMOS_BASE_URL=http://127.0.0.1:8765 MEMOS_API_KEY=<key>   # see client_add_and_search.py
    python cookbook/client_async_tasks.py

``add_message`` (``async_mode=True``, the default) answers as soon as the fast stage has
written one memory per turn, with a task id for the fine stage (context embeddings, resolved
dates, keywords, facts). ``get_task_status`` reports ``queued -> running -> completed`` (or
``failed``, with the error). The memory ids you were given stay valid through the fine stage:
the same id now reads as ``mode="fine"``. ``async_mode=False`` waits for the fine stage instead.
"""

from __future__ import annotations

import sys
import time

from memos_core.client import MemOSClient


def wait_for(client: MemOSClient, task_id: str, timeout: float = 60.0) -> str:
    """Poll a task until it is completed or failed; returns its last status."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        task = client.get_task_status(task_id).data[0]
        if task.status != last:
            print(f"  task {task_id[:8]}: {task.status}" + (f" ({task.error})" if task.error else ""))
            last = task.status
        if task.status in ("completed", "failed"):
            return last
        time.sleep(0.2)
    return last


def main() -> None:
    with MemOSClient() as client:  # MEMOS_BASE_URL and MEMOS_API_KEY from the environment
        r = client.add_message(
            [
                {"role": "user", "content": "Yesterday I adopted a cat called Miso", "id": "m1"},
                {"role": "assistant", "content": "Congratulations! How old is Miso?", "id": "m2"},
                {"role": "user", "content": "About two years old, and very shy", "id": "m3"},
            ],
            user_id="user_456",
            conversation_id="conv_pets",
        )
        print(f"add returned at once: {len(r.data.memory_ids)} memories, task {r.data.status}")
        status = wait_for(client, r.data.task_id)
        if status != "completed":
            sys.exit(f"the fine stage did not complete: {status or 'no status'}")
        print("fine stage completed")
        for memory_id in r.data.memory_ids:
            item = client.get_memory(memory_id, user_id="user_456").data
            print(
                f"  {item.id[:8]} mode={item.mode} keywords={item.keywords[:4]} event_time={item.event_time}"
            )

        r = client.add_message(
            [{"role": "user", "content": "Miso likes salmon treats", "id": "m4"}],
            user_id="user_456",
            conversation_id="conv_pets",
            async_mode=False,
        )
        print(f"async_mode=False returned with the task {r.data.status}")
        if r.data.status != "completed":
            sys.exit("async_mode=False returned before the fine stage completed")


if __name__ == "__main__":
    main()
