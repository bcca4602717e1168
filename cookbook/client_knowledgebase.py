"""Over HTTP, step 5: a knowledge base, searched next to the user's memories.

    export MEMOS_BASE_URL=http://127.0.0.1:8765 MEMOS_API_KEY=<key>   # see client_add_and_search.py
    python cookbook/client_knowledgebase.py

A knowledge base is a cube of documents (PDF, DOCX, HTML, Markdown, text), owned by a user
and shareable. ``add_document`` takes a local path or bytes; the SDK uploads the bytes and the
``filename`` picks the reader. Each chunk is a memory traced to its document and character span.
``search_memory(knowledgebase_ids=[...])`` ranks the user's own memories and the knowledge
base's chunks together; ``origin`` says where each hit came from.
"""

from __future__ import annotations

import sys

from memos_core.client import MemOSClient

HANDBOOK = b"""# Employee handbook

## Vacation
Every employee has 28 vacation days per calendar year. Up to 5 unused days carry over
to the next year and expire on 31 March.

## Remote work
You may work remotely up to three days a week. Tell your team lead a day in advance.

## Equipment
New employees receive a laptop and a monitor. Broken equipment goes to the IT desk on floor 2.
"""


def main() -> None:
    with MemOSClient() as client:  # MEMOS_BASE_URL and MEMOS_API_KEY from the environment
        user = "hr_ana"
        kb = client.create_knowledgebase(user, name="handbook", description="HR policies").data
        kb_id = kb["kb_id"]
        print(f"created knowledge base {kb['name']!r} ({kb_id})")

        doc = client.add_document(kb_id, HANDBOOK, user_id=user, filename="handbook.md", chunk_size=200).data
        print(f"added {doc['filename']}: {doc['chunks']} chunks, status {doc['status']}")
        docs = client.list_documents(kb_id, user_id=user).data
        print(f"documents in the knowledge base: {[d['filename'] for d in docs]}")

        client.add_message(
            [{"role": "user", "content": "I'm planning two weeks of vacation in August", "id": "v1"}],
            user_id=user,
        )
        hits = client.search_memory(
            "how many vacation days do I get", user_id=user, knowledgebase_ids=[kb_id], top_k=3
        ).data.memory_detail_list
        for h in hits:
            where = h.key if h.origin == "knowledgebase" else "own memory"
            span = [(s.char_start, s.char_end) for s in h.sources if s.type == "doc"]
            text = " ".join(h.memory.split())[:70]
            print(f"hit {h.score:.3f} origin={h.origin} ({where}) span={span}: {text}")
        if not any(h.origin == "knowledgebase" and "28 vacation days" in h.memory for h in hits):
            sys.exit("the handbook's vacation chunk was not found")
        print("found the vacation policy in the knowledge base")


if __name__ == "__main__":
    main()
