"""``/v1/files``: uploads kept under ``<data>/files/<file-id>/<filename>`` for vector stores.

An upload is a multipart form (``file`` and ``purpose``), bounded by the server's body limit (413
naming it, ``serve --max-body``). It is written in a hidden folder and renamed into place, so a
client that leaves mid-upload or a server killed mid-write leaves no half file. The original name is
kept (its extension picks the reader when the file is indexed); its folder name is its id, which is
how a chunk of a collection finds the upload it came from.
"""

from __future__ import annotations

import json
import mimetypes
import shutil
import tempfile
import time
import uuid
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..errors import BadParameter
from .uploads import FILE_ID, META, files_dir, upload_path

router = APIRouter(prefix="/v1", tags=["files"])

PURPOSES = ("assistants", "user_data")
MAX_PARTS = 8


def file_object(file_id: str) -> dict:
    path = upload_path(file_id)
    meta = json.loads((path.parent / META).read_text())
    return {"id": file_id, "object": "file", "bytes": meta["bytes"], "created_at": meta["created_at"],
            "filename": meta["filename"], "purpose": meta["purpose"], "status": "processed",
            "expires_at": None, "status_details": None}


def _filename(given: str | None) -> str:
    name = Path((given or "").replace("\\", "/")).name.strip()
    if not name or name in (".", "..") or "\x00" in name or len(name.encode()) > 200:
        raise BadParameter("file: the upload needs a file name (up to 200 bytes)", "file")
    return "_" + name[1:] if name.startswith(".") else name


def parse_form(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a ``multipart/form-data`` body: name -> (file name or None, bytes)."""
    header = BytesHeaderParser(policy=policy.HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode())
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not boundary:
        raise BadParameter("file: send a multipart/form-data body with the fields file and purpose", "file")
    fields: dict[str, tuple[str | None, bytes]] = {}
    sections = (b"\r\n" + body).split(b"\r\n--" + str(boundary).encode())
    for section in sections[1:MAX_PARTS + 1]:
        if section.startswith(b"--"):
            break
        head, sep, content = section.partition(b"\r\n\r\n")
        if not sep:
            raise BadParameter("file: a part of the multipart body has no headers", "file")
        part = BytesHeaderParser(policy=policy.HTTP).parsebytes(head.lstrip(b" \t\r\n") + b"\r\n\r\n")
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = (part.get_filename(), content)
    return fields


def _store(filename: str, data: bytes, purpose: str) -> dict:
    """Write the upload in a hidden folder, then rename it into place (whole or not at all)."""
    file_id = f"file-{uuid.uuid4().hex[:24]}"
    root = files_dir()
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".upload-", dir=root))
    try:
        (scratch / filename).write_bytes(data)
        meta = {"filename": filename, "bytes": len(data), "created_at": int(time.time()), "purpose": purpose}
        (scratch / META).write_text(json.dumps(meta))
        scratch.rename(root / file_id)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return file_object(file_id)


@router.post("/files")
async def upload(request: Request) -> dict:
    """Upload a file (multipart ``file`` and ``purpose``: assistants or user_data), at most the body limit."""
    body = await request.body()
    fields = parse_form(request.headers.get("content-type", ""), body)
    purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace").strip()
    if purpose not in PURPOSES:
        raise BadParameter(f"purpose: {purpose!r} is not accepted here (use {' or '.join(PURPOSES)})", "purpose")
    if "file" not in fields:
        raise BadParameter("file: the form has no file field", "file")
    given, data = fields["file"]
    if not data:
        raise BadParameter("file: the file is empty", "file")
    return await run_in_threadpool(_store, _filename(given), data, purpose)


@router.get("/files")
async def list_files(purpose: str | None = None, limit: int = Query(10000, ge=1, le=10000),
                     order: str = Query("desc", pattern="^(asc|desc)$")) -> dict:
    """Uploaded files, newest first (``order=asc`` for oldest first)."""
    def read() -> list[dict]:
        folder = files_dir()
        found = [file_object(p.name) for p in folder.iterdir() if FILE_ID.fullmatch(p.name) and (p / META).is_file()] \
            if folder.is_dir() else []
        return [f for f in found if purpose is None or f["purpose"] == purpose]

    found = sorted(await run_in_threadpool(read), key=lambda f: (f["created_at"], f["id"]), reverse=order == "desc")
    page = found[:limit]
    return {"object": "list", "data": page, "has_more": len(found) > limit,
            "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}


@router.get("/files/{file_id}")
async def retrieve(file_id: str) -> dict:
    return await run_in_threadpool(file_object, file_id)


@router.get("/files/{file_id}/content")
async def content(file_id: str) -> Response:
    path = await run_in_threadpool(upload_path, file_id)
    data = await run_in_threadpool(path.read_bytes)
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Response(data, media_type=kind, headers={"Content-Disposition": f'attachment; filename="{file_id}"'})


@router.delete("/files/{file_id}")
async def delete(file_id: str) -> dict:
    """Delete an upload, and take it out of every vector store that holds it."""
    from .vector_stores import forget_upload

    path = await run_in_threadpool(upload_path, file_id)
    await run_in_threadpool(forget_upload, file_id, path)
    await run_in_threadpool(shutil.rmtree, path.parent)
    return {"id": file_id, "object": "file", "deleted": True}
