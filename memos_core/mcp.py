"""``memos mcp``: the facade as a local MCP server over stdio (extra ``server``, ``mcp>=2``).

An MCP client (Claude Desktop, Cursor, an agent framework) starts ``memos --path DATA mcp`` as a
subprocess and talks JSON-RPC on its stdin/stdout. The server opens the embedded store of the
data folder and offers these tools (see ``docs/mcp.md``):

==================  ================================================================
``add_message``     remember a message (``content``) or OpenAI-style ``messages``
``search_memory``   search (``query``, ``top_k``, ``filter``, ``conversation_id``, ``mode``)
``get_memory``      one memory by id
``update_memory``   change its text, tags or info (a new version; the old one is kept)
``delete_memory``   soft-delete memories by id (``hard=True`` erases them)
``list_memories``   a page of the user's memories, newest first
``get_task_status`` the fine-stage task an add started
==================  ================================================================

A tool answers the envelope's ``data`` as JSON (text content, and structured content too). A
:class:`~memos_core.errors.MemosError` becomes an MCP tool error (``isError``) whose text is
``"<ExceptionClass>: <message>"``; the server keeps running.

The user. Every tool takes ``user_id``; ``--user`` on the command line is the default when a
call leaves it out. This is a local, single-owner server: whoever can start it can read the data
folder anyway, so the ``user_id`` of a call is trusted (for tenants and keys use ``memos serve``).
``get``/``update``/``delete`` still check that the memory's cube is readable or writable by that
user, so an agent scoped to one user does not touch another's memories by id.

Example:
    $ memos --path ~/memos-data mcp --user alice
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from .errors import MemosError, MissingDependencyError
from .retrieval import SearchMode

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from .memos import MemOS

__all__ = ["LogLevel", "create_server"]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

_INSTRUCTIONS = (
    "Long-term memory for this user. Call search_memory before answering questions that may "
    "depend on what the user said earlier; call add_message with what the user tells you that is "
    "worth remembering (facts, preferences, plans). Results are JSON; memory ids are stable."
)

_UserId = Annotated[
    str | None, Field(description="whose memories; defaults to the server's --user when omitted")
]
_Tags = Annotated[list[str] | None, Field(description="labels to filter on later, e.g. ['work']")]
_Info = Annotated[dict[str, Any] | None, Field(description="free-form JSON object stored with the memory")]
_Filter = Annotated[
    dict[str, Any] | None,
    Field(
        description="filter DSL, e.g. {'tags': {'contains': 'work'}}, "
        "{'event_time': {'gte': '2024-03-01'}}, {'and': [...]}"
    ),
]


def create_server(
    mem: MemOS, *, default_user: str | None = None, log_level: LogLevel = "WARNING"
) -> MCPServer[Any]:
    """An MCP server whose tools call ``mem``; run it with ``.run("stdio")``.

    Args:
        mem: the open facade (the caller closes it after the server returns).
        default_user: the ``user_id`` of calls that give none (``memos mcp --user``).
        log_level: the SDK's log level (it logs to stderr; stdout carries the protocol).

    Raises:
        MissingDependencyError: the ``mcp`` package (2.x) is not installed.

    Example:
        >>> with MemOS("./memos-data") as mem:  # doctest: +SKIP
        ...     create_server(mem, default_user="alice").run("stdio")
    """
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("mcp", "server") from exc
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
        from mcp.types import ToolAnnotations
    except ImportError as exc:  # mcp 1.x: FastMCP, not MCPServer
        raise MissingDependencyError("mcp>=2", "server") from exc

    from . import __version__

    server: MCPServer[Any] = MCPServer(
        "memos",
        title="MemOS",
        instructions=_INSTRUCTIONS,
        version=__version__,
        log_level=log_level,
    )
    read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)

    @contextmanager
    def tool_errors() -> Iterator[None]:
        # A ToolError reaches the model with its text and is logged without a traceback; any
        # other exception is a crash the SDK reports as "Error executing tool <name>".
        try:
            yield
        except MemosError as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}") from exc

    def tool(annotations: ToolAnnotations) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            # The docstring is the description the model reads: without the source's indent.
            server.add_tool(fn, description=inspect.cleandoc(fn.__doc__ or ""), annotations=annotations)
            return fn

        return register

    def user(user_id: str | None) -> str:
        # an explicit "" is a mistake to report, not a request for the default user
        uid = default_user if user_id is None else user_id
        if not uid:
            raise ToolError("InvalidInputError: user_id is required (or start the server with --user)")
        return uid

    @tool(writes)
    def add_message(
        content: Annotated[str | None, Field(description="one message's text")] = None,
        role: Annotated[str, Field(description="the role of `content`: user or assistant")] = "user",
        messages: Annotated[
            list[dict[str, Any]] | None,
            Field(
                description="instead of content: OpenAI-style messages "
                "[{'role': 'user', 'content': '...', 'chat_time': '2024-05-01T10:00:00Z'}]"
            ),
        ] = None,
        user_id: _UserId = None,
        conversation_id: Annotated[str | None, Field(description="the conversation it belongs to")] = None,
        tags: _Tags = None,
        info: _Info = None,
        wait: Annotated[
            bool, Field(description="wait for the fine stage (facts, dates) before answering")
        ] = False,
    ) -> dict[str, Any]:
        """Remember a message or a conversation turn. The memories are searchable when this
        returns; answers {task_id, memory_ids, status} (the fine stage runs as task_id)."""
        if (content is None) == (messages is None):
            raise ToolError("InvalidInputError: give exactly one of content or messages")
        msgs = messages if messages is not None else [{"role": role, "content": content}]
        with tool_errors():
            r = mem.add_message(
                msgs,
                user_id=user(user_id),
                conversation_id=conversation_id,
                tags=tags,
                info=info,
                async_mode=not wait,
            )
            return r.data.model_dump(mode="json")

    @tool(read_only)
    def search_memory(
        query: Annotated[str, Field(description="what to look for, in natural language")],
        user_id: _UserId = None,
        top_k: Annotated[int, Field(description="how many memories to return", ge=1)] = 5,
        filter: _Filter = None,
        conversation_id: Annotated[str | None, Field(description="only this conversation")] = None,
        mode: Annotated[
            SearchMode,
            Field(
                description="'hybrid' (default): keywords and meaning, the best recall; 'lexical': "
                "keywords only, faster, for queries that name the exact words to find; 'keyword': "
                "the plain keyword ranking, the fastest"
            ),
        ] = "hybrid",
    ) -> dict[str, Any]:
        """Search the user's memories (keywords and meaning, recency-aware). Answers
        {memory_detail_list: [{id, memory, score, tags, event_time, sources, ...}]}."""
        with tool_errors():
            r = mem.search_memory(
                query,
                user_id=user(user_id),
                conversation_id=conversation_id,
                filter=filter,
                top_k=top_k,
                mode=mode,
            )
            return r.data.model_dump(mode="json")

    @tool(read_only)
    def get_memory(
        memory_id: Annotated[str, Field(description="the id from add_message or search_memory")],
        user_id: _UserId = None,
    ) -> dict[str, Any]:
        """One memory by id, whatever its status (deleted ones too), with its version history."""
        with tool_errors():
            return mem.get_memory(memory_id, user_id=user(user_id)).data.model_dump(mode="json")

    @tool(writes)
    def update_memory(
        memory_id: str,
        memory: Annotated[str | None, Field(description="the new text")] = None,
        tags: _Tags = None,
        info: _Info = None,
        user_id: _UserId = None,
    ) -> dict[str, Any]:
        """Correct a memory's text, tags or info. Its version goes up and the previous version
        stays in its history; answers the updated memory."""
        with tool_errors():
            r = mem.update_memory(memory_id, memory=memory, tags=tags, info=info, user_id=user(user_id))
            return r.data.model_dump(mode="json")

    @tool(ToolAnnotations(destructive_hint=True, open_world_hint=False))
    def delete_memory(
        memory_ids: Annotated[list[str], Field(description="the ids to delete", min_length=1)],
        user_id: _UserId = None,
        hard: Annotated[
            bool, Field(description="erase the rows; by default the ids stay readable as deleted")
        ] = False,
    ) -> dict[str, Any]:
        """Delete memories by id (all or none: an unknown id deletes nothing). Answers {deleted}."""
        with tool_errors():
            return mem.delete_memory(memory_ids, user_id=user(user_id), hard=hard).data

    @tool(read_only)
    def list_memories(
        user_id: _UserId = None,
        filter: _Filter = None,
        conversation_id: Annotated[str | None, Field(description="only this conversation")] = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 20,
        offset: Annotated[int, Field(ge=0, le=2**53)] = 0,
    ) -> dict[str, Any]:
        """A page of the user's memories, newest first. Answers {items, total, next_offset}; pass
        next_offset as offset for the next page (null on the last one)."""
        with tool_errors():
            r = mem.list_memories(
                user(user_id), filter=filter, conversation_id=conversation_id, limit=limit, offset=offset
            )
            return r.data.model_dump(mode="json")

    @tool(read_only)
    def get_task_status(
        task_id: Annotated[str, Field(description="task_id from add_message")],
    ) -> dict[str, Any]:
        """The fine-stage task of an add: status is queued, running, completed or failed."""
        with tool_errors():
            return mem.get_task_status(task_id).data[0].model_dump(mode="json")

    return server
