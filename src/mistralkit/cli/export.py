"""``mistralkit export``: a trained LoRA adapter as a GGUF that llama.cpp applies."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer


def export(
    source: Annotated[Path, typer.Argument(help="A tune run folder, or a folder saved by peft (adapter_config.json).")],
    gguf_adapter: Annotated[
        bool, typer.Option("--gguf-adapter", help="Write the LoRA adapter as a GGUF adapter.")
    ] = False,
    merged: Annotated[
        bool, typer.Option("--merged", help="Merge the adapter into the base and write a quantized GGUF model.")
    ] = False,
    quant: Annotated[str, typer.Option("--quant", "-q", help="With --merged: q4_k_m, q5_k_m, q8_0 or f16.")] = "q4_k_m",
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            "-b",
            help="The GGUF base the adapter was trained on (default: the run's base, else the embedded Gemma 3 270M).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Register the adapter under this name (default: SOURCE's folder name).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the .gguf here instead of the model store.")
    ] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="With --gguf-adapter: f16 or f32 adapter weights.")] = "f16",
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer", help="With --merged on an HF base: its Mistral tokenizer, v1/v2/v3 (default: the run's)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an adapter registered under the same name.")] = False,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="With --merged: skip comparing the export with base + adapter.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record (with the check) as JSON.")] = False,
) -> None:
    """Export a LoRA adapter for llama.cpp (or merge it into a quantized GGUF) and register it.

    --merged then compares the export with base + adapter on held-out samples of the run (its eval
    split, else its last training samples): top-1 agreement and KL, against the base alone, and a
    warning when quantization washed the adapter out.

    Examples:

      mistralkit export runs/smoke --gguf-adapter

      mistralkit export runs/smoke --merged --quant q8_0 --name smoke-merged --json | jq .check

      mistralkit chat --model smoke-merged

      mistralkit export runs/support --gguf-adapter --base mistral-7b-instruct-v0.3:q4_k_m --name support

      mistralkit run --adapter support "How do I reset my password?"
    """
    from ..errors import InvalidParameter
    from ..logs import setup
    from ..models import resolve
    from ..models.catalog import BASE_MODEL
    from ..models.runs import trained_base, trained_tokenizer
    from ..tune.export import export_and_register
    from ..tune.merge import merge_and_register

    setup("warning")
    if gguf_adapter == merged:
        raise InvalidParameter("choose one of --gguf-adapter and --merged",
                               hint="--gguf-adapter keeps the adapter separate; --merged writes a whole model")
    model = resolve(base or trained_base(source) or BASE_MODEL)
    stem = name or source.expanduser().resolve().name
    if merged:
        record = merge_and_register(source, model, name or f"{stem}-{quant}", quant, out, force,
                                    tokenizer or trained_tokenizer(source), check=not no_check, say=_say)
        _report_merge(record, model.name, as_json)
        return
    record = export_and_register(source, model, stem, out, dtype, force)
    if as_json:
        print(json.dumps(asdict(record), indent=2))
        return
    print(f"Exported {record.name} ({record.size / 2**20:.1f} MiB) for {model.name}: {record.path}")
    print(f"Use it with: mistralkit run --adapter {record.name} ...")


def _say(text: str) -> None:
    print(f"export: {text}", file=sys.stderr, flush=True)


def _report_merge(record, base: str, as_json: bool) -> None:
    from ..tune.fidelity import Fidelity

    check = record.check or {}
    fidelity = Fidelity(**check) if "verdict" in check else None
    warning = fidelity.warning() if fidelity else None
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if as_json:
        print(json.dumps({**asdict(record), "warning": warning}, indent=2))
        return
    print(f"Merged into {base} and quantized to {record.quant} ({record.size / 2**20:.1f} MiB): {record.path}")
    if fidelity:
        print(f"Check: {fidelity.sentence()}")
    elif "skipped" in check:
        print(f"Check: not done: {check['skipped']}")
    print(f"Use it with: mistralkit chat --model {record.name}")


def main() -> None:
    typer.run(export)


if __name__ == "__main__":
    main()
