"""Writes the history database could not take in time, kept in a JSON-lines file beside it.

Appending needs no database lock: one line per write, flushed and fsynced under an ``flock`` on the
file. A replay (which holds the database's write lock first) reads and later truncates the file under
the same ``flock``, so a line appended meanwhile waits for the truncation and is never lost. The file
is truncated, never deleted: a writer may already hold it open.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO


class Journal:
    """``history.pending.jsonl``; entries it could not apply go to ``history.rejected.jsonl``."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.stem + ".pending.jsonl")
        self.rejected = db_path.with_name(db_path.stem + ".rejected.jsonl")

    def __bool__(self) -> bool:
        """True when there may be pending writes (a cheap stat, no lock)."""
        try:
            return self.path.stat().st_size > 0
        except OSError:
            return False

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry) + "\n"  # ASCII only: a lone surrogate cannot break the file
        with open(self.path, "a", encoding="ascii") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            file.write(line)
            file.flush()
            os.fsync(file.fileno())

    def peek(self) -> list[dict[str, Any]]:
        """The pending entries as they are now (no lock: a line still being written is skipped)."""
        if not self:
            return []
        try:
            text = self.path.read_text(encoding="ascii", errors="replace")
        except OSError:
            return []
        return _parse(text)[0]

    @contextmanager
    def taken(self) -> Iterator[list[dict[str, Any]]]:
        """Yield the pending entries under the lock; truncate the file if the block succeeds.

        The caller commits the entries inside the block: a failure leaves the file as it was.
        """
        if not self:
            yield []
            return
        try:
            file = open(self.path, "r+", encoding="ascii", errors="replace")
        except FileNotFoundError:
            yield []
            return
        with file:
            fcntl.flock(file, fcntl.LOCK_EX)
            entries, torn = _parse(file.read())
            yield entries
            for line in torn:
                self.reject({"line": line}, "not a complete JSON line")
            _truncate(file)

    def reject(self, entry: dict[str, Any], reason: str) -> None:
        """Keep an entry that cannot be applied (its session was deleted, say) for a person to read."""
        with open(self.rejected, "a", encoding="ascii") as file:
            file.write(json.dumps({"reason": reason, "entry": entry}) + "\n")
            file.flush()
            os.fsync(file.fileno())


def _parse(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    entries, torn = [], []
    for line in text.splitlines(keepends=True):
        if not line.strip():
            continue
        try:
            entry = json.loads(line) if line.endswith("\n") else None
        except ValueError:
            entry = None
        if isinstance(entry, dict) and {"id", "op", "at", "data"} <= entry.keys() and isinstance(entry["data"], dict):
            entries.append(entry)
        else:
            torn.append(line.rstrip("\n"))
    return entries, torn


def _truncate(file: TextIO) -> None:
    file.seek(0)
    file.truncate()
    file.flush()
    os.fsync(file.fileno())
