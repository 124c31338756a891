"""``/v1/vector_stores``: OpenAI's vector stores, each one a docs collection (``documents/``).

The store ``vs_NAME`` is the collection ``NAME`` (``<data>/docs/NAME.sqlite``): what ``mistralkit docs
add`` made is listed here, and a store made here is listed by ``mistralkit docs list``. Its files are
the collection's indexed files; an upload keeps its id (``file-...``), a file found on disk under a
folder root is named ``file-local-`` and a hash of its path. A file that cannot be indexed (a type
not read, binary text, an encrypted PDF) is a ``failed`` vector-store file with ``last_error``,
remembered in the collection's meta. Indexing runs in a thread, within the request, and stops when
the client leaves: whatever it recorded is undone, and the store's writes are whole files only.

Files are read from the server's disk only by upload, or by ``path`` (a mistralkit extension) under
the folders ``serve --allow-docs-paths DIR`` allowed.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from ..documents.collection import (
    Collection,
    Hit,
    check_name,
    collection_file,
    collections_dir,
    remove_collection,
    top_score,
)
from ..documents.extract import supported
from ..errors import BadParameter, InvalidParameter, MistralkitError, StorageError
from ..http.body import RequestBody
from .uploads import FileNotFound, upload_id, upload_path
from .watch import cancelled

router = APIRouter(prefix="/v1", tags=["vector stores"])
PREFIX = "vs_"
FAILED = "vector_store_failed"  # meta key: {file id: {path, code, message, created_at}}
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class StoreNotFound(MistralkitError):
    status = 404

    def __init__(self, store_id: str) -> None:
        super().__init__(f"no vector store with id {store_id!r}", hint="GET /v1/vector_stores lists them")
        self.param = "vector_store_id"


class Conflict(MistralkitError):
    status = 409


class PathNotAllowed(MistralkitError):
    """The same answer whether the path exists or not: a request must not learn what is on disk."""

    status = 403

    def __init__(self, given: str) -> None:
        super().__init__(f"path: {given!r} is not under a folder this server lets requests read",
                         hint="the operator allows folders with `mistralkit serve --allow-docs-paths DIR`")
        self.param = "path"


class CreateStore(RequestBody):
    name: str | None = Field(default=None, max_length=64)
    file_ids: list[str] = Field(default_factory=list, max_length=100)
    metadata: dict[str, str] | None = None


class AddFile(RequestBody):
    file_id: str | None = None
    path: str | None = Field(default=None, max_length=4096)  # extension: a file or folder under --allow-docs-paths


class SearchBody(RequestBody):
    query: str | list[str] = Field(min_length=1)
    max_num_results: int = Field(default=10, ge=1, le=50)
    filters: dict[str, Any] | None = None
    rewrite_query: bool = False
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"  # extension


# -- collections as stores -------------------------------------------------------------------------

def store_name(store_id: str) -> str:
    """The collection of ``vs_NAME`` (400 naming ``vector_store_id`` for a name like ``../x``)."""
    if not isinstance(store_id, str) or not store_id.startswith(PREFIX):
        raise StoreNotFound(store_id)
    try:
        return check_name(store_id[len(PREFIX):])
    except InvalidParameter as exc:
        raise BadParameter(f"vector_store_id: {exc.message}", "vector_store_id", exc.hint) from None


def _lock(name: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(name, threading.Lock())


def open_store(store_id: str, cancelled: Callable[[], bool] | None = None) -> Collection:
    """The collection behind ``store_id``; its indexing stops once ``cancelled()`` (the client left)."""
    name = store_name(store_id)
    if not collection_file(name).exists():
        raise StoreNotFound(store_id)
    collection = Collection.open(name)
    collection.cancelled = cancelled
    return collection


def file_id_of(path: str) -> str:
    return upload_id(path) or f"file-local-{hashlib.sha256(path.encode()).hexdigest()[:24]}"


def _failed(collection: Collection) -> dict[str, dict]:
    return json.loads(collection.store.meta().get(FAILED, "{}"))


def _set_failed(collection: Collection, failed: dict[str, dict]) -> None:
    collection.store.set_meta({FAILED: json.dumps(failed)})


def _drop_root(collection: Collection, root: str) -> None:
    collection.store.set_meta({"roots": json.dumps([r for r in collection.roots() if r != root])})


def store_object(collection: Collection) -> dict:
    meta, counts = collection.store.meta(), collection.store.counts()
    file = collection_file(collection.name)
    created = int(float(meta.get("created_at", file.stat().st_mtime)))
    failed = len(_failed(collection))
    return {"id": PREFIX + collection.name, "object": "vector_store", "created_at": created, "name": collection.name,
            "usage_bytes": sum(p.stat().st_size for p in (file, Path(f"{file}-wal")) if p.exists()),
            "file_counts": {"in_progress": 0, "completed": counts["files"], "failed": failed, "cancelled": 0,
                            "total": counts["files"] + failed},
            "status": "completed", "expires_after": None, "expires_at": None, "last_active_at": created,
            "metadata": json.loads(meta.get("vector_store_metadata", "{}")), "embed_model": collection.embed_model}


def _file_object(store_id: str, file_id: str, path: str, *, size: int = 0, created: float = 0,
                 error: dict | None = None, chunks: int = 0) -> dict:
    return {"id": file_id, "object": "vector_store.file", "usage_bytes": size, "created_at": int(created),
            "vector_store_id": store_id, "status": "failed" if error else "completed", "last_error": error,
            "attributes": {}, "chunking_strategy": None, "filename": Path(path).name, "chunks": chunks}


def store_files(collection: Collection) -> list[dict]:
    store_id = PREFIX + collection.name
    found = [_file_object(store_id, file_id_of(r.path), r.path, size=r.size, created=r.mtime, chunks=r.chunks)
             for r in collection.store.files()]
    for file_id, item in _failed(collection).items():
        found.append(_file_object(store_id, file_id, item["path"], created=item["created_at"],
                                  error={"code": item["code"], "message": item["message"]}))
    return found


# -- indexing ----------------------------------------------------------------------------------------

def index_path(collection: Collection, path: Path, file_id: str | None) -> list[dict]:
    """Add ``path`` (a file or folder) as a root and index it; a file that cannot be read is recorded as failed."""
    key = str(path)
    failed = _failed(collection)
    if path.is_file() and not supported(path):
        failed[file_id or file_id_of(key)] = {"path": key, "code": "unsupported_file", "created_at": time.time(),
                                              "message": f"{path.suffix or 'no extension'} files cannot be indexed "
                                                         "(use .txt, .md, .html, .pdf or .docx)"}
        _set_failed(collection, failed)
        return [f for f in store_files(collection) if f["id"] == (file_id or file_id_of(key))]
    had = key in collection.roots()
    collection.add_roots([path])
    try:
        report = collection.sync(only=[key])
    except BaseException:  # Cancelled (the client left) or a failure: the root goes, the store kept whole files
        if not had:
            _drop_root(collection, key)
        raise
    touched = []
    for item in report.files:
        one = file_id_of(item.path) if item.path != key or file_id is None else file_id
        touched.append(one)
        if item.status == "skipped":
            failed[one] = {"path": item.path, "code": "invalid_file", "message": item.reason, "created_at": time.time()}
            if item.path == key and not had:
                _drop_root(collection, key)
        else:
            failed.pop(one, None)
    _set_failed(collection, failed)
    return [f for f in store_files(collection) if f["id"] in touched]


def forget_upload(file_id: str, path: Path) -> None:
    """Take a deleted upload out of every collection that indexed it (or failed to)."""
    key = str(path.resolve())
    for file in sorted(collections_dir().glob("*.sqlite")) if collections_dir().exists() else []:
        try:
            with _lock(file.stem), Collection.open(file.stem) as collection:
                _remove(collection, file_id, key)
        except StorageError:
            continue


def _remove(collection: Collection, file_id: str, key: str) -> bool:
    failed = _failed(collection)
    found = failed.pop(file_id, None) is not None
    if found:
        _set_failed(collection, failed)
    if key in collection.roots():
        _drop_root(collection, key)
        found = True
    if any(r.path == key for r in collection.store.files()):
        collection.store.write([], removed=[key])
        found = True
    return found


async def _indexing(request: Request, store_id: str, work: Callable[[Collection], Any]) -> Any:
    """``work(collection)`` in a thread, holding the collection's lock, stopped when the client leaves."""
    name = store_name(store_id)
    async with cancelled(request) as gone:
        def run() -> Any:
            with _lock(name), open_store(store_id, gone) as collection:
                return work(collection)
        return await run_in_threadpool(run)


def _allowed(given: str, dirs: tuple[Path, ...]) -> Path:
    try:
        real = Path(given).expanduser().resolve()
    except (RuntimeError, OSError, ValueError):
        raise PathNotAllowed(given) from None
    if not real.exists() or not any(real.is_relative_to(folder) for folder in dirs):
        raise PathNotAllowed(given)
    return real


# -- routes ------------------------------------------------------------------------------------------

@router.post("/vector_stores")
async def create(body: CreateStore, request: Request) -> dict:
    """A new collection, with ``file_ids`` (uploads) indexed into it before the answer."""
    import uuid

    name = body.name or f"store-{uuid.uuid4().hex[:8]}"
    try:
        check_name(name)
    except InvalidParameter as exc:
        raise BadParameter(f"name: {exc.message}", "name", exc.hint) from None
    uploads = [(file_id, await run_in_threadpool(upload_path, file_id)) for file_id in body.file_ids]

    def make() -> None:
        with _lock(name):
            if collection_file(name).exists():
                raise Conflict(f"name: a vector store (collection) named {name!r} exists", hint=f"use {PREFIX}{name}")
            with Collection.open(name, create=True) as collection:
                collection.store.set_meta({"created_at": str(time.time()),
                                           "vector_store_metadata": json.dumps(body.metadata or {})})

    await run_in_threadpool(make)
    try:
        for file_id, path in uploads:
            await _indexing(request, PREFIX + name, lambda c, f=file_id, p=path: index_path(c, p.resolve(), f))
    except BaseException:
        await run_in_threadpool(remove_collection, name)  # nothing half-made stays
        raise
    return await retrieve(PREFIX + name)


@router.get("/vector_stores")
async def list_stores(limit: int = Query(20, ge=1, le=100), order: str = Query("desc", pattern="^(asc|desc)$"),
                      after: str | None = None) -> dict:
    """Every collection, as a vector store (newest first)."""
    def read() -> list[dict]:
        found = []
        for file in sorted(collections_dir().glob("*.sqlite")) if collections_dir().exists() else []:
            try:
                with Collection.open(file.stem) as collection:
                    found.append(store_object(collection))
            except (StorageError, InvalidParameter):
                continue
        return found

    found = sorted(await run_in_threadpool(read), key=lambda s: (s["created_at"], s["id"]), reverse=order == "desc")
    if after is not None:
        ids = [s["id"] for s in found]
        found = found[ids.index(after) + 1:] if after in ids else []
    page = found[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(found) > limit}


@router.get("/vector_stores/{store_id}")
async def retrieve(store_id: str) -> dict:
    def read() -> dict:
        with open_store(store_id) as collection:
            return store_object(collection)
    return await run_in_threadpool(read)


@router.delete("/vector_stores/{store_id}")
async def delete(store_id: str) -> dict:
    """Remove the collection (the uploads stay in ``/v1/files``)."""
    name = store_name(store_id)

    def remove() -> None:
        with _lock(name):
            if not collection_file(name).exists():
                raise StoreNotFound(store_id)
            remove_collection(name)

    await run_in_threadpool(remove)
    return {"id": store_id, "object": "vector_store.deleted", "deleted": True}


@router.post("/vector_stores/{store_id}/files")
async def add_file(store_id: str, body: AddFile, request: Request) -> dict:
    """Index an upload (``file_id``), or with ``path`` a file or folder under ``--allow-docs-paths``."""
    if (body.file_id is None) == (body.path is None):
        raise BadParameter("file_id: give file_id (an upload), or path (a file under --allow-docs-paths)", "file_id")
    store_name(store_id)
    if body.file_id is not None:
        path = (await run_in_threadpool(upload_path, body.file_id)).resolve()
        items = await _indexing(request, store_id, lambda c: index_path(c, path, body.file_id))
        return items[0]
    path = _allowed(body.path, request.app.state.config.docs_dirs)
    items = await _indexing(request, store_id, lambda c: index_path(c, path, None))
    if path.is_file() and items:
        return items[0]
    counts = {s: sum(1 for f in items if f["status"] == s) for s in ("completed", "failed")}
    return {"id": f"vsfb_{hashlib.sha256(str(path).encode()).hexdigest()[:24]}", "object": "vector_store.file_batch",
            "vector_store_id": store_id, "status": "completed", "created_at": int(time.time()),
            "file_counts": {"in_progress": 0, "cancelled": 0, "total": len(items), **counts}}


@router.get("/vector_stores/{store_id}/files")
async def list_files(store_id: str, limit: int = Query(100, ge=1, le=10000), filter: str | None = None) -> dict:
    def read() -> list[dict]:
        with open_store(store_id) as collection:
            return store_files(collection)
    found = [f for f in await run_in_threadpool(read) if filter is None or f["status"] == filter]
    page = found[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(found) > limit}


@router.get("/vector_stores/{store_id}/files/{file_id}")
async def retrieve_file(store_id: str, file_id: str) -> dict:
    for item in (await list_files(store_id, limit=10000))["data"]:
        if item["id"] == file_id:
            return item
    raise FileNotFound(file_id)


@router.delete("/vector_stores/{store_id}/files/{file_id}")
async def delete_file(store_id: str, file_id: str) -> dict:
    """Take a file out of the store (its upload stays in ``/v1/files``)."""
    name = store_name(store_id)

    def remove() -> bool:
        with _lock(name), open_store(store_id) as collection:
            paths = [r.path for r in collection.store.files() if file_id_of(r.path) == file_id]
            paths += [item["path"] for key, item in _failed(collection).items() if key == file_id]
            for path in paths:
                if path not in collection.roots() and file_id not in _failed(collection):
                    raise BadParameter(f"file_id: {file_id} was found in a folder this collection indexes; remove the "
                                       "folder with `mistralkit docs`", "file_id")
            removed = False
            for path in paths:
                removed = _remove(collection, file_id, path) or removed
            return removed

    if not await run_in_threadpool(remove):
        raise FileNotFound(file_id)
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


# -- search ------------------------------------------------------------------------------------------

def normalized(hit: Hit, mode: str) -> float:
    """The fused reciprocal-rank score on 0-1: 1 for a chunk first in every ranking used."""
    return round(hit.score / top_score(mode), 6)


def search(store_ids: list[str], query: str, k: int, mode: str = "hybrid") -> list[tuple[str, Hit, float]]:
    """The ``k`` best chunks over the stores: (store id, hit, score on 0-1), best first."""
    found: list[tuple[str, Hit, float]] = []
    for store_id in store_ids:
        with open_store(store_id) as collection:
            found += [(store_id, hit, normalized(hit, mode)) for hit in collection.search(query, k=k, mode=mode)]
    return sorted(found, key=lambda item: -item[2])[:k]


def result_shape(hit: Hit, score: float) -> dict:
    chunk = hit.chunk
    return {"file_id": file_id_of(chunk.path), "filename": Path(chunk.path).name, "score": score,
            "attributes": {"place": chunk.place, "heading": chunk.heading},
            "content": [{"type": "text", "text": chunk.text}]}


@router.post("/vector_stores/{store_id}/search")
async def search_store(store_id: str, body: SearchBody) -> dict:
    """The chunks that best match ``query``: keyword (BM25) and vector rankings fused (``mode`` to pick one)."""
    if body.filters:
        raise BadParameter("filters: attribute filters are not supported here", "filters")
    queries = [body.query] if isinstance(body.query, str) else body.query
    if not all(isinstance(q, str) and q.strip() for q in queries):
        raise BadParameter("query: the query is empty", "query")
    found = await run_in_threadpool(search, [store_id], " ".join(queries), body.max_num_results, body.mode)
    return {"object": "vector_store.search_results.page", "search_query": queries,
            "data": [result_shape(hit, score) for _, hit, score in found], "has_more": False, "next_page": None}
