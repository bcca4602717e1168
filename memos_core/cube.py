"""MemCube: one cube's memory as a portable unit (layer 4).

A cube is the unit of isolation and portability (DESIGN §4): a user's memory, an agent's, or
a knowledge base. :meth:`MemCube.dump` writes a folder any store can load back:

    manifest.json     format, format version, cube id, embedding model and dimension,
                      counts, and the sha256 of every other file
    items.jsonl       one item per line (with its history, sources and status), plus the
                      row of its vector in embeddings.npy (or null)
    embeddings.npy    float32 [n, dim]
    records.jsonl     the cube's registry entry, grants, documents and working sets

Activation memory (KV caches) and parametric memory (LoRA adapters) join the folder as
``activation/`` and ``parametric/`` when the kv_accel package builds them; this module moves
the textual form.

:meth:`MemCube.reindex` re-embeds a cube with another embedding model in one atomic write, so
a search never sees two vector spaces mixed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt
from tqdm import tqdm

from .errors import ConflictError, InvalidInputError, PermissionDeniedError
from .filters import parse_filter
from .ports import Embedder, ListItems, MemoryStore, PutItems, PutRecords
from .reader import item_vectors
from .schema import MemoryItem, MemoryStatus, SourceRef, utcnow

__all__ = ["CUBE_FORMAT", "CUBE_FORMAT_VERSION", "FORMS", "SEP", "MemCube", "forms_key", "forms_summary"]

CUBE_FORMAT = "memos-cube"
CUBE_FORMAT_VERSION = 2  # 2: items may carry a context
#: Versions this build reads (a version-1 dump is a version-2 dump without contexts).
READABLE_VERSIONS = (1, 2)
#: Separator between the parts of a record key (ids cannot contain control characters).
SEP = "\x1f"
CUBES, GRANTS, GRANTS_BY_USER, DOCS, WORKING = "cube", "grant", "grant_by_user", "doc", "working"
#: Records of a cube's activation caches and adapters (written by kv_accel; key
#: ``cube_id SEP form SEP name``; value has ``form`` and ``memories``: ``[[id, version], ...]``).
FORMS = "forms"
#: Idempotency keys of adds (key ``user cube SEP key``; value: request digest and the answer).
IDEMPOTENCY = "idempotency"
_PAGE = 1000


def forms_key(cube_id: str, form: str, name: str) -> str:
    """The :data:`FORMS` record key of one artefact (``form``: activation or parametric)."""
    return f"{cube_id}{SEP}{form}{SEP}{name}"


def forms_summary(store: MemoryStore) -> dict[str, dict[str, Any]]:
    """Per cube: how many active memories it holds as plaintext, and each activation cache and
    LoRA adapter built from them (records in :data:`FORMS`, written by kv_accel) with how many
    source memories it holds and whether it is still valid. An artefact is stale once any of
    its source memories was updated, deleted or archived after it was built, or its file
    (``path``, when recorded) is gone; kv_accel then
    rebuilds it lazily and never uses it stale. ``activation`` / ``parametric`` count the
    memories held by valid artefacts of that form. Cubes without artefacts are left out."""
    out: dict[str, dict[str, Any]] = {}
    for key, record in store.list_records(FORMS):
        cube_id, _, name = key.partition(SEP)
        memories = [(str(i), int(v)) for i, v in record.get("memories", [])]
        current = store.get([i for i, _ in memories]) if memories else []
        stale = sum(
            1
            for (_, version), item in zip(memories, current, strict=True)
            if item is None or item.status != MemoryStatus.ACTIVATED.value or item.version != version
        )
        missing = "path" in record and not Path(str(record["path"])).exists()
        cube = out.setdefault(cube_id, {"artefacts": {}})
        cube["artefacts"][name.replace(SEP, "/")] = {
            **{k: v for k, v in record.items() if k != "memories"},
            "memories": len(memories),
            "valid": stale == 0 and not missing,
            "stale_memories": stale,
            "missing": missing,
        }
    active = parse_filter({"status": MemoryStatus.ACTIVATED.value})
    for cube_id, cube in out.items():
        cube["plaintext"] = store.list_items([cube_id], active, limit=1)[1]
        for form in ("activation", "parametric"):
            cube[form] = sum(
                a["memories"] for a in cube["artefacts"].values() if a.get("form") == form and a["valid"]
            )
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MemCube:
    """The memory of one cube in ``store``.

    Example:
        >>> cube = MemCube(mem.store, "user:alice")
        >>> cube.dump("backup/alice")
        >>> MemCube.load("backup/alice", other_store)
    """

    def __init__(self, store: MemoryStore, cube_id: str, *, read_only: bool = False) -> None:
        if not isinstance(cube_id, str) or not cube_id.strip():
            raise InvalidInputError("cube_id must be a non-empty string")
        self.store = store
        self.cube_id = cube_id
        #: Handed out to a user with a read grant only: :meth:`reindex` is refused.
        self.read_only = read_only

    def __repr__(self) -> str:
        return f"MemCube({self.cube_id!r})"

    def items(self) -> Iterator[MemoryItem]:
        """Every item of the cube, whatever its status, newest first."""
        offset = 0
        while True:
            page, total = self.store.batch([ListItems([self.cube_id], None, _PAGE, offset)])[0]
            yield from page
            offset += len(page)
            if not page or offset >= total:
                return

    def count(self) -> int:
        total: int = self.store.batch([ListItems([self.cube_id], None, 1, 0)])[0][1]
        return total

    def records(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(namespace, key, value)`` of the cube's records."""
        out: list[tuple[str, str, dict[str, Any]]] = []
        own = self.store.get_record(CUBES, self.cube_id)
        if own is not None:
            out.append((CUBES, self.cube_id, own))
        for ns in (GRANTS, DOCS, WORKING):
            out += [(ns, k, v) for k, v in self.store.list_records(ns, f"{self.cube_id}{SEP}")]
        return out

    # ------------------------------------------------------------------ dump

    def dump(self, directory: str | Path, *, progress: bool = False) -> dict[str, Any]:
        """Write the cube into ``directory`` (created; it must not hold anything yet).
        Returns the manifest."""
        folder = Path(directory)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise InvalidInputError(f"{folder} is not an empty folder; dump into a new one")
        folder.mkdir(parents=True, exist_ok=True)
        total = self.count()
        vectors: list[np.ndarray] = []
        models: set[str] = set()
        bar = tqdm(total=total, desc=f"dumping {self.cube_id}", unit="item", disable=not progress)
        # The listing pages while others may write: the dump holds each item once, as of the
        # page that listed it; items added meanwhile may or may not be in it.
        with (folder / "items.jsonl").open("w", encoding="utf-8") as out:
            batch: list[MemoryItem] = []

            def flush() -> None:
                found = self.store.get_embeddings([i.id for i in batch])
                for item in batch:
                    vec = found.get(item.id)
                    row = None
                    if vec is not None:
                        row = len(vectors)
                        vectors.append(np.asarray(vec, dtype=np.float32))
                        if item.embedding_model:
                            models.add(item.embedding_model)
                    line = {"item": item.to_dict(), "embedding_row": row}
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
                bar.update(len(batch))
                batch.clear()

            seen: set[str] = set()
            for item in self.items():
                if item.id in seen:  # a write between pages shifted the listing
                    continue
                seen.add(item.id)
                batch.append(item)
                if len(batch) >= _PAGE:
                    flush()
            flush()
            total = len(seen)
        bar.close()
        dim = int(vectors[0].shape[0]) if vectors else 0
        np.save(folder / "embeddings.npy", np.stack(vectors) if vectors else np.zeros((0, 0), np.float32))
        with (folder / "records.jsonl").open("w", encoding="utf-8") as out:
            for ns, key, value in self.records():
                out.write(
                    json.dumps({"namespace": ns, "key": key, "value": value}, ensure_ascii=False) + "\n"
                )
        manifest: dict[str, Any] = {
            "format": CUBE_FORMAT,
            "format_version": CUBE_FORMAT_VERSION,
            "cube_id": self.cube_id,
            "exported_at": utcnow().isoformat(),
            "embedding_model": sorted(models)[0] if len(models) == 1 else sorted(models) or None,
            "dim": dim,
            "items": total,
            "embedded": len(vectors),
            "forms": {"text": ["items.jsonl", "embeddings.npy", "records.jsonl"]},
            "files": {
                name: _sha256(folder / name) for name in ("items.jsonl", "embeddings.npy", "records.jsonl")
            },
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        return manifest

    # ------------------------------------------------------------------ load

    @staticmethod
    def read_manifest(directory: str | Path) -> dict[str, Any]:
        """The manifest of a dumped cube, checked (format, version, file checksums)."""
        folder = Path(directory)
        path = folder / "manifest.json"
        if not path.is_file():
            raise InvalidInputError(f"{folder} is not a dumped cube (no manifest.json)")
        try:
            manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{path} is not valid JSON: {exc}") from exc
        if manifest.get("format") != CUBE_FORMAT:
            raise InvalidInputError(f"{folder} holds {manifest.get('format')!r}, not a {CUBE_FORMAT!r} dump")
        version = manifest.get("format_version")
        if version not in READABLE_VERSIONS:
            raise InvalidInputError(
                f"{folder} was written in cube format version {version}; "
                f"this build reads versions {', '.join(map(str, READABLE_VERSIONS))}"
            )
        files = manifest.get("files")
        if not isinstance(files, dict) or set(files) != {"items.jsonl", "embeddings.npy", "records.jsonl"}:
            raise InvalidInputError(f"{path} does not list the checksums of the cube's three files")
        for name, digest in files.items():
            file = folder / name
            if not file.is_file() or _sha256(file) != digest:
                raise InvalidInputError(f"{file} is missing or does not match the manifest's checksum")
        return manifest

    @classmethod
    def load(
        cls,
        directory: str | Path,
        store: MemoryStore,
        *,
        cube_id: str | None = None,
        new_ids: bool = False,
        with_grants: bool | None = None,
        progress: bool = False,
    ) -> MemCube:
        """Restore a dumped cube into ``store`` (as ``cube_id`` if given). The target cube
        must be empty. Ids are kept, so references made before the dump still resolve; if
        they clash with ids already in ``store`` (a copy next to the original), pass
        ``new_ids=True`` to give every item a fresh id (references inside the cube follow).
        Grants are restored when the cube keeps its id (a restore) and dropped when it gets
        another one (a copy), unless ``with_grants`` says otherwise. The write is atomic."""
        folder = Path(directory)
        manifest = cls.read_manifest(folder)
        target = cube_id or str(manifest["cube_id"])
        cube = cls(store, target)
        if cube.count():
            raise InvalidInputError(f"cube {target!r} already holds memories in the target store")
        with (folder / "items.jsonl").open(encoding="utf-8") as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
        lines.reverse()  # dumped newest first; inserted oldest first, as they were made
        vectors = np.load(folder / "embeddings.npy", allow_pickle=False)
        items = [MemoryItem.from_dict({**ln["item"], "cube_id": target, "revision": 0}) for ln in lines]
        rows = [ln["embedding_row"] for ln in lines]
        if not new_ids:
            taken = [i.id for i, found in zip(items, store.get([i.id for i in items]), strict=True) if found]
            if taken:
                raise InvalidInputError(
                    f"{len(taken)} item ids of {folder} exist in the target store already (e.g. {taken[0]}); "
                    "load with new_ids=True to copy the cube next to the original"
                )
        else:
            items = _renumber(items)
        records: dict[str, dict[str, dict[str, Any] | None]] = {}
        old = str(manifest["cube_id"])
        renamed = target != old
        grants = with_grants if with_grants is not None else not renamed
        with (folder / "records.jsonl").open(encoding="utf-8") as fh:
            saved = [json.loads(line) for line in fh if line.strip()]
        for rec in saved:
            ns = rec["namespace"]
            if (ns == GRANTS and not grants) or (ns == WORKING and renamed):
                continue  # a copy under another id is not shared with the original's grantees
            key = target if rec["key"] == old else target + rec["key"][len(old) :]
            value = dict(rec["value"])
            if "cube_id" in value:
                value["cube_id"] = target
            if renamed and "kb_id" in value and target.startswith("kb:"):
                value["kb_id"] = target[3:]
            records.setdefault(ns, {})[key] = value
            if ns == GRANTS:
                records.setdefault(GRANTS_BY_USER, {})[f"{value['user_id']}{SEP}{target}"] = value
        # One atomic write: a failed load leaves the target cube empty, never half-filled.
        ops: list[Any] = [PutRecords(ns, recs) for ns, recs in records.items()]
        bar = tqdm(total=len(items), desc=f"loading {target}", unit="item", disable=not progress)
        for start in range(0, len(items), _PAGE):
            part = items[start : start + _PAGE]
            embs = [None if r is None else vectors[r] for r in rows[start : start + _PAGE]]
            ops.append(PutItems(part, embs, [0] * len(part)))
        store.batch(ops)
        bar.update(len(items))
        bar.close()
        return cube

    # ------------------------------------------------------------------ reindex

    def reindex(self, embedder: Embedder, *, progress: bool = False, batch_size: int = 64) -> int:
        """Re-embed every item of the cube with ``embedder`` and switch the cube to its
        model in one atomic write. Returns the number of items re-embedded."""
        if self.read_only:
            raise PermissionDeniedError(f"cube {self.cube_id!r} was opened read-only; reindex writes")
        for attempt in Retrying(
            retry=retry_if_exception_type(ConflictError), stop=stop_after_attempt(3), reraise=True
        ):
            with attempt:
                items = [i for i in self.items() if i.status != "deleted"]
                bar = tqdm(
                    total=len(items), desc=f"re-embedding {self.cube_id}", unit="item", disable=not progress
                )
                vectors: list[np.ndarray | None] = []
                for start in range(0, len(items), batch_size):
                    part = items[start : start + batch_size]
                    vectors += list(item_vectors(embedder, part))
                    bar.update(len(part))
                bar.close()
                moved = [i.evolve(embedding_model=embedder.model_id) for i in items]
                if moved:
                    self.store.batch(
                        [PutItems(moved, vectors, [i.revision for i in items], replace_space=True)]
                    )
        return len(items)


def _renumber(items: list[MemoryItem]) -> list[MemoryItem]:
    """Fresh ids for a copy of a cube, with references between its items remapped."""
    mapping = {i.id: str(uuid.uuid4()) for i in items}

    def source(s: SourceRef) -> SourceRef:
        if s.memory_id in mapping:
            return s.model_copy(update={"memory_id": mapping[s.memory_id]})
        return s

    return [
        i.evolve(
            id=mapping[i.id],
            merged_into=mapping.get(i.merged_into or "", i.merged_into),
            sources=[source(s) for s in i.sources],
        )
        for i in items
    ]
