"""``models verify``: re-hash downloaded, imported and embedded models and compare with the catalog's,
the recorded or the package's sha256. Nothing is repaired: it reports what it finds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidParameter
from . import catalog, registry
from .hashing import sha256_path
from .store import ASSEMBLED, LocalModel, embedded_gguf, embedded_refs, record_of, resolve


@dataclass
class Verified:
    name: str
    path: str
    ok: bool
    expected: str
    actual: str
    against: str  # catalog, recorded, package
    differ: list[str] | None = None  # a packaged folder: its files that are not as the package shipped them


def _expected(record: registry.Record) -> tuple[str, str]:
    found = catalog.lookup(record.name) if record.source == "catalog" else None
    published = found[0].files[found[1]].sha256 if found else ""
    return (published, "catalog") if published else (record.sha256, "recorded")


def verify(ref: str | None = None) -> list[Verified]:
    """Re-hash one model (or every one here, the embedded model included) and compare with the
    catalog's, the recorded or the package's sha256. Nothing is repaired: it reports what it finds."""
    if ref is not None:
        record = record_of(ref)
        if record is not None:
            targets = [record]
        elif embedded := embedded_gguf(ref):
            return [_verify_embedded(embedded)]
        elif folder := embedded_gguf(ref, folders=True):
            return [_verify_folder(folder)]
        else:
            return [_verify_bundled(resolve(ref))]
    else:
        targets = list(registry.records().values())
    results = []
    for record in targets:
        expected, against = _expected(record)
        path = Path(record.path)
        actual = sha256_path(path) if path.exists() else "missing"
        results.append(Verified(record.name, record.path, actual == expected, expected, actual, against))
    if ref is None:
        from .bundled import bundled_path

        taken = {record.name for record in targets}
        from . import packaged

        for name in embedded_refs():
            entry, quant = catalog.lookup(name)  # type: ignore[misc]
            spec = entry.files[quant]
            here = bundled_path().exists() if spec.bundled == ASSEMBLED else packaged.installed(spec)
            if here and name not in taken:  # the Gemma not assembled yet, a package not installed: nothing
                results.append(_verify_embedded(name))
        for name in embedded_refs(folders=True):
            entry, quant = catalog.lookup(name)  # type: ignore[misc]
            if name not in taken and packaged.distributed(entry.files[quant]):
                results.append(_verify_folder(name))
    return results


def _verify_folder(name: str) -> Verified:
    """An embedded model folder (all-MiniLM-L6-v2), file by file against the hashes its package recorded."""
    from . import packaged

    entry, quant = catalog.lookup(name)  # type: ignore[misc]
    folder = resolve(name).path
    found = packaged.check_folder(entry.files[quant], folder)
    return Verified(name, str(folder), not found.differ, found.expected, found.actual, "package", found.differ)


def _verify_embedded(name: str) -> Verified:
    """An embedded GGUF against its package's hash, as found (the assembled Gemma is assembled first
    only if absent; a file used in its package is hashed where it is)."""
    from . import bundled, packaged

    entry, quant = catalog.lookup(name)  # type: ignore[misc]
    spec = entry.files[quant]
    if spec.bundled != ASSEMBLED:
        path = packaged.locate_unchecked(spec)
        actual = sha256_path(path) if path is not None else "missing"
        return Verified(name, str(path or spec.bundled), actual == spec.sha256, spec.sha256, actual, "package")
    found = bundled.check(full=True)
    if found.state == "missing":  # nothing to hide: build it as any use would, then hash that
        bundled.repair()
        found = bundled.check(full=True)
    return Verified(name, str(found.path), found.ok, found.expected, found.actual, "package")


def _verify_bundled(model: LocalModel) -> Verified:
    """A model file given by path, against the catalog's sha256 for its file name."""
    expected = model.entry.files[model.quant].sha256 if model.entry and model.quant else ""
    if not expected:
        raise InvalidParameter(f"{model.name} has no recorded sha256 to verify against",
                               hint="import it with `mistralkit models import` to record one")
    actual = sha256_path(model.path)
    return Verified(model.name, str(model.path), actual == expected, expected, actual, "catalog")
