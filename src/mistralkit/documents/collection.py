"""Document collections: folders and files indexed for search, kept in step with the disk.

A collection is one store (``store.py``) under ``<data>/docs/NAME.sqlite`` with the folders and files
it was given (its roots) and the embedding model its vectors came from. ``sync`` walks the roots and
re-indexes only the files whose content hash changed, drops the files that are gone and reports each.
Files are written in batches, each batch one transaction: a run killed at any point leaves whole files
only, and running it again picks up where it stopped.

>>> with Collection.open("notes", create=True) as notes:  # doctest: +SKIP
...     report = notes.sync(["./records"])
...     hits = notes.search("insulin dose after surgery", k=5)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from .. import paths
from ..errors import InvalidParameter, ModelNotFound, StorageError
from .chunking import CHUNK_CHARS, OVERLAP_CHARS, chunk
from .extract import Unreadable, extract, supported
from .sqlite_store import SqliteStore, roots_of
from .store import ChunkStore, FileRecord, IndexedFile, StoredChunk

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_FILE_BYTES = 64 * 1024 * 1024
EMBED_BATCH = 64  # chunks per embedding call and per transaction
MODES = ("hybrid", "vector", "keyword")
# Reciprocal rank fusion: score = sum of weight / (RRF_K + rank). The paper's k = 60 with equal weights
# fell below keyword search alone on our set (recall@5 0.907 vs 0.951 on the odd half of
# bench/data/docs_questions.jsonl): MiniLM is an English model and its French ranks are noise. k = 10 with
# the vector ranks at half weight was best on that half and held on the even half (0.938 vs 0.883 for
# keyword alone): bench/docs_quality.py, docs/documents.md.
RRF_K = 10
WEIGHTS = {"keyword": 1.0, "vector": 0.5}
CANDIDATES = 50  # from each mode before fusion
# Embedding models that know English only (by name): French or Spanish text gets a notice naming others.
ENGLISH_ONLY = ("all-minilm",)
ENGLISH_WORDS = frozenset("the and of to is in that it for was with as on are this be by not have from".split())
# Embedding models trained with instructions in front of queries and passages (by name).
PREFIXES = (("e5", "query: ", "passage: "), ("nomic-embed", "search_query: ", "search_document: "))


def collections_dir() -> Path:
    return paths.data_dir() / "docs"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise InvalidParameter(f"invalid collection name {name!r}",
                               hint="use letters, digits, '.', '_' and '-' (up to 64), starting with a letter or digit")
    return name


def collection_file(name: str) -> Path:
    return collections_dir() / f"{check_name(name)}.sqlite"


def looks_english(text: str) -> bool:
    """Whether ``text`` reads as English: about a word in six of English prose is one of ENGLISH_WORDS,
    French and Spanish prose have almost none of them."""
    words = re.findall(r"[^\W\d_]+", text[:5000].lower())[:400]
    return len(words) < 30 or sum(w in ENGLISH_WORDS for w in words) / len(words) > 0.06


def prefixes_for(model_name: str) -> tuple[str, str]:
    lowered = model_name.lower()
    for key, query, passage in PREFIXES:
        if key in lowered:
            return query, passage
    return "", ""


@dataclass(frozen=True)
class FileReport:
    path: str
    status: str  # added, updated, removed, unchanged, skipped, kept
    chunks: int = 0
    reason: str = ""


@dataclass
class SyncReport:
    files: list[FileReport] = field(default_factory=list)
    ignored: int = 0  # files of types that are not read, found in folders
    not_english: int = 0  # files indexed whose text does not read as English

    def count(self, status: str) -> int:
        return sum(1 for item in self.files if item.status == status)

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in ("added", "updated", "removed", "unchanged", "skipped")
                 if self.count(s)]
        if self.ignored:
            parts.append(f"{self.ignored} of other types ignored")
        return ", ".join(parts) or "nothing to index"


@dataclass(frozen=True)
class Hit:
    chunk: StoredChunk
    score: float
    keyword_rank: int | None
    vector_rank: int | None


@dataclass(frozen=True)
class _Pending:
    record: FileRecord
    chunks: list
    status: str
    english: bool = True


Progress = Callable[[FileReport], None]


class Collection:
    """An open collection; ``close()`` (or ``with``) frees its store and embedding model."""

    def __init__(self, name: str, store: ChunkStore) -> None:
        self.name = name
        self.store = store
        self._embedder = None
        # Asked between embedding batches: once true, indexing stops with ``Cancelled`` (the server's client
        # left); what was written before stays whole.
        self.cancelled: Callable[[], bool] | None = None

    @classmethod
    def open(cls, name: str, *, create: bool = False, embed_model: str | None = None) -> Collection:
        """Open ``name``; ``create`` makes it (with ``embed_model``, default all-MiniLM-L6-v2) if missing."""
        file = collection_file(name)
        if not file.exists():
            if not create:
                raise ModelNotFound(f"no collection named {name!r}",
                                    hint=f"create it: mistralkit docs add {name} FOLDER (see mistralkit docs list)")
            file.parent.mkdir(parents=True, exist_ok=True)
        collection = cls(name, SqliteStore(file))
        if "embed_model" not in collection.store.meta():
            collection._start(embed_model)
        elif embed_model is not None:
            collection.check_model(embed_model)
        return collection

    def _start(self, embed_model: str | None) -> None:
        from ..embeddings import default_embedding_model
        from ..models import resolve

        ref = embed_model or default_embedding_model()
        model = resolve(ref)
        if Path(ref).expanduser().exists():  # a folder or file: found again from any working folder
            ref = str(Path(ref).expanduser().resolve())
        self.store.set_meta({"embed_model": model.name, "embed_ref": ref,
                             "chunk_chars": str(CHUNK_CHARS), "overlap_chars": str(OVERLAP_CHARS), "roots": "[]"})

    # -- the embedding model -------------------------------------------------------------------

    @property
    def embed_model(self) -> str:
        return self.store.meta()["embed_model"]

    @property
    def english_only(self) -> bool:
        """Whether the collection's embedding model knows English only (its vectors of other languages are poor)."""
        return self.embed_model.lower().startswith(ENGLISH_ONLY)

    def check_model(self, requested: str) -> None:
        """Refuse a model other than the collection's: its vectors would not be comparable."""
        from ..models import resolve

        name = resolve(requested).name
        if name != self.embed_model:
            raise InvalidParameter(
                f"collection {self.name!r} was embedded with {self.embed_model}, not {name}: vectors of two models "
                "cannot be compared",
                hint=f"search without --embed-model, or re-embed it: mistralkit docs reembed {self.name} "
                     f"--embed-model {requested}")

    def embedder(self):
        if self._embedder is None:
            from ..embeddings import load_embedder

            self._embedder = load_embedder(self.store.meta()["embed_ref"])
        return self._embedder

    def _embed(self, texts: Sequence[str], role: str) -> list[list[float]]:
        query, passage = prefixes_for(self.embed_model)
        prefix = query if role == "query" else passage
        return self.embedder().embed([prefix + t for t in texts], batch_size=EMBED_BATCH, truncate=True,
                                     cancelled=self.cancelled).vectors

    def embed_query(self, query: str) -> list[float]:
        """The vector ``search`` compares chunks with (the model's query prefix applied)."""
        return self._embed([query], "query")[0]

    # -- indexing ------------------------------------------------------------------------------

    def roots(self) -> list[str]:
        return roots_of(self.store.meta())

    def add_roots(self, given: Sequence[str | Path]) -> list[str]:
        """Record folders and files as roots (made absolute); a path that does not exist is refused."""
        found = []
        for item in given:
            path = Path(item).expanduser()
            if not path.exists():
                raise InvalidParameter(f"{item}: no such file or folder")
            found.append(str(path.resolve()))
        roots = list(dict.fromkeys([*self.roots(), *found]))
        self.store.set_meta({"roots": json.dumps(roots)})
        return found

    def count_files(self, only: Sequence[str] | None = None) -> int:
        """How many readable files the roots (or ``only``) hold now: the total of a progress bar."""
        scratch = SyncReport()
        roots = [r for r in self.roots() if only is None or r in only]
        return sum(1 for root in roots if os.path.exists(root) for _, problem in _walk(Path(root), scratch)
                   if not problem)

    def sync(self, only: Sequence[str] | None = None, *, progress: Progress | None = None,
             max_file_bytes: int = MAX_FILE_BYTES) -> SyncReport:
        """Index new and changed files under the roots (or under ``only``), drop the files gone."""
        report = SyncReport()
        roots = [r for r in self.roots() if only is None or r in only]
        known = {record.path: record for record in self.store.files()}
        meta = self.store.meta()
        sizes = (int(meta.get("chunk_chars", CHUNK_CHARS)), int(meta.get("overlap_chars", OVERLAP_CHARS)))
        seen: set[str] = set()
        pending: list[_Pending] = []

        def tell(item: FileReport) -> None:
            report.files.append(item)
            if progress is not None:
                progress(item)

        for root in roots:
            if not os.path.exists(root):
                kept = [p for p in known if _under(p, root)]
                seen.update(kept)
                tell(FileReport(root, "kept", reason=f"folder or file missing; its {len(kept)} indexed files kept"))
                continue
            for path, problem in _walk(Path(root), report):
                key = str(path)
                if key in seen:
                    continue
                seen.add(key)
                if problem:
                    tell(FileReport(key, "skipped", reason=problem))
                    continue
                item = self._prepare(path, known.get(key), max_file_bytes, sizes)
                if isinstance(item, FileReport):
                    tell(item)
                    continue
                pending.append(item)
                report.not_english += not item.english
                if sum(len(p.chunks) for p in pending) >= EMBED_BATCH:
                    self._write(pending, tell)
                    pending = []
        self._write(pending, tell)
        gone = [p for p in known if p not in seen and any(_under(p, r) for r in roots)]
        if gone:
            self.store.write([], removed=gone)
            for path in gone:
                tell(FileReport(path, "removed", known[path].chunks))
        return report

    def _prepare(self, path: Path, known: FileRecord | None, max_file_bytes: int,
                 sizes: tuple[int, int]) -> _Pending | FileReport:
        key = str(path)
        try:
            info = path.stat()
            if known is not None and known.size == info.st_size and known.mtime == info.st_mtime:
                return FileReport(key, "unchanged", known.chunks)
            if info.st_size > max_file_bytes:
                raise Unreadable(path, f"{info.st_size / 2**20:.0f} MiB, over the {max_file_bytes / 2**20:.0f} MiB "
                                       "limit (--max-file-mb)")
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if known is not None and known.sha256 == digest:
                return FileReport(key, "unchanged", known.chunks)
            document = extract(path, data)
        except Unreadable as exc:
            return FileReport(key, "skipped", reason=exc.reason)
        except OSError as exc:
            return FileReport(key, "skipped", reason=exc.strerror or str(exc))
        pieces = chunk(document, *sizes)
        record = FileRecord(key, digest, info.st_size, info.st_mtime, document.format, document.pages, len(pieces))
        return _Pending(record, pieces, "added" if known is None else "updated", looks_english(document.text))

    def _write(self, pending: list[_Pending], tell: Callable[[FileReport], None]) -> None:
        if not pending:
            return
        texts = [c.indexed for item in pending for c in item.chunks]
        vectors = self._embed(texts, "passage") if texts else []
        batch, at = [], 0
        for item in pending:
            batch.append(IndexedFile(item.record, item.chunks, vectors[at:at + len(item.chunks)]))
            at += len(item.chunks)
        self.store.write(batch)
        for item in pending:
            tell(FileReport(item.record.path, item.status, len(item.chunks)))

    def reembed(self, embed_model: str, progress: Callable[[int, int], None] | None = None) -> int:
        """Embed every chunk again with ``embed_model``; the old vectors stay until the new ones are all in."""
        from ..embeddings import load_embedder
        from ..models import resolve

        model = resolve(embed_model)
        rows = self.store.all_chunk_texts()
        _, passage = prefixes_for(model.name)
        vectors: list[tuple[int, list[float]]] = []
        with load_embedder(model) as embedder:
            for start in range(0, len(rows), EMBED_BATCH):
                part = rows[start:start + EMBED_BATCH]
                found = embedder.embed([passage + text for _, text in part], batch_size=EMBED_BATCH, truncate=True)
                vectors.extend(zip((i for i, _ in part), found.vectors))
                if progress is not None:
                    progress(len(vectors), len(rows))
            dimensions = embedder.dimensions
        self.store.replace_vectors(dimensions, vectors, {"embed_model": model.name, "embed_ref": embed_model})
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        return len(vectors)

    # -- reading -------------------------------------------------------------------------------

    def search(self, query: str, k: int = 5, mode: str = "hybrid") -> list[Hit]:
        """The ``k`` best chunks for ``query``: BM25, cosine, or both fused by reciprocal rank."""
        if mode not in MODES:
            raise InvalidParameter(f"unknown search mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
        if not isinstance(query, str) or not query.strip():
            raise InvalidParameter("the query is empty")
        if not 1 <= k <= 100:
            raise InvalidParameter(f"k must be between 1 and 100, got {k}")
        depth = max(CANDIDATES, k)
        keyword = self.store.keyword(query, depth) if mode != "vector" else []
        vector = self.store.nearest(self.embed_query(query), depth) if mode != "keyword" else []
        scores = fuse(keyword, vector)
        best = sorted(scores, key=lambda i: -scores[i])[:k]
        k_rank = {c: r for r, c in enumerate(keyword, 1)}
        v_rank = {c: r for r, c in enumerate(vector, 1)}
        return [Hit(c, scores[c.id], k_rank.get(c.id), v_rank.get(c.id)) for c in self.store.chunks(best)]

    def status(self) -> dict:
        """Files, chunks, the model, and the files whose content changed on disk since (stale) or are gone."""
        records = self.store.files()
        stale, missing = [], []
        for record in records:
            try:
                info = os.stat(record.path)
            except OSError:
                missing.append(record.path)
                continue
            if info.st_size != record.size or info.st_mtime != record.mtime:
                stale.append(record.path)
        counts = self.store.counts()
        return {"name": self.name, "embed_model": self.embed_model, "roots": self.roots(), **counts,
                "stale": stale, "missing": missing, "bytes": _size_on_disk(collection_file(self.name))}

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fuse(keyword: Sequence[int], vector: Sequence[int]) -> dict[int, float]:
    """Reciprocal rank fusion of two rankings (best first): chunk id -> score (see RRF_K and WEIGHTS)."""
    scores: dict[int, float] = {}
    for ranking, weight in ((keyword, WEIGHTS["keyword"]), (vector, WEIGHTS["vector"])):
        for rank, chunk_id in enumerate(ranking, 1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (RRF_K + rank)
    return scores


def top_score(mode: str) -> float:
    """The fused score of a chunk first in every ranking ``mode`` uses: dividing by it puts scores on 0-1."""
    used = WEIGHTS.values() if mode == "hybrid" else [WEIGHTS[mode]]
    return sum(used) / (RRF_K + 1)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _walk(root: Path, report: SyncReport) -> Iterator[tuple[Path, str]]:
    """Files under ``root`` (or ``root`` itself) that can be read, in name order; symlinked folders are
    followed once each, so a link loop ends. Yields (path, problem) where problem says why it is skipped."""
    if root.is_file():
        yield root, "" if supported(root) else f"{root.suffix or 'no extension'} files are not read"
        return
    visited: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
        except OSError as exc:
            yield folder, f"cannot open folder ({exc.strerror})"
            continue
        if (info.st_dev, info.st_ino) in visited:
            continue
        visited.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield folder, f"cannot list folder ({exc.strerror})"
            continue
        folders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                mode = entry.stat().st_mode
            except OSError:
                yield Path(entry.path), "broken link or unreadable"
                continue
            if stat.S_ISDIR(mode):
                folders.append(Path(entry.path))
            elif stat.S_ISREG(mode):
                if supported(Path(entry.name)):
                    yield Path(os.path.realpath(entry.path)) if entry.is_symlink() else Path(entry.path), ""
                else:
                    report.ignored += 1
        stack.extend(reversed(folders))


def _size_on_disk(file: Path) -> int:
    return sum(p.stat().st_size for p in (file, Path(f"{file}-wal")) if p.exists())


def list_collections() -> list[dict]:
    """Every collection with its files, chunks and model; one that cannot be opened says why."""
    found = []
    folder = collections_dir()
    for file in sorted(folder.glob("*.sqlite")) if folder.exists() else []:
        name = file.stem
        try:
            with Collection.open(name) as collection:
                counts = collection.store.counts()
                found.append({"name": name, "files": counts["files"], "chunks": counts["chunks"],
                              "embed_model": collection.embed_model, "roots": collection.roots()})
        except StorageError as exc:
            found.append({"name": name, "error": exc.message})
    return found


def remove_collection(name: str) -> None:
    file = collection_file(name)
    if not file.exists():
        raise ModelNotFound(f"no collection named {name!r}", hint="see mistralkit docs list")
    for part in (file, Path(f"{file}-wal"), Path(f"{file}-shm")):
        part.unlink(missing_ok=True)
