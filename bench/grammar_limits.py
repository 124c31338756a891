"""What llama.cpp's grammar parser takes: each grammar compiled in a fresh child process (a crash is
that child's exit code), with the time, the peak memory and, where asked, one pass over the whole
vocabulary. The limits in ``mistralkit.grammar`` (docs/grammars.md) are set well under what this finds.

Run:   MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/grammar_limits.py [--big]
Writes bench/results/grammar_limits.json. ``--big`` adds the cases that take minutes and GBs (a chain
of 50,000 rules).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from report import table  # bench/report.py; a script's own folder is on sys.path
from mistralkit.grammar import schema_grammar
from mistralkit.models import resolve

CHILD = r"""
import ctypes, json, resource, sys, time
import llama_cpp as L
L.llama_log_set(L.llama_log_callback(lambda level, text, data: None), None)
L.llama_backend_init()
params = L.llama_model_default_params(); params.vocab_only = True
model = L.llama_model_load_from_file(sys.argv[1].encode(), params)
vocab = L.llama_model_get_vocab(model)
started = time.perf_counter()
sampler = L.llama_sampler_init_grammar(vocab, open(sys.argv[2]).read().encode(), b"root")
out = {"compiled": bool(sampler), "compile_s": time.perf_counter() - started}
if sampler and sys.argv[3] == "apply":
    n = L.llama_vocab_n_tokens(vocab)
    data = (L.llama_token_data * n)(*[L.llama_token_data(i, 0.0, 0.0) for i in range(n)])
    candidates = L.llama_token_data_array(data, n, -1, False)
    started = time.perf_counter()
    L.llama_sampler_apply(sampler, ctypes.byref(candidates))
    out["apply_s"] = time.perf_counter() - started
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps(out))
"""


def nested(depth: int) -> str:
    return "root ::= " + '("a" ' * depth + ")?" * depth + "\n"


def chain(rules: int) -> str:
    lines = ["root ::= r0"] + [f'r{i} ::= r{i + 1} "x"' for i in range(rules)] + [f'r{rules} ::= "a"']
    return "\n".join(lines) + "\n"


def flat_enum(values: int) -> str:
    return "root ::= " + " | ".join(json.dumps(json.dumps(f"value-{i:05d}")) for i in range(values)) + "\n"


def cases(big: bool) -> dict[str, tuple[str, bool]]:
    """name -> (GBNF, whether to apply it to the whole vocabulary too)."""
    out = {f"parentheses nested {n}": (nested(n), False) for n in (1000, 2000, 10000, 20000)}
    out |= {f"a chain of {n} leading rules": (chain(n), False) for n in (1000, 10000, *((50000,) if big else ()))}
    out["x{0,2500} (over llama.cpp's 2000)"] = ('root ::= "a"{0,2500}\n', False)
    out["1000 literals, one alternation"] = (flat_enum(1000), True)
    out["plain: a quoted word"] = ('root ::= "\\"" [a-z]+ "\\""\n', True)
    ours = {"maxLength 100000": {"type": "string", "maxLength": 100_000},
            "minLength 100000": {"type": "string", "minLength": 100_000},
            "20000 arrays of 20000-char strings": {"type": "array", "maxItems": 20000,
                                                   "items": {"type": "string", "maxLength": 20000}},
            "pattern ^a{5000,20000}b{0,999}$": {"type": "string", "pattern": "^a{5000,20000}b{0,999}$"},
            "1000 enum values (a trie)": {"enum": [f"value-{i:05d}" for i in range(1000)]},
            "4000 required properties": {"type": "object", "required": [f"p{i}" for i in range(4000)],
                                         "properties": {f"p{i}": {"type": "integer"} for i in range(4000)}}}
    out |= {f"mistralkit: {name}": (schema_grammar(schema), True) for name, schema in ours.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big", action="store_true", help="add the cases of minutes and GBs")
    ap.add_argument("--timeout", type=float, default=300, help="seconds a case may take (default 300)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "grammar_limits.json")
    args = ap.parse_args()
    model = str(resolve("gemma-3-270m").path)
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (gbnf, apply) in cases(args.big).items():
            path = Path(folder) / "g.gbnf"
            path.write_text(gbnf)
            try:
                done = subprocess.run([sys.executable, "-c", CHILD, model, str(path), "apply" if apply else "-"],
                                      capture_output=True, text=True, timeout=args.timeout)
                result = json.loads(done.stdout) if done.returncode == 0 else {"exit": done.returncode}
            except subprocess.TimeoutExpired:
                result = {"timeout_s": args.timeout}
            results[name] = result
            outcome = ("compiles" if result.get("compiled") else "refused") if "compiled" in result else (
                f"exit {result['exit']}" + (" (SIGSEGV)" if result.get("exit") == -11 else "")
                if "exit" in result else "timeout")
            rows.append([name, outcome, f"{result.get('compile_s', 0):.3f}", f"{result.get('apply_s', 0):.3f}"
                         if "apply_s" in result else "", str(result.get("peak_mb", ""))])
            print(rows[-1], flush=True)
    print(table(["grammar", "llama.cpp", "compile s", "apply to vocab s", "peak MB"], rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
