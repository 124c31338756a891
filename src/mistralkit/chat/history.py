"""Chat history in SQLite (WAL), with named, append-only migrations.

Each finished turn (the user's message and the answer) is written in one transaction, so a crash
loses at most the turn in progress. An answer stopped with Ctrl-C is saved with ``partial = 1``.

A busy database (another program holds a write transaction) is retried with growing pauses for
``MISTRALKIT_HISTORY_WAIT`` seconds (default 10). A write that still cannot get in is not dropped: it
is kept in ``history.pending.jsonl`` beside the database (see ``journal.py``), and the next write,
open, read or close that finds the database free lands it, in order, in the same transaction as its
own write. Replay is idempotent: a session is created with its client-made id (``INSERT OR IGNORE``),
an update sets values, and a turn whose first message (session, role, time, text) is already there is
skipped, so a crash between commit and truncation duplicates nothing. Reads show pending writes as if
they had landed. Every public method turns ``sqlite3`` errors into ``StorageError``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from .. import paths
from ..errors import HistoryBusy, HistoryUnavailable, InvalidParameter, SessionNotFound, StorageError
from .history_db import (MIGRATIONS, SELECT_SESSIONS, is_busy, like_prefix, now, read_json, run_migration,
                         storage_error)
from .journal import Journal
from .writes import SESSION_FIELDS, apply, turn_landed

log = logging.getLogger(__name__)
SESSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a session id a user chose
T = TypeVar("T")

WAIT_ENV = "MISTRALKIT_HISTORY_WAIT"
DEFAULT_WAIT_S = 10.0
MAX_WAIT_S = 3600.0
class Saved(StrEnum):
    """Where a write went: into the database, or into the journal until the database is free."""

    SAVED = "saved"
    PENDING = "pending"


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
    created_at: str = field(default_factory=now)
    id: int | None = None


def history_wait(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds a write waits for a busy database: ``MISTRALKIT_HISTORY_WAIT``, default 10."""
    raw = environ.get(WAIT_ENV, "").strip()
    if not raw:
        return DEFAULT_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_WAIT_S:
        raise InvalidParameter(f"environment {WAIT_ENV} must be a number of seconds from 0 to {MAX_WAIT_S:g}, "
                               f"not {raw!r}")
    return value


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """At the public boundary, sqlite3 errors (damage, I/O, a lock held too long) become StorageError."""

    @functools.wraps(method)
    def guarded(self: Store, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    return guarded


class Store:
    """The history database. Open one per process; it is cheap.

    ``wait``: seconds a write waits for a busy database before it is journalled (default
    ``history_wait()``). ``last_write`` says where the latest write went.
    """

    def __init__(self, path: Path | None = None, wait: float | None = None) -> None:
        self.path = path or paths.history_db()
        self.wait = history_wait() if wait is None else wait
        self.journal = Journal(self.path)
        self.last_write = Saved.SAVED
        self._busy_until = 0.0  # after a write was journalled: the others of that moment do not wait again
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=self.wait, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from exc
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            self._db.close()
            raise self._error(exc) from exc
        except StorageError:
            self._db.close()
            raise
        self._replay_now()

    @property
    def retry_after(self) -> int:
        """Seconds after which a caller turned away as busy may try again."""
        return max(1, math.ceil(self.wait))

    def close(self) -> None:
        """Land pending writes if the database is free right now, then close."""
        self._replay_now()
        self._db.close()

    # Writing: one transaction, pending writes first, retried while busy
    def _begin(self, wait: float) -> None:
        """BEGIN IMMEDIATE, tried again after growing pauses for ``wait`` s while another program writes."""
        deadline = time.monotonic() + wait
        pause = 0.01
        while True:
            try:
                self._busy_timeout(min(pause, max(0.0, deadline - time.monotonic())))
                self._db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
            finally:
                self._busy_timeout(self.wait)
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())) * random.uniform(0.5, 1.0))
            pause = min(pause * 2, 0.5)

    def _busy_timeout(self, seconds: float) -> None:
        self._db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def _locked(self, body: Callable[[sqlite3.Connection], T], wait: float, replay: bool = True) -> T:
        """``body`` in one write transaction, after the journal's pending writes; busy → HistoryBusy."""
        try:
            self._begin(wait)
            with self.journal.taken() if replay else nullcontext([]) as entries:
                rejected = self._replay(entries)
                result = body(self._db)
                self._db.execute("COMMIT")
                for entry, reason in rejected:
                    self.journal.reject(entry, reason)
        except BaseException as exc:
            if self._db.in_transaction:
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise self._error(exc) from exc
            raise
        return result

    def _replay(self, entries: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
        """Apply pending writes, each all or nothing; return those that can never apply, with why."""
        rejected = []
        for entry in entries:
            self._db.execute("SAVEPOINT pending")
            try:
                apply(self._db, entry, replay=True)
            except (sqlite3.IntegrityError, KeyError, TypeError, ValueError) as exc:
                self._db.execute("ROLLBACK TO pending")
                rejected.append((entry, f"{type(exc).__name__}: {exc}"))
                log.warning("a pending history write cannot be applied (%s); kept in %s", exc, self.journal.rejected)
            self._db.execute("RELEASE pending")
        if entries:
            log.info("saved %d pending history write(s) from %s", len(entries) - len(rejected), self.journal.path)
        return rejected

    def _replay_now(self) -> None:
        """Land pending writes if the database is free this instant; never waits, never raises."""
        if not self.journal:
            return
        try:
            self._locked(lambda db: None, wait=0)
        except StorageError as exc:
            log.debug("pending history writes stay in %s: %s", self.journal.path, exc.message)

    def _write(self, op: str, data: dict[str, Any]) -> Saved:
        entry = {"id": uuid.uuid4().hex, "op": op, "at": now(), "data": data}
        wait = 0.0 if time.monotonic() < self._busy_until else self.wait
        try:
            self._locked(lambda db: apply(db, entry, replay=False), wait)
            self.last_write = Saved.SAVED
        except HistoryBusy:
            self._keep(entry)
            self.last_write = Saved.PENDING
            self._busy_until = time.monotonic() + self.wait
        return self.last_write

    def _keep(self, entry: dict[str, Any]) -> None:
        try:
            self.journal.append(entry)
        except OSError as exc:
            raise HistoryUnavailable(f"the history database {self.path} is busy, and {self.journal.path} "
                                     f"cannot be written: {exc.strerror}",
                                     hint="make the data directory writable, then try again") from exc
        log.info("history database %s busy: %s kept in %s", self.path, entry["op"], self.journal.path)

    @_guarded
    def require_writable(self) -> None:
        """Return once the database takes writes (pending ones land); HistoryBusy after ``wait`` s."""
        self._locked(lambda db: None, self.wait)

    def _migrate(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        done = {row[0] for row in self._db.execute("SELECT name FROM _migrations")}
        for name, sql in MIGRATIONS:
            if name not in done:
                self._locked(functools.partial(run_migration, name, sql), self.wait, replay=False)

    @_guarded
    def migrations(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM _migrations ORDER BY name")]

    # Pending writes, as reads see them
    def _pending(self) -> list[dict[str, Any]]:
        self._replay_now()
        return self.journal.peek()

    def _landed(self, entry: dict[str, Any]) -> bool:
        """A pending turn already in the database (the journal outlived a crash after commit)."""
        return turn_landed(self._db, entry["data"]["session_id"], entry["data"]["messages"])

    def _with_pending(self, session: Session, pending: list[dict[str, Any]]) -> Session:
        for entry in pending:
            data = entry["data"]
            if data.get("session_id") != session.id:
                continue
            if entry["op"] == "update_session":
                changes = {k: v for k, v in data["changes"].items() if k in SESSION_FIELDS}
                session = replace(session, **changes, updated_at=entry["at"])
            elif entry["op"] == "add_messages" and not self._landed(entry):
                session = replace(session, message_count=session.message_count + len(data["messages"]),
                                  updated_at=entry["at"])
        return session

    # Sessions
    @_guarded
    def create_session(self, model: str, system_prompt: str | None = None,
                       params: dict[str, Any] | None = None, title: str | None = None,
                       session_id: str | None = None) -> Session:
        """A new session, under ``session_id`` when given (a name: ``SESSION_NAME``); while the database is
        busy it is journalled (``last_write`` is PENDING)."""
        if session_id is None:
            session_id = uuid.uuid4().hex[:12]
        elif not SESSION_NAME.fullmatch(session_id):
            raise InvalidParameter(f"session name {session_id!r}: use letters, digits, '.', '_' and '-' (up to 64)")
        self._write("create_session", {"session_id": session_id, "title": title, "model": model,
                                       "system_prompt": system_prompt, "params": params or {}})
        return self.get_session(session_id, exact=True)

    @_guarded
    def update_session(self, session_id: str, **changes: Any) -> Session:
        assert set(changes) <= SESSION_FIELDS, f"unknown session fields: {set(changes) - SESSION_FIELDS}"
        self._write("update_session", {"session_id": session_id, "changes": changes})
        return self.get_session(session_id, exact=True)

    @_guarded
    def get_session(self, ref: str, exact: bool = False) -> Session:
        """A session by id; with ``exact=False`` (a CLI convenience) also by unambiguous id prefix."""
        pending = self._pending()
        where, args = (
            ("s.id = ?", (ref,)) if exact else ("s.id = ? OR s.id LIKE ? ESCAPE '\\'", (ref, like_prefix(ref)))
        )
        rows = self._db.execute(f"{SELECT_SESSIONS} WHERE {where} ORDER BY s.id = ? DESC LIMIT 2",
                                (*args, ref)).fetchall()
        found = {row["id"]: _session(row) for row in rows}
        for entry in pending:
            sid = entry["data"].get("session_id", "")
            if (
                entry["op"] == "create_session"
                and sid not in found
                and (sid == ref or not exact and sid.startswith(ref))
            ):
                found[sid] = _pending_session(entry)
        if not found or not ref:
            raise SessionNotFound(f"no session with id {ref!r}", hint="list them with `mistralkit sessions list`")
        if ref not in found and len(found) > 1:
            raise SessionNotFound(f"session id {ref!r} is ambiguous", hint="type more of the id")
        return self._with_pending(found.get(ref) or next(iter(found.values())), pending)

    @_guarded
    def list_sessions(self, limit: int = 50) -> list[Session]:
        pending = self._pending()
        rows = self._db.execute(f"{SELECT_SESSIONS} ORDER BY s.updated_at DESC LIMIT ?", (limit,)).fetchall()
        sessions = {row["id"]: _session(row) for row in rows}
        if not pending:
            return list(sessions.values())
        for entry in pending:
            sid = entry["data"].get("session_id", "")
            if sid in sessions:
                continue
            row = self._db.execute(f"{SELECT_SESSIONS} WHERE s.id = ?", (sid,)).fetchone()
            if row is not None:
                sessions[sid] = _session(row)
            elif entry["op"] == "create_session":
                sessions[sid] = _pending_session(entry)
        merged = [self._with_pending(s, pending) for s in sessions.values()]
        return sorted(merged, key=lambda s: s.updated_at, reverse=True)[:limit]

    @_guarded
    def delete_session(self, ref: str, exact: bool = False) -> Session:
        """Delete a session and its messages; while the database is busy this is HistoryBusy (not journalled)."""
        session = self.get_session(ref, exact)
        self._locked(lambda db: db.execute("DELETE FROM sessions WHERE id = ?", (session.id,)), self.wait)
        return session

    # Messages
    @_guarded
    def add_messages(self, session_id: str, messages: list[StoredMessage]) -> Saved:
        """Append messages in one transaction (a whole turn is saved or nothing is).

        Returns ``Saved.PENDING`` when the database stayed busy and the turn was journalled instead.
        """
        rows = [{k: v for k, v in asdict(m).items() if k != "id"} for m in messages]
        return self._write("add_messages", {"session_id": session_id, "messages": rows})

    @_guarded
    def messages(self, session_id: str) -> list[StoredMessage]:
        pending = self._pending()
        rows = self._db.execute("SELECT * FROM messages WHERE session_id = ? ORDER BY id", (session_id,))
        stored = [
            StoredMessage(row["role"], row["content"], row["tokens"],
                          read_json(row["timings"]) if row["timings"] else None, bool(row["partial"]),
                          row["created_at"], row["id"])
            for row in rows
        ]
        for entry in pending:
            if entry["op"] == "add_messages" and entry["data"]["session_id"] == session_id and not self._landed(entry):
                stored += [StoredMessage(**m) for m in entry["data"]["messages"]]
        return stored

    def _error(self, exc: BaseException) -> StorageError:
        if isinstance(exc, sqlite3.Error) and is_busy(exc):
            return HistoryBusy(f"the history database {self.path} is busy: another program is writing to it",
                               hint=f"retry in {self.retry_after} s", retry_after=self.retry_after)
        return storage_error(self.path, exc)


def _session(row: sqlite3.Row) -> Session:
    return Session(row["id"], row["title"], row["model"], row["system_prompt"], read_json(row["params"]),
                   row["created_at"], row["updated_at"], row["n"])


def _pending_session(entry: dict[str, Any]) -> Session:
    data = entry["data"]
    return Session(data["session_id"], data["title"], data["model"], data["system_prompt"], data["params"],
                   entry["at"], entry["at"])
