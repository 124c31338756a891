"""A collection in one SQLite file: chunks, FTS5 (BM25) over them, and sqlite-vec for their vectors.

Every write is one transaction, so a process killed mid-batch leaves the file as it was before the
batch. The stdlib ``sqlite3`` is used when it can load extensions; Python builds that cannot
(pyenv's, macOS's) use ``sqlean`` (sqlean.py), the same API with extension loading on.
"""

from __future__ import annotations

import json
import re
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import MissingDependency, StorageError
from .extract import DOCS_EXTRA
from .store import FileRecord, IndexedFile, StoredChunk

SCHEMA_VERSION = "1"
WORD = re.compile(r"\w+", re.UNICODE)
# Words too common to help BM25 (and that make an OR query match every chunk), English and French.
STOPWORDS = frozenset("""a an and are as at be by do does for from has have how i in is it its of on or that the
this to was were what when where which who why will with you your au aux avec ce ces cette dans de des du elle en est
et il ils je la le les leur mais ne on ou où par pas pour qu que qui quoi quel quelle quels quelles sa se ses son
sont sur ta te tu un une vos vous y""".split())  # noqa: SIM905

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, mtime REAL NOT NULL,
    format TEXT NOT NULL, pages INTEGER, chunks INTEGER NOT NULL, indexed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL REFERENCES files(path), ordinal INTEGER NOT NULL,
    text TEXT NOT NULL, heading TEXT NOT NULL, page INTEGER, line_start INTEGER, line_end INTEGER,
    char_start INTEGER NOT NULL, char_end INTEGER NOT NULL, UNIQUE (path, ordinal));
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(indexed, tokenize = 'unicode61 remove_diacritics 2');
"""


def _sqlite_module():
    import sqlite3

    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3
    try:
        import sqlean
    except ImportError as exc:
        raise MissingDependency("this Python's sqlite3 cannot load extensions (sqlite-vec), and sqlean.py is not "
                                "installed", hint=DOCS_EXTRA) from exc
    return sqlean


def connect(path: Path):
    """A connection with sqlite-vec loaded, WAL on, waiting up to 30 s for another writer."""
    try:
        import sqlite_vec
    except ImportError as exc:
        raise MissingDependency("document collections need sqlite-vec, which is not installed",
                                hint=DOCS_EXTRA) from exc
    module = _sqlite_module()
    conn = module.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.enable_load_extension(False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def pack(vector: Sequence[float]) -> bytes:
    return struct.pack(f"{len(vector)}f", *vector)


MAX_QUERY_WORDS = 64  # a pasted page as a question: FTS5 gets its first 64 distinct words, not thousands


def match_expression(query: str) -> str | None:
    """An FTS5 query from free text: each word quoted (no operator reaches FTS5), any of them matching."""
    words = [w for w in (m.group(0).lower() for m in WORD.finditer(query)) if w not in STOPWORDS]
    words = list(dict.fromkeys(w for w in words if len(w) > 1 or w.isdigit()))[:MAX_QUERY_WORDS]
    return " OR ".join(f'"{w}"' for w in words) or None


class SqliteStore:
    """``ChunkStore`` in one SQLite file (see ``store.py``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path)
        self._lock = threading.RLock()  # the server shares one store between request threads
        try:
            with self._lock:
                self._conn.executescript(SCHEMA)
                self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        except Exception as exc:
            self._conn.close()
            raise StorageError(f"{path} is not a mistralkit collection ({exc})",
                               hint="remove it with mistralkit docs rm, or restore it") from exc

    # -- reading ---------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        with self._lock:
            return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def files(self) -> list[FileRecord]:
        with self._lock:
            rows = self._conn.execute("SELECT path, sha256, size, mtime, format, pages, chunks FROM files "
                                      "ORDER BY path").fetchall()
        return [FileRecord(*row) for row in rows]

    def keyword(self, query: str, k: int) -> list[int]:
        expression = match_expression(query)
        if expression is None:
            return []
        with self._lock:
            rows = self._conn.execute("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?",
                                      (expression, k)).fetchall()
        return [row[0] for row in rows]

    def nearest(self, vector: Sequence[float], k: int) -> list[int]:
        if not self._has_vectors():
            return []
        with self._lock:
            rows = self._conn.execute("SELECT rowid FROM vectors WHERE embedding MATCH ? AND k = ? ORDER BY distance",
                                      (pack(vector), k)).fetchall()
        return [row[0] for row in rows]

    def chunks(self, ids: Sequence[int]) -> list[StoredChunk]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, path, ordinal, text, heading, page, line_start, line_end, char_start, char_end "
                f"FROM chunks WHERE id IN ({marks})", list(ids)).fetchall()
        by_id = {row[0]: StoredChunk(row[0], row[1], row[2], row[3], row[4], row[5],
                                     (row[6], row[7]) if row[6] is not None else None, row[8], row[9])
                 for row in rows}
        return [by_id[i] for i in ids if i in by_id]

    def all_chunk_texts(self) -> list[tuple[int, str]]:
        with self._lock:
            return self._conn.execute("SELECT rowid, indexed FROM chunks_fts ORDER BY rowid").fetchall()

    def counts(self) -> dict[str, int]:
        with self._lock:
            one = self._conn.execute
            return {"files": one("SELECT count(*) FROM files").fetchone()[0],
                    "chunks": one("SELECT count(*) FROM chunks").fetchone()[0],
                    "keyword_rows": one("SELECT count(*) FROM chunks_fts").fetchone()[0],
                    "vectors": one("SELECT count(*) FROM vectors").fetchone()[0] if self._has_vectors() else 0}

    def _has_vectors(self) -> bool:
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'vectors'").fetchone() is not None

    # -- writing ---------------------------------------------------------------------------------

    def set_meta(self, values: dict[str, str]) -> None:
        with self._lock, self._transaction():
            self._conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    def write(self, indexed: Sequence[IndexedFile], removed: Sequence[str] = ()) -> None:
        with self._lock, self._transaction():
            for path in [*removed, *(item.record.path for item in indexed)]:
                self._drop(path)
            for item in indexed:
                self._insert(item)

    def replace_vectors(self, dimensions: int, vectors: Sequence[tuple[int, Sequence[float]]],
                        meta: dict[str, str]) -> None:
        with self._lock, self._transaction():
            self._conn.execute("DROP TABLE IF EXISTS vectors")
            self._create_vectors(dimensions)
            self._conn.executemany("INSERT INTO vectors(rowid, embedding) VALUES (?, ?)",
                                   [(i, pack(v)) for i, v in vectors])
            self._conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(meta.items()))

    def _create_vectors(self, dimensions: int) -> None:
        self._conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS vectors USING vec0("
                           f"embedding float[{int(dimensions)}] distance_metric=cosine)")

    def _drop(self, path: str) -> None:
        ids = [row[0] for row in self._conn.execute("SELECT id FROM chunks WHERE path = ?", (path,))]
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            self._conn.execute(f"DELETE FROM chunks_fts WHERE rowid IN ({marks})", part)
            if self._has_vectors():
                self._conn.execute(f"DELETE FROM vectors WHERE rowid IN ({marks})", part)
        self._conn.execute("DELETE FROM chunks WHERE path = ?", (path,))
        self._conn.execute("DELETE FROM files WHERE path = ?", (path,))

    def _insert(self, item: IndexedFile) -> None:
        record = item.record
        self._conn.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (record.path, record.sha256, record.size, record.mtime, record.format, record.pages,
                            len(item.chunks), time.time()))
        if item.vectors:
            self._create_vectors(len(item.vectors[0]))
        for chunk, vector in zip(item.chunks, item.vectors, strict=True):
            lines = chunk.lines or (None, None)
            cursor = self._conn.execute(
                "INSERT INTO chunks (path, ordinal, text, heading, page, line_start, line_end, char_start, char_end) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.path, chunk.ordinal, chunk.text, chunk.heading, chunk.page, *lines, chunk.start, chunk.end))
            rowid = cursor.lastrowid
            self._conn.execute("INSERT INTO chunks_fts(rowid, indexed) VALUES (?, ?)", (rowid, chunk.indexed))
            self._conn.execute("INSERT INTO vectors(rowid, embedding) VALUES (?, ?)", (rowid, pack(vector)))

    def _transaction(self):
        return _Transaction(self._conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (the connection is in autocommit mode)."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, traceback) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


def roots_of(meta: dict[str, str]) -> list[str]:
    return json.loads(meta.get("roots", "[]"))
