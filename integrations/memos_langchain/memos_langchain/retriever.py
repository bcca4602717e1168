"""``MemosRetriever``: MemOS hybrid search as a LangChain retriever."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from memos_core import MemoryHit, MemOS, SearchMode

__all__ = ["MemosRetriever", "hit_to_document"]


def hit_to_document(hit: MemoryHit) -> Document:
    """A search hit as a ``Document``: the memory text, and in ``metadata`` its id, score,
    score details, memory type, origin, cube, times and sources (plain JSON)."""
    return Document(
        page_content=hit.memory,
        id=hit.id,
        metadata={
            "id": hit.id,
            "score": hit.score,
            "score_details": dict(hit.score_details),
            "memory_type": hit.memory_type,
            "key": hit.key,
            "tags": list(hit.tags),
            "origin": hit.origin,
            "cube_id": hit.cube_id,
            "conversation_id": hit.conversation_id,
            "created_at": hit.created_at.isoformat(),
            "event_time": hit.event_time.isoformat() if hit.event_time else None,
            "sources": [s.model_dump(mode="json", exclude_none=True) for s in hit.sources],
        },
    )


class MemosRetriever(BaseRetriever):
    """Search one user's memories (narrowed to a conversation or agent, filtered, plus any
    knowledge bases) and return ``Document``s, best first. ``mode="lexical"`` searches with
    BM25 alone (no query embedding: faster, slightly lower recall than the default
    ``"hybrid"``); ``"keyword"`` returns the plain BM25 ranking (the fastest, e.g. as
    candidates for your own reranker).

    Example:
        >>> retriever = MemosRetriever(memos=mem, user_id="u1", top_k=5)
        >>> retriever.invoke("where does the user live")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memos: MemOS
    user_id: str
    conversation_id: str | None = None
    agent_id: str | None = None
    filter: Mapping[str, Any] | None = None
    knowledgebase_ids: Sequence[str] | None = None
    top_k: int = 5
    mode: SearchMode = "hybrid"

    def _search(self, query: str) -> list[Document]:
        hits = self.memos.search_memory(
            query,
            user_id=self.user_id,
            conversation_id=self.conversation_id,
            agent_id=self.agent_id,
            filter=self.filter,
            knowledgebase_ids=self.knowledgebase_ids,
            top_k=self.top_k,
            mode=self.mode,
        ).data.memory_detail_list
        return [hit_to_document(h) for h in hits]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return self._search(query)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        # The store is synchronous (SQLite): run it off the event loop.
        return await asyncio.to_thread(self._search, query)
