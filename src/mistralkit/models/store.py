"""Resolve a model reference (a name, an alias or a path) to a local file with its metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFound
from . import catalog
from .gguf_info import GGUFInfo, read_info


@dataclass
class LocalModel:
    """A model on disk, ready for an engine."""

    name: str
    path: Path
    info: GGUFInfo
    entry: catalog.CatalogEntry | None = None
    format: str = "gguf"

    @property
    def is_default(self) -> bool:
        return bool(self.entry and self.entry.bundled)

    @property
    def mistral_tokenizer(self) -> str | None:
        return self.entry.mistral_tokenizer if self.entry else None


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.lower().endswith(".gguf") or Path(ref).exists()


def resolve(ref: str | None = None) -> LocalModel:
    """``None`` -> the embedded default; a path -> that GGUF; a name -> the catalog.

    >>> resolve().name
    'gemma-3-270m'
    """
    if ref is None or not ref.strip():
        ref = catalog.DEFAULT_MODEL
    ref = ref.strip()
    if _looks_like_path(ref):
        path = Path(ref).expanduser()
        info = read_info(path)
        return LocalModel(path.stem, path.resolve(), info, catalog.find_by_file(path.name))
    entry = catalog.find(ref)
    if entry is None:
        known = ", ".join(e.name for e in catalog.ENTRIES)
        raise ModelNotFound(f"unknown model {ref!r}", hint=f"pass a .gguf path or one of: {known}")
    if entry.bundled:
        from .bundled import ensure_bundled

        path = ensure_bundled()
        return LocalModel(entry.name, path, read_info(path), entry)
    raise ModelNotFound(
        f"model {entry.name!r} is not downloaded",
        hint=f"download {entry.file} and run `mistralkit chat --model /path/to/{entry.file}`",
    )
