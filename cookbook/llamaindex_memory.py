"""MemOS as LlamaIndex memory: a memory block, a retriever and a vector store.

    python cookbook/llamaindex_memory.py [DATA_FOLDER]

Runs offline: the LLM is LlamaIndex's MockLLM (it echoes its prompt, so you can see what
memory put into it) and MemOS embeds with its packaged all-MiniLM-L6-v2. Three steps:

1. Two chat sessions write through ``MemosMemoryBlock``: what falls out of the short-term
   window is remembered in MemOS under the session's id.
2. A new session's ``ContextChatEngine`` recalls across sessions with ``MemosRetriever``.
3. ``VectorStoreIndex`` over ``MemosVectorStore``: documents in, a filtered query out.
"""

from __future__ import annotations

import sys
import tempfile

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.chat_engine import ContextChatEngine, SimpleChatEngine
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.memory import Memory
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters
from memos_llamaindex import MemosMemoryBlock, MemosRetriever, MemosVectorStore

from memos_core import MemOS


def main(folder: str) -> None:
    llm = MockLLM(max_tokens=8)  # answers with the first 8 words of its prompt
    with MemOS(folder, scheduler="inline") as mem:
        # 1. Chat sessions: a small short-term window, so older turns flush into MemOS.
        block = MemosMemoryBlock(memos=mem, user_id="ada", top_k=3)
        chats = {
            "trip-planning": ["I am planning a trip to Lisbon in May", "I prefer trains over flights"],
            "cooking": ["I am vegetarian and love spicy food", "My favourite dish is chana masala"],
        }
        for session_id, turns in chats.items():
            memory = Memory.from_defaults(
                session_id=session_id, memory_blocks=[block], token_limit=60, chat_history_token_ratio=0.3
            )
            engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory)
            for turn in turns:
                engine.chat(turn)
        for item in reversed(mem.list_memories("ada").data.items):
            print(f"[{item.conversation_id}] {item.memory.splitlines()[0]}")

        # 2. A new session recalls across the old ones.
        retriever = MemosRetriever(mem, user_id="ada", top_k=2)
        chat = ContextChatEngine.from_defaults(retriever=retriever, llm=llm)
        response = chat.chat("What food do I like?")
        top = response.source_nodes[0]
        print(f"recalled: {top.node.metadata['conversation_id']} score={top.score:.2f}")

        # 3. A vector index on MemOS (it embeds with its own model; MockEmbedding is unused).
        store = MemosVectorStore(memos=mem, user_id="ada", collection="guides")
        docs = [
            Document(text="Lisbon trams: line 28 crosses the old town.", metadata={"city": "Lisbon"}),
            Document(text="Porto trains leave from São Bento station.", metadata={"city": "Porto"}),
        ]
        index = VectorStoreIndex.from_documents(
            docs,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=MockEmbedding(embed_dim=8),
        )
        only_porto = MetadataFilters(filters=[MetadataFilter(key="city", value="Porto")])
        nodes = index.as_retriever(filters=only_porto).retrieve("trains")
        print("guide:", nodes[0].node.get_content())
        index.delete_ref_doc(docs[1].doc_id)
        print("after delete:", len(index.as_retriever(filters=only_porto).retrieve("trains")))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
