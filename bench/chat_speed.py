"""Chat speed: the mistralkit engine against raw llama-cpp-python, on the same GGUF and threads.

Measures (raw llama-cpp-python in child processes: two llama.cpp contexts in one process slow each
other, see ``raw_child``):
1. prompt processing (pp) tokens/s, generation (tg) tokens/s and time to first token (TTFT)
   of ``LlamaCppEngine.generate`` vs ``llama_cpp.Llama.create_completion(stream=True)`` on the
   same ~256-token prompt (a counting list, so the base model keeps going to the token budget),
   greedy, KV cache reset before every rep; medians of --reps. Both sides are timed the same
   way: perf_counter around the stream (TTFT = first streamed chunk; pp = prompt / TTFT;
   tg = (completion - 1) / (end - first)).
2. multi-turn KV-cache reuse in the engine: TTFT and cached tokens of turn 1 vs turn 10 of a
   10-turn chat (equal-length user turns, 32-token greedy answers), and turn 10 again right
   after a cache reset (the cost without reuse); medians over --reps conversations.

3. with llama.cpp's own ``llama-bench`` (built by ``bench/build_llama_server.sh`` from the same
   llama.cpp source; found in its cache folder, or ``--llama-bench PATH``): its pp (prompt of the
   same length) and tg (the same number of new tokens, after as many cached tokens as our prompt:
   ``-d``) on the same GGUF and threads, as the
   reference for issue 15's "single-stream decode >= 0.95x llama-bench tg".

Run:   MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/chat_speed.py
Writes bench/results/chat_speed.json (per-rep numbers, medians, machine, versions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from statistics import median

import subprocess

import llama_cpp

from report import table  # bench/report.py; a script's own folder is on sys.path
from mistralkit.engines import GenerationParams, load_engine
from mistralkit.engines.llama_native import default_threads
from mistralkit.models import resolve

TOPICS = ["the ocean", "volcanoes", "bees", "the moon", "bread", "glaciers", "owls", "copper",
          "rivers", "clocks"]
FILLER = "Please answer in one short and clear sentence for a curious young reader today".split()


def counting_prompt(engine, n: int) -> list[int]:
    """BOS + a counting list cut to exactly ``n`` tokens: greedy decoding just keeps counting."""
    text = "Count upward, one number per line:\n" + "".join(f"{i}\n" for i in range(1, 400))
    return ([engine.bos_id] + engine.tokenize(text, special=False))[:n]


def user_turns(engine, n_tokens: int) -> list[str]:
    """Ten user messages of exactly ``n_tokens`` tokens each (content only, padded with words)."""
    turns = []
    for i, topic in enumerate(TOPICS, 1):
        text, k = f"Question {i}: tell me something about {topic}.", 0
        while len(engine.tokenize(text, special=False)) < n_tokens:
            text += " " + FILLER[k % len(FILLER)]
            k += 1
        assert len(engine.tokenize(text, special=False)) == n_tokens, (text, n_tokens)
        turns.append(text)
    return turns


def raw_rep(llm: llama_cpp.Llama, tokens: list[int], gen: int, repeat_penalty: float, gbnf: str | None = None) -> dict:
    """One greedy completion, timed; ``gbnf``: under that grammar (a fresh one each rep)."""
    llm.reset()  # n_tokens = 0: the whole prompt is evaluated again
    grammar = None if gbnf is None else llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)
    t0, first, finish, text = time.perf_counter(), None, None, []
    for chunk in llm.create_completion(tokens, max_tokens=gen, temperature=0.0,
                                       repeat_penalty=repeat_penalty, grammar=grammar, stream=True):
        first = first or time.perf_counter()
        finish = chunk["choices"][0]["finish_reason"] or finish
        text.append(chunk["choices"][0]["text"])
    end = time.perf_counter()
    # generate() evaluates each sampled token before sampling the next one: after a "length"
    # break the last token was never evaluated; after EOS every kept token was.
    completion = llm.n_tokens - len(tokens) + (finish == "length")
    return rates(len(tokens), completion, t0, first, end, text="".join(text), finish=finish)


def raw_child(model_path: str, n_ctx: int, threads: int, tokens: list[int], gen: int, repeat_penalty: float,
              gbnf: str | None = None) -> dict:
    """One warm-up and one timed rep of raw llama-cpp-python, in a process of its own.

    Two llama.cpp contexts driven from two threads of one process make two OpenMP teams on our
    2 cores; libgomp then throttles its spin-waits and both run ~35% slower (measured: the
    engine's tg 70 -> 44 tok/s with an idle ``Llama`` loaded beside it). So the reference runs apart."""
    spec = json.dumps({"model": model_path, "n_ctx": n_ctx, "threads": threads, "tokens": tokens, "gen": gen,
                       "repeat_penalty": repeat_penalty, "gbnf": gbnf})
    done = subprocess.run([sys.executable, __file__, "--raw-child"], input=spec, capture_output=True, text=True,
                          timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def raw_child_main() -> None:
    spec = json.loads(sys.stdin.read())
    llm = llama_cpp.Llama(model_path=spec["model"], n_ctx=spec["n_ctx"], n_threads=spec["threads"],
                          n_threads_batch=spec["threads"], n_gpu_layers=0, swa_full=True, verbose=False)
    args = spec["tokens"], spec["gen"], spec["repeat_penalty"], spec.get("gbnf")
    raw_rep(llm, *args)  # warm-up
    print(json.dumps(raw_rep(llm, *args)))
    llm.close()


def mk_rep(engine, request, params: GenerationParams, reset: bool = True) -> dict:
    if reset:
        engine.reset_cache()
    t0, first, text, last = time.perf_counter(), None, [], None
    for chunk in engine.generate(request, params):
        first = first or time.perf_counter()
        text.append(chunk.text)
        last = chunk
    end = time.perf_counter()
    u = last.usage
    return rates(u.prompt_tokens, u.completion_tokens, t0, first, end, text="".join(text),
                 finish=last.finish_reason, cached_tokens=u.cached_tokens,
                 engine_usage=u.to_dict())


def rates(prompt: int, completion: int, t0: float, first: float, end: float, **extra) -> dict:
    ttft, gen_span = first - t0, end - first
    tg = (completion - 1) / gen_span if completion > 1 and gen_span > 0 else 0.0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "ttft_s": ttft,
            "total_s": end - t0, "pp_tps": prompt / ttft, "tg_tps": tg, **extra}


def med(reps: list[dict], *keys: str) -> dict:
    return {k: median(r[k] for r in reps) for k in keys}


def llama_bench_binary(given: Path | None) -> Path | None:
    """``--llama-bench``, else the one ``bench/build_llama_server.sh`` cached for this llama-cpp-python."""
    if given is not None:
        return given
    cached = Path.home() / ".cache" / "mistralkit" / f"llama.cpp-{llama_cpp.__version__}" / "bin" / "llama-bench"
    return cached if cached.exists() else None


def llama_bench(binary: Path, model: Path, threads: int, pp: int, tg: int, reps: int) -> dict:
    """llama-bench's own pp/tg tokens/s (its averages over ``reps``) for the same model and threads:
    pp from an empty cache, tg after ``pp`` tokens (``-d``: the depth our tg runs at, after the
    prompt) and, for reference, from an empty cache (what ``tg128`` alone reports). Flash attention
    off, as the engine runs with an f16 KV cache (llama-bench's "auto" measured between on and off)."""
    done = subprocess.run([str(binary), "-m", str(model), "-t", str(threads), "-p", str(pp), "-n", str(tg),
                           "-d", f"0,{pp}", "-fa", "off", "-r", str(reps), "-o", "json"],
                          capture_output=True, text=True, timeout=1800, check=True)
    rows = json.loads(done.stdout)
    out = {"build": rows[0].get("build_commit"), "rows": rows}
    for row in rows:
        depth = row.get("n_depth", 0)
        if row["n_prompt"] and not row["n_gen"] and depth == 0:
            out["pp_tps"] = row["avg_ts"]
        elif row["n_gen"] and not row["n_prompt"]:
            out["tg_tps" if depth == pp else "tg_empty_tps"] = row["avg_ts"]
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/chat_speed.py"
               " --threads 2 --reps 7 --out /tmp/chat_speed.json")
    ap.add_argument("--threads", type=int, default=default_threads(),
                    help="CPU threads for both sides (default: all cores)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per measurement (default 5)")
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--turn-tokens", type=int, default=30, help="tokens in each user message")
    ap.add_argument("--answer-tokens", type=int, default=32, help="max_tokens of each chat answer")
    ap.add_argument(
        "--model",
        default="gemma-3-270m",
        help="model name or path (default: the embedded Gemma 3 270M, as the figures in the README)",
    )
    ap.add_argument("--llama-bench", type=Path, default=None, metavar="PATH",
                    help="llama.cpp's llama-bench (default: bench/build_llama_server.sh's cached build, if any)")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "chat_speed.json")
    return ap.parse_args()


def main() -> None:
    if sys.argv[1:] == ["--raw-child"]:
        return raw_child_main()
    args = parse_args()
    # The reps are interleaved (order alternating each rep), so drift on a shared machine hits both
    # sides alike; raw llama-cpp-python runs in a child process (see ``raw_child``).
    model = resolve(args.model)
    engine = load_engine(model, n_ctx=4096, threads=args.threads)
    tokens = counting_prompt(engine, args.prompt_tokens)
    params = GenerationParams(max_tokens=args.gen_tokens, greedy=True)
    # Same sampler chain on both sides: penalties (the engine's default 1.1) + greedy.
    run_raw = lambda: raw_child(str(model.path), engine.n_ctx, args.threads, tokens, args.gen_tokens,  # noqa: E731
                                params.repeat_penalty)
    run_mk = lambda: mk_rep(engine, tokens, params)  # noqa: E731
    run_mk()
    raw, mk = [], []
    for i in range(args.reps):
        for run, reps in ((run_raw, raw), (run_mk, mk))[:: 1 if i % 2 == 0 else -1]:
            reps.append(run())

    # Multi-turn: one conversation per rep, cache reset at its start; turn 10 is then re-run cold.
    chat = GenerationParams(max_tokens=args.answer_tokens, greedy=True)
    questions, convs = user_turns(engine, args.turn_tokens), []
    for _ in range(args.reps):
        engine.reset_cache()
        messages, turns = [], []
        for q in questions:
            messages.append({"role": "user", "content": q})
            turns.append(mk_rep(engine, messages, chat, reset=False))
            messages.append({"role": "assistant", "content": turns[-1]["text"]})
        convs.append({"turns": turns, "turn10_cold": mk_rep(engine, messages[:-1], chat)})
    engine.close()
    bench_binary = llama_bench_binary(args.llama_bench)
    lb = (llama_bench(bench_binary, model.path, args.threads, len(tokens), args.gen_tokens, args.reps)
          if bench_binary else None)

    speed = ("pp_tps", "tg_tps", "ttft_s", "completion_tokens")
    turn = ("ttft_s", "prompt_tokens", "cached_tokens")
    r, m = med(raw, *speed), med(mk, *speed)
    a = med([conv["turns"][0] for conv in convs], *turn)
    b = med([conv["turns"][-1] for conv in convs], *turn)
    c = med([conv["turn10_cold"] for conv in convs], *turn)
    ratio = {"pp": m["pp_tps"] / r["pp_tps"], "tg": m["tg_tps"] / r["tg_tps"],
             "ttft": m["ttft_s"] / r["ttft_s"], "turn10_over_turn1_ttft": b["ttft_s"] / a["ttft_s"]}
    same_text = all(x["text"] == y["text"] for x, y in zip(raw, mk))

    print(f"model {model.path.name} | llama_cpp {llama_cpp.__version__} | threads {args.threads}"
          f" | reps {args.reps} (medians) | prompt {len(tokens)} tok | greedy\n")
    f = "{:.1f}".format
    ms = lambda seconds: f"{seconds * 1e3:.1f}"  # noqa: E731
    if lb:
        ratio["pp_vs_llama_bench"] = m["pp_tps"] / lb["pp_tps"]
        ratio["tg_vs_llama_bench"] = m["tg_tps"] / lb["tg_tps"]
    lbc = (lambda key: f(lb[key])) if lb else (lambda key: "-")  # noqa: E731
    lbr = (lambda key: f"{ratio[key]:.3f}") if lb else (lambda key: "-")  # noqa: E731
    print(table(["metric", "raw llama-cpp-python", "mistralkit", "ratio", "target", "llama-bench",
                 "mistralkit / llama-bench"], [
        ["prompt processing (tok/s)", f(r["pp_tps"]), f(m["pp_tps"]), f"{ratio['pp']:.3f}",
         ">= 0.95", lbc("pp_tps"), lbr("pp_vs_llama_bench")],
        ["generation (tok/s)", f(r["tg_tps"]), f(m["tg_tps"]), f"{ratio['tg']:.3f}", ">= 0.95",
         lbc("tg_tps"), lbr("tg_vs_llama_bench")],
        ["TTFT (ms)", ms(r["ttft_s"]), ms(m["ttft_s"]), f"{ratio['ttft']:.3f}", "-", "-", "-"],
        ["completion tokens", f"{r['completion_tokens']:g}", f"{m['completion_tokens']:g}", "-",
         f"{args.gen_tokens} (same text: {'yes' if same_text else 'NO'})", "-", "-"],
    ]))
    if lb:
        print(f"llama-bench: pp{len(tokens)} from an empty cache; tg{args.gen_tokens} @ d{len(tokens)} (after the"
              f" prompt, as ours); tg{args.gen_tokens} from an empty cache: {lbc('tg_empty_tps')} tok/s")
    print()
    print(table(["multi-turn (mistralkit)", "turn 1", "turn 10", "turn 10, cache reset",
                 "turn10/turn1", "target"], [
        ["TTFT (ms)", ms(a["ttft_s"]), ms(b["ttft_s"]), ms(c["ttft_s"]),
         f"{ratio['turn10_over_turn1_ttft']:.2f}", "<= 1.5"],
        *[[f"{k.replace('_', ' ')}", f"{a[k]:g}", f"{b[k]:g}", f"{c[k]:g}", "-", "-"]
          for k in ("prompt_tokens", "cached_tokens")],
    ]))

    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(), "python": sys.version.split()[0]},
        "llama_cpp_version": llama_cpp.__version__, "model_path": str(model.path),
        "threads": args.threads, "reps": args.reps, "prompt_tokens": len(tokens),
        "gen_tokens": args.gen_tokens, "turn_tokens": args.turn_tokens,
        "answer_tokens": args.answer_tokens, "same_text": same_text,
        "method": "reps interleaved with alternating order; raw llama-cpp-python in a child process per rep"
                  " (its own warm-up rep first); the engine warmed up once",
        "raw_reps": raw, "mistralkit_reps": mk, "conversations": convs, "llama_bench": lb,
        "medians": {"raw": r, "mistralkit": m, "turn1": a, "turn10": b, "turn10_cold": c,
                    "ratio": ratio},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
