"""A ``mistralkit tune`` run folder as a model: its recorded base with the adapter it trained.

A run folder (``tune/train.py``) holds ``adapter/`` (peft ``save_pretrained``) and
``training_summary.json``, which records the base (a name, an HF folder or a GGUF path) and the
``--tokenizer`` used, if any. Nothing here imports torch: ``resolve()`` calls ``run_folder_model``.

>>> run_folder_model("runs/smoke")  # doctest: +SKIP
LocalModel(name='smoke', path=PosixPath('/home/me/runs/smoke'), info=None, entry=None, format='hf-run', ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidModelFile, InvalidParameter, ModelNotFound
from ..models.store import LocalModel

RUN_FORMAT = "hf-run"
SUMMARY = "training_summary.json"
EXPORT_HINT = "or export it for llama.cpp: mistralkit export RUN_DIR --merged"


def is_run_folder(path: Path) -> bool:
    return (path / SUMMARY).is_file() and (path / "adapter" / "adapter_config.json").is_file()


def run_folder_model(path: str | Path, name: str | None = None) -> LocalModel | None:
    """The run folder at ``path`` as a ``LocalModel`` (format ``hf-run``), or None if it is not one."""
    folder = Path(path).expanduser()
    if not folder.is_dir() or not is_run_folder(folder):
        return None
    return LocalModel(name or folder.name.lower(), folder.resolve(), None, None, RUN_FORMAT)


@dataclass(frozen=True)
class RunParts:
    base: LocalModel
    adapter: Path
    tokenizer: str | None  # the mistral-common tokenizer the run trained with (--tokenizer)


def run_parts(model: LocalModel) -> RunParts:
    """The base (resolved in the store, never downloaded), adapter folder and tokenizer of a run."""
    from ..models.store import resolve
    from ..tune.export import trained_base, trained_tokenizer

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
