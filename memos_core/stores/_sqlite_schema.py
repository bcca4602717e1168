"""Table layout of the embedded SQLite store, and item <-> row conversion.

Kept apart from the store so the filter compiler's tests can build the same table.
Times are stored in :func:`memos_core.schema.format_time` form (fixed-width UTC ISO-8601),
so text comparison is time comparison. ``tags``/``keywords`` are JSON arrays of strings,
``info`` a JSON object, ``sources``/``history`` JSON arrays of objects.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from ..schema import MemoryItem, format_time, parse_time

SCHEMA_VERSION = 3

ITEM_COLUMNS = (
    "id",
    "cube_id",
    "user_id",
    "agent_id",
    "conversation_id",
    "app_id",
    "memory",
    "key",
    "memory_type",
    "status",
    "version",
    "mode",
    "tags",
    "info",
    "keywords",
    "sources",
    "history",
    "merged_into",
    "created_at",
    "updated_at",
    "event_time",
    "access_count",
    "last_accessed_at",
    "confidence",
    "embedding_model",
    "revision",
    "context",
)

ITEMS_DDL = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    cube_id TEXT NOT NULL,
    user_id TEXT,
    agent_id TEXT,
    conversation_id TEXT,
    app_id TEXT,
    memory TEXT NOT NULL,
    key TEXT,
    memory_type TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    mode TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    info TEXT NOT NULL DEFAULT '{}',
    keywords TEXT NOT NULL DEFAULT '[]',
    sources TEXT NOT NULL DEFAULT '[]',
    history TEXT NOT NULL DEFAULT '[]',
    merged_into TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    event_time TEXT,
    access_count INTEGER NOT NULL DEFAULT 0,
    last_accessed_at TEXT,
    confidence REAL NOT NULL DEFAULT 1.0,
    embedding_model TEXT,
    revision INTEGER NOT NULL DEFAULT 1,
    embedding BLOB,
    context TEXT
);
CREATE INDEX IF NOT EXISTS items_cube ON items(cube_id, status);
CREATE INDEX IF NOT EXISTS items_cube_conv ON items(cube_id, conversation_id);
CREATE INDEX IF NOT EXISTS items_cube_created ON items(cube_id, created_at);
"""

_JSON_COLUMNS = ("tags", "info", "keywords", "sources", "history", "context")

#: The full-text index: an item's search text, and its cube as one word (:func:`cube_token`),
#: so that FTS5 can be asked for one cube's matches instead of every cube's.
FTS_DDL = """
CREATE VIRTUAL TABLE IF NOT EXISTS items_fts USING fts5(
    text, cube, tokenize = 'porter unicode61 remove_diacritics 2'
)
"""


def cube_token(cube_id: str) -> str:
    """The word that stands for ``cube_id`` in the FTS table's ``cube`` column: ``k`` and the
    decimal digits of a 64-bit hash, which neither the tokenizer nor the stemmer changes. Two
    cubes could share one (a hash), so searches still check ``items.cube_id``."""
    digest = hashlib.blake2b(cube_id.encode("utf-8"), digest_size=8).digest()
    return f"k{int.from_bytes(digest, 'big')}"


#: What changed after version 1, as SQL run in order by ``setup()`` on older files (in the
#: transaction that opens them). Version 3 rebuilds the FTS table with its ``cube`` column
#: from its own text (``memos_cube_token`` is :func:`cube_token`, registered on every
#: connection), once: 1.3 s for 200,000 one-line memories on the development machine.
MIGRATIONS = {
    2: ["ALTER TABLE items ADD COLUMN context TEXT"],
    3: [
        "ALTER TABLE items_fts RENAME TO items_fts_v2",
        FTS_DDL,
        "INSERT INTO items_fts(rowid, text, cube) SELECT f.rowid, f.text, memos_cube_token(items.cube_id) "
        "FROM items_fts_v2 AS f JOIN items ON items.seq = f.rowid",
        "DROP TABLE items_fts_v2",
    ],
}
_TIME_COLUMNS = ("created_at", "updated_at", "event_time", "last_accessed_at")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def item_to_row(item: MemoryItem, embedding: np.ndarray | None = None) -> dict[str, Any]:
    """The column values of ``item`` (plus its embedding as a float32 blob)."""
    data = item.model_dump(mode="json")
    row: dict[str, Any] = {}
    for col in ITEM_COLUMNS:
        value = data[col]
        if col in _JSON_COLUMNS:
            value = _json(value)
        elif col in _TIME_COLUMNS and value is not None:
            value = format_time(parse_time(value))
        row[col] = value
    row["embedding"] = None if embedding is None else np.asarray(embedding, dtype=np.float32).tobytes()
    return row


def row_to_item(row: Any) -> MemoryItem:
    """Build an item from a row that has (at least) :data:`ITEM_COLUMNS` by name."""
    data = {col: row[col] for col in ITEM_COLUMNS}
    for col in _JSON_COLUMNS:
        data[col] = None if data[col] is None else json.loads(data[col])
    return MemoryItem.model_validate(data)
