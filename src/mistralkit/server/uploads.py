"""Where the server keeps uploaded files (``/v1/files``): one folder per file id under ``<data>/files``,
shared by the files routes and the vector stores that index them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .. import paths
from ..errors import MistralkitError

FILE_ID = re.compile(r"file-[0-9a-f]{24}")
META = ".meta.json"


class FileNotFound(MistralkitError):
    status = 404

    def __init__(self, file_id: str) -> None:
        super().__init__(f"no file with id {file_id!r}", hint="GET /v1/files lists them")
        self.param = "file_id"


def files_dir() -> Path:
    return paths.data_dir() / "files"


def upload_path(file_id: str) -> Path:
    """The stored file of ``file_id`` (404 when there is none)."""
    folder = files_dir() / file_id if FILE_ID.fullmatch(file_id or "") else None
    if folder is None or not (folder / META).is_file():
        raise FileNotFound(file_id)
    return folder / json.loads((folder / META).read_text())["filename"]


def upload_id(path: str | Path) -> str | None:
    """The id of the upload ``path`` is (None for a file that was not uploaded)."""
    path = Path(path)
    return path.parent.name if path.parent.parent == files_dir().resolve() and FILE_ID.fullmatch(path.parent.name) \
        else None
