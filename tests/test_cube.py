"""MemCube: dump a cube to a portable folder, load it anywhere, re-embed it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memos_core import InvalidInputError, MemOS, PermissionDeniedError, SentenceTransformerEmbedder
from memos_core.cube import MemCube
from memos_core.testing import HashEmbedder

QUERIES = ["where does Alice live", "what does Alice like to eat", "Alice's job", "vacation days"]


def _fill(mem: MemOS) -> None:
    turns = [
        ("I live in Paris.", "2024-01-10T10:00:00Z"),
        ("I love ramen and I hate cilantro.", "2024-02-01T09:00:00Z"),
        ("I moved to Berlin last week!", "2024-06-10T10:00:00Z"),
        ("I work at Acme Corp as a designer.", "2024-06-11T10:00:00Z"),
    ]
    for text, when in turns:
        mem.add_message(
            [{"role": "user", "name": "Alice", "content": text, "chat_time": when}],
            user_id="alice",
            conversation_id="c1",
            tags=["chat"],
            async_mode=False,
        )
    first = mem.list_memories("alice", filter={"mode": "fine"}, limit=1).data.items[0]
    mem.update_memory(first.id, memory=first.memory + " (checked)", tags=["checked"])
    mem.delete_memory([mem.list_memories("alice", limit=50).data.items[-1].id])


def _results(mem: MemOS) -> list[list[tuple[str, str]]]:
    return [
        [(h.id, h.memory) for h in mem.search_memory(q, user_id="alice", top_k=5).data.memory_detail_list]
        for q in QUERIES
    ]


def test_round_trip_gives_the_same_searches(
    tmp_path: Path, real_embedder: SentenceTransformerEmbedder
) -> None:
    """Dump a cube (facts with history, a deleted item, grants, working set), load it into a
    fresh folder: same items with history and status, same vectors, same search results."""
    with MemOS(tmp_path / "a", embedder=real_embedder, scheduler="inline") as src:
        _fill(src)
        with pytest.raises(PermissionDeniedError):
            src.cube("user:alice", user_id="bob")
        src.share_cube("user:alice", "bob", "read")
        items_before = {i.id: i for i in MemCube(src.store, "user:alice").items()}
        manifest = src.cube("user:alice", user_id="bob").dump(tmp_path / "dump")
        before = _results(src)  # after the dump: searches count reads, on both sides alike
    assert manifest["items"] == len(items_before) and manifest["embedding_model"] == real_embedder.model_id
    assert manifest["format_version"] == 2 and set(manifest["files"]) == {
        "items.jsonl",
        "embeddings.npy",
        "records.jsonl",
    }
    with MemOS(tmp_path / "b", embedder=real_embedder, scheduler="inline") as dst:
        cube = MemCube.load(tmp_path / "dump", dst.store)
        after = {i.id: i for i in cube.items()}
        assert set(after) == set(items_before)
        for item_id, item in items_before.items():
            loaded = after[item_id]
            assert (loaded.memory, loaded.status, loaded.version, loaded.history, loaded.sources) == (
                item.memory,
                item.status,
                item.version,
                item.history,
                item.sources,
            )
        for got, want in zip(_results(dst), before, strict=True):
            assert got == want
        # Grants travel with the cube.
        assert dst.search_memory("Berlin", user_id="bob", cube_ids=["user:alice"]).data.memory_detail_list


def test_dump_and_load_refuse_what_they_cannot_do_safely(tmp_path: Path) -> None:
    """A non-empty dump folder, a dump of another format version, a tampered file, a
    non-empty target cube and clashing ids are clear errors, never a partial load."""
    emb = HashEmbedder()
    with MemOS(tmp_path / "a", embedder=emb, scheduler="inline") as src:
        src.add_message([{"role": "user", "content": "I live in Oslo"}], user_id="u", async_mode=False)
        cube = MemCube(src.store, "user:u")
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "x.txt").write_text("x")
        with pytest.raises(InvalidInputError, match="not an empty folder"):
            cube.dump(tmp_path / "busy")
        cube.dump(tmp_path / "dump")
        with pytest.raises(InvalidInputError, match="exist in the target store"):
            MemCube.load(tmp_path / "dump", src.store, cube_id="user:copy")
        copy = MemCube.load(tmp_path / "dump", src.store, cube_id="user:copy", new_ids=True)
        assert copy.count() == cube.count()
        assert {i.id for i in copy.items()}.isdisjoint({i.id for i in cube.items()})
        with pytest.raises(InvalidInputError, match="already holds memories"):
            MemCube.load(tmp_path / "dump", src.store, new_ids=True)
        hit = src.search_memory("Oslo", user_id="copy").data.memory_detail_list[0]
        assert hit.cube_id == "user:copy"
    manifest = json.loads((tmp_path / "dump" / "manifest.json").read_text())
    with MemOS(tmp_path / "b", embedder=emb, scheduler="inline") as dst:
        (tmp_path / "dump" / "manifest.json").write_text(json.dumps({**manifest, "format_version": 3}))
        with pytest.raises(InvalidInputError, match="format version 3"):
            MemCube.load(tmp_path / "dump", dst.store)
        (tmp_path / "dump" / "manifest.json").write_text(json.dumps(manifest))
        with (tmp_path / "dump" / "items.jsonl").open("a") as fh:
            fh.write("\n")
        with pytest.raises(InvalidInputError, match="checksum"):
            MemCube.load(tmp_path / "dump", dst.store)
        with pytest.raises(InvalidInputError, match="no manifest"):
            MemCube.load(tmp_path, dst.store)
        assert MemCube(dst.store, "user:u").count() == 0


def test_reindex_switches_the_model_atomically(tmp_path: Path) -> None:
    """reindex re-embeds every item with the new model: search works with the new embedder,
    and the old one gets a clear error instead of mixing vector spaces."""
    with MemOS(tmp_path / "d", embedder=HashEmbedder(64), scheduler="inline") as mem:
        _fill(mem)
        count = MemCube(mem.store, "user:alice").reindex(HashEmbedder(32))
        assert count == len([i for i in MemCube(mem.store, "user:alice").items() if i.status != "deleted"])
        assert {
            i.embedding_model for i in MemCube(mem.store, "user:alice").items() if i.status != "deleted"
        } == {"hash/32"}
        with pytest.raises(InvalidInputError, match="hash/32"):
            mem.search_memory("Berlin", user_id="alice")
    with MemOS(tmp_path / "d", embedder=HashEmbedder(32), scheduler="inline") as mem:
        hits = mem.search_memory("lives in Berlin", user_id="alice").data.memory_detail_list
        assert "Berlin" in hits[0].memory


def _memos(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memos_core.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=240
    )


def test_cli_export_import_reindex(tmp_path: Path) -> None:
    """memos export / import / reindex on the command line, with the errors they promise."""
    emb = ["--embedder", "hash:64"]
    r = _memos(
        "--path", "a", *emb, "add", "--user", "u1", "--wait", "I", "live", "in", "Lisbon", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    r = _memos("--path", "a", "export", "--user", "u1", "--quiet", "dump", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["items"] == 2
    r = _memos("--path", "a", "export", "--user", "u1", "dump", cwd=tmp_path)
    assert r.returncode == 2 and "not an empty folder" in r.stderr
    r = _memos("--path", "b", "import", "--quiet", "dump", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"cube_id": "user:u1", "items": 2, "embedding_model": "hash/64"}
    r = _memos("--path", "b", "reindex", "--user", "u1", "--embedder", "hash:16", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["reindexed"] == 2
    r = _memos(
        "--path", "b", "--embedder", "hash:16", "search", "--user", "u1", "--json", "Lisbon", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "Lisbon" in json.loads(r.stdout)[0]["memory"]
    r = _memos("--path", "b", "reindex", "--user", "u1", "--embedder", "nope", cwd=tmp_path)
    assert r.returncode == 2 and "unknown embedder" in r.stderr


def test_cli_knowledge_base(tmp_path: Path) -> None:
    """memos kb add (creating the knowledge base), kb list, and search --kb with its label."""
    (tmp_path / "policy.md").write_text("# Policy\n\nEmployees get thirty vacation days per year.\n")
    emb = ["--path", "d", "--embedder", "hash:64"]
    r = _memos(*emb, "kb", "add", "--user", "hr", "--kb", "handbook", "--quiet", "policy.md", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "ready"
    r = _memos(*emb, "kb", "list", "--user", "hr", "--kb", "handbook", cwd=tmp_path)
    assert [d["filename"] for d in json.loads(r.stdout)] == ["policy.md"]
    r = _memos(*emb, "search", "--user", "hr", "--kb", "handbook", "--json", "vacation days", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    hit = json.loads(r.stdout)[0]
    assert hit["origin"] == "knowledgebase" and "thirty vacation days" in hit["memory"]
    r = _memos(*emb, "search", "--user", "guest", "--kb", "handbook", "vacation", cwd=tmp_path)
    assert r.returncode == 2 and "may not read" in r.stderr
