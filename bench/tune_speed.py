"""Training speed: ``mistralkit tune`` vs a plain transformers Trainer + PEFT loop, on this CPU.

Both sides train the same base (the embedded Gemma 3 270M, dequantized to fp32; or --base), on the
same tokens (our encoder's input ids and labels for a seeded set of samples of varied length), with
the same LoRA (rank 16, alpha 32, dropout 0.05, all attention and MLP projections), AdamW at 2e-4,
batch --batch-size, one epoch, fp32, no gradient checkpointing. The reference is the loop a user
writes with transformers: a stock ``Trainer`` with a collator that pads each batch to its longest
sample (labels -100 on padding), the model computing its own loss over full logits.

mistralkit packs each micro-batch into one row (no padding, no attention across samples) and runs
the language-model head only where a label is trained. Each side runs in a fresh child process
(--reps times, alternating), so peak RSS (VmHWM) is its own; the base is loaded before timing.
Tokens/s counts real (non-padding) tokens over the training loop's wall time. Medians are quoted.

Run:   MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/tune_speed.py
Writes bench/results/tune_speed.json (every run, medians, machine, versions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from report import table  # bench/report.py; a script's own folder is on sys.path

from mistralkit.measure import peak_rss

WORDS = ("the river city garden letter window morning doctor patient summary school reader sentence "
         "correct model answer question local machine memory train data small quick bright").split()
LORA = {"rank": 16, "alpha": 32.0, "dropout": 0.05, "lr": 2e-4}


def write_data(path: Path, samples: int, seed: int) -> None:
    """Prompt/response pairs whose lengths vary from a few words to a few hundred tokens."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(samples):
            prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 60)))
            response = " ".join(rng.choice(WORDS) for _ in range(int(rng.paretovariate(1.2) * 12)))[:1200]
            handle.write(json.dumps({"prompt": prompt.capitalize() + "?", "response": response + "."}) + "\n")


def config_for(args, side: str):
    from mistralkit.tune.config import TuneConfig

    out = Path(tempfile.mkdtemp(prefix=f"tune-bench-{side}-")) / "run"
    return TuneConfig(base=args.base, data=str(args.data), out=str(out), batch_size=args.batch_size,
                      epochs=1, warmup_ratio=0.0, precision="fp32", seed=0, **LORA)


def run_mistralkit(args) -> dict:
    from mistralkit.tune.train import train

    summary = train(config_for(args, "mistralkit"), progress=False).summary
    return {"tokens": summary["tokens"], "seconds": summary["duration_seconds"], "peak_rss": peak_rss()}


def run_trainer(args) -> dict:
    """The reference: transformers' Trainer with PEFT, padding per batch, loss from the model.

    It is ``mistralkit.tune.distributed.build_trainer`` (the multi-GPU path): a stock Trainer with a
    collator that pads to the longest sample of each batch; nothing of mistralkit's own loop.
    """
    from mistralkit.tune.distributed import build_trainer

    trainer = build_trainer(config_for(args, "trainer"), disable_tqdm=True, save_strategy="no",
                            logging_steps=10**6, use_cpu=True, dataloader_num_workers=0)
    tokens = sum(len(row["input_ids"]) for row in trainer.train_dataset)
    started = time.perf_counter()
    trainer.train()
    return {"tokens": tokens, "seconds": time.perf_counter() - started, "peak_rss": peak_rss()}


def child(args) -> None:
    result = {"mistralkit": run_mistralkit, "trainer": run_trainer}[args.child](args)
    print("RESULT " + json.dumps(result), flush=True)


def spawn(side: str, args) -> dict:
    command = [sys.executable, __file__, "--child", side, "--data", str(args.data), "--batch-size",
               str(args.batch_size), *(["--base", args.base] if args.base else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{side} run failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    return result


def versions() -> dict:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "python": platform.python_version()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="model reference (default: the embedded Gemma 3 270M)")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tune_speed.json")
    ap.add_argument("--child", choices=("mistralkit", "trainer"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.data is None:
        args.data = Path(tempfile.mkdtemp(prefix="tune-bench-data-")) / "train.jsonl"
        write_data(args.data, args.samples, seed=0)
    spawn("mistralkit", args)  # warm-up: fills the dequantized-base cache both sides then read
    runs: dict[str, list[dict]] = {"trainer": [], "mistralkit": []}
    for _ in range(args.reps):
        for side in runs:
            runs[side].append(spawn(side, args))
            print(f"{side}: {runs[side][-1]['tokens_per_s']:.1f} tok/s", file=sys.stderr, flush=True)
    med = {side: {k: median(r[k] for r in rs) for k in ("tokens_per_s", "seconds", "peak_rss")}
           for side, rs in runs.items()}
    ratio_speed = med["mistralkit"]["tokens_per_s"] / med["trainer"]["tokens_per_s"]
    ratio_rss = med["mistralkit"]["peak_rss"] / med["trainer"]["peak_rss"]
    rows = [[side, f"{m['tokens_per_s']:.1f}", f"{m['seconds']:.1f}", f"{m['peak_rss'] / 2**20:.0f}"]
            for side, m in med.items()]
    rows.append(["mistralkit / Trainer", f"{ratio_speed:.2f}x", "", f"{ratio_rss:.2f}x"])
    print(table(["loop", "tokens/s", "train s", "peak RSS MiB"], rows))
    print(f"target: >= 1.2x tokens/s at <= 1.0x peak RSS; {args.samples} samples, batch {args.batch_size}, "
          f"{args.reps} reps, {os.cpu_count()} cores")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs, "median": med, "speed_ratio": ratio_speed, "rss_ratio": ratio_rss,
                                    "samples": args.samples, "batch_size": args.batch_size,
                                    "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
                                    "versions": versions()}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
