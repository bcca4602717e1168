"""Tenant isolation and no-loss guarantees found wanting in review, each pinned by a test."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from memos_core import EmbeddingError, InvalidInputError, MemOS, PermissionDeniedError
from memos_core.cube import MemCube
from memos_core.testing import HashEmbedder

ALL = {"status": {"in": ["activated", "archived"]}}


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[MemOS]:
    """alice's cube shared read-only with bob."""
    m = MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline")
    m.add_message([{"role": "user", "content": "I live in Paris"}], user_id="alice", async_mode=False)
    m.share_cube("user:alice", "bob", "read", user_id="alice")
    yield m
    m.close()


def test_a_read_grant_cannot_write_by_id(shared: MemOS) -> None:
    """With a user given, by-id calls check the grant: bob may read alice's memory by id but
    not update, roll back, delete or re-embed it; alice may."""
    hit = shared.search_memory("Paris", user_id="bob", cube_ids=["user:alice"]).data.memory_detail_list[0]
    assert shared.get_memory(hit.id, user_id="bob").data.memory == hit.memory
    with pytest.raises(PermissionDeniedError):
        shared.get_memory(hit.id, user_id="mallory")
    with pytest.raises(PermissionDeniedError):
        shared.update_memory(hit.id, memory="hacked", user_id="bob")
    with pytest.raises(PermissionDeniedError):
        shared.rollback_memory(hit.id, 1, user_id="bob")
    with pytest.raises(PermissionDeniedError):
        shared.delete_memory([hit.id], user_id="bob")
    with pytest.raises(PermissionDeniedError):
        shared.cube("user:alice", user_id="bob").reindex(HashEmbedder(8))
    assert shared.get_memory(hit.id).data.memory == hit.memory  # nothing changed
    assert shared.update_memory(hit.id, memory="Alice lives in Paris.", user_id="alice").data.version == 2
    shared.share_cube("user:alice", "bob", "write", user_id="alice")
    assert shared.update_memory(hit.id, memory="Alice lives in Lyon.", user_id="bob").data.version == 3


def test_a_grantees_searches_do_not_count_as_the_owners_reads(shared: MemOS) -> None:
    """Access counts feed the owner's ranking; another user's searches must not move them."""
    before = {i.id: i.access_count for i in shared.list_memories("alice", filter=ALL).data.items}
    for _ in range(3):
        shared.search_memory("Paris", user_id="bob", cube_ids=["user:alice"])
    after = {i.id: i.access_count for i in shared.list_memories("alice", filter=ALL).data.items}
    assert after == before


def test_a_copied_cube_does_not_inherit_grants(shared: MemOS, tmp_path: Path) -> None:
    """Loading a dump under another cube id is a copy: the original's grantees get nothing;
    a knowledge base copy carries its new id in its records."""
    shared.cube("user:alice", user_id="alice").dump(tmp_path / "dump")
    MemCube.load(tmp_path / "dump", shared.store, cube_id="user:carol", new_ids=True)
    with pytest.raises(PermissionDeniedError):
        shared.search_memory("Paris", user_id="bob", cube_ids=["user:carol"])
    assert shared.list_shares("carol").data["granted"] == []

    shared.create_knowledgebase("alice", kb_id="hb")
    shared.add_document("hb", b"Handbook: thirty vacation days.", filename="hb.txt", user_id="alice")
    shared.cube("kb:hb", user_id="alice").dump(tmp_path / "kb")
    MemCube.load(tmp_path / "kb", shared.store, cube_id="kb:hb2", new_ids=True)
    assert sorted(k["kb_id"] for k in shared.list_knowledgebases("alice").data) == ["hb", "hb2"]
    assert shared.list_documents("hb2", user_id="alice").data[0]["kb_id"] == "hb2"


def test_a_manifest_without_checksums_is_refused(shared: MemOS, tmp_path: Path) -> None:
    shared.cube("user:alice", user_id="alice").dump(tmp_path / "dump")
    manifest = json.loads((tmp_path / "dump" / "manifest.json").read_text())
    del manifest["files"]
    (tmp_path / "dump" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInputError, match="checksums"):
        MemCube.load(tmp_path / "dump", shared.store, cube_id="user:zed", new_ids=True)


def test_a_correction_that_retracts_and_restates_keeps_the_new_fact(fast_mem: MemOS) -> None:
    """'No, I no longer work at Google. I work at Apple now': Google is archived and the Apple
    fact exists (it used to be reported as superseded and then silently not written)."""
    fast_mem.add_message([{"role": "user", "content": "I work at Google."}], user_id="u", async_mode=False)
    out = fast_mem.add_feedback("u", None, "No, I no longer work at Google. I work at Apple now").data
    facts = fast_mem.list_memories("u", filter={"key": "employer"}).data.items
    assert [f.memory for f in facts] == ["The user works at Apple."]
    assert out["archived"] and (out["added"] or out["superseded"])


class FailingAfter:
    """The hash embedder, failing from its ``n``-th call on (a model crash mid-import)."""

    def __init__(self, n: int) -> None:
        self.inner, self.left = HashEmbedder(), n

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.left -= 1
        if self.left < 0:
            raise EmbeddingError("model crashed")
        return self.inner.embed(texts)


def test_a_failed_reimport_leaves_the_previous_import_whole(tmp_path: Path) -> None:
    """Re-importing a document whose embedding fails half way changes nothing: the earlier
    chunks are all still there and searchable."""
    text = "\n\n".join(f"Paragraph {i} about the travel policy and expenses." for i in range(400)).encode()
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline") as mem:
        mem.create_knowledgebase("hr", kb_id="kb")
        first = mem.add_document("kb", text, filename="policy.txt", user_id="hr", chunk_size=200).data
        assert first["chunks"] > 64
        mem.embedder = FailingAfter(1)  # the second batch of 64 chunks fails
        with pytest.raises(EmbeddingError):
            mem.add_document("kb", text, filename="policy.txt", user_id="hr", chunk_size=200)
        mem.embedder = HashEmbedder()
        for chunk_id in first["memory_ids"]:
            assert mem.get_memory(chunk_id).data.status == "activated"
        assert mem.list_documents("kb", user_id="hr").data[0]["status"] == "ready"


def test_speaker_names_are_text_not_regex_templates(fast_mem: MemOS) -> None:
    """A name with a backslash used to kill the fine stage ('bad escape \\d')."""
    r = fast_mem.add_message(
        [{"role": "user", "name": "Bob\\d", "content": "I love my job."}], user_id="u", async_mode=False
    )
    assert r.data.status == "completed"
    assert "Bob\\d likes Bob\\d's job." in [i.memory for i in fast_mem.list_memories("u").data.items]
    fast_mem.add_feedback("u", None, "I love my job", name="C:\\Users")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_image_path_is_recorded_not_waited_on(fast_mem: MemOS, tmp_path: Path) -> None:
    """A local 'image' that is a FIFO would block forever on read; it is refused and recorded."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    msg = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(fifo)}}]}
    r = fast_mem.add_message([msg], user_id="u", async_mode=False)
    assert r.data.status == "completed"
    item = fast_mem.get_memory(r.data.memory_ids[-1]).data
    assert item.sources[0].error and "regular file" in item.sources[0].error
