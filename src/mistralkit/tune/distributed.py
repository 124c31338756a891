"""Several GPUs: the same ``TuneConfig`` (YAML preset + flags) as a transformers ``Trainer``.

``mistralkit tune`` is one process on one device. For more, ``accelerate launch`` runs this module
once per GPU; transformers' Trainer then does the data-parallel work (DDP, FSDP or DeepSpeed, as the
accelerate config file says). The data goes through the same encoder and loss masks as
``mistralkit tune``, the LoRA and optimiser settings come from the same YAML keys, and the adapter
lands in ``OUT/adapter`` for ``mistralkit export``::

    accelerate launch --config_file fsdp.yaml -m mistralkit.tune.distributed \\
        --config ministral-3b-lora --base ./ministral-3b --data train.jsonl --out runs/m3b

What differs from ``mistralkit tune``: batches are padded (no packing), checkpoints and resume are
the Trainer's own (``OUT/checkpoint-N``, ``--resume`` passes ``resume_from_checkpoint=True``), and
no ``training_summary.json`` or loss plot is written (the Trainer's ``trainer_state.json`` holds the
loss history).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .config import TuneConfig, load_config

SWITCHES = ("resume", "qlora", "packing", "train_on_inputs", "gradient_checkpointing")


def encoded_rows(path: str, config: TuneConfig) -> tuple[list[dict[str, list[int]]], int]:
    """The samples of ``path`` as Trainer rows (input ids, labels), and the pad id."""
    from ..formats.layout import open_encoder
    from .train import encode_file

    from .arch import default_tokenizer
    from .base import resolve_base

    local = resolve_base(config.base)
    tokenizer = config.tokenizer or default_tokenizer(local)
    with open_encoder(None if tokenizer else str(local.path), tokenizer) as encoder:
        data = encode_file(path, encoder, config)
        return [{"input_ids": e.input_ids, "labels": e.labels} for e in data.samples], encoder.pad_id


def padding_collator(pad_id: int):
    """Right-pad a batch to its longest row: pad id for inputs, -100 for labels, mask 0."""
    import torch

    from ..formats.layout import IGNORE

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        longest = max(len(row["input_ids"]) for row in batch)
        gap = [longest - len(row["input_ids"]) for row in batch]
        return {"input_ids": torch.tensor([r["input_ids"] + [pad_id] * g for r, g in zip(batch, gap)]),
                "labels": torch.tensor([r["labels"] + [IGNORE] * g for r, g in zip(batch, gap)]),
                "attention_mask": torch.tensor([[1] * (longest - g) + [0] * g for g in gap])}

    return collate


def training_arguments(config: TuneConfig, dtype: str, **extra):
    from transformers import TrainingArguments

    steps = {"max_steps": config.max_steps} if config.max_steps else {"num_train_epochs": config.epochs}
    evals = {"eval_strategy": "steps", "eval_steps": config.eval_every} if config.valid and config.eval_every else {}
    saves = (
        {"save_strategy": "steps", "save_steps": config.save_every} if config.save_every else {"save_strategy": "no"}
    )
    settings = dict(
        output_dir=config.out, per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr, weight_decay=config.weight_decay, lr_scheduler_type="cosine",  # warmup < 1: a ratio
        warmup_steps=config.warmup_ratio, seed=config.seed, bf16=dtype == "bf16", fp16=dtype == "fp16",
        gradient_checkpointing=config.gradient_checkpointing, report_to=[], remove_unused_columns=False,
        logging_steps=1, **steps, **evals, **saves)
    return TrainingArguments(**{**settings, **extra})


def build_trainer(config: TuneConfig, **training_extra):
    """A Trainer over the config's base, data and LoRA; ``training_extra`` goes to TrainingArguments."""
    from transformers import Trainer

    from .base import load_base, pick_device, resolve_base, wrap_lora

    device, dtype = pick_device(config)
    train_rows, pad_id = encoded_rows(config.data, config)
    valid_rows = encoded_rows(config.valid, config)[0] if config.valid else None
    loaded = wrap_lora(load_base(resolve_base(config.base), config, device, dtype), config, device, dtype)
    return Trainer(model=loaded.model, args=training_arguments(config, dtype, **training_extra),
                   train_dataset=train_rows, eval_dataset=valid_rows, data_collator=padding_collator(pad_id))


def run(config: TuneConfig) -> Path:
    """Train with the Trainer (one process per GPU under ``accelerate launch``); returns OUT/adapter."""
    trainer = build_trainer(config)
    chosen = config.resume_from_checkpoint
    trainer.train(resume_from_checkpoint=True if config.resume or chosen == "latest" else chosen)
    adapter = Path(config.out) / "adapter"
    if trainer.is_world_process_zero():
        trainer.model.save_pretrained(str(adapter), save_embedding_layers=False)
    return adapter


def main(argv: list[str] | None = None) -> None:
    """``python -m mistralkit.tune.distributed --config PRESET --data D --out O [KEY VALUE]...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML file or preset, as for mistralkit tune")
    known, unknown = parser.parse_known_args(argv)
    overrides: dict[str, Any] = {}
    it = iter(unknown)
    for flag in it:  # --key value pairs, the flag names of `mistralkit tune`
        key = flag.removeprefix("--").replace("-", "_")
        if key.removeprefix("no_") in SWITCHES:  # --qlora / --no-qlora, as for mistralkit tune
            overrides[key.removeprefix("no_")] = not key.startswith("no_")
            continue
        value = next(it, None)
        overrides[key] = _typed(key, value)
    config = load_config(known.config, overrides)
    adapter = run(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"adapter {adapter}")


def _typed(key: str, value: str | None) -> Any:
    import dataclasses

    from ..errors import InvalidParameter

    types = {f.name: f.type for f in dataclasses.fields(TuneConfig)}
    if key not in types or value is None:
        raise InvalidParameter(f"--{key.replace('_', '-')}: unknown flag or missing value")
    kind = str(types[key])
    if "int" in kind:
        return int(value)
    if "float" in kind:
        return float(value)
    return value


if __name__ == "__main__":
    main()
