"""``mistralkit bench``: llama-bench-style speed of a GGUF model (+ adapter) on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def bench(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model name or .gguf path (default: the configured model, else the embedded chat model).",
        ),
    ] = None,
    adapter: Annotated[str | None, typer.Option("--adapter", help="GGUF LoRA adapter (name or path) on top.")] = None,
    threads: Annotated[str, typer.Option("--threads", "-t", help="Comma-separated thread counts, e.g. 1,2.")] = "",
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", "-p", help="Prompt length for pp.")] = 512,
    gen_tokens: Annotated[int, typer.Option("--gen-tokens", "-n", help="Tokens decoded for tg.")] = 128,
    reps: Annotated[int, typer.Option("--reps", "-r", help="Repetitions per thread count.")] = 3,
    png: Annotated[Path | None, typer.Option("--png", help="Write a bar chart of pp/tg tokens/s here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Measure prompt processing (pp) and generation (tg) tokens/s, TTFT, load time and peak RSS.

    Examples:

      mistralkit bench

      mistralkit bench -m mistral-7b-instruct-v0.3 --threads 1,2,4 -p 512 -n 128 --png bench.png

      mistralkit bench --adapter support --json
    """
    from ..engines.llama_native import default_threads
    from ..errors import InvalidParameter
    from ..evaluate.bench import plot, run_bench
    from ..logs import setup
    from ..models.store import resolve, resolve_adapter

    setup("warning")
    try:
        counts = [int(t) for t in threads.split(",") if t.strip()] or [default_threads()]
    except ValueError as exc:
        raise InvalidParameter(f"--threads {threads!r}: expected numbers like 1,2,4") from exc
    adapter_path, adapter_base = resolve_adapter(adapter) if adapter else (None, None)
    if not model and not adapter:
        from ..settings import load

        model = load().settings.model  # MISTRALKIT_MODEL, config.toml's model
    local = resolve(model or adapter_base)
    show = None if as_json else (lambda r: print(_row(r.summary()), flush=True))
    if show:
        print(f"{local.name}{' + ' + adapter if adapter else ''}: pp{prompt_tokens} tg{gen_tokens}, {reps} reps")
        print("threads | pp tok/s        | tg tok/s       | TTFT ms | load s | peak RSS MiB")
    results = run_bench(local, threads=counts, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, reps=reps,
                        adapter=str(adapter_path) if adapter_path else None, on_result=show)
    note = plot(results, png) if png else None
    if as_json:
        print(json.dumps([r.summary() for r in results], indent=2))
    elif png and not note:
        print(f"chart: {png}")
    if note:
        print(f"note: {note}")


def _row(s: dict) -> str:
    pp, tg = s["pp"], s["tg"]
    return (f"{s['threads']:>7} | {pp['mean']:8.1f} ± {pp['sd']:<5.1f} | {tg['mean']:7.1f} ± {tg['sd']:<5.1f} | "
            f"{s['ttft_median_s'] * 1000:7.0f} | {s['load_s']:6.2f} | {s['peak_rss'] / 2**20:.0f}")
