"""``TuneConfig``: every knob of a training run, from a YAML file and flags (flags win).

The YAML keys are the flag names with ``_`` for ``-`` (``grad_accum: 8`` is ``--grad-accum 8``).
``--config`` takes a path or the name of a preset shipped in ``tune/presets/`` (``cpu-smoke``,
``mistral-7b-qlora``, ``ministral-3b-lora``)::

    config = load_config("cpu-smoke", {"data": "train.jsonl", "out": "runs/smoke"})
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter, MissingDependency

PRESETS = Path(__file__).parent / "presets"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TOKENIZERS = ("v1", "v2", "v3", "v7", "tekken", "tekken-v7")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass
class TuneConfig:
    """A LoRA/QLoRA run. ``base`` None is the embedded model; ``target_modules`` None picks by architecture."""

    data: str = field(default="", metadata=_doc("training JSONL"))
    out: str = field(default="", metadata=_doc("run folder: checkpoints, adapter, summary"))
    base: str | None = field(default=None, metadata=_doc("HF directory, GGUF path or model name"))
    valid: str | None = field(default=None, metadata=_doc("validation JSONL"))
    tokenizer: str | None = field(default=None, metadata=_doc("Mistral tokenizer of an HF base: v1..tekken"))
    rank: int = field(default=16, metadata=_doc("LoRA rank"))
    alpha: float = field(default=32.0, metadata=_doc("LoRA alpha (scale = alpha / rank)"))
    dropout: float = field(default=0.05, metadata=_doc("LoRA dropout"))
    target_modules: list[str] | None = field(default=None, metadata=_doc("module names (default: per arch)"))
    lr: float = field(default=2e-4, metadata=_doc("peak learning rate"))
    weight_decay: float = field(default=0.0, metadata=_doc("AdamW weight decay"))
    epochs: int = field(default=1, metadata=_doc("passes over the data (unless max_steps)"))
    max_steps: int | None = field(default=None, metadata=_doc("optimizer steps; overrides epochs"))
    batch_size: int = field(default=1, metadata=_doc("samples per micro-batch"))
    grad_accum: int = field(default=1, metadata=_doc("micro-batches per optimizer step"))
    max_length: int = field(default=1024, metadata=_doc("longer samples are truncated"))
    warmup_ratio: float = field(default=0.03, metadata=_doc("share of steps with linear warmup"))
    eval_every: int | None = field(default=None, metadata=_doc("eval loss every N steps (and at the end)"))
    save_every: int | None = field(default=None, metadata=_doc("checkpoint every N steps"))
    early_stopping: int | None = field(default=None, metadata=_doc("stop after N evals without a better eval loss"))
    packing: bool = field(default=True, metadata=_doc("lay a micro-batch's samples in one row (no padding, "
                                                      "no attention across samples)"))
    seed: int = field(default=0, metadata=_doc("seed of LoRA init, data order, dropout"))
    precision: str = field(default="auto", metadata=_doc("auto (bf16 on capable GPUs, else fp32), fp32, bf16, fp16"))
    qlora: bool = field(default=False, metadata=_doc("4-bit NF4 base (CUDA + bitsandbytes)"))
    train_on_inputs: bool = field(default=False, metadata=_doc("loss on every token"))
    strip_layout: bool = field(default=False, metadata=_doc("take USER:/ASSISTANT:, [INST] labels off prompts"))
    gradient_checkpointing: bool = field(default=False, metadata=_doc("trade compute for memory"))
    resume: bool = field(default=False, metadata=_doc("continue from the last checkpoint in out"))
    resume_from_checkpoint: str | None = field(default=None, metadata=_doc("continue from this checkpoint "
                                                                           "folder, or latest (= resume)"))

    def __post_init__(self) -> None:
        def bad(name: str, why: str, hint: str | None = None) -> InvalidParameter:
            return InvalidParameter(f"{name.replace('_', '-')}: {why}", hint)

        if not self.data:
            raise bad("data", "a training JSONL is required", "pass --data train.jsonl")
        if not self.out:
            raise bad("out", "a run folder is required", "pass --out runs/NAME")
        for name in ("rank", "epochs", "batch_size", "grad_accum", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, f"must be a whole number >= 1, got {value!r}")
        for name in ("max_steps", "eval_every", "save_every", "early_stopping"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise bad(name, f"must be a whole number >= 1, got {value!r}")
        if self.early_stopping and not (self.valid and self.eval_every):
            raise bad("early_stopping", "needs validation data and an eval interval",
                      "pass --valid valid.jsonl and --eval-every N")
        if not self.lr > 0:
            raise bad("lr", f"must be > 0, got {self.lr!r}")
        if not self.alpha > 0:
            raise bad("alpha", f"must be > 0, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise bad("dropout", f"must be in [0, 1), got {self.dropout!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise bad("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio!r}")
        if self.weight_decay < 0:
            raise bad("weight_decay", f"must be >= 0, got {self.weight_decay!r}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"unknown {self.precision!r}", f"use one of {', '.join(PRECISIONS)}")
        if self.tokenizer == "auto":  # the base's own (unsets a preset's tokenizer from the command line)
            self.tokenizer = None
        if self.tokenizer is not None and self.tokenizer not in TOKENIZERS:
            raise bad("tokenizer", f"unknown {self.tokenizer!r}", f"use one of {', '.join(TOKENIZERS)}")
        if self.resume and self.resume_from_checkpoint not in (None, "latest"):
            raise bad("resume_from_checkpoint", "and --resume both choose where to continue from",
                      "pass one of them (--resume is --resume-from-checkpoint latest)")
        if isinstance(self.target_modules, str):
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]
        if self.target_modules is not None and not self.target_modules:
            raise bad("target_modules", "is empty", "leave it out to pick the architecture's projections")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_yaml(source: str | Path) -> dict[str, Any]:
    """A preset name or a YAML file to a dict of TuneConfig fields (unknown keys are refused)."""
    path = Path(source)
    if not path.is_file() and (PRESETS / f"{source}.yaml").is_file():
        path = PRESETS / f"{source}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise InvalidParameter(f"config {source}: no such file or preset", hint=f"presets: {names}")
    try:
        import yaml
    except ImportError as exc:
        raise MissingDependency("reading a YAML config needs PyYAML, which is not installed",
                                hint="pip install pyyaml") from exc
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InvalidParameter(f"config {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidParameter(f"config {path}: expected a mapping of settings, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    known = {f.name for f in fields(TuneConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidParameter(f"config {path}: unknown key {unknown[0]!r}",
                               hint=f"keys are the flag names: {', '.join(sorted(known))}")
    return data


def load_config(config: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TuneConfig:
    """YAML (file or preset) < ``overrides`` (flags; ``None`` values mean "not given")."""
    merged = read_yaml(config) if config else {}
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TuneConfig(**merged)
    except TypeError as exc:  # a YAML value of the wrong type that __post_init__ did not catch
        raise InvalidParameter(f"config: {exc}") from exc
