"""``memos mcp``, driven by the MCP SDK's own client over stdio (a real subprocess)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp.server.mcpserver", reason="memos mcp needs the 'server' extra (mcp>=2)")

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {
    "add_message",
    "search_memory",
    "get_memory",
    "update_memory",
    "delete_memory",
    "list_memories",
    "get_task_status",
}


def _text(result: CallToolResult) -> str:
    assert len(result.content) == 1 and isinstance(result.content[0], TextContent), result.content
    return result.content[0].text


def _data(result: CallToolResult) -> Any:
    """The tool's JSON answer; the text content and the structured content must agree."""
    assert not result.is_error, _text(result)
    data = json.loads(_text(result))
    assert result.structured_content == data
    return data


def _server(data_dir: Path, *options: str) -> StdioServerParameters:
    """``memos --path DATA --embedder hash:64 mcp OPTIONS`` from this checkout (the SDK passes
    only a safe subset of the environment: HOME, PATH, ...; PYTHONPATH is added here)."""
    cli = ["-m", "memos_core.cli", "--path", str(data_dir), "--embedder", "hash:64", "mcp", *options]
    env = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return StdioServerParameters(command=sys.executable, args=cli, cwd=ROOT, env=env)


async def _session_run(data_dir: Path, errlog: Path) -> None:
    params = _server(data_dir, "--user", "alice")
    with errlog.open("w") as err, anyio.fail_after(60):
        async with stdio_client(params, errlog=err) as (read, write), ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.server_info.name == "memos"

            listed = await session.list_tools()
            tools = {t.name: t for t in listed.tools}
            assert set(tools) == TOOLS
            add_args = tools["add_message"].input_schema["properties"]
            assert {"content", "messages", "user_id", "conversation_id", "tags", "info"} <= set(add_args)
            assert tools["search_memory"].annotations and tools["search_memory"].annotations.read_only_hint
            search_mode = tools["search_memory"].input_schema["properties"]["mode"]
            assert (
                search_mode["enum"] == ["hybrid", "lexical", "keyword"] and search_mode["default"] == "hybrid"
            )
            assert "keywords only" in search_mode["description"]

            # add: one message (the --user default), then a conversation turn for another user
            added = _data(
                await session.call_tool(
                    "add_message",
                    {"content": "I moved to Lisbon last spring", "tags": ["home"], "info": {"src": "test"}},
                )
            )
            assert set(added) == {"task_id", "memory_ids", "status"} and len(added["memory_ids"]) == 1
            memory_id = added["memory_ids"][0]
            other = _data(
                await session.call_tool(
                    "add_message",
                    {
                        "messages": [
                            {"role": "user", "content": "My cat is called Miso"},
                            {"role": "assistant", "content": "Nice name!"},
                        ],
                        "user_id": "bob",
                        "conversation_id": "c1",
                    },
                )
            )

            # search: the user's own memory, narrowed by a filter; bob's stays bob's
            hits = _data(
                await session.call_tool(
                    "search_memory", {"query": "Lisbon", "top_k": 3, "filter": {"tags": {"contains": "home"}}}
                )
            )["memory_detail_list"]
            # (the fine stage may have added its fact, "The user lives in Lisbon.", by now)
            assert memory_id in [h["id"] for h in hits] and all("Lisbon" in h["memory"] for h in hits)
            assert all(h["cube_id"] == "user:alice" for h in hits)
            bob_hits = _data(await session.call_tool("search_memory", {"query": "cat", "user_id": "bob"}))
            assert any("Miso" in h["memory"] for h in bob_hits["memory_detail_list"])
            # mode="lexical": BM25 alone, so no hit has a vector rank
            lexical = _data(
                await session.call_tool(
                    "search_memory", {"query": "Miso", "user_id": "bob", "mode": "lexical"}
                )
            )["memory_detail_list"]
            assert lexical and "Miso" in lexical[0]["memory"]
            assert all(h["score_details"]["vector_rank"] == 0 for h in lexical)
            keyword = _data(
                await session.call_tool(
                    "search_memory", {"query": "Miso", "user_id": "bob", "mode": "keyword"}
                )
            )["memory_detail_list"]
            assert keyword and set(keyword[0]["score_details"]) == {"bm25", "bm25_rank"}
            fuzzy = await session.call_tool("search_memory", {"query": "Miso", "mode": "fuzzy"})
            assert fuzzy.is_error and "mode" in _text(fuzzy)

            # get, update (a new version, the old one in history), list, task status
            got = _data(await session.call_tool("get_memory", {"memory_id": memory_id}))
            assert got["id"] == memory_id and got["tags"] == ["home"] and got["info"]["src"] == "test"
            updated = _data(
                await session.call_tool(
                    "update_memory", {"memory_id": memory_id, "memory": "The user lives in Porto"}
                )
            )
            assert updated["memory"] == "The user lives in Porto" and updated["version"] == got["version"] + 1
            assert updated["history"][-1]["memory"] == got["memory"]
            page = _data(
                await session.call_tool("list_memories", {"user_id": "bob", "conversation_id": "c1"})
            )
            assert page["total"] >= 1 and all(i["user_id"] == "bob" for i in page["items"])
            task = _data(await session.call_tool("get_task_status", {"task_id": other["task_id"]}))
            assert task["task_id"] == other["task_id"]
            assert task["status"] in {"queued", "running", "completed", "failed"}

            # delete (soft: the id stays readable as deleted), then the errors an agent reads
            assert _data(await session.call_tool("delete_memory", {"memory_ids": [memory_id]})) == {
                "deleted": 1
            }
            gone = _data(await session.call_tool("get_memory", {"memory_id": memory_id}))
            assert gone["status"] == "deleted"

            # (the SDK puts "Error executing tool <name>: " before our "<ExceptionClass>: <message>")
            missing = await session.call_tool("get_memory", {"memory_id": "no-such-id"})
            assert missing.is_error
            assert (
                _text(missing)
                == "Error executing tool get_memory: MemoryNotFoundError: no memory 'no-such-id'"
            )
            missing = await session.call_tool("delete_memory", {"memory_ids": ["no-such-id"]})
            assert missing.is_error and "MemoryNotFoundError" in _text(missing)
            denied = await session.call_tool("get_memory", {"memory_id": other["memory_ids"][0]})
            assert denied.is_error and "get_memory: PermissionDeniedError: " in _text(denied)
            bad = await session.call_tool("search_memory", {"query": "x", "filter": {"nope": {"zz": 1}}})
            assert bad.is_error and "search_memory: FilterError: " in _text(bad)
            both = await session.call_tool("add_message", {"content": "a", "messages": []})
            assert both.is_error and "exactly one of content or messages" in _text(both)

            # the server survived every error
            assert _data(await session.call_tool("list_memories", {}))["total"] >= 0
    assert "Traceback" not in errlog.read_text()


def test_mcp_stdio_roundtrip(tmp_path: Path) -> None:
    """If this fails on the tool list or schemas, look at memos_core/mcp.py's create_server;
    if the process dies, its stderr is in tmp_path/'server.log'."""
    anyio.run(_session_run, tmp_path / "data", tmp_path / "server.log")


def test_mcp_without_default_user(tmp_path: Path) -> None:
    """Without --user a call must name its user_id; the error says so."""

    async def run() -> None:
        params = _server(tmp_path / "d")
        with (tmp_path / "server.log").open("w") as err:
            async with stdio_client(params, errlog=err) as (read, write), ClientSession(read, write) as s:
                await s.initialize()
                r = await s.call_tool("search_memory", {"query": "anything"})
                assert r.is_error and "user_id is required" in _text(r)

    anyio.run(run)
