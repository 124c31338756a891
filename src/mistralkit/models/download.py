"""Resumable, verified HTTP downloads.

Bytes go to ``models/.partial/KEY.part`` (with ``KEY.json`` remembering the URL and the server's
ETag). A later attempt, after a dropped connection, Ctrl-C or a crash, asks for the rest with a
``Range`` header (and ``If-Range``, so a changed file starts over). The finished file is hashed and
moved into place with ``os.replace`` only if its sha256 matches: nothing half-downloaded or corrupt
ever appears under its real name. Without a published sha256 (small non-LFS files on the hub), the
hub's ETag, the file's git blob sha1, is checked instead; a plain URL without ``--sha256`` is recorded
with the sha256 of what arrived.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import MistralkitError, StorageError
from .hashing import git_blob_sha1, sha256_path

CHUNK = 1 << 20
DISK_MARGIN = 64 << 20
RETRIES = 3

Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)


class DownloadError(MistralkitError):
    """The server refused, could not be reached, or the transfer stopped."""

    status = 502


class AccessDenied(DownloadError):
    status = 403


class IntegrityError(DownloadError):
    """The downloaded bytes do not have the expected sha256."""


@dataclass(frozen=True)
class Remote:
    """What a HEAD request says about a file before we download it."""

    url: str
    size: int | None
    sha256: str | None  # the hub publishes it as the ETag of LFS files
    etag: str | None
    git_sha1: str | None = None  # the hub's ETag of a small non-LFS file: its git blob id


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    size: int
    resumed_from: int


def partial_dir() -> Path:
    return paths.models_dir() / ".partial"


def _is_hex(value: str | None, length: int) -> bool:
    return bool(value) and len(value) == length and all(c in "0123456789abcdef" for c in value.lower())  # type: ignore[union-attr]


def http_client(headers: dict[str, str]):
    import httpx

    return httpx.Client(headers=headers, follow_redirects=True, trust_env=True,
                        timeout=httpx.Timeout(30.0, read=60.0))


def refusal(status: int, url: str, denied_hint: str | None) -> DownloadError:
    if status in (401, 403):
        return AccessDenied(f"the server refused {url} ({status})", hint=denied_hint)
    if status == 404:
        return DownloadError(f"not found: {url} (404)", hint="check the name; the catalog may be out of date")
    return DownloadError(f"the server answered {status} for {url}", hint="try again later")


def unreachable(url: str, exc: Exception, offline_hint: str) -> DownloadError:
    return DownloadError(f"cannot reach {url.split('/')[2] if '//' in url else url}: {exc.__class__.__name__}",
                         hint=offline_hint)


def probe(url: str, headers: dict[str, str], denied_hint: str | None = None,
          offline_hint: str = "check the network connection") -> Remote:
    """HEAD ``url`` (following redirects by hand to keep the hub's ``X-Linked-*`` headers)."""
    import httpx

    with http_client(headers) as client:
        try:
            response = client.head(url, follow_redirects=False)
            linked = response.headers
            if response.is_redirect:
                response = client.head(url, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise unreachable(url, exc, offline_hint) from exc
    if response.status_code >= 400:
        raise refusal(response.status_code, url, denied_hint)
    size = linked.get("x-linked-size") or response.headers.get("content-length")
    published = _unquote(linked.get("x-linked-etag") or response.headers.get("etag"))
    # If-Range must carry the ETag of the server that sends the bytes (after redirects).
    etag = response.headers.get("etag")
    # Only the hub (it sends X-Repo-Commit) is known to use a 40-hex ETag as the git blob id.
    from_hub_git = "x-repo-commit" in linked and "x-linked-etag" not in linked
    return Remote(url, int(size) if size else None, published.lower() if _is_hex(published, 64) else None,
                  etag if etag and not etag.startswith("W/") else None,
                  published.lower() if from_hub_git and _is_hex(published, 40) else None)


def _unquote(etag: str | None) -> str:
    return (etag or "").removeprefix("W/").strip('"')


def _partial_paths(key: str) -> tuple[Path, Path]:
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in key)
    return partial_dir() / f"{safe}.part", partial_dir() / f"{safe}.json"


def check_space(where: Path, needed: int) -> None:
    free = shutil.disk_usage(where).free
    if needed + DISK_MARGIN > free:
        raise StorageError(f"not enough disk space: {_gb(needed)} needed, {_gb(free)} free in {where}",
                           hint="free some space or set MISTRALKIT_HOME to a bigger disk")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _transfer(client, remote: Remote, part: Path, progress: Progress | None, denied_hint: str | None) -> None:
    """Append the missing bytes of ``remote`` to ``part`` (one HTTP request)."""
    have = part.stat().st_size if part.exists() else 0
    if remote.size is not None and have == remote.size:
        return
    if remote.size is not None and have > remote.size:
        part.unlink()
        have = 0
    headers = {"Range": f"bytes={have}-", **({"If-Range": remote.etag} if remote.etag else {})} if have else {}
    with client.stream("GET", remote.url, headers=headers) as response:
        if response.status_code >= 400:
            raise refusal(response.status_code, remote.url, denied_hint)
        if response.status_code != 206:  # the server sent the whole file: start over
            have = 0
        with part.open("ab" if have else "wb") as out:
            for block in response.iter_bytes():  # as it arrives: a chunk size would lose buffered bytes on a drop
                out.write(block)
                have += len(block)
                if progress:
                    progress(have, remote.size)
            out.flush()
            os.fsync(out.fileno())
    if remote.size is not None and have < remote.size:
        raise ConnectionError(f"the transfer stopped at {have} of {remote.size} bytes")


def fetch(remote: Remote, dest: Path, key: str, headers: dict[str, str], expected_sha256: str | None = None,
          progress: Progress | None = None, denied_hint: str | None = None,
          offline_hint: str = "check the network connection") -> Fetched:
    """Download ``remote`` into ``dest`` (resuming ``key``'s partial file), verify, then rename."""
    import httpx

    part, meta = _partial_paths(key)
    try:
        partial_dir().mkdir(parents=True, exist_ok=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot write the model store: {exc.strerror}", hint="set MISTRALKIT_HOME") from exc
    _forget_if_changed(part, meta, remote)
    start = part.stat().st_size if part.exists() else 0
    if remote.size is not None:
        check_space(partial_dir(), remote.size - start)
    meta.write_text(json.dumps({"url": remote.url, "etag": remote.etag, "size": remote.size}))
    lock = _lock(part)
    try:
        with http_client(headers) as client:
            for attempt in range(RETRIES + 1):
                try:
                    _transfer(client, remote, part, progress, denied_hint)
                    break
                except (httpx.TransportError, ConnectionError) as exc:
                    if attempt == RETRIES:
                        done = part.stat().st_size if part.exists() else 0
                        raise DownloadError(
                            f"the download stopped ({exc.__class__.__name__}) with {_gb(done)} kept",
                            hint="run the same command again to resume") from exc
                    if start == 0 and not part.exists() and isinstance(exc, httpx.ConnectError):
                        raise unreachable(remote.url, exc, offline_hint) from exc
                    time.sleep(attempt)
    finally:
        lock.close()
    actual = sha256_path(part)
    wanted = (expected_sha256 or remote.sha256 or "").lower()
    if wanted and actual != wanted:
        _corrupt(part, meta, f"sha256 mismatch for {dest.name}: expected {wanted}, got {actual}")
    if not wanted and remote.git_sha1 and (blob := git_blob_sha1(part)) != remote.git_sha1:
        _corrupt(part, meta, f"git sha1 mismatch for {dest.name}: expected {remote.git_sha1}, got {blob}")
    size = part.stat().st_size
    os.replace(part, dest)
    meta.unlink(missing_ok=True)
    return Fetched(dest, actual, size, start)


def _corrupt(part: Path, meta: Path, message: str) -> None:
    part.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)
    raise IntegrityError(message, hint="the corrupt file was deleted; run the command again to download it afresh")


def _forget_if_changed(part: Path, meta: Path, remote: Remote) -> None:
    """Drop a partial file that belongs to another URL or another version of the file."""
    try:
        old = json.loads(meta.read_text())
    except (OSError, ValueError):
        old = None
    if part.exists() and (old is None or old.get("url") != remote.url or
                          (remote.etag and old.get("etag") and old["etag"] != remote.etag)):
        part.unlink()


def _lock(part: Path):
    import fcntl

    handle = open(part.with_suffix(".lock"), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise DownloadError(f"another download of {part.stem} is running",
                            hint="wait for it to finish (or stop it) and try again") from exc
    return handle


def discard(key: str) -> bool:
    """Delete ``key``'s partial download, if any."""
    part, meta = _partial_paths(key)
    found = part.exists()
    for path in (part, meta, part.with_suffix(".lock")):
        path.unlink(missing_ok=True)
    return found
