"""``MemosVectorStore``: LlamaIndex nodes kept as MemOS memories.

Each node becomes one memory (``add_memory``): its text is the memory, its metadata is the
memory's ``info`` (together with LlamaIndex's usual ``_node_content``/``ref_doc_id`` keys, so
a node comes back exactly as it went in), and a tag ``llamaindex:<collection>`` keeps the
store's nodes apart from the user's other memories.

MemOS embeds with its own embedder and searches by text (hybrid: vectors + BM25), so the
store ignores LlamaIndex embeddings: ``is_embedding_query`` is False (a retriever does not
embed the query) and a query needs ``query_str``. An index still embeds nodes with its
``embed_model`` on insert; ``MockEmbedding`` avoids that cost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from memos_core import (
    InvalidInputError,
    MemOS,
    NotSupportedError,
    PayloadTooLargeError,
    SearchMode,
    SourceRef,
)

from .filters import to_memos_filter

__all__ = ["MemosVectorStore"]

#: The info key holding the node id (LlamaIndex keeps it only inside ``_node_content``).
NODE_ID_KEY = "_node_id"
_TEXT_MODES = (
    VectorStoreQueryMode.DEFAULT,
    VectorStoreQueryMode.HYBRID,
    VectorStoreQueryMode.TEXT_SEARCH,
    VectorStoreQueryMode.SEMANTIC_HYBRID,
)
_CHUNK = 500  # ids per "in" list (the DSL allows 1,000 values per filter)


def _and(*parts: dict[str, Any] | None) -> dict[str, Any]:
    kept = [p for p in parts if p]
    return kept[0] if len(kept) == 1 else {"and": kept}


class MemosVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store on MemOS (stores text; searches with MemOS hybrid search).

    Args:
        memos: the MemOS facade.
        user_id: whose cube holds the nodes.
        collection: separates several indexes of one user (tag ``llamaindex:<collection>``).
        memory_type: the ``memory_type`` of the stored memories.
        hard_delete: erase rows on delete instead of MemOS's soft delete.

    Metadata filters are compiled with :func:`~memos_llamaindex.to_memos_filter`. Query modes:
    default/hybrid/semantic hybrid run MemOS hybrid search, text search its BM25 leg alone
    (``mode="lexical"``); the others raise ``NotSupportedError``.

    Example:
        >>> store = MemosVectorStore(memos=mem, user_id="u1")
        >>> index = VectorStoreIndex.from_vector_store(store, embed_model=MockEmbedding(embed_dim=8))
        >>> index.as_query_engine(llm=llm).query("where did the user move?")
    """

    stores_text: bool = True
    is_embedding_query: bool = False
    flat_metadata: bool = False

    memos: MemOS = Field(exclude=True, description="The MemOS facade.")
    user_id: str
    collection: str = "default"
    memory_type: str = "knowledge"
    hard_delete: bool = False

    @classmethod
    def class_name(cls) -> str:
        return "MemosVectorStore"

    @property
    def client(self) -> MemOS:
        return self.memos

    @property
    def tag(self) -> str:
        """The tag every memory of this store's collection carries."""
        return f"llamaindex:{self.collection}"

    # ------------------------------------------------------------------ I/O-free core

    def _scope(self) -> dict[str, Any]:
        return {"tags": {"contains": self.tag}, "memory_type": self.memory_type}

    def _where(
        self,
        node_ids: Sequence[str] | None = None,
        filters: MetadataFilters | None = None,
        doc_ids: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        return _and(
            self._scope(),
            to_memos_filter(filters),
            {f"info.{NODE_ID_KEY}": {"in": list(node_ids)}} if node_ids else None,
            {"info.ref_doc_id": {"in": list(doc_ids)}} if doc_ids else None,
        )

    def _record(self, node: BaseNode) -> tuple[str, dict[str, Any], list[SourceRef]]:
        text = node.get_content(metadata_mode=MetadataMode.NONE)
        if not text.strip():
            raise InvalidInputError(f"node {node.node_id!r} has no text; MemOS stores text memories")
        info = {
            k: v
            for k, v in node_to_metadata_dict(node, remove_text=True, flat_metadata=False).items()
            if v is not None and v != []  # so IS_EMPTY reads them as missing
        }
        info[NODE_ID_KEY] = node.node_id
        limits = self.memos.limits
        if len(text) > limits.max_message_chars:
            raise PayloadTooLargeError(
                f"node {node.node_id!r} has {len(text)} characters; the limit is {limits.max_message_chars}"
            )
        size = len(json.dumps(info, ensure_ascii=False, default=str).encode("utf-8"))
        if size > limits.max_info_bytes:
            raise PayloadTooLargeError(
                f"node {node.node_id!r} metadata: {size} bytes of JSON, over {limits.max_info_bytes}"
            )
        sources = []
        if node.ref_doc_id:
            sources.append(
                SourceRef(
                    type="doc",
                    doc_id=node.ref_doc_id,
                    char_start=getattr(node, "start_char_idx", None),
                    char_end=getattr(node, "end_char_idx", None),
                )
            )
        return text, info, sources

    def _check_query(self, query: VectorStoreQuery) -> str:
        if query.mode not in _TEXT_MODES:
            raise NotSupportedError(
                f"MemosVectorStore runs MemOS hybrid search; query mode {query.mode.value!r} is not "
                f"supported (use one of {', '.join(m.value for m in _TEXT_MODES)})"
            )
        if not query.query_str or not query.query_str.strip():
            raise NotSupportedError(
                "MemosVectorStore searches by text: the query needs query_str (MemOS embeds it with "
                "its own embedder; query_embedding is ignored)"
            )
        return query.query_str

    # ------------------------------------------------------------------ sync I/O

    def _delete_where(self, where: dict[str, Any]) -> None:
        self.memos.delete_memory(user_id=self.user_id, filter=where, hard=self.hard_delete)

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store the nodes (replacing stored nodes with the same ids); returns their ids."""
        records = [self._record(n) for n in nodes]  # validate everything before writing
        ids = [n.node_id for n in nodes]
        # The stored versions of these nodes are removed only after the new ones are written:
        # a node the store refuses (too large, say) leaves its old version in place.
        stale: list[str] = []
        for start in range(0, len(ids), _CHUNK):
            where = self._where(node_ids=ids[start : start + _CHUNK])
            offset: int | None = 0
            while offset is not None:
                page = self.memos.list_memories(self.user_id, filter=where, limit=1000, offset=offset).data
                stale += [i.id for i in page.items]
                offset = page.next_offset
        for text, info, sources in records:
            self.memos.add_memory(
                text,
                user_id=self.user_id,
                memory_type=self.memory_type,
                tags=[self.tag],
                info=info,
                sources=sources,
            )
        for start in range(0, len(stale), _CHUNK):
            self.memos.delete_memory(stale[start : start + _CHUNK], hard=self.hard_delete)
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        self._delete_where(self._where(doc_ids=[ref_doc_id]))

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes with these ids and/or matching these filters."""
        if not node_ids and not (filters and filters.filters):
            raise InvalidInputError("give node_ids or filters (use clear() to delete everything)")
        ids = node_ids or []
        for start in range(0, max(len(ids), 1), _CHUNK):
            self._delete_where(self._where(node_ids=ids[start : start + _CHUNK], filters=filters))

    def clear(self) -> None:
        """Delete every node of this collection."""
        self._delete_where(self._scope())

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The stored nodes with these ids and/or matching these filters (newest first)."""
        where = self._where(node_ids=node_ids, filters=filters)
        out: list[BaseNode] = []
        offset: int | None = 0
        while offset is not None:
            page = self.memos.list_memories(self.user_id, filter=where, limit=1000, offset=offset).data
            out += [metadata_dict_to_node(i.info, text=i.memory) for i in page.items]
            offset = page.next_offset
        return out

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """MemOS search for ``query.query_str`` within this collection and the filters: hybrid,
        or BM25 alone (``mode="lexical"``) for ``VectorStoreQueryMode.TEXT_SEARCH``."""
        text = self._check_query(query)
        where = self._where(node_ids=query.node_ids, filters=query.filters, doc_ids=query.doc_ids)
        mode: SearchMode = "lexical" if query.mode == VectorStoreQueryMode.TEXT_SEARCH else "hybrid"
        hits = self.memos.search_memory(
            text, user_id=self.user_id, filter=where, top_k=query.similarity_top_k, mode=mode
        ).data.memory_detail_list
        nodes = [metadata_dict_to_node(h.info, text=h.memory) for h in hits]
        return VectorStoreQueryResult(
            nodes=nodes, similarities=[h.score for h in hits], ids=[n.node_id for n in nodes]
        )

    # ------------------------------------------------------------------ async drivers

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)
