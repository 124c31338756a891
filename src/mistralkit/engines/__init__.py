"""Inference engines. Each backend is one module implementing ``base.Engine``.

The engine is picked by data: ``ENGINES`` maps a model's format (``LocalModel.format``, or
``"remote"`` for a configured API) to the module and class that run it. Adding an engine is adding
a module and a row here.
"""

from __future__ import annotations

import importlib
import inspect

from .base import (Capabilities, Chunk, Completion, Engine, EngineBase, GenerationParams, Usage, complete,
                   require)

__all__ = ["Capabilities", "Chunk", "Completion", "Engine", "EngineBase", "GenerationParams", "Usage",
           "complete", "load_engine", "require", "ENGINES"]

ENGINES: dict[str, tuple[str, str]] = {
    "gguf": ("llamacpp", "LlamaCppEngine"),
    "hf": ("transformers", "TransformersEngine"),
    "hf-run": ("transformers", "TransformersEngine"),  # a `mistralkit tune` run folder: base + adapter
    "remote": ("remote", "open_remote"),
}

# Options that change what the model computes: an engine that cannot take them must refuse them.
MEANINGFUL = {"adapter": "LoRA adapters", "quant": "--quant (4/8-bit loading)"}


def engine_class(fmt: str):
    from ..errors import InvalidModelFile

    if fmt not in ENGINES:
        raise InvalidModelFile(f"no engine runs {fmt} models",
                               hint=f"use a model in one of these formats: {', '.join(ENGINES)}")
    module, name = ENGINES[fmt]
    return getattr(importlib.import_module(f".{module}", __name__), name)


def load_engine(model, **options) -> Engine:
    """Load ``model`` (a LocalModel, or a RemoteModel) with the engine its format calls for.

    Options left at None are dropped; options an engine has no use for (``mmap`` for a remote) are
    dropped too, except those that change the output (``adapter``, ``quant``), which are refused.
    """
    from ..errors import Unsupported

    factory = engine_class(model.format)
    accepted = inspect.signature(factory).parameters
    given = {key: value for key, value in options.items() if value is not None}
    for key in given:
        if key == "quant" and model.format == "gguf":
            raise Unsupported(f"{model.name} is a GGUF file whose weights are already quantized{_quant_of(model)}: "
                              "--quant 4/8 loads a transformers model through bitsandbytes",
                              hint="drop --quant (the file runs as it is); for another size pick another file, "
                                   "e.g. mistralkit models pull NAME:q8_0")
        if key not in accepted and key in MEANINGFUL:
            kind = ENGINES[model.format][0]
            raise Unsupported(f"{model.name} runs on the {kind} engine, which takes no {MEANINGFUL[key]}",
                              hint=f"drop --{key}, or use a model format that supports it")
    return factory(model, **{key: value for key, value in given.items() if key in accepted})


def _quant_of(model) -> str:
    """`` (Q4_K_M)`` when the file's name says its quantization, as hub GGUF names do."""
    import re

    path = getattr(model, "path", None)
    pattern = r"(?i)(?:^|[.\-_])((?:i?q\d(?:_[a-z0-9]+)*)|bf16|f16|f32)(?=$|[.\-])"
    found = re.search(pattern, path.stem) if path else None
    return f" ({found.group(1).upper()})" if found else ""
