"""JSON-constrained decoding: the mistralkit engine against raw llama-cpp-python, same grammar.

A JSON schema (an object with an array of bounded records) becomes a GBNF grammar
(``grammar.schema_grammar``); both sides decode greedily under it from the same prompt
tokens. mistralkit's sampler asks the grammar about the picked token only, and applies it to the
whole vocabulary when it refuses that one (``engines/batch.py``, ``Sampler``); llama-cpp-python's
``Llama`` applies it to every token of the vocabulary at every step (Gemma 3: 262 144). Also: the
engine without a grammar on the same prompt (``ignore_eos``), the ceiling. Greedy under one grammar
picks the same tokens either way, so the texts are compared too.

Timed as ``bench/chat_speed.py`` times (perf_counter around the stream; tg = (completion - 1) /
(end - first chunk)); raw llama-cpp-python runs in a child process through ``chat_speed.raw_child``
(two llama.cpp contexts in one process slow each other); reps interleaved; medians of --reps.

Run:   MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/grammar_speed.py --threads 2
Writes bench/results/grammar_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import llama_cpp

from chat_speed import med, mk_rep, raw_child
from report import table  # bench/report.py; a script's own folder is on sys.path
from mistralkit.engines import GenerationParams, load_engine
from mistralkit.engines.llama_native import default_threads
from mistralkit.models import resolve
from mistralkit.grammar import schema_grammar

SCHEMA = {"type": "object", "required": ["library", "books"], "properties": {
    "library": {"type": "string", "maxLength": 40},
    "books": {"type": "array", "minItems": 6, "items": {
        "type": "object", "required": ["title", "year", "rating"], "additionalProperties": False,
        "properties": {"title": {"type": "string", "maxLength": 40},
                       "year": {"type": "integer", "minimum": 1800, "maximum": 2026},
                       "rating": {"type": "number", "minimum": 0, "maximum": 5}}}}}}
ASK = [{"role": "user", "content": "List six classic novels of a small town library as JSON: for each its "
                                   "title, year of publication and a rating out of 5."}]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/grammar_speed.py --threads 2 --reps 3")
    ap.add_argument("--threads", type=int, default=default_threads(),
                    help="llama.cpp threads on both sides (default: physical cores)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per measurement (default 3)")
    ap.add_argument("--gen-tokens", type=int, default=160, help="max_tokens of the JSON answer")
    ap.add_argument(
        "--model",
        default="gemma-3-270m",
        help="model name or path (default: the embedded Gemma 3 270M, as the figures in the README)",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "grammar_speed.json")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    model = resolve(args.model)
    engine = load_engine(model, n_ctx=2048, threads=args.threads)
    tokens = engine.prompt_tokens(ASK)
    gbnf = schema_grammar(SCHEMA)
    constrained = GenerationParams(max_tokens=args.gen_tokens, greedy=True, repeat_penalty=1.0, grammar=gbnf)
    free = GenerationParams(max_tokens=args.gen_tokens, greedy=True, repeat_penalty=1.0, ignore_eos=True)
    runs = {"mk": lambda: mk_rep(engine, tokens, constrained),
            "raw": lambda: raw_child(str(model.path), engine.n_ctx, args.threads, tokens, args.gen_tokens, 1.0, gbnf),
            "mk_free": lambda: mk_rep(engine, tokens, free)}
    runs["mk"]()  # warm-up
    reps: dict[str, list[dict]] = {name: [] for name in runs}
    for i in range(args.reps):
        for name in list(runs)[:: 1 if i % 2 == 0 else -1]:
            reps[name].append(runs[name]())
    engine.close()

    keys = ("tg_tps", "ttft_s", "completion_tokens")
    m = {name: med(r, *keys) for name, r in reps.items()}
    same = reps["mk"][0]["text"] == reps["raw"][0]["text"]
    print(f"model {model.path.name} | llama_cpp {llama_cpp.__version__} | threads {args.threads} | "
          f"reps {args.reps} (medians) | greedy | prompt {len(tokens)} tok\n")
    print(table(["decode", "tok/s", "TTFT (ms)", "tokens", "vs raw"], [
        ["mistralkit, JSON schema grammar", f"{m['mk']['tg_tps']:.1f}", f"{m['mk']['ttft_s'] * 1000:.0f}",
         f"{m['mk']['completion_tokens']:.0f}", f"{m['mk']['tg_tps'] / m['raw']['tg_tps']:.2f}"],
        ["raw llama-cpp-python, same grammar", f"{m['raw']['tg_tps']:.1f}", f"{m['raw']['ttft_s'] * 1000:.0f}",
         f"{m['raw']['completion_tokens']:.0f}", "1.00"],
        ["mistralkit, no grammar", f"{m['mk_free']['tg_tps']:.1f}", f"{m['mk_free']['ttft_s'] * 1000:.0f}",
         f"{m['mk_free']['completion_tokens']:.0f}", f"{m['mk_free']['tg_tps'] / m['raw']['tg_tps']:.2f}"]]))
    print(f"\nsame text under the grammar on both sides: {'yes' if same else 'no'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "model": model.path.name, "llama_cpp": llama_cpp.__version__, "threads": args.threads, "reps": args.reps,
        "machine": platform.processor() or platform.machine(), "schema": SCHEMA, "medians": m,
        "same_text": same, "texts": {name: r[0]["text"] for name, r in reps.items()},
        "per_rep": reps}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
