"""Memory plan: predicted vs measured peak RSS of the bundled model, per context size and KV type.

For every n_ctx in --ctx (512, 2048, 8192) and KV type in --kv-types (f16, q8_0), a fresh child
process loads the model through mistralkit's engine (``load_engine``), evaluates a prompt and
generates --gen-tokens greedy tokens, then reports its peak RSS (VmHWM; the parent also reads the
child's ru_maxrss from wait4). Two prompts per config:

- ``short``: --prompt-tokens tokens (a few hundred), the usual first turn;
- ``full``: the context filled up to n_ctx - gen - 1 tokens, the worst case a long chat reaches
  (the attention work of a full micro-batch against every cell), which is what ``models fit`` plans.

The prediction is ``memory.plan(shape, n_ctx, kv_type, used=prompt + gen).peak_rss`` from the GGUF
header alone. The child also records the KV cache size llama.cpp logs, to check the KV formula
exactly. Target: every prediction within 10% of the measurement.

``--synthetic-llama PATH`` writes (once) and measures a random llama-architecture GGUF instead
(2 layers, hidden 2048, 32 heads, 8 KV heads, FFN 5632, 32k SPM vocab, f16): another shape with
many heads, no sliding window, to check that the formula is not fitted to Gemma alone.

Run:   MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/memory_plan.py
Writes bench/results/memory_plan.json (per-config parts, measurements, errors, machine, versions).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from report import table  # bench/report.py; a script's own folder is on sys.path
from mistralkit.models import resolve
from mistralkit.models.memory import MIB, ModelShape, plan

TARGET = 0.10
KV_LINE = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB")
COMPUTE_LINE = re.compile(r"compute buffer size =\s*([\d.]+) MiB")


def status(*keys: str) -> dict[str, int]:
    """Fields of /proc/self/status, in bytes."""
    out = {}
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in keys:
                out[key] = int(value.split()[0]) * 1024
    return out


def write_synthetic_llama(path: Path, layers: int = 2, embd: int = 2048, heads: int = 32,
                          kv_heads: int = 8, ff: int = 5632, vocab: int = 32000) -> Path:
    """A random llama GGUF (f16 weights, a made-up SPM vocabulary) that llama.cpp loads and runs."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(16384)
    w.add_block_count(layers)
    w.add_embedding_length(embd)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(embd // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
    tokens += [str(d) for d in range(10)] + [f"\u2581w{i}" for i in range(vocab - len(tokens) - 10)]
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (vocab - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    rng = np.random.default_rng(0)
    rand = lambda *shape: (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)  # noqa: E731
    kv = kv_heads * (embd // heads)
    w.add_tensor("token_embd.weight", rand(vocab, embd))
    w.add_tensor("output_norm.weight", np.ones(embd, np.float32))
    w.add_tensor("output.weight", rand(vocab, embd))
    for i in range(layers):
        for name, shape in (("attn_q", (embd, embd)), ("attn_k", (kv, embd)), ("attn_v", (kv, embd)),
                            ("attn_output", (embd, embd)), ("ffn_gate", (ff, embd)), ("ffn_up", (ff, embd)),
                            ("ffn_down", (embd, ff))):
            w.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(embd, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(embd, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def child(n_ctx: int, kv_type: str, prompt_tokens: int, gen_tokens: int, model_ref: str | None,
          parallel: int = 1) -> None:
    """Runs in the fresh process: load, prompt, generate (``parallel`` sequences at once, each its own
    prompt), print one JSON line."""
    import threading

    from mistralkit.engines import GenerationParams, load_engine

    lines: list[str] = []
    native = logging.getLogger("llama.cpp")
    native.setLevel(logging.DEBUG)
    native.propagate = False
    keep = logging.Handler()
    keep.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    native.addHandler(keep)
    model = resolve(model_ref)
    before = status("VmHWM", "VmRSS")
    engine = load_engine(model, n_ctx=n_ctx, kv_type=kv_type, parallel=parallel)
    loaded = status("VmHWM", "VmRSS", "RssAnon", "RssFile")
    head = [engine.bos_id] if engine.bos_id is not None else []
    usages = []

    def one(index: int) -> None:
        text = f"Sequence {index}. Count upward, one number per line:\n" + "".join(f"{i}\n" for i in range(1, 20000))
        tokens = (head + engine.tokenize(text, special=False))[:prompt_tokens]
        chunks = list(engine.generate(tokens, GenerationParams(max_tokens=gen_tokens, greedy=True, ignore_eos=True)))
        usages.append(chunks[-1].usage)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = status("VmHWM", "VmRSS", "RssAnon", "RssFile")
    engine.close()
    print(json.dumps({
        "parallel": parallel, "prompt_tokens": sum(u.prompt_tokens for u in usages),
        "completion_tokens": sum(u.completion_tokens for u in usages),
        "before_load": before, "after_load": loaded, "after_generate": after,
        "llama_kv_cache_mib": sum(float(m.group(1)) for line in lines if (m := KV_LINE.search(line))),
        "llama_compute_buffer_reserved_mib": max(
            [float(m.group(1)) for line in lines if (m := COMPUTE_LINE.search(line))] or [0]),
    }))


def run_child(command: list[str]) -> tuple[str, str, int, int]:
    """Start ``command``, wait for it with wait4, return (stdout, stderr, exit code, ru_maxrss bytes)."""
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: no deadlock on long stderr
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        out = proc.stdout.read()
        _, status_code, usage = os.wait4(proc.pid, 0)  # not proc.wait(): wait4 also returns rusage
        errors.seek(0)
        return out, errors.read(), os.waitstatus_to_exitcode(status_code), usage.ru_maxrss * 1024


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/memory_plan.py"
               " --ctx 512 2048 --kv-types f16 q8_0 q4_0")
    ap.add_argument("--ctx", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--kv-types", nargs="+", default=["f16", "q8_0"])
    ap.add_argument("--prompt-tokens", type=int, default=300, help="tokens of the short prompt")
    ap.add_argument("--gen-tokens", type=int, default=4)
    ap.add_argument("--parallel", type=int, default=1, help="sequences decoded together (serve --parallel)")
    ap.add_argument(
        "--model",
        default="gemma-3-270m",
        help="model name or path (default: the embedded Gemma 3 270M, as the figures in the README)",
    )
    ap.add_argument("--synthetic-llama", type=Path, metavar="PATH",
                    help="write a random llama GGUF at PATH (if missing) and measure it instead")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "memory_plan.json")
    ap.add_argument("--child", nargs=3, metavar=("N_CTX", "KV_TYPE", "PROMPT_TOKENS"), help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        n_ctx, kv_type, prompt = args.child
        child(int(n_ctx), kv_type, int(prompt), args.gen_tokens, args.model, args.parallel)
        return
    import llama_cpp

    if args.synthetic_llama:
        if not args.synthetic_llama.exists():
            write_synthetic_llama(args.synthetic_llama)
        args.model = str(args.synthetic_llama)
    model = resolve(args.model)
    shape = ModelShape.from_model(model)
    rows, results = [], []
    for n_ctx in args.ctx:
        for kv_type in args.kv_types:
            for scenario, prompt in (("short", args.prompt_tokens), ("full", n_ctx - args.gen_tokens - 1)):
                command = [sys.executable, __file__, "--child", str(n_ctx), kv_type, str(prompt),
                           "--gen-tokens", str(args.gen_tokens), "--parallel", str(args.parallel)] + (
                    ["--model", args.model] if args.model else [])
                out, err, code, maxrss = run_child(command)
                if code:
                    raise SystemExit(f"child {n_ctx} {kv_type} {scenario} failed:\n{err[-2000:]}")
                got = json.loads(out.strip().splitlines()[-1])
                used = got["prompt_tokens"] + got["completion_tokens"]
                predicted = plan(shape, n_ctx, kv_type, used=used, parallel=args.parallel)
                measured = got["after_generate"]["VmHWM"]
                error = predicted.peak_rss / measured - 1
                kv_logged = got["llama_kv_cache_mib"] * MIB
                results.append({"n_ctx": n_ctx, "kv_type": kv_type, "scenario": scenario, "used_tokens": used,
                                "predicted": predicted.to_dict(), "measured_vmhwm": measured,
                                "measured_ru_maxrss": maxrss, "error": error,
                                "kv_cache_logged": kv_logged, "child": got})
                rows.append([str(n_ctx), kv_type, scenario, str(got["prompt_tokens"]),
                             f"{predicted.peak_rss / MIB:.1f}", f"{measured / MIB:.1f}", f"{maxrss / MIB:.1f}",
                             f"{error:+.1%}", f"{predicted.kv_cache / MIB:.2f} / {got['llama_kv_cache_mib']:.2f}"])
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    worst = max(abs(r["error"]) for r in results)
    print(f"model {model.path.name} | llama_cpp {llama_cpp.__version__} | peak RSS in MiB | "
          f"gen {args.gen_tokens} tok | {args.parallel} sequences | one fresh process per row\n")
    print(table(["n_ctx", "kv", "scenario", "prompt tok", "predicted", "VmHWM", "ru_maxrss", "error",
                 "KV MiB plan / llama.cpp"], rows))
    print(f"\nworst error {worst:.1%} (target <= {TARGET:.0%}): {'met' if worst <= TARGET else 'NOT met'}")
    print("predicted = plan(...).peak_rss = weights + repacked + kv_cache + compute + overhead")
    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(), "python": sys.version.split()[0]},
        "llama_cpp_version": llama_cpp.__version__, "model_path": str(model.path),
        "shape": asdict(shape), "gen_tokens": args.gen_tokens, "parallel": args.parallel,
        "target": TARGET, "worst_error": worst, "target_met": worst <= TARGET,
        "method": "one fresh child per config; peak = child's VmHWM after generation (ru_maxrss via wait4 too)",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
