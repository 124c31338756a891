"""The list of models on this machine: ``models/registry.json``, one record per name.

Writes take a file lock and replace the file atomically, so two ``pull`` commands at once or a
crash mid-write never leave a half-written registry.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import paths
from ..errors import StorageError


@dataclass
class Record:
    """One registered model. ``managed``: the file lives in the store and ``rm`` may delete it."""

    name: str
    path: str
    format: str  # gguf, hf, sentence-transformers, gguf-adapter
    sha256: str
    size: int
    source: str  # catalog, url, hub (a repo folder), import, export
    managed: bool
    quant: str | None = None
    url: str | None = None
    base: str | None = None  # adapters: the model they were exported for
    check: dict | None = None  # export --merged: the export against base + adapter (tune/fidelity.py)
    added: float = field(default_factory=time.time)


def registry_file() -> Path:
    return paths.models_dir() / "registry.json"


def _read(path: Path) -> dict[str, Record]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read the model registry {path}: {exc}",
                           hint="fix or delete the file; downloaded models stay in their folders") from exc
    return {name: Record(**fields) for name, fields in raw.get("models", {}).items()}


def records() -> dict[str, Record]:
    return _read(registry_file())


def get(name: str) -> Record | None:
    return records().get(name.lower())


@contextmanager
def editing() -> Iterator[dict[str, Record]]:
    """Lock the registry, yield its records to change in place, then write them atomically."""
    path = registry_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a")
    except OSError as exc:
        raise StorageError(f"cannot write the model store at {path.parent}: {exc.strerror}",
                           hint="make the data directory writable or set MISTRALKIT_HOME") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = _read(path)
        yield current
        body = {"models": {name: asdict(rec) for name, rec in sorted(current.items())}}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def add(record: Record) -> None:
    record.name = record.name.lower()
    with editing() as current:
        current[record.name] = record


def remove(name: str) -> Record | None:
    with editing() as current:
        return current.pop(name.lower(), None)
