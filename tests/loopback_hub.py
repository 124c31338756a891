"""A real HTTP server on 127.0.0.1 that stands in for the Hugging Face hub, which is unreachable here.

It answers the hub's file URLs the way the hub does: ``HEAD/GET /OWNER/REPO/resolve/REV/FILE`` of an
LFS file -> 302 to a content URL, with ``X-Linked-Size`` and ``X-Linked-Etag`` (the file's sha256); the
content URL serves the bytes with ``Range``/``If-Range`` support and its own ETag. A non-LFS file
(``lfs=False``: small text files on the real hub) is served right there with 200 and its git blob sha1
as ETag. Hub answers carry ``X-Repo-Commit``. ``GET /api/models/OWNER/REPO/revision/REV`` lists every
file added under ``OWNER/REPO/`` as ``siblings`` (404 when there is none), with a made-up commit
``sha``; any REV is accepted. ``/files/NAME`` serves plain URLs. Knobs for the failure cases the tests
need: drop the connection after N bytes, throttle, corrupt one byte, require a token (401 without,
403 wrong; for the listing too).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mistralkit.models.hashing import git_blob_sha1
from mistralkit.models.hashing import sha256_path as sha256_of


@dataclass
class Served:
    path: Path
    sha256: str
    corrupt: bool = False
    lfs: bool = True  # False: served directly with its git blob sha1 as ETag, like the hub's small files
    git_sha1: str = ""


@dataclass
class HubState:
    files: dict[str, Served] = field(default_factory=dict)  # "owner/repo/file" or "files/name"
    token: str | None = None
    cut_after: int | None = None  # the next GET that sends more stops after this many bytes (then resets)
    throttle: int | None = None  # bytes per second
    log: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)

    def repo_files(self, repo: str) -> dict[str, Served]:
        return {key[len(repo) + 1:]: served for key, served in self.files.items() if key.startswith(f"{repo}/")}

    def commit(self, repo: str) -> str:
        """A stand-in commit id: changes whenever a file of the repo does."""
        lines = "".join(f"{name} {s.sha256}\n" for name, s in sorted(self.repo_files(repo).items()))
        return hashlib.sha1(lines.encode()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _deny(self) -> bool:
        if self.state.token is None:
            return False
        given = self.headers.get("Authorization")
        if given == f"Bearer {self.state.token}":
            return False
        self._empty(401 if given is None else 403)
        return True

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _route(self) -> tuple[str, Served | None, bool]:
        parts = self.path.split("?")[0].lstrip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":  # owner/repo/resolve/rev/file...
            key = "/".join(parts[:2] + parts[4:])
            return key, self.state.files.get(key), True
        if parts[0] in ("files", "cdn"):
            key = "/".join(parts[1:])
            return key, self.state.files.get(key), False
        return "", None, False

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        self.state.log.append((self.command, self.path, self.headers.get("Range")))
        if self._deny():
            return
        if self.path.startswith("/api/models/"):
            self._listing()
            return
        key, served, on_hub = self._route()
        if served is None:
            self._empty(404)
            return
        size = served.path.stat().st_size
        commit = {"X-Repo-Commit": self.state.commit("/".join(key.split("/")[:2]))} if on_hub else {}
        if on_hub and served.lfs:  # the hub redirects LFS files to a content server
            self._empty(302, {"Location": f"/cdn/{key}", "X-Linked-Size": str(size),
                              "X-Linked-Etag": f'"{served.sha256}"', "ETag": f'"{served.sha256}"', **commit})
            return
        etag = f'"{served.git_sha1}"' if on_hub else f'"cdn-{served.sha256[:16]}"'
        self._send_bytes(served, size, body, etag, commit)

    def _listing(self) -> None:
        """``/api/models/OWNER/REPO/revision/REV``: the repo's files, as the hub's model info lists them."""
        parts = self.path.split("?")[0].split("/")  # "", api, models, owner, repo, revision, rev
        repo = "/".join(parts[3:5])
        names = sorted(self.state.repo_files(repo))
        if len(parts) != 7 or parts[5] != "revision" or not names:
            self._empty(404, {"X-Error-Code": "RepoNotFound"})
            return
        data = json.dumps({"id": repo, "modelId": repo, "sha": self.state.commit(repo),
                           "siblings": [{"rfilename": name} for name in names]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data)

    def _send_bytes(self, served: Served, size: int, body: bool, etag: str, extra: dict[str, str]) -> None:
        start = 0
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and (if_range is None or if_range == etag):
            start = int(wanted.removeprefix("bytes=").split("-")[0])
        if start >= size and size:
            self._empty(416, {"Content-Range": f"bytes */{size}"})
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(size - start))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        for key, value in extra.items():
            self.send_header(key, value)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        if body:
            self._stream(served, start)

    def _stream(self, served: Served, start: int) -> None:
        limit = self.state.cut_after
        at = min(1000, served.path.stat().st_size // 2)  # the byte a corrupt file has flipped
        sent = 0
        with served.path.open("rb") as handle:
            handle.seek(start)
            while block := handle.read(64 << 10):
                if served.corrupt and start + sent <= at < start + sent + len(block):
                    flip = at - start - sent
                    block = block[:flip] + bytes([block[flip] ^ 0xFF]) + block[flip + 1:]
                if limit is not None and sent + len(block) > limit:
                    self.state.cut_after = None
                    self.wfile.write(block[: limit - sent])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # a dropped connection, mid-file
                    return
                self.wfile.write(block)
                sent += len(block)
                if self.state.throttle:
                    time.sleep(len(block) / self.state.throttle)


class LoopbackHub:
    """``with LoopbackHub() as hub: hub.add("acme/tiny-GGUF", path)``; ``hub.url`` is the endpoint."""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, key: str, path: Path, corrupt: bool = False, sha256: str | None = None,
            lfs: bool = True) -> Served:
        """``key`` is ``owner/repo/file`` (hub URLs) or ``files/NAME`` (plain URLs)."""
        served = Served(path, sha256 or sha256_of(path), corrupt, lfs, git_blob_sha1(path) if not lfs else "")
        self.state.files[key.removeprefix("files/")] = served
        return served

    def add_folder(self, repo: str, folder: Path) -> None:
        """Every file of ``folder`` as ``repo``'s; like the hub's default .gitattributes, *.safetensors,
        *.model, *.bin and files over 10 MB are LFS, the rest (small text files) not."""
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            lfs = path.suffix in (".safetensors", ".model", ".bin") or path.stat().st_size > 10 << 20
            self.add(f"{repo}/{path.relative_to(folder).as_posix()}", path, lfs=lfs)

    def ranges(self) -> list[str]:
        return [r for method, _, r in self.state.log if method == "GET" and r]

    def __enter__(self) -> LoopbackHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
