"""``MemosRetriever``: MemOS hybrid search as a LlamaIndex ``BaseRetriever``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from memos_core import MemoryHit, MemOS, SearchMode
from memos_core.retrieval import check_mode

__all__ = ["MemosRetriever", "hit_to_node"]

#: Metadata an LLM sees next to a memory's text; the rest (ids, score breakdown, provenance)
#: is for the application and is kept out of prompts and embeddings.
LLM_VISIBLE_METADATA = ("memory_type", "event_time")


def hit_to_node(hit: MemoryHit) -> NodeWithScore:
    """A MemOS search hit as a LlamaIndex ``NodeWithScore``.

    The node id is the memory id; ``metadata`` holds ``memory_id``, ``score``,
    ``score_details``, ``sources`` (JSON dicts), ``memory_type``, ``origin``, ``cube_id``,
    ``conversation_id``, ``key``, ``tags``, ``info``, ``mode``, ``version``, ``created_at``
    and ``event_time`` (ISO strings). Only ``memory_type`` and ``event_time`` reach an LLM's
    prompt.
    """
    metadata: dict[str, Any] = {
        "memory_id": hit.id,
        "score": hit.score,
        "score_details": dict(hit.score_details),
        "sources": [s.model_dump(mode="json", exclude_none=True) for s in hit.sources],
        "memory_type": hit.memory_type,
        "origin": hit.origin,
        "cube_id": hit.cube_id,
        "conversation_id": hit.conversation_id,
        "key": hit.key,
        "tags": list(hit.tags),
        "info": dict(hit.info),
        "mode": hit.mode,
        "version": hit.version,
        "created_at": hit.created_at.isoformat(),
        "event_time": hit.event_time.isoformat() if hit.event_time else None,
    }
    hidden = [k for k in metadata if k not in LLM_VISIBLE_METADATA]
    node = TextNode(
        id_=hit.id,
        text=hit.memory,
        metadata=metadata,
        excluded_llm_metadata_keys=hidden,
        excluded_embed_metadata_keys=list(metadata),
    )
    return NodeWithScore(node=node, score=hit.score)


class MemosRetriever(BaseRetriever):
    """Retrieve a user's memories from MemOS for a LlamaIndex query or chat engine.

    Args:
        memos: the MemOS facade.
        user_id: whose memories to search.
        conversation_id / agent_id: narrow the search to one conversation or agent.
        filter: a MemOS filter (``docs/filters.md``), e.g. ``{"tags": {"contains": "work"}}``.
        top_k: how many memories to return.
        knowledgebase_ids: knowledge bases searched too (merged by score; ``origin`` says
            which hits came from them).
        mode: ``"hybrid"`` (the default), ``"lexical"``: BM25 alone, no query embedding
            (faster, slightly lower recall), or ``"keyword"``: the plain BM25 ranking (the
            fastest, e.g. as candidates for your own reranker).
        callback_manager / verbose: as for any LlamaIndex retriever.

    Example:
        >>> retriever = MemosRetriever(mem, user_id="u1", top_k=5)
        >>> engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
        >>> chat = ContextChatEngine.from_defaults(retriever=retriever, llm=llm)
    """

    def __init__(
        self,
        memos: MemOS,
        *,
        user_id: str,
        conversation_id: str | None = None,
        agent_id: str | None = None,
        filter: Mapping[str, Any] | None = None,
        top_k: int = 10,
        knowledgebase_ids: Sequence[str] | None = None,
        mode: SearchMode = "hybrid",
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self.memos = memos
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.agent_id = agent_id
        self.filter = dict(filter) if filter is not None else None
        self.top_k = top_k
        self.knowledgebase_ids = list(knowledgebase_ids) if knowledgebase_ids is not None else None
        self.mode: SearchMode = check_mode(mode)  # refused here, like the LangChain retriever's field

    def search(self, query: str) -> list[NodeWithScore]:
        """Search MemOS with this retriever's scope (the one I/O call both drivers share)."""
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
        return [hit_to_node(h) for h in hits]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.search(query_bundle.query_str)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # MemOS is synchronous (SQLite); run it off the event loop.
        return await asyncio.to_thread(self.search, query_bundle.query_str)
