"""The history's writes as data: one function per operation, run directly or replayed from the journal.

An entry is ``{"id", "op", "at", "data"}``; ``replay=True`` makes each one safe to run twice (the
journal may outlive a crash between the commit and its truncation).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

SESSION_FIELDS = frozenset({"title", "model", "system_prompt", "params"})


def _create(db: sqlite3.Connection, data: dict[str, Any], at: str, replay: bool) -> None:
    verb = "INSERT OR IGNORE" if replay else "INSERT"  # replayed: it may have landed before a crash
    db.execute(f"{verb} INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
               (data["session_id"], data["title"], data["model"], data["system_prompt"],
                json.dumps(data["params"]), at, at))


def _update(db: sqlite3.Connection, data: dict[str, Any], at: str, replay: bool) -> None:
    changes = {k: json.dumps(v) if k == "params" else v for k, v in data["changes"].items() if k in SESSION_FIELDS}
    assignments = "".join(f"{key} = ?, " for key in changes)
    db.execute(f"UPDATE sessions SET {assignments}updated_at = ? WHERE id = ?",
               (*changes.values(), at, data["session_id"]))


def _add(db: sqlite3.Connection, data: dict[str, Any], at: str, replay: bool) -> None:
    session_id, messages = data["session_id"], data["messages"]
    if replay and turn_landed(db, session_id, messages):
        return
    for m in messages:
        db.execute(
            "INSERT INTO messages (session_id, role, content, tokens, timings, partial, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (session_id, m["role"], m["content"], m["tokens"], json.dumps(m["timings"]) if m["timings"] else None,
             int(m["partial"]), m["created_at"]),
        )
    db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (at, session_id))


WRITES: dict[str, Callable[[sqlite3.Connection, dict[str, Any], str, bool], None]] = {
    "create_session": _create, "update_session": _update, "add_messages": _add,
}


def apply(db: sqlite3.Connection, entry: dict[str, Any], replay: bool) -> None:
    if entry["op"] not in WRITES:
        raise ValueError(f"unknown pending write {entry['op']!r}")
    WRITES[entry["op"]](db, entry["data"], entry["at"], replay)


def turn_landed(db: sqlite3.Connection, session_id: str, messages: list[dict[str, Any]]) -> bool:
    if not messages:
        return False
    first = messages[0]
    return (
        db.execute(
            "SELECT 1 FROM messages WHERE session_id = ? AND created_at = ? AND role = ? AND content = ? LIMIT 1",
            (session_id, first["created_at"], first["role"], first["content"]),
        ).fetchone()
        is not None
    )
