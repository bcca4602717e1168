"""Where each memory lives, and moving memories between forms.

Plaintext items are the source of truth. A cube's memories that are read often and have not
changed for a while are rendered (stable order: oldest first) into a prefix whose KV cache is
kept in the cube's ``activation`` folder; memories stable for much longer are also distilled
into a LoRA adapter in its ``parametric`` folder. :class:`MemoryForms` plans this from the
reads and changes the store already tracks per memory (``access_count``, ``version``,
``updated_at``), builds what the plan needs, and records each artefact in the store
(:data:`memos_core.FORMS`), where ``memos stats`` shows it.

An artefact names the ``(id, version)`` of every memory it was built from. An update, delete
or archive of any of them makes it stale: :func:`memos_core.forms_summary` reports it invalid,
:meth:`MemoryForms.activation` never returns it, and it is rebuilt lazily: the cache at its
next use (costing the prefill that use would pay anyway), the adapter by a background
migration task on the MemOS scheduler.

Example:
    >>> forms = MemoryForms(mem, LocalModel.smollm2())       # doctest: +SKIP
    >>> forms.migrate(user_cube_id("alice")).summary()       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import shutil
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from memos_core import (
    FORMS,
    InvalidInputError,
    MemoryItem,
    MemoryStatus,
    MemOS,
    forms_key,
    parse_filter,
)

from .activation import KVCache, StaleCacheError, build_cache, extend_cache, render_memories, render_prompt
from .fingerprint import SourceFingerprint
from .model import LocalModel

__all__ = ["DEFAULT_SYSTEM", "MIGRATE", "FormPlan", "MemoryForms", "MigrationPolicy", "MigrationReport"]

log = logging.getLogger(__name__)

#: The scheduler task kind of a migration run.
MIGRATE = "kv_migrate"
ACTIVATION, PARAMETRIC = "activation", "parametric"
_CACHE_NAME, _ADAPTER_NAME = "prefix", "adapter"

DEFAULT_SYSTEM = "You are a helpful assistant. Use the memories below when they are relevant."


#: MemOS -> the MemoryForms whose handler runs its kv_migrate tasks
_REGISTERED: weakref.WeakKeyDictionary[MemOS, MemoryForms] = weakref.WeakKeyDictionary()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class MigrationPolicy:
    """Thresholds of the migration policy.

    Args:
        hot_reads: reads (search hits) that make a memory a candidate for activation memory.
        stable_for: how long a memory must not have changed to be cached.
        parametric_reads: reads a memory needs before it is distilled into the adapter.
        parametric_after: how long a memory must not have changed to be distilled.
        min_parametric: fewer long-stable memories than this build no adapter.
        max_prefix_tokens: the activation prefix's token budget (most-read memories first).
        parametric_leaves_prefix: drop memories held by a valid adapter from the cached prefix
            (a smaller prefix; answers then rely on the adapter having learned them, which a
            small model does only partly: off by default).
        max_candidates: most-read memories considered per cube and run.
        check_every: how often use of a cube (:meth:`MemoryForms.touch`, called by the
            generator after each answer) queues a migration run for it.
    """

    hot_reads: int = 3
    stable_for: timedelta = timedelta(hours=1)
    parametric_reads: int = 3
    parametric_after: timedelta = timedelta(days=7)
    min_parametric: int = 3
    max_prefix_tokens: int = 2048
    parametric_leaves_prefix: bool = False
    max_candidates: int = 2000
    check_every: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        for name in (
            "hot_reads",
            "parametric_reads",
            "min_parametric",
            "max_prefix_tokens",
            "max_candidates",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if "reads" in name else 1):
                raise InvalidInputError(f"MigrationPolicy.{name} must be a positive integer, not {value!r}")
        for name in ("stable_for", "parametric_after", "check_every"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value < timedelta(0):
                raise InvalidInputError(
                    f"MigrationPolicy.{name} must be a non-negative timedelta, not {value!r}"
                )


@dataclass(frozen=True)
class FormPlan:
    """What the policy wants for one cube now: the memories of the cached prefix (in render
    order) and those to distil into the adapter."""

    cube_id: str
    activation: list[MemoryItem]
    parametric: list[MemoryItem]

    def form_of(self, memory_id: str) -> str:
        """The highest form ``memory_id`` is planned for (plaintext always remains)."""
        if any(m.id == memory_id for m in self.parametric):
            return PARAMETRIC
        if any(m.id == memory_id for m in self.activation):
            return ACTIVATION
        return "plaintext"


@dataclass
class MigrationReport:
    """What one migration run did for a cube."""

    cube_id: str
    plan: FormPlan
    activation: str = "none"  # kept | built | extended | removed | none
    parametric: str = "none"  # kept | trained | removed | none
    cache_tokens: int = 0
    reused_tokens: int = 0
    adapter_metrics: dict[str, Any] = field(default_factory=dict)
    records: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    #: files replaced by this run, removed once its records are written
    garbage: list[Path] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "cube_id": self.cube_id,
            "activation": self.activation,
            "activation_memories": len(self.plan.activation),
            "cache_tokens": self.cache_tokens,
            "reused_tokens": self.reused_tokens,
            "parametric": self.parametric,
            "parametric_memories": len(self.plan.parametric),
            "adapter_metrics": self.adapter_metrics,
        }


def _pairs(items: Sequence[MemoryItem]) -> list[tuple[str, int]]:
    return [(m.id, m.version) for m in items]


def _folder_name(cube_id: str) -> str:
    """A file-system-safe, collision-free folder name for a cube id."""
    readable = "".join(c if c.isalnum() or c in "-_" else "_" for c in cube_id)[:40]
    return f"{readable}-{hashlib.sha256(cube_id.encode()).hexdigest()[:10]}"


class MemoryForms:
    """The activation and parametric memory of a MemOS's cubes for one local model.

    Args:
        memos: the MemOS whose cubes are served (its store holds the records; its scheduler
            runs migrations in the background).
        lm: the local model caches are built with and adapters trained on.
        root: where the artefacts live (default: ``forms/`` beside the SQLite store's file).
        policy: migration thresholds.
        system: the system prompt at the head of every cached prefix.
        lora: adapter training settings (:class:`kv_accel.parametric.LoraSettings`).
        cache_dtype: ``float32`` (exact) or ``bfloat16`` (half the size; logits differ ~0.03).
        clock: the time source of the policy (tests pass a fake one).
        register: register the ``kv_migrate`` task kind on ``memos.scheduler`` (the MemOS must
            run its scheduler: with ``scheduler="off"`` queued migrations wait for a process
            that registered the kind; use one MemoryForms per MemOS and model).
        max_loaded_adapters: adapters kept attached to the model at once (least recently
            used are unloaded; each is ~1.9 MB for SmolLM2 at rank 8).
    """

    def __init__(
        self,
        memos: MemOS,
        lm: LocalModel,
        *,
        root: str | Path | None = None,
        policy: MigrationPolicy | None = None,
        system: str = DEFAULT_SYSTEM,
        lora: Any | None = None,
        cache_dtype: str = "float32",
        clock: Callable[[], datetime] | None = None,
        register: bool = True,
        max_loaded_adapters: int = 8,
    ) -> None:
        if root is None:
            store_path = getattr(memos.store, "path", None)
            if store_path is None:
                raise InvalidInputError("this store has no local folder: pass MemoryForms(root=...)")
            root = Path(store_path).parent / "forms"
        if (
            isinstance(max_loaded_adapters, bool)
            or not isinstance(max_loaded_adapters, int)
            or max_loaded_adapters < 1
        ):
            raise InvalidInputError(
                f"max_loaded_adapters must be a positive integer, not {max_loaded_adapters!r}"
            )
        if cache_dtype not in ("float32", "bfloat16"):
            raise InvalidInputError(f"cache_dtype must be 'float32' or 'bfloat16', not {cache_dtype!r}")
        self.memos = memos
        self.lm = lm
        self.root = Path(root)
        self.policy = policy or MigrationPolicy()
        self.system = system
        self.lora = lora
        self.cache_dtype = cache_dtype
        self.clock = clock or _utcnow
        self._loaded: dict[str, tuple[str, KVCache]] = {}  # cube -> (file, cache) last used
        self._bank: Any | None = None
        self._queued: set[str] = set()  # cubes with a migration queued by activation()
        self._checked: dict[str, datetime] = {}  # cube -> when use last queued a migration
        self._adapter_folders: dict[str, str] = {}  # adapter name -> the folder loaded as it
        self._adapter_used: OrderedDict[str, None] = OrderedDict()  # least recently used first
        self.max_loaded_adapters = max_loaded_adapters
        # One lock with the model's: adapters and caches are process state that a migration
        # and a generation must not change under each other (one lock, so no lock order).
        self._lock = lm.lock
        if register:
            previous = _REGISTERED.get(memos)
            if previous is not None and previous is not self:
                log.warning("a second MemoryForms on one MemOS: kv_migrate tasks now run with the new one")
            memos.scheduler.register(MIGRATE, self._handle)
            _REGISTERED[memos] = self

    @classmethod
    def of(cls, memos: MemOS, lm: LocalModel, **kwargs: Any) -> MemoryForms:
        """The MemoryForms registered on ``memos`` for ``lm`` if there is one, else a new one
        (a generator made without ``forms=`` shares it: one policy, one set of loaded
        adapters, one migration handler per MemOS)."""
        existing = _REGISTERED.get(memos)
        if existing is not None and existing.lm is lm:
            return existing
        return cls(memos, lm, **kwargs)

    # ------------------------------------------------------------------ planning

    def _now(self, now: datetime | None) -> datetime:
        value = self.clock() if now is None else now
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise InvalidInputError(f"the policy's time must be a timezone-aware datetime, not {value!r}")
        return value

    def _candidates(self, cube_id: str, where: Any) -> list[MemoryItem]:
        """The ``max_candidates`` most-read memories matching ``where`` (paging through all of
        them: the store lists newest first)."""
        page, offset, keep = 1000, 0, self.policy.max_candidates
        best: list[tuple[int, str, MemoryItem]] = []
        while True:
            found, total = self.memos.store.list_items([cube_id], where, limit=page, offset=offset)
            for m in found:
                heapq.heappush(best, (m.access_count, m.id, m))
                if len(best) > keep:
                    heapq.heappop(best)
            offset += len(found)
            if not found or offset >= total:
                return [m for _, _, m in best]

    def plan(self, cube_id: str, *, now: datetime | None = None) -> FormPlan:
        """Apply the policy to the cube's memories as they are now (``now``: an aware
        datetime, default the clock)."""
        now = self._now(now)
        p = self.policy
        self.memos.flush_reads()  # the policy reads access counts: recent searches' too
        where = parse_filter(
            {
                "and": [
                    {"status": MemoryStatus.ACTIVATED.value},
                    {"access_count": {"gte": min(p.hot_reads, p.parametric_reads)}},
                    {"updated_at": {"lte": (now - min(p.stable_for, p.parametric_after)).isoformat()}},
                ]
            }
        )
        found = self._candidates(cube_id, where)
        hot = [m for m in found if m.access_count >= p.hot_reads and m.updated_at <= now - p.stable_for]
        long_stable = [
            m
            for m in found
            if m.access_count >= p.parametric_reads and m.updated_at <= now - p.parametric_after
        ]
        parametric = sorted(long_stable, key=lambda m: (m.created_at, m.id))
        if len(parametric) < p.min_parametric:
            parametric = []
        if p.parametric_leaves_prefix and parametric:
            held = {m.id for m in parametric}
            hot = [m for m in hot if m.id not in held]
        chosen: list[MemoryItem] = []
        # the chat template's header and the system prompt count too
        head = len(render_prompt(self.lm.tokenizer, self.system, ["."], [], "?").prefix_ids(1))
        budget = p.max_prefix_tokens - (head - self._tokens("- .\n"))
        for m in sorted(hot, key=lambda m: (-m.access_count, m.created_at, m.id)):
            cost = self._tokens(render_memories([m.memory], self._specials))
            if cost <= budget:
                chosen.append(m)
                budget -= cost
        activation = sorted(chosen, key=lambda m: (m.created_at, m.id))
        return FormPlan(cube_id=cube_id, activation=activation, parametric=parametric)

    @property
    def _specials(self) -> list[str]:
        return [t for t in getattr(self.lm.tokenizer, "all_special_tokens", []) if isinstance(t, str)]

    def _tokens(self, text: str) -> int:
        return len(self.lm.tokenizer.encode(text, add_special_tokens=False))

    # ------------------------------------------------------------------ migration

    def schedule(self, cube_id: str) -> str:
        """Queue a migration of ``cube_id`` on the MemOS scheduler; returns the task id."""
        return self.memos.scheduler.submit(MIGRATE, {"cube_id": cube_id}).task_id

    def touch(self, cube_id: str) -> str | None:
        """Note a use of the cube: at most every ``policy.check_every`` this queues a
        migration run in the background, so the policy follows how memories are read and
        changed without anyone calling :meth:`migrate`. Returns the queued task's id."""
        now = self._now(None)
        last = self._checked.get(cube_id)
        if last is not None and now - last < self.policy.check_every:
            return None
        self._checked[cube_id] = now
        return self.schedule(cube_id)

    def _handle(self, payload: dict[str, Any]) -> list[Any]:
        # The records are written before the task completes (a rerun finds them and keeps
        # what they describe), so a migration is never marked done without its records.
        self.migrate(str(payload["cube_id"]))
        return []

    def migrate(self, cube_id: str, *, now: datetime | None = None) -> MigrationReport:
        """Bring the cube's adapter and cached prefix in line with the plan.

        The adapter comes first (a cache depends on the adapter that is active when it is
        built). Unchanged artefacts are kept; a changed prefix reuses the longest common
        prefix of the old cache. New files are written first, then the records, and only then
        are the replaced files removed: a failure at any point leaves the records naming
        files that exist."""
        with self._lock:
            self._queued.discard(cube_id)
            plan = self.plan(cube_id, now=now)
            report = MigrationReport(cube_id=cube_id, plan=plan)
            try:
                self._migrate_parametric(plan, report)
                self._migrate_activation(plan, report)
                self._commit(report)
            finally:
                report.garbage.clear()
            return report

    def _commit(self, report: MigrationReport) -> None:
        if report.records:
            self.memos.store.put_records(FORMS, report.records)
        for path in report.garbage:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_file():
                path.unlink()

    def _record(self, cube_id: str, form: str) -> dict[str, Any] | None:
        name = _CACHE_NAME if form == ACTIVATION else _ADAPTER_NAME
        return self.memos.store.get_record(FORMS, forms_key(cube_id, form, name))

    def _cube_dir(self, cube_id: str, form: str) -> Path:
        return self.root / _folder_name(cube_id) / form

    def adapter_name(self, cube_id: str) -> str:
        """The adapter's name in the model (peft names must be identifiers)."""
        return "memos_" + hashlib.sha256(cube_id.encode()).hexdigest()[:12]

    @property
    def bank(self) -> Any:
        if self._bank is None:
            from .parametric import AdapterBank

            self._bank = AdapterBank(self.lm)
        return self._bank

    def _migrate_parametric(self, plan: FormPlan, report: MigrationReport) -> None:
        from .parametric import distil

        key = forms_key(plan.cube_id, PARAMETRIC, _ADAPTER_NAME)
        old = self._record(plan.cube_id, PARAMETRIC)
        want = [list(p) for p in _pairs(plan.parametric)]
        if not plan.parametric:
            if old is not None:
                self._drop_adapter(plan.cube_id, old, report.garbage)
                report.records[key] = None
                report.parametric = "removed"
            return
        settings = self._lora_settings()
        if (
            old is not None
            and old.get("memories") == want
            and old.get("settings") == settings.to_dict()
            and self._adapter_fits(old)
        ):
            report.parametric = "kept"
            report.adapter_metrics = dict(old.get("metrics", {}))
            return
        name = self.adapter_name(plan.cube_id)
        memories = [(m.id, m.version, m.memory) for m in plan.parametric]
        # distil trains under a scratch name and swaps the result in as ``name`` only when it
        # succeeds: a failed retraining leaves the old adapter loaded and on disk.
        adapter = distil(self.lm, memories, name=name, settings=settings)
        digest = hashlib.sha256(repr((want, settings.to_dict())).encode()).hexdigest()[:12]
        folder = self._cube_dir(plan.cube_id, PARAMETRIC) / digest
        adapter.save(folder)
        self._adapter_folders[name] = str(folder.relative_to(self.root))
        if old is not None and old.get("folder") != str(folder.relative_to(self.root)):
            report.garbage.append(self.root / str(old.get("folder", "")))
        report.parametric = "trained"
        report.adapter_metrics = dict(adapter.metrics)
        report.records[key] = {
            "form": PARAMETRIC,
            "memories": want,
            "folder": str(folder.relative_to(self.root)),
            "adapter": name,
            "path": str(folder.resolve()),
            "settings": settings.to_dict(),
            "bytes": sum(p.stat().st_size for p in folder.iterdir() if p.is_file()),
            "metrics": dict(adapter.metrics),
            "built_at": self.clock().isoformat(),
        }

    def _lora_settings(self) -> Any:
        from .parametric import LoraSettings

        return self.lora if self.lora is not None else LoraSettings()

    def _drop_adapter(self, cube_id: str, record: dict[str, Any], garbage: list[Path]) -> None:
        name = str(record.get("adapter") or self.adapter_name(cube_id))
        if name in self.bank.loaded:
            self.bank.unload(name)
        self._adapter_folders.pop(name, None)
        garbage.append(self.root / str(record.get("folder", "")))

    def _use_adapter(self, cube_id: str) -> str | None:
        """Activate the cube's adapter when it is valid and loads (loading it once), else
        switch adapters off, whoever turned them on. Returns the active adapter's name."""
        from .parametric import StaleAdapterError

        record = self._record(cube_id, PARAMETRIC)
        if record is None or not self._fresh(record):
            self.bank.deactivate()
            return None
        name, folder = str(record["adapter"]), str(record["folder"])
        try:
            if self._adapter_folders.get(name) != folder or name not in self.bank.loaded:
                if name in self.bank.loaded:  # an older version of it
                    self.bank.unload(name)
                self.bank.load(name, self.root / folder)
                self._adapter_folders[name] = folder
        except (StaleAdapterError, OSError) as exc:
            log.warning("not using the adapter of %s: %s", cube_id, exc)
            self.bank.deactivate()
            return None
        self.bank.activate(name)
        self._adapter_lru(name)
        return name

    def _adapter_lru(self, name: str) -> None:
        """Keep at most ``max_loaded_adapters`` adapters attached (least recently used go)."""
        self._adapter_used.pop(name, None)
        self._adapter_used[name] = None
        loaded = set(self.bank.loaded)
        for old in list(self._adapter_used):
            if len(loaded) <= self.max_loaded_adapters:
                break
            if old != name and old in loaded:
                self.bank.unload(old)
                loaded.discard(old)
                self._adapter_folders.pop(old, None)
                del self._adapter_used[old]

    def _adapter_fits(self, record: dict[str, Any]) -> bool:
        """The recorded adapter's files exist and were trained on this base model."""
        from .parametric import Adapter, StaleAdapterError

        try:
            Adapter.read(self.root / str(record["folder"])).check(self.lm)
        except (StaleAdapterError, OSError, KeyError):
            return False
        return True

    def _fresh(self, record: dict[str, Any]) -> bool:
        """Every source memory still active at the version the artefact was built from."""
        pairs = [(str(i), int(v)) for i, v in record.get("memories", [])]
        current = self.memos.store.get([i for i, _ in pairs])
        return all(
            item is not None and item.status == MemoryStatus.ACTIVATED.value and item.version == v
            for (_, v), item in zip(pairs, current, strict=True)
        )

    def _prefix(self, memories: Sequence[MemoryItem]) -> tuple[list[int], SourceFingerprint]:
        prompt = render_prompt(self.lm.tokenizer, self.system, [m.memory for m in memories], [], "?")
        return prompt.prefix_ids(1), SourceFingerprint.of(_pairs(memories), prompt.segments[0])

    def _migrate_activation(
        self, plan: FormPlan, report: MigrationReport, *, adapter_set: bool = False
    ) -> None:
        key = forms_key(plan.cube_id, ACTIVATION, _CACHE_NAME)
        old = self._record(plan.cube_id, ACTIVATION)
        if not plan.activation:
            if old is not None:
                self._drop_cache(plan.cube_id, old, report.garbage)
                report.records[key] = None
                report.activation = "removed"
            return
        if not adapter_set:
            self._use_adapter_for_build(plan, report)
        ids, source = self._prefix(plan.activation)
        previous = self._load(plan.cube_id, old)
        if previous is not None and previous.source == source:
            try:
                previous.check(self.lm)
                report.activation = "kept"
                report.cache_tokens = previous.n_tokens
                return
            except StaleCacheError:
                previous = None  # built under another adapter: rebuild
        cache = None
        if previous is not None:
            try:
                cache = extend_cache(self.lm, previous, ids, source=source)
                report.activation = "extended"
                report.reused_tokens = int(cache.meta.get("reused_tokens", 0))
            except StaleCacheError:
                cache = None
        if cache is None:
            cache = build_cache(self.lm, ids, source=source)
            report.activation = "built"
        if self.cache_dtype != "float32":
            cache = cache.astype(self.cache_dtype)
        report.cache_tokens = cache.n_tokens
        report.records[key] = self._save_cache(plan.cube_id, cache, old, report.garbage)

    def _use_adapter_for_build(self, plan: FormPlan, report: MigrationReport) -> None:
        """Build the prefix under the adapter generation will use: the one this run keeps or
        trained, or none."""
        key = forms_key(plan.cube_id, PARAMETRIC, _ADAPTER_NAME)
        if key not in report.records:
            self._use_adapter(plan.cube_id)
            return
        record = report.records[key]
        if record is not None and str(record["adapter"]) in self.bank.loaded:
            self.bank.activate(str(record["adapter"]))
            self._adapter_lru(str(record["adapter"]))
        else:
            self.bank.deactivate()

    def _save_cache(
        self, cube_id: str, cache: KVCache, old: dict[str, Any] | None, garbage: list[Path]
    ) -> dict[str, Any]:
        assert cache.source is not None
        digest = hashlib.sha256(
            (cache.source.text_sha256 + repr(cache.model.to_dict())).encode()
        ).hexdigest()[:16]
        path = self._cube_dir(cube_id, ACTIVATION) / f"{digest}.safetensors"
        cache.save(path)
        if old is not None and old.get("file") != str(path.relative_to(self.root)):
            garbage.append(self.root / str(old.get("file", "")))
        self._loaded[cube_id] = (str(path), cache)
        return {
            "form": ACTIVATION,
            "memories": [list(p) for p in cache.source.memories],
            "text_sha256": cache.source.text_sha256,
            "file": str(path.relative_to(self.root)),
            "path": str(path.resolve()),
            "tokens": cache.n_tokens,
            "bytes": path.stat().st_size,
            "dtype": cache.model.dtype,
            "adapter": cache.model.adapter,
            "built_at": self.clock().isoformat(),
            "build_seconds": cache.meta.get("build_seconds"),
        }

    def _drop_cache(self, cube_id: str, record: dict[str, Any], garbage: list[Path]) -> None:
        self._loaded.pop(cube_id, None)
        garbage.append(self.root / str(record.get("file", "")))

    def _load(self, cube_id: str, record: dict[str, Any] | None) -> KVCache | None:
        if record is None:
            return None
        path = self.root / str(record["file"])
        held = self._loaded.get(cube_id)
        if held is not None and held[0] == str(path):
            return held[1]
        if not path.is_file():
            return None
        try:
            cache = KVCache.load(path)
        except StaleCacheError as exc:
            log.warning("ignoring cache %s: %s", path, exc)
            return None
        self._loaded[cube_id] = (str(path), cache)
        return cache

    # ------------------------------------------------------------------ use

    def activation(self, cube_id: str, *, rebuild: bool = True) -> tuple[list[MemoryItem], KVCache | None]:
        """The cube's cached prefix memories and a cache valid for the model as it is now
        (with the cube's adapter activated when it has a valid one, and every other adapter
        off), or ``([], None)``.

        A stale cache (a source memory changed, or the adapter it was built under changed)
        is never returned: with ``rebuild`` it is rebuilt now from the current plan (the
        prefill costs what the caller would pay uncached); a stale or unloadable adapter is
        switched off and a background migration is queued to retrain it."""
        with self._lock:
            adapter = self._use_adapter(cube_id)
            stale = adapter is None and self._record(cube_id, PARAMETRIC) is not None
            if stale and cube_id not in self._queued:  # retrain in the background, once
                self._queued.add(cube_id)
                self.schedule(cube_id)
            record = self._record(cube_id, ACTIVATION)
            if record is None:
                return [], None
            cache = self._load(cube_id, record) if self._fresh(record) else None
            if cache is not None:
                memories = self.memos.store.get([str(i) for i, _ in record["memories"]])
                live = [m for m in memories if m is not None]
                _, source = self._prefix(live)
                try:
                    cache.check(self.lm, source)
                    return live, cache
                except StaleCacheError:
                    cache = None
            if not rebuild:
                return [], None
            plan = self.plan(cube_id)
            report = MigrationReport(cube_id=cube_id, plan=plan)
            self._migrate_activation(plan, report, adapter_set=True)  # under the adapter now on
            self._commit(report)
            if not plan.activation:
                return [], None
            held = self._loaded.get(cube_id)
            return list(plan.activation), None if held is None else held[1]

    def status(self, cube_id: str) -> dict[str, Any]:
        """The cube's entry of :func:`memos_core.forms_summary` (``{}`` when it has none)."""
        from memos_core import forms_summary

        summary: dict[str, Any] = forms_summary(self.memos.store).get(cube_id, {})
        return summary

    def clear(self, cube_id: str) -> None:
        """Remove the cube's cache and adapter, their records, then their files."""
        with self._lock:
            report = MigrationReport(cube_id=cube_id, plan=FormPlan(cube_id, [], []))
            for form, name in ((ACTIVATION, _CACHE_NAME), (PARAMETRIC, _ADAPTER_NAME)):
                record = self._record(cube_id, form)
                if record is not None:
                    drop = self._drop_cache if form == ACTIVATION else self._drop_adapter
                    drop(cube_id, record, report.garbage)
                    report.records[forms_key(cube_id, form, name)] = None
            self._commit(report)
