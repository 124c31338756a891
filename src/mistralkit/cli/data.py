"""``mistralkit data ...``: validate, stats, split and convert JSONL training data."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Check, measure, split and convert JSONL training data for `mistralkit tune`.\n\n"
         'Lines are {"prompt", "response"}, {"messages": [{"role", "content", "weight"?}]} or {"text"}.\n\n'
         "Examples:\n\n"
         "  mistralkit data validate train.jsonl --max-length 2048\n\n"
         "  mistralkit data stats train.jsonl valid.jsonl --tokenizer v3\n\n"
         "  mistralkit data split all.jsonl --valid 0.1 --seed 0 --out data/\n\n"
         "  mistralkit data convert pairs.jsonl --to messages -o pairs.messages.jsonl",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

Files = Annotated[list[Path], typer.Argument(help="JSONL files (each one a split: train, valid, ...).",
                                             show_default=False)]
File = Annotated[Path, typer.Argument(help="A JSONL file.", show_default=False)]
Model = Annotated[str | None, typer.Option("--model", "-m", help="Model whose chat format tokenizes "
                                           "(default: the embedded model).")]
TokenizerVersion = Annotated[str | None, typer.Option("--tokenizer", help="A Mistral tokenizer without a model: "
                                                      "v1, v2, v3, v7, tekken or tekken-v7.")]
MaxLength = Annotated[int | None, typer.Option("--max-length", min=1, help="Longest sample in tokens.")]
# Mixed shapes are read by default, as `tune` reads them; --allow-mixed stays as a no-op for old scripts.
AllowMixed = Annotated[bool, typer.Option("--allow-mixed/--strict-shapes",
                                          help="Mixed shapes in one file are fine (the default, reported as "
                                               "mixed); --strict-shapes refuses lines unlike the first.")]
TrainOnInputs = Annotated[bool, typer.Option("--train-on-inputs", help="Count loss on every token, "
                                             "not only on assistant turns.")]
Force = Annotated[bool, typer.Option("--force", help="Replace output files that exist.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _encoder(model: str | None, tokenizer: str | None):
    from ..errors import InvalidParameter
    from ..logs import setup
    from ..formats.layout import open_encoder

    setup("warning")  # llama.cpp's loading chatter goes to the log file, not the terminal
    if model and tokenizer:
        raise InvalidParameter("--model and --tokenizer both choose the tokenizer", hint="pass one of them")
    return open_encoder(model, tokenizer)


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


@app.command()
def validate(files: Files, model: Model = None, tokenizer: TokenizerVersion = None, max_length: MaxLength = None,
             allow_mixed: AllowMixed = True, train_on_inputs: TrainOnInputs = False, as_json: Json = False) -> None:
    """Check every line and report every problem as FILE:LINE: FIELD: what. Exits 1 if any.

    Checks JSON, shapes, roles and turn order, empty assistant turns, weights, that each sample
    has a token to train on, and (with --max-length) its length in tokens. A file may mix the
    three shapes, as `mistralkit tune` accepts: the report says so; --strict-shapes refuses it.

    Examples:

      mistralkit data validate train.jsonl

      mistralkit data validate train.jsonl valid.jsonl --model mistral-7b-instruct-v0.3 --max-length 4096

      mistralkit data validate train.jsonl --tokenizer tekken --json | jq '.files[].errors'
    """
    from ..tune.data import describe_shapes
    from ..tune.stats import validate as check_file

    with _encoder(model, tokenizer) as encoder:
        reports = [check_file(path, encoder, max_length=max_length, allow_mixed=allow_mixed,
                              train_on_inputs=train_on_inputs) for path in files]
    ok = all(r.ok for r in reports)
    if as_json:
        _print_json({"ok": ok, "format": encoder.format.name, "files": [r.to_dict() for r in reports]})
    else:
        for report in reports:
            for error in report.errors:
                print(f"error: {error}", file=sys.stderr)
            verdict = "ok" if report.ok else f"{len(report.errors)} problem(s)"
            print(f"{report.path}: {verdict}; {report.samples} good samples; shapes: {describe_shapes(report.shapes)}")
            if report.layout:
                print(f"note: {report.layout}")
    if not ok:
        raise typer.Exit(1)


@app.command()
def stats(files: Files, model: Model = None, tokenizer: TokenizerVersion = None, max_length: MaxLength = None,
          bins: Annotated[int, typer.Option("--bins", min=1, help="Histogram bars.")] = 10,
          allow_mixed: AllowMixed = True, train_on_inputs: TrainOnInputs = False, as_json: Json = False) -> None:
    """Samples, shapes, token lengths, trainable tokens and a length histogram per file.

    Examples:

      mistralkit data stats train.jsonl valid.jsonl

      mistralkit data stats train.jsonl --tokenizer v3 --max-length 2048

      mistralkit data stats train.jsonl --json
    """
    from ..tune.data import describe_shapes
    from ..tune.stats import render_histogram, stats as measure

    with _encoder(model, tokenizer) as encoder:
        results = [measure(path, encoder, max_length=max_length, bins=bins, allow_mixed=allow_mixed,
                           train_on_inputs=train_on_inputs) for path in files]
    if as_json:
        _print_json({"files": [r.to_dict() for r in results]})
        return
    for i, s in enumerate(results):
        t = s.tokens
        print(("\n" if i else "") + f"{s.path}  (format {s.format})")
        print(f"  samples    {s.samples:,}  (shapes: {describe_shapes(s.shapes)})")
        print(f"  tokens     total {t['total']:,}  min {t['min']:,}  median {t['median']:,}  "
              f"p95 {t['p95']:,}  max {t['max']:,}")
        print(f"  trainable  {s.trainable:,} ({s.trainable / max(1, t['total']):.0%} of tokens)")
        if s.max_length is not None:
            print(f"  over {s.max_length:,}  {s.over_max_length:,} sample(s) would be cut")
        print("  lengths in tokens:")
        print(render_histogram(s.histogram, max_length=s.max_length))


@app.command()
def split(
    file: File,
    valid: Annotated[float, typer.Option("--valid", help="Validation share (0.1) or count (200).")] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same split.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write DIR/train.jsonl and DIR/valid.jsonl (default: NAME.train.jsonl, NAME.valid.jsonl beside FILE).",
        ),
    ] = None,
    allow_mixed: AllowMixed = True,
    force: Force = False,
    as_json: Json = False,
) -> None:
    """Split a file into train and valid files, reproducibly; lines are copied unchanged.

    Every line is checked first; nothing is written if one is bad.

    Examples:

      mistralkit data split all.jsonl --valid 0.1 --seed 0

      mistralkit data split all.jsonl --valid 200 --out data/ --force
    """
    from dataclasses import asdict

    from ..tune.data import split as split_file

    result = split_file(file, valid=valid, seed=seed, out=out, allow_mixed=allow_mixed, force=force)
    if as_json:
        _print_json(asdict(result))
        return
    print(f"{result.train}: {result.train_samples} samples")
    print(f"{result.valid}: {result.valid_samples} samples (seed {result.seed})")


@app.command()
def convert(file: File,
            to: Annotated[str, typer.Option("--to", help="Target shape: messages.")] = "messages",
            output: Annotated[str | None, typer.Option("--output", "-o", help="Output file, or - for stdout "
                                                       "(default: NAME.messages.jsonl beside FILE).")] = None,
            strip_layout: Annotated[bool, typer.Option("--strip-layout", help="Take USER:/ASSISTANT: or [INST] "
                                                       "labels off prompts.")] = False,
            force: Force = False, as_json: Json = False) -> None:
    """Rewrite prompt/response lines (and messages lines) as {"messages": [...]}.

    Examples:

      mistralkit data convert pairs.jsonl --to messages

      mistralkit data convert pairs.jsonl --to messages -o - | head
    """
    from ..tune.data import convert as convert_file

    from ..tune.layouts import strip

    where, count = convert_file(file, to=to, out=output, force=force, transform=strip if strip_layout else None)
    if where == "-":
        return
    if as_json:
        _print_json({"output": where, "samples": count})
    else:
        print(f"{where}: {count} samples")
