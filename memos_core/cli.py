"""The ``memos`` command: ``demo``, ``add``, ``search``, ``stats``, ``kb``, ``export``,
``import``, ``reindex``, ``serve``, ``keys``, ``mcp``.

The data folder comes from ``--path`` or the ``MEMOS_PATH`` environment variable
(default ``./memos-data``). ``--store weaviate://host:port[?grpc_port=50051]`` (or
``MEMOS_STORE``) keeps the memories in Weaviate instead, the background tasks still in the
data folder; ``serve`` then gives each tenant its own collection, the other commands use
``?collection=NAME`` (default ``MemosItem``), so ``export`` from one store and ``import`` into
the other moves a cube. The Weaviate API key (Weaviate Cloud, ``weaviates://``) comes from
the ``WEAVIATE_API_KEY`` environment variable, never from the URL. ``stats`` reads the SQLite
store only. Errors print one line and exit with status 2 (a bad request) or 1 (a runtime
failure).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import MemosError, RequestError
from .memos import MemOS
from .schema import MemoryHit, TaskStatus, parse_time


def _open(args: argparse.Namespace, **kwargs: Any) -> MemOS:
    if args.open_embedder:
        kwargs["embedder"] = embedder_from_spec(args.open_embedder)
    if args.store:
        store = _weaviate(args)
        try:
            return MemOS(args.path, store=store, **kwargs)
        except BaseException:
            store.close()
            raise
    return MemOS(args.path, **kwargs)


def _weaviate(args: argparse.Namespace) -> Any:
    """The set-up Weaviate store of ``--store`` (collection from ``?collection=``, API key
    from ``WEAVIATE_API_KEY``)."""
    from .server import parse_weaviate_url, weaviate_api_key
    from .stores.weaviate import WeaviateStore

    url, options = parse_weaviate_url(args.store)
    store = WeaviateStore.from_url(url, api_key=weaviate_api_key(), **options)
    try:
        store.setup()
    except BaseException:
        store.close()
        raise
    return store


def _print_hits(hits: Sequence[MemoryHit], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([h.model_dump(mode="json") for h in hits], ensure_ascii=False, indent=2))
        return
    if not hits:
        print("  (no memories found)")
    for rank, hit in enumerate(hits, start=1):
        d = hit.score_details
        when = hit.event_time.date().isoformat() if hit.event_time else "-"
        print(f"  {rank}. score {hit.score:.3f}  [event {when}]  tags={hit.tags}")
        for line in hit.memory.splitlines():
            print(f"       {line}")
        print(
            f"       why: bm25 rank {int(d['bm25_rank']) or '-'} ({d['bm25']:.3g}), "
            f"vector rank {int(d['vector_rank']) or '-'} (cos {d['vector']:.2f}), "
            f"fused {d['fused']:.3f}, recency +{d['recency']:.3f}, usage +{d['usage']:.3f}"
            + (f", fact +{d['fact']:.3f}" if d.get("fact") else "")
            + (f", working +{d['working']:.3f}" if d.get("working") else "")
        )
        origin = [
            s.message_id if s.type == "chat" and s.message_id else
            f"memory {s.memory_id[:8]}" if s.type == "memory" and s.memory_id else
            f"{s.url or s.doc_id} #{s.chunk_index}" if s.type == "doc" else
            s.url or s.type
            for s in hit.sources
        ]  # fmt: skip
        where = "" if hit.origin == "memory" else f" ({hit.origin} {hit.cube_id})"
        print(f"       from: {', '.join(x for x in origin if x)}{where}")


def _demo_messages(session: dict[str, Any]) -> list[dict[str, Any]]:
    start = parse_time(session["chat_time"])
    return [
        {**m, "chat_time": (start + timedelta(minutes=i)).isoformat()}
        for i, m in enumerate(session["messages"])
    ]


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    folder = Path(args.path) if args.path_given else Path(tempfile.mkdtemp(prefix="memos-demo-"))
    if folder.exists() and any(folder.iterdir()):
        print(f"error: {folder} is not empty; the demo needs a fresh folder", file=sys.stderr)
        return 2
    data = json.loads(
        resources.files("memos_core").joinpath("data/demo_conversation.json").read_text("utf-8")
    )
    print(f"MemOS demo — data folder: {folder}")
    print("Loading the packaged all-MiniLM-L6-v2 embedder...")
    t0 = time.perf_counter()
    with MemOS(folder) as mem:
        mem.embedder.embed(["warm up"])
        print(f"  ready in {time.perf_counter() - t0:.1f}s\n")
        sessions = [(c, s) for c in data["conversations"] for s in c["sessions"]]
        task_ids = []
        latencies = []
        for conv, session in tqdm(sessions, desc="Adding sessions", unit="session"):
            t = time.perf_counter()
            r = mem.add_message(
                _demo_messages(session),
                user_id=conv["user_id"],
                conversation_id=conv["conversation_id"],
                tags=conv["tags"],
                info=conv["info"],
            )
            latencies.append((time.perf_counter() - t) * 1000)
            task_ids.append(r.data.task_id)
        median = sorted(latencies)[len(latencies) // 2]
        print(f"\nFast stage: {len(sessions)} adds, median {median:.1f} ms each;")
        print("the memories are searchable now. Fine-stage tasks (facts, dates, keywords, dedup):")
        for tid in task_ids[:2]:
            print(f"  task {tid[:8]}… status={mem.get_task_status(tid).data[0].status.value}")
        for tid in task_ids:
            mem.scheduler.wait(tid)
        done = sum(mem.get_task_status(t).data[0].status == TaskStatus.COMPLETED for t in task_ids)
        print(f"  after waiting: {done}/{len(task_ids)} completed\n")

        searches: list[tuple[str, str, dict[str, Any] | None]] = [
            ("alice", "Where does Alice live now?", None),
            ("alice", "what is the user allergic to", {"scene": "chat"}),
            (
                "alice",
                "When did Alice run the 10k race?",
                {"event_time": {"gte": "2024-03-01", "lt": "2024-03-10"}},
            ),
            (
                "xiaowang",
                "客户汇报需要准备什么",
                {"and": [{"tags": {"contains": "工作"}}, {"custom_status": "待准备"}]},
            ),
            ("xiaowang", "小王对什么过敏", None),
        ]
        for user, query, flt in searches:
            print(
                f"search user={user!r} query={query!r}"
                + (f" filter={json.dumps(flt, ensure_ascii=False)}" if flt else "")
            )
            hits = mem.search_memory(query, user_id=user, filter=flt, top_k=2).data.memory_detail_list
            _print_hits(hits, as_json=False)
            print()
        facts = mem.list_memories("alice", filter={"key": "residence"}).data.items
        for fact in facts:
            print(f"fact {fact.id[:8]}… version {fact.version}: {fact.memory}")
            for old in fact.history:
                print(f"  history v{old.version} ({old.status}, {old.reason}): {old.memory}")
        print()
        stats = mem.stats()
        print("stats:", json.dumps(stats["cubes"], ensure_ascii=False), "tasks:", stats["tasks"])
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    if args.file:
        messages = json.loads(Path(args.file).read_text("utf-8"))
    else:
        messages = [{"role": args.role, "content": " ".join(args.text)}]
    with _open(args) as mem:
        r = mem.add_message(
            messages,
            user_id=args.user,
            conversation_id=args.conversation,
            tags=args.tag or None,
            info=json.loads(args.info) if args.info else None,
            async_mode=not args.wait,
        )
        print(json.dumps(r.data.model_dump(mode="json"), indent=2))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    flt = json.loads(args.filter) if args.filter else None
    with _open(args, scheduler="off") as mem:
        r = mem.search_memory(
            " ".join(args.query),
            user_id=args.user,
            conversation_id=args.conversation,
            filter=flt,
            knowledgebase_ids=args.kb,
            top_k=args.top_k,
        )
        _print_hits(r.data.memory_detail_list, as_json=args.json)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .cube import forms_summary
    from .stores.sqlite import SqliteStore

    if args.store:
        raise RequestError("memos stats reads the SQLite store only; drop --store")
    store = SqliteStore.from_path(args.path)
    store.setup()
    stats = store.stats()
    forms = forms_summary(store)
    if forms:  # what lives in which form: plaintext, activation caches, LoRA adapters
        stats["forms"] = forms
    print(json.dumps(stats, indent=2, ensure_ascii=False))
    store.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import ServerLimits, serve, weaviate_store_factory

    options: dict[str, Any] = {}
    if args.store:  # memories in Weaviate (a collection per tenant), tasks in the data folder
        options["store_factory"] = weaviate_store_factory(args.store)
    if args.open_embedder:
        options["embedder"] = embedder_from_spec(args.open_embedder)
    from .reader import Limits

    facade = Limits(max_messages=args.max_messages, max_top_k=args.max_top_k)
    limits = ServerLimits(
        max_body_bytes=args.max_body_bytes, max_document_bytes=args.max_document_bytes, limits=facade
    )
    options["lease_seconds"] = args.lease_seconds
    print(f"memos serve: {args.path} on http://{args.host}:{args.port} (keys: memos keys create)", flush=True)
    serve(args.path, host=args.host, port=args.port, limits=limits, log_level=args.log_level, **options)
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    """A local MCP server over stdio on this data folder; stdout carries the protocol only."""
    from .mcp import create_server

    # The model drives the tools: its image URLs may not read local files unless asked.
    with _open(args, allow_local_images=args.allow_local_images) as mem:
        create_server(mem, default_user=args.user, log_level=args.log_level).run("stdio")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .server import KeyStore

    keys = KeyStore(Path(args.path) / "control")
    try:
        if args.keys_command == "create":
            key_id, token = keys.create(args.tenant, name=args.name or "")
            if args.json:
                print(json.dumps({"key_id": key_id, "tenant": args.tenant, "key": token}))
            else:
                print(f"key id {key_id} for tenant {args.tenant!r} (shown once, store it now):\n{token}")
        elif args.keys_command == "list":
            rows = keys.list(args.tenant)
            if args.json:
                print(json.dumps(rows, indent=2))
            for r in [] if args.json else rows:
                state = f"revoked {r['revoked_at']}" if r.get("revoked_at") else "active"
                print(f"{r['key_id']}  tenant={r['tenant']}  name={r.get('name') or '-'}  {state}")
        else:
            if not keys.revoke(args.key_id):
                raise RequestError(f"no key with id {args.key_id!r}")
            print(f"revoked {args.key_id}")
    finally:
        keys.close()
    return 0


def _store(args: argparse.Namespace) -> Any:
    """The store of ``export``/``import``/``reindex``: Weaviate with ``--store``, so a cube
    exported from one store is imported into the other."""
    if args.store:
        return _weaviate(args)
    from .stores.sqlite import SqliteStore

    store = SqliteStore.from_path(args.path)
    store.setup()
    return store


def _cube_of(args: argparse.Namespace) -> str:
    from .memos import user_cube_id

    if bool(args.user) == bool(args.cube):
        raise RequestError("give exactly one of --user or --cube")
    return user_cube_id(args.user) if args.user else str(args.cube)


def cmd_export(args: argparse.Namespace) -> int:
    from .cube import MemCube

    store = _store(args)
    try:
        cube = MemCube(store, _cube_of(args))
        if not cube.count():
            raise RequestError(f"cube {cube.cube_id!r} has no memories in {args.path}")
        manifest = cube.dump(args.folder, progress=not args.quiet)
    finally:
        store.close()
    print(json.dumps({k: manifest[k] for k in ("cube_id", "items", "embedded", "embedding_model")}))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .cube import MemCube

    store = _store(args)
    try:
        manifest = MemCube.read_manifest(args.folder)
        cube = MemCube.load(
            args.folder, store, cube_id=args.as_cube, new_ids=args.new_ids, progress=not args.quiet
        )
        print(
            json.dumps(
                {
                    "cube_id": cube.cube_id,
                    "items": cube.count(),
                    "embedding_model": manifest["embedding_model"],
                }
            )
        )
    finally:
        store.close()
    return 0


def embedder_from_spec(spec: str) -> Any:
    """``minilm`` (the packaged model), ``hash:DIM`` (the test embedder) or a folder holding
    a sentence-transformers model."""
    from .embedders import SentenceTransformerEmbedder
    from .testing import HashEmbedder

    if spec == "minilm":
        return SentenceTransformerEmbedder()
    if spec.startswith("hash:"):
        try:
            return HashEmbedder(int(spec[5:]))
        except ValueError as exc:
            raise RequestError(f"hash:DIM needs an integer dimension, not {spec[5:]!r}") from exc
    if Path(spec).is_dir():
        return SentenceTransformerEmbedder(spec)
    raise RequestError(f"unknown embedder {spec!r}: use minilm, hash:DIM or a model folder")


def cmd_reindex(args: argparse.Namespace) -> int:
    from .cube import MemCube

    embedder = embedder_from_spec(args.embedder)
    store = _store(args)
    try:
        cube = MemCube(store, _cube_of(args))
        count = cube.reindex(embedder, progress=not args.quiet)
    finally:
        store.close()
    print(json.dumps({"cube_id": cube.cube_id, "reindexed": count, "embedding_model": embedder.model_id}))
    return 0


def cmd_kb(args: argparse.Namespace) -> int:
    """``memos kb add`` (creating the knowledge base on first use) and ``memos kb list``."""
    with _open(args, scheduler="off") as mem:
        if args.action == "add":
            known = {k["kb_id"] for k in mem.list_knowledgebases(args.user).data}
            if args.kb not in known:
                mem.create_knowledgebase(args.user, kb_id=args.kb)
            for file in args.files:
                doc = mem.add_document(args.kb, file, user_id=args.user, progress=not args.quiet).data
                print(json.dumps({k: doc[k] for k in ("doc_id", "filename", "chunks", "status")}))
        else:
            docs = mem.list_documents(args.kb, user_id=args.user).data if args.kb else None
            out = docs if docs is not None else mem.list_knowledgebases(args.user).data
            print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memos", description="MemOS: memory for AI agents")
    parser.add_argument("--path", help="data folder (env MEMOS_PATH, default ./memos-data)")
    parser.add_argument(
        "--store",
        default=os.environ.get("MEMOS_STORE") or None,
        help="keep memories in Weaviate: weaviate[s]://host:port[?grpc_port=50051] (env MEMOS_STORE;"
        " API key from env WEAVIATE_API_KEY)",
    )
    parser.add_argument(
        "--embedder",
        dest="open_embedder",
        help="the embedding model the data folder uses: minilm (default), hash:DIM or a model folder",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("demo", help="ingest a sample conversation and show searches").set_defaults(fn=cmd_demo)

    p = sub.add_parser("add", help="add a message (or a JSON file of messages)")
    p.add_argument("--user", required=True)
    p.add_argument("--conversation")
    p.add_argument("--role", default="user")
    p.add_argument("--tag", action="append")
    p.add_argument("--info", help="JSON object")
    p.add_argument("--file", help="JSON list of OpenAI-style messages")
    p.add_argument("--wait", action="store_true", help="wait for the fine stage")
    p.add_argument("text", nargs="*")
    p.set_defaults(fn=cmd_add)

    p = sub.add_parser("search", help="search a user's memories")
    p.add_argument("--user", required=True)
    p.add_argument("--conversation")
    p.add_argument("--filter", help='JSON filter, e.g. \'{"tags": {"contains": "study"}}\'')
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--kb", action="append", help="also search this knowledge base (repeatable)")
    p.add_argument("--json", action="store_true")
    p.add_argument("query", nargs="+")
    p.set_defaults(fn=cmd_search)

    sub.add_parser("stats", help="counts per cube, status and task state").set_defaults(fn=cmd_stats)

    p = sub.add_parser("serve", help="the HTTP API (needs the 'server' extra and an API key)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--max-body-bytes", type=int, default=8 * 2**20, help="largest request body")
    p.add_argument("--max-document-bytes", type=int, default=5 * 2**20, help="largest document upload")
    p.add_argument("--max-messages", type=int, default=1000, help="messages per add")
    p.add_argument("--max-top-k", type=int, default=100, help="largest top_k of a search")
    p.add_argument(
        "--lease-seconds",
        type=float,
        default=60.0,
        help="a background task left running by a crashed server is taken over after this long",
    )
    p.add_argument("--log-level", default="info")
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("mcp", help="a local MCP server over stdio (needs the 'server' extra)")
    p.add_argument("--user", help="the user_id of tool calls that give none")
    p.add_argument(
        "--log-level", default="WARNING", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    p.add_argument(
        "--allow-local-images",
        action="store_true",
        help="image parts may name local files (off: the model could read any image on this machine)",
    )
    p.set_defaults(fn=cmd_mcp)

    keys = sub.add_parser("keys", help="API keys of the server: create, list, revoke").add_subparsers(
        dest="keys_command", required=True
    )
    p = keys.add_parser("create", help="a new key bound to a tenant (printed once)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_keys)
    p = keys.add_parser("list", help="keys (ids, tenants, names; never the keys)")
    p.add_argument("--tenant")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_keys)
    p = keys.add_parser("revoke", help="revoke a key by its id")
    p.add_argument("key_id")
    p.set_defaults(fn=cmd_keys)

    kb = sub.add_parser("kb", help="knowledge bases: add documents, list them").add_subparsers(
        dest="action", required=True
    )
    p = kb.add_parser("add", help="add documents (creates the knowledge base on first use)")
    p.add_argument("--user", required=True, help="the owner")
    p.add_argument("--kb", required=True, help="the knowledge base id")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("files", nargs="+", help="PDF, DOCX, HTML, Markdown or text files")
    p.set_defaults(fn=cmd_kb)
    p = kb.add_parser("list", help="knowledge bases of a user, or the documents of one")
    p.add_argument("--user", required=True)
    p.add_argument("--kb", help="list this knowledge base's documents")
    p.set_defaults(fn=cmd_kb)

    p = sub.add_parser("export", help="dump a cube into a portable folder")
    p.add_argument("--user", help="the user's own cube")
    p.add_argument("--cube", help="any cube id, e.g. kb:handbook")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("folder", help="a new (or empty) folder")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("import", help="load a dumped cube into this data folder")
    p.add_argument("--as-cube", help="load under another cube id")
    p.add_argument("--new-ids", action="store_true", help="fresh ids (a copy next to the original)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("folder")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("reindex", help="re-embed a cube with another embedding model")
    p.add_argument("--user", help="the user's own cube")
    p.add_argument("--cube", help="any cube id")
    p.add_argument("--embedder", required=True, help="minilm, hash:DIM or a sentence-transformers folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_reindex)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.path_given = args.path is not None or "MEMOS_PATH" in os.environ
    args.path = args.path or os.environ.get("MEMOS_PATH", "./memos-data")
    if args.command == "add" and not args.file and not args.text:
        print("error: give the message text or --file", file=sys.stderr)
        return 2
    try:
        return int(args.fn(args))
    except json.JSONDecodeError as exc:
        print(f"error: invalid JSON: {exc}", file=sys.stderr)
        return 2
    except RequestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemosError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
