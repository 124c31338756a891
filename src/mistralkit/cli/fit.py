"""``mistralkit models fit``: will a model fit in this much RAM, and if not, what will."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

PROMPT, ANSWER = 100, 200  # models/speed.py's PROMPT_TOKENS and ANSWER_TOKENS (not imported: --help stays light)


def fit(
    name: Annotated[
        str | None, typer.Argument(help="Model name, NAME:QUANT or .gguf path (default: the embedded model).")
    ] = None,
    ram: Annotated[
        str | None,
        typer.Option("--ram", help="Memory to fit in: 4G, 3.5GB, 512M (binary units; default: available now)."),
    ] = None,
    ctx: Annotated[
        int | None,
        typer.Option("--ctx", "-c", help="Context window in tokens (default: 4096, or the model's if smaller)."),
    ] = None,
    kv_type: Annotated[str, typer.Option("--kv-type", help="KV cache type: f16, q8_0 or q4_0.")] = "f16",
    parallel: Annotated[
        int,
        typer.Option(
            "--parallel",
            "-p",
            min=1,
            help="Sequences served at once (`serve --parallel`): each holds its own KV cache.",
        ),
    ] = 1,
    language: Annotated[
        str | None,
        typer.Option("--language", help="Also list the catalog models that write this language (fr, de…) and fit."),
    ] = None,
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", help="Prompt of the predicted answer.")] = PROMPT,
    answer_tokens: Annotated[int, typer.Option("--answer-tokens", help="Length of the predicted answer.")] = ANSWER,
    threads: Annotated[int | None, typer.Option("--threads", "-t", help="llama.cpp threads (default: cores).")] = None,
    recalibrate: Annotated[bool, typer.Option("--recalibrate", help="Measure this machine's speed again.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Predict the peak RAM of a model (weights + KV cache + compute + runtime), what fits, and its speed.

    Reads the GGUF header of a local file, or the catalog for a model not downloaded yet. When the
    model does not fit, it lists configurations that do: a quantized KV cache, a smaller context,
    a smaller quantization, or a smaller catalog model. Exits with 1 when it does not fit.
    The speed (prefill and decode tokens/s, seconds for an answer) comes from the model's shapes and
    this machine's rates, measured once with llama.cpp in a few seconds and kept (--recalibrate).

    Examples:

      mistralkit models fit mistral-7b-instruct-v0.3 --ram 4G --language fr

      mistralkit models fit ./my-model.gguf --ctx 16384 --kv-type q8_0

      mistralkit models fit ministral-8b-instruct:q3_k_m --ram 6G --json

      mistralkit models fit mistral-7b-instruct-v0.3 --parallel 4 --ram 8G   # 4 clients at once

      mistralkit models fit mistral-nemo --ram 8G && mistralkit models pull mistral-nemo

      mistralkit models fit mistral-7b-instruct-v0.3 --answer-tokens 200 --threads 2   # seconds per answer
    """
    from ..models.fitting import fit_report, language_models_that_fit
    from ..models.memory import format_size, parse_size
    from ..models.speed import speed_of

    report = fit_report(name, parse_size(ram) if ram is not None else None, ctx, kv_type.lower(), parallel)
    speed = speed_of(report.shape, threads, prompt_tokens, answer_tokens, recalibrate)  # type: ignore[arg-type]
    report = report.priced(lambda shape: speed_of(shape, threads, prompt_tokens, answer_tokens).answer_s)
    speakers = language_models_that_fit(report.ram, language.lower()) if language else None
    if as_json:
        print(json.dumps({**report.to_dict(), "speed": asdict(speed),
                          **({"language": language, "language_models": speakers} if language else {})}, indent=2))
        raise typer.Exit(0 if report.fits else 1)
    plan = report.plan
    source = "GGUF header" if report.source == "gguf" else "catalog (not downloaded)"
    print(f"{report.title}: {plan.n_ctx} context"
          f"{f' x {plan.parallel} sequences' if plan.parallel > 1 else ''}, {plan.kv_type} KV cache"
          f"{', flash attention' if plan.flash_attn else ''} (sizes from the {source})")
    for part, size in (("weights", plan.weights), ("KV cache", plan.kv_cache), ("compute", plan.compute),
                       ("runtime", plan.overhead), ("total", plan.total)):
        print(f"  {part:<9}{format_size(size):>11}")
    if plan.repacked:
        print(f"  (ps may show up to {format_size(plan.peak_rss)}: the file pages behind "
              f"{format_size(plan.repacked)} of repacked 4-bit weights, which the OS can drop)")
    print(f"  speed    {speed.line()} ({speed.threads} threads)")
    print()
    print(report.message)
    if language:
        print(f"Models that write {language} and fit in {format_size(report.ram)}: "
              f"{', '.join(speakers) if speakers else 'none in the catalog'}.")
    if not report.fits:
        raise typer.Exit(1)
