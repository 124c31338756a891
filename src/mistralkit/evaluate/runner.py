"""``run_eval``: every system on every suite item with the same settings, one result line at a time.

A *system* is ``MODEL[+ADAPTER]`` (a GGUF and an optional GGUF LoRA adapter). Results are appended to
``OUT/results.jsonl`` as each item finishes, so an interrupted run loses at most the item in flight
and ``resume=True`` skips every (system, id) already there. Peak RSS is per system on Linux: the
kernel's high-water mark is reset (``/proc/self/clear_refs``) before each system loads.

    summary = run_eval(EvalConfig(suite="s.jsonl", systems=[System.parse("gemma-3-270m+facts")], out="ev"))
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter
from ..measure import peak_rss, reset_peak_rss
from . import scorers
from .suite import Item, read_suite

RESULTS = "results.jsonl"


@dataclass(frozen=True)
class System:
    model: str | None
    adapter: str | None = None

    @classmethod
    def parse(cls, spec: str) -> System:
        """``MODEL``, ``MODEL+ADAPTER`` or ``+ADAPTER`` (the adapter on the embedded/recorded base)."""
        model, plus, adapter = spec.strip().rpartition("+") if "+" in spec else (spec.strip(), "", "")
        if plus and not adapter:
            raise InvalidParameter(f"system {spec!r}: nothing after '+'", hint="write MODEL+ADAPTER")
        return cls(model or None, adapter or None)

    def label(self, model_name: str) -> str:
        return f"{model_name}+{self.adapter}" if self.adapter else model_name


@dataclass
class EvalConfig:
    suite: str
    systems: list[System]
    out: str
    max_tokens: int = 128
    ctx: int = 2048
    threads: int | None = None
    greedy: bool = True
    temperature: float = 0.0
    seed: int = 0
    match: str = "exact"
    judge: System | None = None
    rubric: str = scorers.RUBRIC
    pass_mark: int = 4
    min_accuracy: float | None = None
    max_latency: float | None = None  # seconds, checked against the p95 latency
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.systems:
            raise InvalidParameter("no system to evaluate", hint="pass --model (and --vs)")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise InvalidParameter(f"--min-accuracy {self.min_accuracy}: must be between 0 and 1")
        if self.max_latency is not None and self.max_latency <= 0:
            raise InvalidParameter(f"--max-latency {self.max_latency}: must be > 0")
        if not 1 <= self.pass_mark <= 5:
            raise InvalidParameter(f"--pass-mark {self.pass_mark}: must be 1-5")
        if self.max_tokens < 1:
            raise InvalidParameter(f"--max-tokens {self.max_tokens}: must be >= 1")


# --- one system ---------------------------------------------------------------------------------

def _load(system: System, config: EvalConfig):
    from .. import api

    settings = {"model": system.model, "adapter": system.adapter, "greedy": config.greedy,
                "temperature": config.temperature, "max_tokens": config.max_tokens, "ctx": config.ctx,
                "threads": config.threads, "seed": config.seed}
    return api.load(api.load_settings({k: v for k, v in settings.items() if v is not None}).settings)


def _generate(loaded, item: Item) -> dict[str, Any]:
    from .. import api
    from ..engines import complete

    started = time.perf_counter()
    done = complete(loaded.engine, list(item.messages), api.params_from(loaded.settings))
    latency = time.perf_counter() - started
    usage = done.usage
    return {"output": done.text.strip(), "finish_reason": done.finish_reason, "ttft_s": usage.ttft_s,
            "latency_s": latency, "completion_tokens": usage.completion_tokens,
            "tokens_per_s": usage.completion_tokens / usage.total_s if usage.total_s else None}


def _choose(loaded, encoder, item: Item) -> dict[str, Any]:
    started = time.perf_counter()
    logprobs = scorers.choice_logprobs(loaded.engine._llm, encoder, item.messages, item.choices)
    best = max(range(len(logprobs)), key=logprobs.__getitem__)
    return {"output": item.choices[best], "choice": best, "logprobs": logprobs, "ttft_s": None,
            "latency_s": time.perf_counter() - started, "completion_tokens": 0, "tokens_per_s": None}


def _judge(judge, config: EvalConfig, item: Item, output: str) -> scorers.Verdict:
    from ..engines import GenerationParams, complete

    question = item.messages[-1]["content"]
    prompt = scorers.judge_prompt(config.rubric, question, output, item.expected)
    reply = complete(judge.engine, [{"role": "user", "content": prompt}],
                     GenerationParams(max_tokens=96, greedy=True, seed=judge.settings.seed))
    return scorers.parse_verdict(reply.text)


def score(item: Item, row: dict[str, Any], judge, config: EvalConfig) -> None:
    """Fill ``correct`` (and the judge's verdict) into a result row."""
    output = row["output"]
    if item.scorer == "choice":
        row["correct"] = row["choice"] == item.answer
    elif item.scorer == "regex":
        row["correct"] = scorers.regex(output, item.pattern or "")
    elif item.scorer in ("exact", "contains"):
        row["correct"] = getattr(scorers, item.scorer)(output, item.expected or "")
    if judge is not None and item.scorer != "choice":
        verdict = _judge(judge, config, item, output)
        row["judge"] = {"score": verdict.score, "reason": verdict.reason}
        if item.scorer == "judge":
            row["correct"] = verdict.score is not None and verdict.score >= config.pass_mark


# --- the run ------------------------------------------------------------------------------------

def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of results.jsonl; a last line cut by a crash is dropped (its item runs again)."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def drop_partial_line(path: Path) -> None:
    """Cut a last line a crash left unfinished, so appended rows start on a line of their own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def _previous_memory(out: Path) -> dict[str, int]:
    """Peak RSS per system from an earlier report in ``out`` (systems a resumed run does not rerun)."""
    try:
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        return {s["system"]: s["peak_rss"] for s in report["systems"] if s.get("peak_rss")}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def run_eval(config: EvalConfig, progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Evaluate every system; returns the report (also written to OUT as JSON, Markdown and PNG)."""
    from ..tune.masks import encoder_for
    from .report import summarize, write_reports

    items = read_suite(config.suite, judge=config.judge is not None, match=config.match)
    out = Path(config.out)
    results_file = out / RESULTS
    if results_file.exists() and not config.resume:
        raise InvalidParameter(f"{out} already holds results", hint="pass --resume to continue, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    drop_partial_line(results_file)
    rows = read_results(results_file)
    done = {(r["system"], r["id"]) for r in rows}
    judge = _load(config.judge, config) if config.judge else None
    memory = _previous_memory(out) if config.resume else {}
    total = len(items) * len(config.systems)
    count = len(done)
    try:
        with results_file.open("a", encoding="utf-8") as sink:
            for system in config.systems:
                reset_peak_rss()
                loaded = _load(system, config)
                label = system.label(loaded.model.name)
                ran = False
                try:
                    needs_encoder = any(i.scorer == "choice" for i in items)
                    encoder = encoder_for(loaded.engine.format, loaded.engine) if needs_encoder else None
                    for item in items:
                        if (label, item.id) in done:
                            continue
                        row = _choose(loaded, encoder, item) if item.scorer == "choice" else _generate(loaded, item)
                        row = {"system": label, "id": item.id, "tags": list(item.tags), "scorer": item.scorer,
                               "expected": item.expected, **row}
                        score(item, row, judge, config)
                        sink.write(json.dumps(row) + "\n")
                        sink.flush()
                        rows.append(row)
                        ran, count = True, count + 1
                        if progress is not None:
                            progress(label, count, total)
                    if ran or label not in memory:
                        memory[label] = peak_rss()
                finally:
                    loaded.close()
    finally:
        if judge is not None:
            judge.close()
    report = summarize(rows, items, config, memory)
    write_reports(report, rows, items, out)
    return report
