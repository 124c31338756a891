"""``models info``: what the catalog, the registry and the file itself say about a model."""

from __future__ import annotations

from ..errors import ModelNotFound
from . import catalog, registry, store


def _catalog_part(entry: catalog.CatalogEntry) -> dict:
    return {
        "title": entry.title, "kind": entry.kind, "repo": entry.repo, "license": entry.license,
        "gated": entry.gated, "params": f"{entry.params:g}B", "context_length": entry.context_length,
        "chat_format": entry.chat_format + (f" ({entry.mistral_tokenizer})" if entry.mistral_tokenizer else ""),
        "good_for": entry.good_for,
        "files": {q: f"{s.file} ({s.size / 1e9:.2f} GB)" for q, s in entry.files.items()},
    }


def _file_part(model: store.LocalModel) -> dict:
    data: dict = {"path": str(model.path), "format": model.format, "size": store.size_of(model.path)}
    info = model.info
    if info is not None:
        data["gguf"] = {
            "architecture": info.architecture, "context_length": info.context_length,
            "vocab_size": info.vocab_size, "tensors": len(info.tensors), "type": info.general_type,
            "chat_template": "yes" if info.chat_template else "no",
        }
    record = registry.get(model.name)
    if record is not None:
        data["registered"] = {"source": record.source, "sha256": record.sha256, "url": record.url or "",
                              "managed": record.managed}
    return data


def _memory_part(ref: str) -> dict:
    """Predicted RAM at the default context (``models fit`` for the details and other sizes)."""
    from .fitting import shape_for
    from .memory import default_context, format_size, plan

    shape = shape_for(ref)[0]
    n_ctx = default_context(shape.context_length)
    return {"memory": f"~{format_size(plan(shape, n_ctx).total)} at {n_ctx} context (`mistralkit models fit`)"}


def describe(ref: str) -> dict:
    """A flat-ish dict for people (``models info``) and scripts (``--json``)."""
    found = catalog.lookup(ref) if not store.looks_like_path(ref) else None
    data: dict = {"name": found[0].ref(found[1]) if found else ref}
    if found:
        data.update(_catalog_part(found[0]))
    try:
        model = store.resolve(ref)
    except ModelNotFound:
        if not found:
            raise
        data["status"] = "available (not downloaded)"
        if found[0].kind == "llm":
            data.update(_memory_part(ref))
        return data
    data["name"] = model.name
    data["status"] = "on this machine"
    data.update(_file_part(model))
    if model.format == "gguf" and (model.entry is None or model.entry.kind == "llm"):
        data.update(_memory_part(str(model.path)))
    return data


__all__ = ["describe"]
