"""The SQLite side of the chat history: its migrations, how its errors read, and small row helpers."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import HistoryUnavailable

SQLITE_BUSY, SQLITE_LOCKED, SQLITE_CORRUPT, SQLITE_NOTADB = 5, 6, 11, 26

MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("m001_initial", """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            title TEXT,
            model TEXT NOT NULL,
            system_prompt TEXT,
            params TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            tokens INTEGER,
            timings TEXT,
            partial INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL
        );
        CREATE INDEX messages_by_session ON messages(session_id, id);
    """),
)

SELECT_SESSIONS = ("SELECT s.*, (SELECT count(*) FROM messages m WHERE m.session_id = s.id) AS n "
                   "FROM sessions s")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def run_migration(name: str, sql: str, db: sqlite3.Connection) -> None:
    if db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
        return  # another process applied it while this one waited
    for statement in filter(str.strip, sql.split(";")):
        db.execute(statement)
    db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, now()))


def is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)
    return "database is locked" in str(exc) or "database is busy" in str(exc)


def like_prefix(ref: str) -> str:
    return ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def read_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:  # garbage where a page was damaged
        raise sqlite3.DatabaseError("database disk image is malformed (a stored JSON value is unreadable)") from exc


def storage_error(path: Path, exc: BaseException) -> HistoryUnavailable:
    text = str(exc)
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if "readonly" in text or "unable to open" in text or isinstance(exc, PermissionError):
        return HistoryUnavailable(f"cannot write the history database {path}: {text}",
                                  hint="make the data directory writable, or set MISTRALKIT_HOME to a writable folder")
    if text.startswith("Could not decode"):  # sqlite3 quotes the undecodable bytes: never echo them
        text = "a stored text is not valid UTF-8"
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB) or "malformed" in text or "not a database" in text or "UTF-8" in text:
        return HistoryUnavailable(f"the history database {path} is damaged: {text}",
                                  hint="move it aside (mistralkit never deletes it) and start again")
    return HistoryUnavailable(f"history database error ({path}): {text}")
