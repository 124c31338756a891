"""``models fit``: plan a model in a given amount of RAM and, when it does not fit, find what does.

>>> report = fit_report("mistral-7b-instruct-v0.3", 4 << 30)  # doctest: +SKIP
>>> report.message  # doctest: +SKIP
'Mistral 7B Instruct v0.3 Q4_K_M needs ~5.2 GiB at 4096 context: over 4.0 GiB. Fits: Q3_K_M at 2048 ...'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import InvalidModelFile, InvalidParameter, ModelNotFound
from ..settings import KV_TYPES
from . import catalog
from .catalog import CatalogEntry
from .memory import ModelShape, Plan, available_memory, default_context, format_size, plan, with_quant


@dataclass(frozen=True)
class Option:
    """A configuration that fits: ``change`` is kv_type, context, quant or model."""

    ref: str
    label: str
    n_ctx: int
    kv_type: str
    total: int
    change: str
    shape: ModelShape | None = field(default=None, repr=False, compare=False)  # what the speed planner prices
    answer_s: float | None = None  # the planner's seconds for an answer (``priced``)

    def describe(self) -> str:
        kv = f" with a {self.kv_type} KV cache" if self.kv_type != "f16" else ""
        speed = f", ~{self.answer_s:,.0f} s an answer" if self.answer_s is not None else ""
        return f"{self.label} at {self.n_ctx}{kv} (~{format_size(self.total)}{speed})"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "shape"}


@dataclass
class FitReport:
    ref: str
    title: str
    source: str  # gguf (a local file) or catalog (sizes from the catalog: not downloaded)
    ram: int
    plan: Plan
    options: list[Option]
    shape: ModelShape | None = None  # what was planned (the speed planner prices the same shapes)

    @property
    def fits(self) -> bool:
        return self.plan.total <= self.ram

    @property
    def message(self) -> str:
        head = f"{self.title} needs ~{format_size(self.plan.total)} at {self.plan.n_ctx} context"
        if self.fits:
            spare = format_size(self.ram - self.plan.total)
            return f"{head}: fits in {format_size(self.ram)} ({spare} to spare)."
        if not self.options:
            return f"{head}: over {format_size(self.ram)}. Nothing in the catalog fits in that much memory."
        fits = ", or ".join(o.describe() for o in self.options)
        return f"{head}: over {format_size(self.ram)}. Fits: {fits}."

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "title": self.title, "source": self.source, "ram": self.ram,
                "fits": self.fits, "plan": self.plan.to_dict(),
                "options": [o.to_dict() for o in self.options], "message": self.message}

    def priced(self, answer_seconds) -> FitReport:
        """The same report with each option's seconds for an answer, ``answer_seconds(shape)`` (the
        speed planner's, so the advice weighs speed as well as memory)."""
        options = [replace(o, answer_s=answer_seconds(o.shape)) if o.shape is not None else o for o in self.options]
        return replace(self, options=options)


def shape_for(ref: str | None) -> tuple[ModelShape, str, CatalogEntry | None, str | None]:
    """(shape, name, catalog entry, quant) of a local model, or of a catalog model not downloaded."""
    from .store import resolve

    try:
        model = resolve(ref)
    except ModelNotFound:
        found = catalog.lookup(ref) if ref else None
        if found is None:
            raise
        return ModelShape.from_catalog(*found), found[0].ref(found[1]), *found
    if model.format != "gguf" or model.info is None:
        raise InvalidModelFile(f"{model.name} is a {model.format} model; the planner sizes GGUF files")
    return ModelShape.from_model(model), model.name, model.entry, model.quant


def _contexts(below: int) -> list[int]:
    """Powers of two from 512 up to (not including) ``below``, largest first."""
    return [1 << k for k in range(int(math.log2(max(below - 1, 1))), 8, -1) if 512 <= 1 << k < below]


def fit_report(ref: str | None, ram_bytes: int | None = None, n_ctx: int | None = None,
               kv_type: str = "f16", parallel: int = 1) -> FitReport:
    """Plan ``ref`` in ``ram_bytes`` (default: available now) and, if it does not fit, what does.

    Options, in order: a quantized KV cache, a smaller context, a smaller quantization (at a
    smaller context if need be), and the two largest smaller catalog LLMs.
    """
    shape, name, entry, quant = shape_for(ref)
    ram = available_memory() if ram_bytes is None else ram_bytes
    n_ctx = n_ctx or default_context(shape.context_length)
    if shape.context_length and n_ctx > shape.context_length:
        raise InvalidParameter(f"--ctx {n_ctx} is larger than {shape.title}'s context length "
                               f"({shape.context_length} tokens)",
                               hint=f"use --ctx {shape.context_length} or less")
    wanted = plan(shape, n_ctx, kv_type, parallel=parallel)
    report = FitReport(name, shape.title, shape.source, ram, wanted, [], shape)
    if report.fits:
        return report

    def fitting(variant: ModelShape, ctx: int, kv: str) -> Plan | None:
        candidate = plan(variant, ctx, kv, parallel=parallel)
        return candidate if candidate.total <= ram else None

    base, label = (entry.ref(quant), quant.upper()) if entry and quant else (name, "the same model")
    for kv in KV_TYPES[KV_TYPES.index(kv_type) + 1:]:
        if (found := fitting(shape, n_ctx, kv)):
            report.options.append(Option(base, label, n_ctx, kv, found.total, "kv_type", shape))
            break
    for ctx in _contexts(n_ctx):
        if (found := fitting(shape, ctx, kv_type)):
            report.options.append(Option(base, label, ctx, kv_type, found.total, "context", shape))
            break
    if entry and quant:
        report.options += _smaller_quant(shape, entry, quant, n_ctx, kv_type, fitting)
    report.options += _smaller_models(entry, wanted.total, n_ctx, kv_type, ram, parallel)
    return report


def _smaller_quant(shape, entry, quant, n_ctx, kv_type, fitting) -> list[Option]:
    """The largest smaller quantization that fits, at the largest context that lets it."""
    size = entry.files[quant].size
    smaller = sorted((q for q, f in entry.files.items() if f.format == "gguf" and f.size < size),
                     key=lambda q: -entry.files[q].size)
    for ctx in [n_ctx, *_contexts(n_ctx)]:
        for q in smaller:
            variant = with_quant(shape, entry, q)
            if (found := fitting(variant, ctx, kv_type)):
                return [Option(entry.ref(q), q.upper(), ctx, kv_type, found.total, "quant", variant)]
    return []


def _smaller_models(entry, total, n_ctx, kv_type, ram, parallel: int = 1, count: int = 2) -> list[Option]:
    """The ``count`` largest catalog LLMs (default quantization) that fit, with ``parallel``
    sequences, and need less."""
    found = []
    for other in catalog.entries(kind="llm"):
        spec = other.files[other.default_quant]
        if other is entry or other.arch is None or spec.format != "gguf":
            continue
        ctx = min(n_ctx, other.context_length)
        shape = ModelShape.from_catalog(other, other.default_quant)
        need = plan(shape, ctx, kv_type, parallel=parallel).total
        if need <= ram and need < total:
            label = f"{other.title} {other.default_quant.upper()}"
            found.append((other.params, Option(other.ref(), label, ctx, kv_type, need, "model", shape)))
    return [option for _, option in sorted(found, key=lambda item: -item[0])[:count]]


def language_models_that_fit(ram: int, language: str, n_ctx: int = 4096) -> list[str]:
    """Catalog LLMs (default quantization) that write ``language`` and fit in ``ram``, largest first,
    as "Title Q4_K_M (~2.6 GiB, licence)".

    >>> language_models_that_fit(4 << 30, "fr")[:1]  # doctest: +SKIP
    ['Llama 3.2 3B Instruct Q4_K_M (~2.6 GiB, llama3.2)']
    """
    found = []
    for entry in catalog.entries(kind="llm"):
        spec = entry.files[entry.default_quant]
        if language not in entry.languages or entry.arch is None or spec.format != "gguf":
            continue
        need = plan(ModelShape.from_catalog(entry, entry.default_quant), min(n_ctx, entry.context_length)).total
        if need <= ram:
            found.append((entry.params, f"{entry.title} {entry.default_quant.upper()} (~{format_size(need)}, "
                                        f"{entry.license})"))
    return [label for _, label in sorted(found, key=lambda item: -item[0])]
