"""Chat history in SQLite (WAL), with named, append-only migrations.

Each finished turn (the user's message and the answer) is written in one transaction, so a crash
loses at most the turn in progress. An answer stopped with Ctrl-C is saved with ``partial = 1``.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import SessionNotFound, StorageError

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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Session:
    id: str
    title: str | None
    model: str
    system_prompt: str | None
    params: dict[str, Any]
    created_at: str
    updated_at: str
    message_count: int = 0


@dataclass
class StoredMessage:
    role: str
    content: str
    tokens: int | None = None
    timings: dict[str, Any] | None = None
    partial: bool = False
    created_at: str = field(default_factory=_now)
    id: int | None = None


class Store:
    """The history database. Open one per process; it is cheap."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.history_db()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise _storage_error(self.path, exc) from exc

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _storage_error(self.path, exc) from exc

    def _migrate(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        done = {row[0] for row in self._db.execute("SELECT name FROM _migrations")}
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            with self._transaction() as db:
                for statement in filter(str.strip, sql.split(";")):
                    db.execute(statement)
                db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, _now()))

    def migrations(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM _migrations ORDER BY name")]

    # Sessions
    def create_session(self, model: str, system_prompt: str | None = None,
                       params: dict[str, Any] | None = None, title: str | None = None) -> Session:
        now = _now()
        session_id = uuid.uuid4().hex[:12]
        with self._transaction() as db:
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (session_id, title, model, system_prompt, json.dumps(params or {}), now, now))
        return self.get_session(session_id)

    def update_session(self, session_id: str, **changes: Any) -> Session:
        allowed = {"title", "model", "system_prompt", "params"}
        assert set(changes) <= allowed, f"unknown session fields: {set(changes) - allowed}"
        if "params" in changes:
            changes["params"] = json.dumps(changes["params"])
        assignments = ", ".join(f"{key} = ?" for key in changes)
        with self._transaction() as db:
            db.execute(f"UPDATE sessions SET {assignments}, updated_at = ? WHERE id = ?",
                       (*changes.values(), _now(), session_id))
        return self.get_session(session_id)

    def get_session(self, ref: str) -> Session:
        """A session by id or unambiguous id prefix."""
        rows = self._db.execute(
            "SELECT s.*, (SELECT count(*) FROM messages m WHERE m.session_id = s.id) AS n "
            "FROM sessions s WHERE s.id = ? OR s.id LIKE ? ESCAPE '\\' ORDER BY s.id = ? DESC LIMIT 2",
            (ref, _like_prefix(ref), ref),
        ).fetchall()
        if not rows or not ref:
            raise SessionNotFound(f"no session with id {ref!r}", hint="list them with `mistralkit sessions list`")
        if len(rows) > 1 and rows[0]["id"] != ref:
            raise SessionNotFound(f"session id {ref!r} is ambiguous", hint="type more of the id")
        return _session(rows[0])

    def list_sessions(self, limit: int = 50) -> list[Session]:
        rows = self._db.execute(
            "SELECT s.*, (SELECT count(*) FROM messages m WHERE m.session_id = s.id) AS n "
            "FROM sessions s ORDER BY s.updated_at DESC LIMIT ?", (limit,))
        return [_session(row) for row in rows]

    def delete_session(self, ref: str) -> Session:
        session = self.get_session(ref)
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE id = ?", (session.id,))
        return session

    # Messages
    def add_messages(self, session_id: str, messages: list[StoredMessage]) -> None:
        """Append messages in one transaction (a whole turn is saved or nothing is)."""
        with self._transaction() as db:
            for m in messages:
                db.execute(
                    "INSERT INTO messages (session_id, role, content, tokens, timings, partial, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (session_id, m.role, m.content, m.tokens, json.dumps(m.timings) if m.timings else None,
                     int(m.partial), m.created_at),
                )
            db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (_now(), session_id))

    def messages(self, session_id: str) -> list[StoredMessage]:
        rows = self._db.execute("SELECT * FROM messages WHERE session_id = ? ORDER BY id", (session_id,))
        return [
            StoredMessage(row["role"], row["content"], row["tokens"],
                          json.loads(row["timings"]) if row["timings"] else None, bool(row["partial"]),
                          row["created_at"], row["id"])
            for row in rows
        ]


def _like_prefix(ref: str) -> str:
    return ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _session(row: sqlite3.Row) -> Session:
    return Session(row["id"], row["title"], row["model"], row["system_prompt"], json.loads(row["params"]),
                   row["created_at"], row["updated_at"], row["n"])


def _storage_error(path: Path, exc: Exception) -> StorageError:
    text = str(exc)
    if "readonly" in text or "unable to open" in text or isinstance(exc, PermissionError):
        return StorageError(f"cannot write the history database {path}: {text}",
                            hint="make the data directory writable, or set MISTRALKIT_HOME to a writable folder")
    if "malformed" in text or "not a database" in text:
        return StorageError(f"the history database {path} is damaged: {text}",
                            hint="move it aside (mistralkit never deletes it) and start again")
    return StorageError(f"history database error ({path}): {text}")
