"""lm-evaluation-harness's ``local-completions`` against ``mistralkit serve``, beside ``mistralkit eval``, on the
same 20 multiple-choice items (bench/data/lm_eval_mc/items.jsonl).

1. ``mistralkit serve -m MODEL`` (a subprocess); lm-eval (``--lm-eval``: its ``lm_eval`` command, from a
   venv of its own: it is no dependency of mistralkit) runs two tasks through ``local-completions``: it
   finds the server's tokenizer (``/tokenizer_info``, ``/tokenize``) and scores "Question: ...\nAnswer:" +
   " CHOICE" by ``echo`` + ``logprobs`` on token-id prompts. Its remote tokenizer never adds a BOS, so
   ``mistralkit_mc`` sends none (the server reads such ids after the model's BOS, as it reads a text),
   and ``mistralkit_mc_bos`` writes "<bos>" first (read as the token).
2. Every log-likelihood lm-eval got back is scored again in this process by ``Engine.logprobs`` on the
   same tokens, after the BOS as the server reads them: the largest difference per task is printed
   (without a BOS Gemma is numerically unstable: a batch of another shape moves it by about a nat).
3. ``mistralkit eval`` on the same items: the question as a user turn, each choice as the answer (the
   chat layout training uses), so its accuracy need not match lm-eval's, whose layout is raw text.

Run:   python -m venv /tmp/lmeval-venv && /tmp/lmeval-venv/bin/pip install "lm-eval[api]==0.4.13"
       MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/lm_eval_mc.py --lm-eval /tmp/lmeval-venv/bin/lm_eval
Writes bench/results/lm_eval_mc.json (lm-eval's own results and samples: bench/results/lm_eval_mc/).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from report import table  # bench/report.py; a script's own folder is on sys.path

from mistralkit.engines import load_engine
from mistralkit.models import resolve

ROOT = Path(__file__).resolve().parent.parent
TASK = ROOT / "bench" / "data" / "lm_eval_mc"
ITEMS = TASK / "items.jsonl"
TASKS = ("mistralkit_mc", "mistralkit_mc_bos")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(model: str, threads: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mistralkit", "serve", "-m", model, "--port", str(port),
                                 "--threads", str(threads)], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mistralkit serve exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("mistralkit serve did not start in 120 s")


def run_lm_eval(lm_eval: str, model: str, url: str, batch: int, out: Path) -> tuple[dict, dict, float]:
    """(accuracy per task, lm-eval's samples per task, seconds)."""
    args = f"model={model},base_url={url}/v1/completions,num_concurrent=1,max_retries=1,max_length=2048"
    command = [lm_eval, "--model", "local-completions", "--model_args", args, "--tasks", ",".join(TASKS),
               "--include_path", str(TASK), "--batch_size", str(batch), "--output_path", str(out), "--log_samples"]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"lm_eval failed ({done.returncode}):\n{done.stderr[-3000:]}")
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    samples = {}
    for task in TASKS:  # samples_TASK_DATE.jsonl: a digit after TASK_ (mistralkit_mc_bos is not mistralkit_mc's)
        lines = next(out.rglob(f"samples_{task}_[0-9]*.jsonl")).read_text().splitlines()
        samples[task] = [json.loads(line) for line in lines]
    return {task: results[task]["acc,none"] for task in TASKS}, samples, seconds


def run_mistralkit_eval(model: str, out: Path) -> tuple[float, float]:
    """(accuracy, seconds) of ``mistralkit eval`` on the items."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "mistralkit", "eval", "-s", str(ITEMS), "-m", model, "--out", str(out)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 1: a threshold missed, which this bench sets none of
        raise SystemExit(f"mistralkit eval failed ({done.returncode}):\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return sum(bool(row["correct"]) for row in rows) / len(rows), seconds


def rescore(engine, samples: list[dict]) -> tuple[float, float]:
    """(accuracy, largest |log-likelihood difference| from lm-eval's) of lm-eval's (context, continuation)
    pairs scored by ``Engine.logprobs``, tokenized as lm-eval does (the whole text, then the context)."""
    right, worst = 0, 0.0
    for sample in samples:  # as lm-eval logs them: arguments {"gen_args_I": {"arg_0", "arg_1"}}, values as text
        scores = []
        pairs = [(args["arg_0"], args["arg_1"]) for args in sample["arguments"].values()]
        for (context, continuation), resp in zip(pairs, sample["resps"], strict=True):
            whole = engine.tokenize(context + continuation, special=True)
            start = len(engine.tokenize(context, special=True))
            if engine.add_bos and whole[:1] != [engine.bos_id]:  # as the server reads ids sent without a BOS
                whole, start = [engine.bos_id, *whole], start + 1
            value = math.fsum(engine.logprobs(whole, start))
            scores.append(value)
            worst = max(worst, abs(value - float(resp[0][0])))
        right += max(range(len(scores)), key=scores.__getitem__) == int(sample["target"])
    return right / len(samples), worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm-eval", required=True, help="lm-eval's lm_eval command (its own venv)")
    parser.add_argument("--model", default="gemma-3-270m:q4_k_m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="lm-eval's --batch_size: prompts per request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        proc, url = serve(args.model, args.threads, scratch / "serve.log")
        try:
            lm_out = ROOT / "bench" / "results" / "lm_eval_mc"  # lm-eval's own results and samples, kept
            shutil.rmtree(lm_out, ignore_errors=True)
            lm_acc, samples, lm_s = run_lm_eval(args.lm_eval, args.model, url, args.batch_size, lm_out)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        mk_acc, mk_s = run_mistralkit_eval(args.model, scratch / "mk")
    engine = load_engine(resolve(args.model), n_ctx=2048, threads=args.threads)
    try:
        again = {task: rescore(engine, samples[task]) for task in TASKS}
    finally:
        engine.close()
    rows = [["lm-eval local-completions -> mistralkit serve", "Question/Answer text, no BOS sent",
             f"{lm_acc['mistralkit_mc']:.2f}", f"{again['mistralkit_mc'][0]:.2f}", f"{again['mistralkit_mc'][1]:.3f}"],
            ["lm-eval local-completions -> mistralkit serve", '"<bos>" + Question/Answer text',
             f"{lm_acc['mistralkit_mc_bos']:.2f}", f"{again['mistralkit_mc_bos'][0]:.2f}",
             f"{again['mistralkit_mc_bos'][1]:.3f}"],
            ["mistralkit eval (multiple choice)", "chat layout, as training", f"{mk_acc:.2f}", "", ""]]
    n = len(samples["mistralkit_mc"])
    print(f"{n} items, {args.model}; lm-eval --batch_size {args.batch_size}: {lm_s:.0f} s for both tasks, "
          f"mistralkit eval {mk_s:.0f} s")
    print(table(["run", "prompt", "accuracy", "same tokens in process", "largest |d loglik|"], rows))
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "lm_eval_mc.json").write_text(json.dumps({
        "model": args.model, "items": n, "batch_size": args.batch_size, "lm_eval_accuracy": lm_acc,
        "in_process_accuracy": {task: again[task][0] for task in TASKS},
        "largest_loglikelihood_difference": {task: again[task][1] for task in TASKS},
        "mistralkit_eval_accuracy": mk_acc, "lm_eval_seconds": lm_s, "mistralkit_eval_seconds": mk_s}, indent=2) + "\n")


if __name__ == "__main__":
    main()
