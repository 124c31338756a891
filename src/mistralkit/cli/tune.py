"""``mistralkit tune``: LoRA / QLoRA fine-tuning on JSONL data (thin over ``tune.train``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

LORA, OPTIM, RUN = "LoRA", "Optimisation", "Run"


def _opt(*names: str, help: str, panel: str = RUN, **kw):
    return typer.Option(*names, help=help, rich_help_panel=panel, show_default=False, **kw)


def tune(
    data: Annotated[Path | None, _opt("--data", "--train-file",
                                                  help="Training JSONL (see `mistralkit data --help`).")] = None,
    out: Annotated[Path | None, _opt("--out", "--output-dir", help="Run folder: checkpoints/, adapter/, "
                                     "training_summary.json.")] = None,
    base: Annotated[str | None, _opt("--base", help="HF model directory, .gguf file, model name or hub id "
                                     "OWNER/REPO (pulled first; default: the embedded Gemma 3 270M).")] = None,
    valid: Annotated[Path | None, _opt("--valid", "--eval-file", help="Validation JSONL (eval loss).")] = None,
    config: Annotated[str | None, _opt("--config", help="YAML file or preset (cpu-smoke, mistral-7b-qlora, "
                                       "ministral-3b-lora); flags override its keys.")] = None,
    tokenizer: Annotated[str | None, _opt("--tokenizer", help="Mistral tokenizer of an HF base: v1, v2, v3, "
                                          "v7, tekken, tekken-v7; auto: the base's own (unsets a preset's).")] = None,
    rank: Annotated[int | None, _opt("--rank", "-r", help="LoRA rank [16].", panel=LORA)] = None,
    alpha: Annotated[float | None, _opt("--alpha", help="LoRA alpha [32].", panel=LORA)] = None,
    dropout: Annotated[float | None, _opt("--dropout", help="LoRA dropout [0.05].", panel=LORA)] = None,
    target_modules: Annotated[str | None, _opt("--target-modules", help="Comma-separated module names "
                                               "(default: the architecture's projections).", panel=LORA)] = None,
    qlora: Annotated[bool | None, _opt("--qlora/--no-qlora", " /--no-4bit",
                                       help="4-bit NF4 base (CUDA + bitsandbytes); --no-4bit is --no-qlora.",
                                       panel=LORA)] = None,
    lr: Annotated[float | None, _opt("--lr", help="Peak learning rate [2e-4].", panel=OPTIM)] = None,
    epochs: Annotated[int | None, _opt("--epochs", help="Passes over the data [1].", panel=OPTIM)] = None,
    max_steps: Annotated[int | None, _opt("--max-steps", help="Optimizer steps (overrides --epochs).",
                                          panel=OPTIM)] = None,
    batch_size: Annotated[int | None, _opt("--batch-size", "--per-device-batch-size", "-b",
                                           help="Samples per micro-batch [1].",
                                           panel=OPTIM)] = None,
    grad_accum: Annotated[int | None, _opt("--grad-accum", "--gradient-accumulation-steps",
                                         help="Micro-batches per step [1].", panel=OPTIM)] = None,
    max_length: Annotated[int | None, _opt("--max-length", help="Truncate samples to N tokens [1024].",
                                           panel=OPTIM)] = None,
    warmup_ratio: Annotated[float | None, _opt("--warmup-ratio", help="Warmup share of the cosine schedule "
                                               "[0.03].", panel=OPTIM)] = None,
    weight_decay: Annotated[float | None, _opt("--weight-decay", help="AdamW weight decay [0].",
                                               panel=OPTIM)] = None,
    precision: Annotated[str | None, _opt("--precision", help="auto (bf16 on capable GPUs, else fp32), fp32, "
                                          "bf16, fp16.", panel=OPTIM)] = None,
    gradient_checkpointing: Annotated[bool | None, _opt("--gradient-checkpointing/--no-gradient-checkpointing",
                                                        help="Less memory, more compute.", panel=OPTIM)] = None,
    train_on_inputs: Annotated[bool | None, _opt("--train-on-inputs/--no-train-on-inputs",
                                                 help="Loss on every token, not only answers.")] = None,
    strip_layout: Annotated[bool | None, _opt("--strip-layout", help="Take USER:/ASSISTANT: or [INST] labels off "
                                              "prompts (the chat template adds its own).")] = None,
    eval_every: Annotated[int | None, _opt("--eval-every", help="Eval loss every N steps (and at the end).")] = None,
    early_stopping: Annotated[int | None, _opt("--early-stopping", help="Stop after N evals without a better "
                                               "eval loss (needs --valid, --eval-every).")] = None,
    packing: Annotated[bool | None, _opt("--packing/--no-packing", help="One row per micro-batch, no padding and "
                                         "no attention across samples [on].", panel=OPTIM)] = None,
    save_every: Annotated[int | None, _opt("--save-every", help="Checkpoint every N steps (Ctrl-C saves too).")] = None,
    seed: Annotated[int | None, _opt("--seed", help="Seed of LoRA init, data order and dropout [0].")] = None,
    resume: Annotated[bool | None, _opt("--resume", help="Continue from the last checkpoint in --out.")] = None,
    resume_from_checkpoint: Annotated[str | None, _opt("--resume-from-checkpoint", metavar="PATH|latest",
                                                       help="Continue from this checkpoint folder "
                                                            "(OUT/checkpoints/step-N); latest is --resume.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Fine-tune a LoRA adapter on JSONL conversations, with the chat format inference uses.

    Writes OUT/adapter (peft), OUT/checkpoints/step-N, OUT/training_summary.json and OUT/loss.png.
    Ctrl-C saves a checkpoint; --resume continues exactly where the run stopped.
    The flags of Hugging Face training scripts are aliases of ours: --train-file (--data),
    --eval-file (--valid), --output-dir (--out), --per-device-batch-size (--batch-size),
    --gradient-accumulation-steps (--grad-accum), --no-4bit (--no-qlora).

    Examples:

      mistralkit tune --config cpu-smoke --data train.jsonl --out runs/smoke

      mistralkit tune --base ./tiny-mistral --tokenizer v3 --data train.jsonl --valid valid.jsonl \\
          --out runs/a --rank 8 --max-steps 100 --eval-every 20 --save-every 50

      mistralkit tune --config mistral-7b-qlora --base ./Mistral-7B-Instruct-v0.3 --data train.jsonl --out runs/m7b

      mistralkit tune --config runs/a.yaml --out runs/a --resume

      mistralkit tune --config runs/a.yaml --out runs/a --resume-from-checkpoint runs/a/checkpoints/step-000050
    """
    # The flags are this function's arguments: read them before any local name joins them.
    flags = {k: str(v) if isinstance(v, Path) else v for k, v in locals().items() if k not in ("config", "as_json")}
    from ..logs import setup
    from ..tune.config import load_config
    from ..tune.train import train

    setup("warning")
    if base and not as_json:
        from .models import pull_if_hub

        pull_if_hub(base)
    result = train(load_config(config, flags), progress=not as_json)
    summary = result.summary
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    evals = summary["eval_loss"]
    print(f"adapter   {result.adapter}")
    print(f"params    {summary['trainable_params']:,} trainable ({summary['trainable_percent']:.2f}%)")
    print(f"loss      {summary['train_loss'][0]['loss']:.4f} -> {summary['final_train_loss']:.4f}"
          + (f"  (eval {evals[-1]['loss']:.4f})" if evals else ""))
    print(f"speed     {summary['tokens_per_second']} tokens/s over {summary['duration_seconds']:.1f} s")
    print(f"summary   {result.out / 'training_summary.json'}")
    for note in summary.get("notes", []):
        print(f"note: {note}")
