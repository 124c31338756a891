"""``mistralkit eval``: score models (and adapters) on a JSONL suite, or measure perplexity."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min)?\s*$")


def parse_seconds(text: str) -> float:
    """``15s``, ``500ms``, ``2m`` or a bare number of seconds."""
    from ..errors import InvalidParameter

    found = DURATION.match(text)
    if not found:
        raise InvalidParameter(f"--max-latency {text!r}: expected a duration like 15s, 500ms or 2m")
    value, unit = float(found.group(1)), found.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0}[unit]


def _rubric(text: str | None) -> str | None:
    if text and Path(text).is_file():
        return Path(text).read_text(encoding="utf-8")
    return text


def eval_command(
    suite: Annotated[Path | None, typer.Option("--suite", "-s", help="Suite JSONL (see below).")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model to evaluate (default: the configured "
            "model, else the embedded chat model; with --adapter, its base).",
        ),
    ] = None,
    adapter: Annotated[str | None, typer.Option("--adapter", help="GGUF LoRA adapter on --model.")] = None,
    system: Annotated[str | None, typer.Option("--system", help="System prompt for --model (text or @FILE).")] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="--model's label in the reports (as NAME= names a --vs).")
    ] = None,
    vs: Annotated[
        list[str] | None,
        typer.Option("--vs", help="Also evaluate [NAME=]MODEL[+ADAPTER][::PROMPT|::@FILE] (repeatable)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for results.jsonl and the reports.")] = Path(
        "eval-out"
    ),
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="Answer length limit.")] = 128,
    ctx: Annotated[int, typer.Option("--ctx", "-c", help="Context window.")] = 2048,
    threads: Annotated[int | None, typer.Option("--threads", "-t", help="CPU threads.")] = None,
    match: Annotated[str, typer.Option("--match", help="exact or contains, for items with `expected`.")] = "exact",
    judge: Annotated[str | None, typer.Option("--judge", help="MODEL[+ADAPTER] that scores answers 1-5.")] = None,
    rubric: Annotated[str | None, typer.Option("--rubric", help="The judge's rubric (text or a file).")] = None,
    pass_mark: Annotated[int, typer.Option("--pass-mark", help="Judge score that counts as correct.")] = 4,
    min_accuracy: Annotated[
        float | None, typer.Option("--min-accuracy", help="Pass/fail: accuracy at least this (0-1).")
    ] = None,
    max_latency: Annotated[
        str | None, typer.Option("--max-latency", help="Pass/fail: p95 latency at most this (15s, 500ms).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip items already in OUT/results.jsonl.")] = False,
    perplexity: Annotated[
        Path | None, typer.Option("--perplexity", help="Perplexity of --model on this .txt/.jsonl instead.")
    ] = None,
    window: Annotated[int, typer.Option("--window", help="With --perplexity: tokens per window.")] = 512,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Evaluate models on a suite: accuracy (overall, per tag), latency, memory, and a verdict.

    Suite lines: {"id", "prompt"|"messages", "expected"?, "choices"?, "pattern"?, "tags"?}. Items with
    choices are scored by log-probability; pattern by regex; expected by normalized exact match (or
    --match contains); expected_call (with tools) by the tool call made; items with none of these by
    the --judge model. Greedy decoding by default.
    Every pair of systems (--model and each --vs) is compared on the items both scored: accuracy
    difference with a 95% paired-bootstrap interval, exact McNemar p ("not significant" where
    p >= 0.05), median per-item latency difference.
    Ends with a decision: each system's accuracy with its 95% Wilson interval and p95 latency with a
    bootstrap interval, each threshold met, failed or "not proven at this sample size" (the interval
    crosses it; with the items that would prove it), and a sentence per system and per pair.
    Writes OUT/results.jsonl, report.json, report.md and report.png. Exit 1 when --model fails a threshold.

    Examples:

      mistralkit eval --suite qa.jsonl --model gemma-3-270m --adapter facts --vs gemma-3-270m

      mistralkit eval --suite qa.jsonl -m mistral-7b-instruct-v0.3 --adapter tutor --min-accuracy 0.75 --max-latency 15s

      # a free tier (CPU, 4-bit) against a paid one (a configured remote): viable, proven, how far apart?
      mistralkit eval -s qa.jsonl -m mistral-7b-instruct-v0.3:q4_k_m --adapter tutor --name free --vs premium --min-accuracy 0.75 --max-latency 15s

      mistralkit eval --suite open.jsonl --judge mistral-7b-instruct-v0.3 --rubric rubric.txt --out ev --resume

      mistralkit eval --perplexity notes.txt -m mistral-7b-instruct-v0.3 --adapter notes

      # ablation: LoRA vs system prompt vs both, beside a paid API tier (a configured remote)
      mistralkit eval -s qa.jsonl -m mistral-7b-instruct-v0.3 --adapter tutor --vs "prompt=mistral-7b-instruct-v0.3::@tutor.txt" --vs "both=mistral-7b-instruct-v0.3+tutor::@tutor.txt" --vs premium=gpt
    """  # noqa: E501 - an example command is one line, as a shell takes it
    from ..logs import setup
    from ..settings import load

    setup("warning")
    model = model or (None if adapter else load().settings.model)  # MISTRALKIT_MODEL, config.toml's model
    if perplexity is not None:
        _perplexity(model, adapter, perplexity, window, threads, as_json)
        return
    from ..errors import InvalidParameter
    from ..evaluate.runner import EvalConfig, System, run_eval

    if suite is None:
        raise InvalidParameter("nothing to evaluate", hint="pass --suite FILE.jsonl (or --perplexity FILE)")
    config = EvalConfig(
        suite=str(suite), systems=[_main_system(model, adapter, system, name), *[System.parse(v) for v in vs or []]],
        out=str(out),
        max_tokens=max_tokens, ctx=ctx, threads=threads, match=match,
        judge=System.parse(judge) if judge else None, rubric=_rubric(rubric) or EvalConfig.rubric,
        pass_mark=pass_mark, min_accuracy=min_accuracy,
        max_latency=parse_seconds(max_latency) if max_latency else None, resume=resume)
    with _Bar(quiet=as_json) as bar:
        report = run_eval(config, progress=bar.update, notice=bar.say)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report, out)
    first = report["systems"][0] if report["systems"] else None
    if first and first["verdict"]["checked"] and not first["verdict"]["passed"]:
        raise typer.Exit(1)


def _main_system(model: str | None, adapter: str | None, system: str | None, name: str | None = None):
    from ..evaluate.runner import System

    if system is None:
        return System(model, adapter, name=name or None)
    parsed = System.parse(f"{model or ''}{'+' + adapter if adapter else ''}::{system}")
    return System(model, adapter, parsed.system, name or None)


def _perplexity(model, adapter, path: Path, window: int, threads, as_json: bool) -> None:
    from ..evaluate.perplexity import perplexity
    from ..models.store import resolve, resolve_adapter

    adapter_path, adapter_base = resolve_adapter(adapter) if adapter else (None, None)
    result = perplexity(resolve(model or adapter_base), path, adapter=str(adapter_path) if adapter_path else None,
                        window=window, threads=threads)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    print(f"perplexity {result.perplexity:.3f} over {result.tokens_scored} tokens "
          f"({result.windows} windows of ≤ {window}; {result.seconds:.1f} s)")


def _print_table(report: dict, out: Path) -> None:
    print(f"{'system':<36} {'engine':<12} {'accuracy':>9} {'p50 s':>7} {'p95 s':>7} {'plan s':>7} {'tok/ans':>7} "
          f"{'RSS MiB':>8}  verdict")
    for s in report["systems"]:
        verdict = s["verdict"]
        mark = ("PASS" if verdict["passed"] else "FAIL " + "; ".join(verdict["failures"])) if verdict["checked"] else ""
        rss = f"{s['peak_rss'] / 2**20:.0f}" if s["peak_rss"] else "–"
        per_answer = f"{s['tokens_per_answer']:.1f}" if s.get("tokens_per_answer") is not None else "–"
        plan = f"{s['planned']['answer_s']:.2f}" if s.get("planned") else "–"
        print(f"{s['system']:<36} {s.get('engine') or '–':<12} {s['accuracy']:>9.1%} {s['latency_p50_s']:>7.2f} "
              f"{s['latency_p95_s']:>7.2f} {plan:>7} {per_answer:>7} {rss:>8}  {mark}")
    if any(s.get("planned") for s in report["systems"]):
        print("plan s: the speed planner's seconds for an answer of --max-tokens on this CPU (as `models fit`)")
    _print_comparisons(report)
    if report.get("decision"):
        from ..evaluate.decision import terminal_lines

        print("\n".join(terminal_lines(report["decision"])))
    print(f"reports: {out / 'report.md'}, {out / 'report.json'}, {out / 'report.png'}")


def _print_comparisons(report: dict) -> None:
    from ..evaluate.report import accuracy_text, comparisons_note, latency_text

    if not report.get("comparisons"):
        return
    print(f"\nComparisons. {comparisons_note(report)}")
    for c in report["comparisons"]:
        print(f"  {c['a']} vs {c['b']}: n {c['n']}, accuracy {accuracy_text(c)}, McNemar p {c['mcnemar_p']:.3g} "
              f"({c['a_right_b_wrong']} vs {c['a_wrong_b_right']} items only one got right), "
              f"latency {latency_text(c)}: {c['verdict']}")


class _Bar:
    """A rich progress bar on stderr over all (system, item) pairs; silent with --json or off a terminal."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet or not sys.stderr.isatty()
        self.bar = self.task = None

    def __enter__(self):
        if not self.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("eval", total=None)
        return self

    def update(self, system: str, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=system, completed=done, total=total)

    def say(self, line: str) -> None:
        """A line on stderr above the bar (always shown: it is a warning, not progress)."""
        if self.bar is not None:
            self.bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=sys.stderr)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
