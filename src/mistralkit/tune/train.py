"""``train(config)``: LoRA fine-tuning with a plain torch loop, checkpoints and exact resume.

Run folder (``config.out``)::

    checkpoints/step-000010/   adapter (peft) + state.pt: optimizer, scheduler, step, RNG, history
    adapter/                   the final adapter (peft ``save_pretrained``)
    training_summary.json      base, data, hyperparameters, params, losses, speed, memory, versions
    loss.png                   train and eval loss (when matplotlib is installed)

Data order is a function of the seed and the epoch alone, so a run resumed from a checkpoint
(``resume=True``) sees the same batches, learning rates and dropout masks as one never stopped.
The loss of a step is the mean over every trained token of its micro-batches (not a mean of means).

>>> train(load_config("cpu-smoke", {"data": "train.jsonl", "out": "runs/smoke"}))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter
from ..measure import peak_rss, pyplot
from ..models.runs import SUMMARY
from .config import TuneConfig
from .progress import Progress, say
from .batches import loss_sum, takes_logits_to_keep, to_tensors, trained_tokens
from ..formats.layout import Encoded, encode, open_encoder

# Settings a resumed run must share with the checkpoint, or it would not end where the first would.
RESUME_KEYS = ("base", "data", "tokenizer", "rank", "alpha", "dropout", "target_modules", "lr", "weight_decay",
               "epochs", "max_steps", "batch_size", "grad_accum", "max_length", "warmup_ratio", "seed",
               "train_on_inputs", "qlora", "precision")


@dataclass
class Dataset:
    samples: list[Encoded]
    truncated: int = 0
    left_out: list[str] = field(default_factory=list)  # FILE:LINE of samples with nothing to train on
    shapes: dict[str, int] = field(default_factory=dict)  # lines per shape, as `data validate` counts them
    path: str = ""
    layout: str | None = None  # prompts that carry a chat layout of their own (tune.layouts)

    def stats(self) -> dict[str, Any]:
        return {"samples": len(self.samples), "shapes": self.shapes, "mixed": len(self.shapes) > 1,
                "tokens": sum(map(len, self.samples)),
                "trained_tokens": sum(e.trainable for e in self.samples), "truncated": self.truncated,
                "left_out": self.left_out, "longest": max(map(len, self.samples), default=0)}

    def note(self, max_length: int) -> str | None:
        if not self.left_out:
            return None
        shown = ", ".join(self.left_out[:5]) + (" …" if len(self.left_out) > 5 else "")
        return (f"{len(self.left_out)} sample(s) left out: their answers start after --max-length {max_length} "
                f"tokens ({shown}); raise --max-length to keep them")

    def notes(self, max_length: int) -> list[str]:
        """What the run summary should tell about this data: mixed shapes, samples left out."""
        from .data import mixed_note

        return [n for n in (mixed_note(self.path, self.shapes), self.layout, self.note(max_length)) if n]


@dataclass
class State:
    step: int = 0
    train_loss: list[list[float]] = field(default_factory=list)  # [step, loss, lr]
    eval_loss: list[list[float]] = field(default_factory=list)  # [step, loss]
    tokens: int = 0
    seconds: float = 0.0
    stopped_early: bool = False


@dataclass
class Result:
    out: Path
    adapter: Path
    summary: dict[str, Any]


def encode_file(path: str, encoder, config: TuneConfig) -> Dataset:
    from .data import read_samples, shape_counts
    from .layouts import layout_note, strip

    samples = read_samples(path)  # mixed shapes are fine; the summary's notes say so
    dataset = Dataset([], shapes=shape_counts(samples), path=path,
                      layout=layout_note(samples, stripped=config.strip_layout))
    if config.strip_layout:
        samples = [strip(sample) for sample in samples]
    for sample in samples:
        encoded = encode(sample, encoder, train_on_inputs=config.train_on_inputs)
        if len(encoded) > config.max_length:
            encoded = Encoded(encoded.input_ids[: config.max_length], encoded.labels[: config.max_length])
            dataset.truncated += 1
        if encoded.trainable:  # truncation can leave nothing to learn
            dataset.samples.append(encoded)
        else:
            dataset.left_out.append(f"{sample.path}:{sample.line}")
    if not dataset.samples:
        raise InvalidParameter(f"{path}: no sample has a trained token within --max-length {config.max_length}")
    return dataset


def micro_batches(n: int, config: TuneConfig, epoch: int) -> list[list[int]]:
    """Sample indices of each micro-batch of an epoch: a shuffle seeded by (seed, epoch) only."""
    order = list(range(n))
    random.Random(config.seed * 100_003 + epoch).shuffle(order)
    return [order[i: i + config.batch_size] for i in range(0, n, config.batch_size)]


def total_steps(n: int, config: TuneConfig) -> int:
    per_epoch = math.ceil(n / config.batch_size)
    return config.max_steps or math.ceil(config.epochs * per_epoch / config.grad_accum)


def step_batches(n: int, config: TuneConfig, step: int) -> list[list[int]]:
    """The micro-batches of optimizer step ``step`` (0-based) in the endless epoch stream."""
    per_epoch = math.ceil(n / config.batch_size)
    limit = None if config.max_steps else config.epochs * per_epoch
    out = []
    for m in range(step * config.grad_accum, (step + 1) * config.grad_accum):
        if limit is not None and m >= limit:
            break
        out.append(micro_batches(n, config, m // per_epoch)[m % per_epoch])
    return out


def evaluate(model, dataset: Dataset, pad_id: int, config: TuneConfig, device: str, select: bool = True) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(dataset.samples), config.batch_size):
            batch = dataset.samples[i: i + config.batch_size]
            total += float(loss_sum(model, to_tensors(batch, pad_id, device, config.packing), select))
            count += trained_tokens(batch)
    model.train()
    return total / max(count, 1)


def _no_progress(evals: list[list[float]], patience: int | None) -> bool:
    """Early stopping: the last ``patience`` evaluations were all no better than the best before them."""
    if not patience or len(evals) <= patience:
        return False
    best_before = min(loss for _, loss in evals[:-patience])
    return all(loss >= best_before for _, loss in evals[-patience:])


def _scheduler(optimizer, steps: int, config: TuneConfig):
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, math.ceil(steps * config.warmup_ratio), steps)


# --- checkpoints ------------------------------------------------------------------------------

def _rng_state() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, model, optimizer, scheduler, state: State, config: TuneConfig) -> Path:
    import torch

    final = out / "checkpoints" / f"step-{state.step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    model.save_pretrained(tmp, save_embedding_layers=False)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                "state": state.__dict__, "config": config.to_dict()}, tmp / "state.pt")
    if final.exists():
        import shutil

        shutil.rmtree(final)
    tmp.rename(final)  # a checkpoint exists whole or not at all
    return final


def last_checkpoint(out: Path) -> Path | None:
    found = sorted(p for p in (out / "checkpoints").glob("step-*") if not p.name.endswith(".tmp"))
    return found[-1] if found else None


def chosen_checkpoint(out: Path, config: TuneConfig) -> Path | None:
    """The checkpoint to continue from: ``--resume-from-checkpoint PATH``, the last one in ``out`` for
    ``--resume`` (or ``latest``), None for a new run."""
    choice = config.resume_from_checkpoint
    if choice not in (None, "latest"):
        path = Path(choice)
        if not (path / "state.pt").is_file():
            found = last_checkpoint(out)
            raise InvalidParameter(f"--resume-from-checkpoint {choice}: not a checkpoint folder (no state.pt)",
                                   hint=f"the last one in --out is {found}" if found else
                                   "checkpoints are OUT/checkpoints/step-N (see --save-every)")
        return path
    if not (config.resume or choice == "latest"):
        return None
    found = last_checkpoint(out)
    if found is None:
        raise InvalidParameter(f"--resume: no checkpoint in {out / 'checkpoints'}", hint="start without --resume")
    return found


def load_checkpoint(path: Path, model, optimizer, scheduler, config: TuneConfig) -> State:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = torch.load(path / "state.pt", weights_only=False)
    changed = [k for k in RESUME_KEYS if saved["config"].get(k) != getattr(config, k)]
    if changed:
        raise InvalidParameter(f"--resume: {', '.join(changed)} differ from the checkpoint {path.name}",
                               hint="resume with the settings of the first run, or train into a new --out")
    set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    _set_rng_state(saved["rng"])
    return State(**saved["state"])


# --- the run ----------------------------------------------------------------------------------

def _peak_memory(device: str) -> int:
    if device == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    return peak_rss()


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    from .. import __version__

    return {"mistralkit": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


def plot_loss(state: State, target: Path) -> str | None:
    """Write loss.png; returns why not when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return "matplotlib is not installed: no loss.png (pip install matplotlib)"
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([s for s, *_ in state.train_loss], [v for _, v, *_ in state.train_loss], label="train")
    if state.eval_loss:
        ax.plot([s for s, _ in state.eval_loss], [v for _, v in state.eval_loss], "o-", label="eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return None


def _check_tokenizer_fits(version: str, local) -> None:
    """Refuse a Mistral tokenizer whose vocabulary is not the base's (as ``data stats`` refuses --model with
    --tokenizer): its ids would train another model's embeddings. A preset's ``tokenizer`` is refused the same
    way on a base it was not written for; ``--tokenizer auto`` unsets it."""
    import json

    from ..formats.mistral import MistralFormat

    size = local.info.vocab_size if local.format == "gguf" and local.info is not None else None
    if size is None and local.format == "hf" and (local.path / "config.json").is_file():
        config = json.loads((local.path / "config.json").read_text())
        size = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    wanted = MistralFormat(version).n_vocab
    if size and int(size) != wanted:
        raise InvalidParameter(
            f"tokenizer {version} ({wanted:,} tokens) does not belong to {local.name} (a vocabulary of {int(size):,}): "
            "the data would be encoded with another model's token ids",
            hint="pass --tokenizer auto to use the base's own chat format (a --config preset's tokenizer is for "
                 "the base it was written for)")


def _encode_data(config: TuneConfig, progress: bool = False) -> tuple[Dataset, Dataset | None, int, Any, str | None]:
    """Train and valid sets, pad id, the base, and the Mistral tokenizer used (None: the base's own)."""
    from .arch import default_tokenizer
    from .base import resolve_base

    local = resolve_base(config.base)
    if config.tokenizer is not None:
        _check_tokenizer_fits(config.tokenizer, local)
    # An HF checkpoint of a known Mistral architecture (Ministral 3) encodes as inference does
    # without --tokenizer; others need it, or are GGUFs whose metadata names their format.
    tokenizer = config.tokenizer or default_tokenizer(local)
    model_ref = None if tokenizer else str(local.path)
    say(f"encoding {config.data}" + (f" and {config.valid}" if config.valid else "")
        + f" with the chat format of {tokenizer or local.name}", progress)
    with open_encoder(model_ref, tokenizer) as encoder:
        train_set = encode_file(config.data, encoder, config)
        valid_set = encode_file(config.valid, encoder, config) if config.valid else None
        pad_id = encoder.pad_id
    for dataset in (train_set, valid_set):
        if dataset is not None and dataset.layout:
            say(dataset.layout, progress)
    return train_set, valid_set, pad_id, local, tokenizer


def train(config: TuneConfig, *, progress: bool = True,
          on_step: Callable[[int, float], None] | None = None) -> Result:
    """Train a LoRA adapter as ``config`` says; ``on_step(step, loss)`` runs after every step.

    Ctrl-C (KeyboardInterrupt) saves a checkpoint at the last finished step and re-raises.
    """
    from .base import load_base, loading_message, pick_device, wrap_lora

    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise InvalidParameter(f"--out {out} is a file", hint="--out names a folder for the run: choose another")
    device, dtype = pick_device(config)  # --qlora on a CPU fails here, before any loading
    checkpoint = chosen_checkpoint(out, config)
    if checkpoint is None and (last_checkpoint(out) is not None or (out / SUMMARY).exists()):
        raise InvalidParameter(f"{out} already holds a run",
                               hint="pass --resume to continue it, or choose another --out")
    train_set, valid_set, pad_id, local, tokenizer = _encode_data(config, progress)

    import torch

    say(loading_message(local, config, dtype), progress)
    loaded = wrap_lora(load_base(local, config, device, dtype), config, device, dtype)
    say(f"{loaded.trainable:,} trainable parameters on {device} ({dtype}); training", progress)
    model = loaded.model
    vocab = model.get_input_embeddings().num_embeddings
    highest = max(max(e.input_ids) for e in train_set.samples)
    if highest >= vocab:
        raise InvalidParameter(f"token id {highest} is outside the model's vocabulary of {vocab}",
                               hint="the tokenizer does not match the model: check --tokenizer")
    select = takes_logits_to_keep(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps = total_steps(len(train_set.samples), config)
    scheduler = _scheduler(optimizer, steps, config)
    state = State()
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer, scheduler, config)
    else:
        torch.manual_seed(config.seed + 1)  # dropout masks, independent of how LoRA was initialised
    out.mkdir(parents=True, exist_ok=True)
    model.train()
    bar, first = Progress(steps, state.step, enabled=progress), state.step
    try:
        while state.step < steps:
            started = time.perf_counter()
            indices = step_batches(len(train_set.samples), config, state.step)
            batches = [[train_set.samples[i] for i in batch] for batch in indices]
            trained = sum(trained_tokens(b) for b in batches)
            total = 0.0
            for batch in batches:
                loss = loss_sum(model, to_tensors(batch, pad_id, device, config.packing), select) / max(trained, 1)
                loss.backward()
                total += float(loss.detach())
                state.tokens += sum(map(len, batch))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.seconds += time.perf_counter() - started
            state.train_loss.append([state.step, total, lr])
            if valid_set and config.eval_every and state.step % config.eval_every == 0 and state.step < steps:
                state.eval_loss.append([state.step, evaluate(model, valid_set, pad_id, config, device, select)])
                if _no_progress(state.eval_loss, config.early_stopping):
                    state.stopped_early = True
                    break
            if config.save_every and state.step % config.save_every == 0 and state.step < steps:
                save_checkpoint(out, model, optimizer, scheduler, state, config)
            bar.update(state, total, first)
            if on_step is not None:
                on_step(state.step, total)
    except KeyboardInterrupt:
        bar.close()
        if state.step:
            path = save_checkpoint(out, model, optimizer, scheduler, state, config)
            print(f"interrupted: checkpoint {path}; continue with --resume", file=sys.stderr)
        raise
    bar.close()
    if valid_set and not state.stopped_early:
        state.eval_loss.append([state.step, evaluate(model, valid_set, pad_id, config, device, select)])
    adapter = out / "adapter"
    model.save_pretrained(adapter, save_embedding_layers=False)
    summary = {
        "base": {"ref": config.base, "name": local.name, "path": str(local.path), "format": local.format,
                 "model_type": loaded.model_type},
        "data": {"train": {"path": config.data, **train_set.stats()},
                 "valid": {"path": config.valid, **valid_set.stats()} if valid_set else None},
        "hyperparameters": {**config.to_dict(), "tokenizer": tokenizer, "target_modules": loaded.targets,
                            "total_steps": steps},
        "device": device, "precision": dtype,
        "trainable_params": loaded.trainable, "total_params": loaded.total,
        "trainable_percent": round(100 * loaded.trainable / loaded.total, 4),
        "train_loss": [{"step": s, "loss": v, "lr": lr} for s, v, lr in state.train_loss],
        "eval_loss": [{"step": s, "loss": v} for s, v in state.eval_loss],
        "final_train_loss": state.train_loss[-1][1] if state.train_loss else None,
        "steps": state.step, "stopped_early": state.stopped_early,
        "tokens": state.tokens, "tokens_per_second": round(state.tokens / state.seconds, 2) if state.seconds else None,
        "duration_seconds": round(state.seconds, 3), "peak_memory_bytes": _peak_memory(device),
        "versions": _versions(),
    }
    note = plot_loss(state, out / "loss.png")
    summary["loss_plot"] = None if note else "loss.png"
    notes = [*train_set.notes(config.max_length), *(valid_set.notes(config.max_length) if valid_set else []),
             *([note] if note else [])]
    if notes:
        summary["notes"] = notes
    (out / SUMMARY).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return Result(out, adapter, summary)
