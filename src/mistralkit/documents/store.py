"""The seam between collections and where their chunks live.

``ChunkStore`` is what a collection needs of a store: files with their hashes, chunks with their
places, keyword search, nearest vectors, and atomic writes of a batch of files. ``SqliteStore``
(``sqlite_store.py``: one SQLite file with FTS5 and sqlite-vec) is the one implementation today and
holds a collection up to a few hundred thousand chunks (see docs/documents.md for where queries slow
down). A server-grade store (pgvector, Qdrant) is another class with these methods, added to ``STORES``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .chunking import Chunk


@dataclass(frozen=True)
class FileRecord:
    """A file as indexed: where it is, what its bytes hashed to, how it was read."""

    path: str
    sha256: str
    size: int
    mtime: float
    format: str
    pages: int | None = None
    chunks: int = 0


@dataclass(frozen=True)
class StoredChunk:
    id: int
    path: str
    ordinal: int
    text: str
    heading: str
    page: int | None
    lines: tuple[int, int] | None
    start: int
    end: int

    @property
    def place(self) -> str:
        """Where the chunk is, for people: ``page 3``, ``lines 12-20`` or ``characters 100-900``."""
        if self.page is not None:
            return f"page {self.page}"
        if self.lines is not None:
            a, b = self.lines
            return f"line {a}" if a == b else f"lines {a}-{b}"
        return f"characters {self.start}-{self.end}"


@dataclass(frozen=True)
class IndexedFile:
    """A file ready to be written: its record, its chunks and one vector per chunk."""

    record: FileRecord
    chunks: Sequence[Chunk]
    vectors: Sequence[Sequence[float]]


class ChunkStore(Protocol):
    def meta(self) -> dict[str, str]: ...

    def set_meta(self, values: dict[str, str]) -> None: ...

    def files(self) -> list[FileRecord]: ...

    def write(self, indexed: Sequence[IndexedFile], removed: Sequence[str] = ()) -> None:
        """Replace each file's chunks and drop ``removed`` paths, all or nothing."""
        ...

    def keyword(self, query: str, k: int) -> list[int]:
        """Chunk ids best first by BM25."""
        ...

    def nearest(self, vector: Sequence[float], k: int) -> list[int]:
        """Chunk ids best first by cosine distance."""
        ...

    def chunks(self, ids: Sequence[int]) -> list[StoredChunk]: ...

    def all_chunk_texts(self) -> list[tuple[int, str]]:
        """(id, indexed text) of every chunk, for re-embedding."""
        ...

    def replace_vectors(self, dimensions: int, vectors: Sequence[tuple[int, Sequence[float]]],
                        meta: dict[str, str]) -> None:
        """Swap every vector (and the model named in ``meta``) in one transaction."""
        ...

    def counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...
