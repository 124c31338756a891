"""What training adds to the architecture table (engines/hf_arch.py, shared with the transformers
engine): peft's ``target_modules`` for an architecture, and the ``model_type`` and Mistral tokenizer
of a base model.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..engines.hf_arch import ARCHS, Arch, arch_of

__all__ = ["ARCHS", "Arch", "arch_of", "arch_of_base", "checkpoint_model_type", "default_tokenizer", "lora_targets"]


def lora_targets(arch: Arch, names: list[str] | None) -> list[str] | str:
    """``target_modules`` for peft: ``names`` as given (scoped for multimodal models), else the defaults."""
    if names is None and not arch.projections:
        return "all-linear"
    return arch.targets(names)


def checkpoint_model_type(path: Path) -> str | None:
    """``model_type`` of an HF model directory's ``config.json`` (None when unreadable)."""
    try:
        data = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("model_type") if isinstance(data, dict) else None


def arch_of_base(local) -> tuple[str | None, Arch]:
    """(model_type, Arch) of a ``LocalModel`` base; a GGUF is read by transformers as a causal LM."""
    model_type = checkpoint_model_type(local.path) if local.format == "hf" else None
    return model_type, arch_of(model_type)


def default_tokenizer(local) -> str | None:
    """The Mistral tokenizer an HF base encodes prompts with: its catalog entry's, else its architecture's."""
    if local.format != "hf":
        return None  # a GGUF's metadata says (formats.mistral_tokenizer_of)
    return local.mistral_tokenizer or arch_of_base(local)[1].tokenizer
