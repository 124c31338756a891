"""sha256 of model files and folders, and git blob ids, read in 1 MiB blocks."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_path(path: Path) -> str:
    """sha256 of a file; for a directory, of its sorted ``relative-path file-sha256`` lines."""
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    lines = [f"{p.relative_to(path).as_posix()} {sha256_path(p)}\n" for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id git gives a file's contents: sha1 of ``blob SIZE\\0`` + the bytes (the hub's ETag of non-LFS files)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
