"""mistralkit at the shapes users run (Llama 3.2 1B, Ministral 3B, Mistral 7B v0.3, Q4_K_M, random
weights: bench/real_shape.py), against llama.cpp's own llama-bench on the same file and threads, in
the same run; and the speed planner's prediction (models/speed.py) beside both.

For each shape, in a fresh child process (so peak RSS is the model's): load time, then ``--reps``
times a prompt of ``--prompt-tokens`` random tokens (prefill tok/s) and ``--gen-tokens`` greedy
tokens (decode tok/s at that depth), medians; peak RSS (VmHWM) against ``models fit``'s plan. Then
llama-bench ``-p P -n G -d 0,P`` (pp from an empty cache, tg after the prompt). Then the seconds for a
200-token answer after a 100-token prompt, measured once, against the planner's.

Run:   bash bench/build_llama_server.sh                       # llama-bench, once (~11 min)
       MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/real_shape_speed.py --threads 2
Writes bench/results/real_shape_speed.json. Building the 7B file takes minutes the first time.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import real_shape
from chat_speed import llama_bench, llama_bench_binary
from report import table  # bench/report.py; a script's own folder is on sys.path
from mistralkit.engines.llama_native import default_threads

ANSWER_PROMPT, ANSWER_TOKENS = 100, 200


def child(path: str, threads: int, prompt_tokens: int, gen_tokens: int, reps: int, answer: bool) -> None:
    """In a fresh process: load, prefill + decode ``reps`` times, and (``answer``) one 200-token answer."""
    import resource

    from mistralkit.engines import GenerationParams, complete, load_engine
    from mistralkit.models import resolve

    started = time.perf_counter()
    model = resolve(path)
    engine = load_engine(model, n_ctx=max(1024, prompt_tokens + gen_tokens + 64), threads=threads)
    load_s = time.perf_counter() - started
    params = GenerationParams(max_tokens=gen_tokens, greedy=True, ignore_eos=True)
    runs = []
    for rep in range(reps):
        engine.reset_cache()
        prompt = [1 + (7919 * (i + 1) + 104729 * rep) % 30000 for i in range(prompt_tokens)]
        done = complete(engine, prompt, params)
        runs.append({"pp": done.usage.prompt_tps, "tg": done.usage.gen_tps})
    answer_s = None
    if answer:
        engine.reset_cache()
        prompt = [1 + (7919 * (i + 3)) % 30000 for i in range(ANSWER_PROMPT)]
        started = time.perf_counter()
        complete(engine, prompt, GenerationParams(max_tokens=ANSWER_TOKENS, greedy=True, ignore_eos=True))
        answer_s = time.perf_counter() - started
    engine.close()
    print(json.dumps({"load_s": load_s, "pp": median(r["pp"] for r in runs), "tg": median(r["tg"] for r in runs),
                      "answer_s": answer_s,
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def measure(path: Path, args, answer: bool) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", str(path), "--threads", str(args.threads),
                           "--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens),
                           "--reps", str(args.reps), *(["--answer"] if answer else [])],
                          capture_output=True, text=True, timeout=7200)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def planned(path: Path, args) -> dict:
    from mistralkit.models import resolve
    from mistralkit.models.memory import ModelShape, plan
    from mistralkit.models.speed import calibrate, predict

    shape = ModelShape.from_model(resolve(str(path)))
    n_ctx = max(1024, args.prompt_tokens + args.gen_tokens + 64)
    calibration = calibrate(args.threads)
    bench_speed = predict(shape, calibration, args.prompt_tokens, args.gen_tokens)
    answer = predict(shape, calibration, ANSWER_PROMPT, ANSWER_TOKENS)
    return {"peak_rss": plan(shape, n_ctx, "f16").peak_rss, "pp": bench_speed.prefill_tps,
            "tg": bench_speed.decode_tps, "answer_s": answer.answer_s, "calibration": calibration.__dict__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", default=list(real_shape.SHAPES), help="shapes (default: all)")
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--answer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--llama-bench", type=Path, default=None, metavar="PATH",
                    help="llama.cpp's llama-bench (default: bench/build_llama_server.sh's cached build)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "real_shape_speed.json")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.threads, args.prompt_tokens, args.gen_tokens, args.reps, args.answer)
        return
    binary = llama_bench_binary(args.llama_bench)
    results, rows = {}, []
    for name in args.names:
        path = real_shape.build(name)
        print(f"{name}: {path}", flush=True)
        ours = measure(path, args, answer=True)
        plan = planned(path, args)
        ref = llama_bench(binary, path, args.threads, args.prompt_tokens, args.gen_tokens, args.reps) if binary else {}
        results[name] = {"file": str(path), "size": path.stat().st_size, "ours": ours, "planned": plan,
                         "llama_bench": {k: v for k, v in ref.items() if k != "rows"}}
        err = lambda p, m: f"{100 * (p - m) / m:+.0f}%"  # noqa: E731
        rows.append(
            [
                name,
                f"{path.stat().st_size / 2**30:.2f}",
                f"{ours['load_s']:.1f}",
                f"{ours['pp']:.1f}",
                f"{ref.get('pp_tps', float('nan')):.1f}",
                f"{plan['pp']:.1f} ({err(plan['pp'], ours['pp'])})",
                f"{ours['tg']:.2f}",
                f"{ref.get('tg_tps', float('nan')):.2f}",
                f"{plan['tg']:.2f} ({err(plan['tg'], ours['tg'])})",
                f"{ours['answer_s']:.0f}",
                f"{plan['answer_s']:.0f} ({err(plan['answer_s'], ours['answer_s'])})",
                f"{ours['peak_rss'] / 2**30:.2f}",
                f"{plan['peak_rss'] / 2**30:.2f}",
            ]
        )
        print(rows[-1], flush=True)
    print(table(["shape (Q4_K_M)", "GiB", "load s", "pp ours", "pp llama-bench", "pp planned", "tg ours",
                 "tg llama-bench", "tg planned", f"{ANSWER_TOKENS}-tok answer s", "planned s", "peak RSS GiB",
                 "planned GiB"], rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": args.threads,
                                    "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
                                    "reps": args.reps, "results": results}, indent=2))


if __name__ == "__main__":
    main()
