"""A ``mistralkit tune`` run folder: how it is recognised and what its summary records. The one home of
that knowledge: tune writes the folder (tune/train.py), and export, the store, the transformers engine
(engines/hf_run.py) and the vLLM hand-off read it through here.

A run folder holds ``adapter/`` (peft ``save_pretrained``) and ``training_summary.json``, which records
the base (a name, an HF folder or a GGUF path) and the ``--tokenizer`` used, if any. Nothing here
imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RUN_FORMAT = "hf-run"  # LocalModel.format of a run folder
SUMMARY = "training_summary.json"


def is_run_folder(path: Path) -> bool:
    return (path / SUMMARY).is_file() and (path / "adapter" / "adapter_config.json").is_file()


def summary(folder: Path) -> dict[str, Any] | None:
    """The run's ``training_summary.json``; None when it is missing or unreadable."""
    try:
        data = json.loads((Path(folder).expanduser() / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def trained_base(folder: Path) -> str | None:
    """The base the run recorded: its name, or its absolute path when it was given as a path."""
    base = (summary(folder) or {}).get("base")
    if not isinstance(base, dict):
        return None
    ref = base.get("ref")
    if not ref:
        return base.get("name")
    return base.get("path") if "/" in ref or ref.lower().endswith(".gguf") else ref


def trained_tokenizer(folder: Path) -> str | None:
    """The ``--tokenizer`` the run was trained with, if any."""
    hyperparameters = (summary(folder) or {}).get("hyperparameters")
    return hyperparameters.get("tokenizer") if isinstance(hyperparameters, dict) else None
