"""LoRA adapters for ``vllm serve --lora-modules``: ``mistralkit tune`` run folders or PEFT folders.

A run folder holds ``adapter/`` (peft ``save_pretrained``) and ``training_summary.json``; a PEFT folder
holds ``adapter_config.json`` and ``adapter_model.safetensors`` itself. ``NAME=PATH`` names the module;
otherwise it is the run folder's name (``runs/support`` and ``runs/support/adapter`` are both
``support``). vLLM refuses DoRA, adapter biases and ``modules_to_save``, so they are refused here, before
the model loads.

>>> find_adapter("support=runs/support").name  # doctest: +SKIP
'support'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter
from ..models.runs import trained_base

# The --max-lora-rank values vLLM accepts (vllm/config/lora.py); 16 is its default.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
DEFAULT_MAX_RANK = 16
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class LoraModule:
    name: str
    path: Path  # the folder with adapter_config.json
    rank: int  # the largest rank in it (r, or a larger rank_pattern value)
    base: str | None = None  # the base a tune run recorded, if any

    @property
    def arg(self) -> str:
        return f"{self.name}={self.path}"


def find_adapter(ref: str) -> LoraModule:
    """The adapter ``ref`` (``PATH`` or ``NAME=PATH``) names, checked for what vLLM can load."""
    name, sep, where = ref.partition("=")
    if not sep:
        name, where = "", ref
    source = Path(where).expanduser().resolve()
    peft = next((p for p in (source, source / "adapter") if (p / "adapter_config.json").is_file()), None)
    if peft is None:
        raise InvalidParameter(f"no PEFT adapter (adapter_config.json) in {source}",
                               hint="pass a `mistralkit tune` run folder (it holds adapter/) or a peft folder")
    run = peft.parent if peft.name == "adapter" else peft  # the run folder, or the PEFT folder itself
    name = name or re.sub(r"[^a-z0-9._-]+", "-", run.name.lower()).strip("-.")[:64]
    _check_name(name, peft)
    config = _config(peft)
    return LoraModule(name, peft, _rank(config, peft), trained_base(run))


def max_lora_rank(modules: list[LoraModule]) -> int | None:
    """The ``--max-lora-rank`` the adapters need: None while vLLM's default (16) is enough, else the
    smallest value vLLM accepts that holds the largest rank."""
    largest = max((m.rank for m in modules), default=0)
    if largest <= DEFAULT_MAX_RANK:
        return None
    fitting = [r for r in LORA_RANKS if r >= largest]
    if not fitting:
        worst = max(modules, key=lambda m: m.rank)
        raise InvalidParameter(f"{worst.name} has LoRA rank {worst.rank}; vLLM serves ranks up to {LORA_RANKS[-1]}",
                               hint="train with a smaller --rank")
    return fitting[0]


def _check_name(name: str, peft: Path) -> None:
    # vLLM splits NAME=PATH on '=' and reads an item with ',' as JSON.
    if not name or any(c in name for c in "=,/ \t\n"):
        raise InvalidParameter(f"bad adapter name {name!r}", hint="write NAME=PATH with a NAME of letters, "
                                                                  "digits, '.', '-' or '_'")
    if any(c in str(peft) for c in "=,"):
        raise InvalidParameter(f"vLLM cannot take an adapter path with '=' or ',': {peft}",
                               hint="move or link the adapter to a path without them")


def _config(peft: Path) -> dict[str, Any]:
    try:
        config = json.loads((peft / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidParameter(f"{peft / 'adapter_config.json'} is not readable JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise InvalidParameter(f"{peft / 'adapter_config.json'} is not a JSON object")
    kind = config.get("peft_type", "LORA")
    refused = [what for what, bad in (
        (f"a {kind} adapter (vLLM serves LoRA)", kind != "LORA"),
        ("DoRA", bool(config.get("use_dora"))),
        (f"bias={config.get('bias')!r}", config.get("bias", "none") not in (None, "none")),
        ("LoRA biases", bool(config.get("lora_bias"))),
        ("modules_to_save", bool(config.get("modules_to_save"))),
    ) if bad]
    if refused:
        raise InvalidParameter(f"{peft}: vLLM cannot serve {', '.join(refused)}",
                               hint="train a plain LoRA adapter (what `mistralkit tune` writes)")
    if not any((peft / name).is_file() for name in WEIGHT_FILES):
        raise InvalidParameter(f"{peft} has adapter_config.json but no adapter_model.safetensors",
                               hint="save the adapter with peft's save_pretrained")
    return config


def _rank(config: dict[str, Any], peft: Path) -> int:
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    ranks = [r for r in ranks if isinstance(r, int) and not isinstance(r, bool)]
    if not ranks or min(ranks) < 1:
        raise InvalidParameter(f"{peft / 'adapter_config.json'} has no positive LoRA rank (r)")
    return max(ranks)
