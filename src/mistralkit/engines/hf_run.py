"""A ``mistralkit tune`` run folder for the transformers engine: its recorded base (resolved in the
store, never downloaded), the adapter it trained and the tokenizer it trained with. What a run folder
is and records: models/runs.py; ``models.store.run_folder_model`` makes it a ``LocalModel``.

>>> run_parts(run_folder_model("runs/smoke")).base.name  # doctest: +SKIP
'gemma-3-270m:q4_k_m'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidModelFile, InvalidParameter, ModelNotFound
from ..models.runs import RUN_FORMAT, SUMMARY, is_run_folder, trained_base, trained_tokenizer
from ..models.store import LocalModel, resolve

__all__ = ["RUN_FORMAT", "RunParts", "run_parts"]

EXPORT_HINT = "or export it for llama.cpp: mistralkit export RUN_DIR --merged"


@dataclass(frozen=True)
class RunParts:
    base: LocalModel
    adapter: Path
    tokenizer: str | None  # the mistral-common tokenizer the run trained with (--tokenizer)


def run_parts(model: LocalModel) -> RunParts:
    """The base (resolved in the store, never downloaded), adapter folder and tokenizer of a run."""
    folder = model.path
    if not is_run_folder(folder):
        raise InvalidModelFile(f"{folder} is not a `mistralkit tune` run folder",
                               hint=f"a run folder holds adapter/adapter_config.json and {SUMMARY}")
    ref = trained_base(folder)
    if not ref:
        raise InvalidModelFile(f"{folder / SUMMARY} records no base model",
                               hint="pass the base with --model BASE and the run's adapter with --adapter RUN_DIR")
    if ("/" in ref or ref.lower().endswith(".gguf")) and not Path(ref).exists():
        raise ModelNotFound(f"the base of the run {model.name}, {ref}, is gone",
                            hint=f"put the base back where it was, {EXPORT_HINT} while it exists")
    base = resolve(ref)
    if base.format not in ("hf", "gguf"):
        raise InvalidParameter(f"the base of the run {model.name}, {base.name}, is a {base.format} model",
                               hint="a run's base must be an HF model folder or a GGUF file")
    return RunParts(base, folder / "adapter", trained_tokenizer(folder))
