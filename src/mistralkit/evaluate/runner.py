"""``run_eval``: every system on every suite item with the same settings, one result line at a time.

A *system* is ``[NAME=]MODEL[+ADAPTER][::PROMPT]``: any model an engine runs (a GGUF, an HF folder or
tuned run, a configured remote), an optional adapter, and an optional system prompt of its own
(``::@file.txt`` or ``::text``), so "LoRA", "prompt" and "LoRA + prompt" are three systems of one
ablation. Results are appended to
``OUT/results.jsonl`` as each item finishes, so an interrupted run loses at most the item in flight
and ``resume=True`` skips every (system, id) already there. Peak RSS is per system on Linux: the
kernel's high-water mark is reset (``/proc/self/clear_refs``) before each system loads.

    summary = run_eval(EvalConfig(suite="s.jsonl", systems=[System.parse("gemma-3-270m+facts")], out="ev"))
"""

from __future__ import annotations

import json
import re
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


LABEL = re.compile(r"^([\w.+ -]+)=(?!=)")  # NAME= in front of a system spec


@dataclass(frozen=True)
class System:
    model: str | None
    adapter: str | None = None
    system: str | None = None  # a system prompt this system adds to every item
    name: str | None = None  # the label in reports (default: model[+adapter][ + prompt])

    @classmethod
    def parse(cls, spec: str) -> System:
        """``[NAME=]MODEL[+ADAPTER][::PROMPT]``; ``+ADAPTER`` puts the adapter on the embedded/recorded base,
        and PROMPT is text or ``@FILE``.

        >>> System.parse("both=gemma-3-270m+facts::Answer briefly.")
        System(model='gemma-3-270m', adapter='facts', system='Answer briefly.', name='both')
        """
        text = spec.strip()
        named = LABEL.match(text)
        name = named.group(1).strip() if named else None
        text = text[named.end():] if named else text
        text, sep, prompt = text.partition("::")
        if sep and not prompt.strip():
            raise InvalidParameter(f"system {spec!r}: nothing after '::'", hint="write MODEL::PROMPT or MODEL::@FILE")
        model, plus, adapter = text.strip().rpartition("+") if "+" in text else (text.strip(), "", "")
        if plus and not adapter:
            raise InvalidParameter(f"system {spec!r}: nothing after '+'", hint="write MODEL+ADAPTER")
        return cls(model or None, adapter or None, _prompt_text(prompt.strip()) if sep else None, name)

    def label(self, model_name: str) -> str:
        if self.name:
            return self.name
        base = f"{model_name}+{self.adapter}" if self.adapter else model_name
        return f"{base} + prompt" if self.system else base

    def messages(self, item_messages) -> list:
        """The item's conversation with this system's prompt in front of (or merged into) its system turn."""
        messages = list(item_messages)
        if not self.system:
            return messages
        if messages and messages[0]["role"] == "system":
            return [{"role": "system", "content": f"{self.system}\n\n{messages[0]['content']}"}, *messages[1:]]
        return [{"role": "system", "content": self.system}, *messages]


def _prompt_text(value: str) -> str:
    if not value.startswith("@"):
        return value
    path = Path(value[1:]).expanduser()
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidParameter(f"cannot read the system prompt file {path}: {exc}",
                               hint="write ::@FILE with a UTF-8 text file, or ::TEXT") from exc
    if not text:
        raise InvalidParameter(f"the system prompt file {path} is empty")
    return text


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


def _generate(loaded, system: System, item: Item) -> dict[str, Any]:
    from .. import api
    from ..engines import complete

    started = time.perf_counter()
    done = complete(loaded.engine, system.messages(item.messages), api.params_from(loaded.settings))
    latency = time.perf_counter() - started
    usage = done.usage
    return {"output": done.text.strip(), "finish_reason": done.finish_reason, "ttft_s": usage.ttft_s,
            "latency_s": latency, "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "tokens_per_s": usage.completion_tokens / usage.total_s if usage.total_s else None}


def _call(loaded, system: System, item: Item) -> dict[str, Any]:
    from dataclasses import replace

    from .. import api
    from ..engines import complete

    started = time.perf_counter()
    turn = scorers.tool_turn(loaded.engine, item, system.messages(item.messages))
    params = replace(api.params_from(loaded.settings), grammar=turn.grammar, json_end=turn.grammar is not None)
    done = complete(loaded.engine, turn.prompt, params)
    latency = time.perf_counter() - started
    calls = turn.calls(done.text, done.token_ids)
    shown = [f"{c['function']['name']}({c['function']['arguments']})" for c in calls or ()]
    usage = done.usage
    return {"output": "\n".join(shown) if calls else done.text.strip(), "calls": calls,
            "finish_reason": done.finish_reason, "ttft_s": usage.ttft_s, "latency_s": latency,
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "tokens_per_s": usage.completion_tokens / usage.total_s if usage.total_s else None}


def _choose(loaded, encoder, system: System, item: Item) -> dict[str, Any]:
    started = time.perf_counter()
    logprobs = scorers.choice_logprobs(loaded.engine, encoder, system.messages(item.messages), item.choices)
    best = max(range(len(logprobs)), key=logprobs.__getitem__)
    return {"output": item.choices[best], "choice": best, "logprobs": logprobs, "ttft_s": None,
            "latency_s": time.perf_counter() - started, "completion_tokens": 0, "tokens_per_s": None}


def _judge(judge, config: EvalConfig, item: Item, output: str) -> scorers.Verdict:
    question = item.messages[-1]["content"]
    return scorers.judge(judge.engine, config.rubric, question, output, item.expected, seed=judge.settings.seed)


def score(item: Item, row: dict[str, Any], judge, config: EvalConfig) -> None:
    """Fill ``correct`` (and the judge's verdict) into a result row."""
    output = row["output"]
    if item.scorer == "choice":
        row["correct"] = row["choice"] == item.answer
    elif item.scorer == "tool_call":
        row["correct"] = scorers.call_matches(row.get("calls"), item.expected_call or {})
    elif item.scorer == "regex":
        row["correct"] = scorers.regex(output, item.pattern or "")
    elif item.scorer in ("exact", "contains"):
        row["correct"] = getattr(scorers, item.scorer)(output, item.expected or "")
    if judge is not None and item.scorer not in ("choice", "tool_call"):
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


def planned_answer(loaded, system: System, items: list[Item], config: EvalConfig) -> dict[str, Any] | None:
    """What the speed planner (models/speed.py) gives an answer of ``--max-tokens`` after the suite's
    median prompt, for a GGUF that llama.cpp runs on this CPU (None for remotes, GPUs, other engines):
    the figure ``--max-latency`` is weighed against before any item runs."""
    from dataclasses import asdict

    from ..engines.llama_native import gpu_layers
    from ..models.memory import ModelShape
    from ..models.speed import speed_of

    model, engine = loaded.model, loaded.engine
    generated = [item for item in items if item.scorer != "choice"]
    if (engine.kind != "llama.cpp" or model.format != "gguf" or model.info is None or not generated
            or gpu_layers(loaded.settings.device, loaded.settings.n_gpu_layers) != 0):
        return None
    prompts = sorted(engine.count_tokens(system.messages(item.messages)) for item in generated[:64])
    speed = speed_of(ModelShape.from_model(model), loaded.settings.threads, max(prompts[len(prompts) // 2], 1),
                     config.max_tokens)
    return asdict(speed)


def _warn_if_slow(label: str, planned: dict[str, Any] | None, config: EvalConfig, notice) -> None:
    if planned is None or config.max_latency is None or notice is None:
        return
    if planned["answer_s"] > config.max_latency:
        notice(f"{label}: the planner gives ~{planned['answer_s']:.1f} s for a {planned['answer_tokens']}-token answer "
               f"on this machine ({planned['threads']} threads), over --max-latency {config.max_latency:g} s: the p95 "
               f"check fails unless answers end early (`mistralkit models fit --ram ...` prices smaller models)")


def run_eval(config: EvalConfig, progress: Callable[[str, int, int], None] | None = None,
             notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate every system; returns the report (also written to OUT as JSON, Markdown and PNG).
    ``notice`` gets a line when the speed planner expects a system to miss ``--max-latency``."""
    from ..engines import require
    from ..formats.layout import encoder_for
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
    planned: dict[str, dict[str, Any] | None] = {}
    total = len(items) * len(config.systems)
    count = len(done)
    labels: set[str] = set()
    try:
        with results_file.open("a", encoding="utf-8") as sink:
            for system in config.systems:
                reset_peak_rss()
                loaded = _load(system, config)
                label = system.label(loaded.model.name)
                engine = loaded.engine
                ran = False
                try:
                    if label in labels:
                        raise InvalidParameter(f"two systems are both called {label!r}",
                                               hint="name them: --vs NAME=MODEL[+ADAPTER][::PROMPT]")
                    labels.add(label)
                    planned[label] = planned_answer(loaded, system, items, config)
                    _warn_if_slow(label, planned[label], config, notice)
                    needs_encoder = any(i.scorer == "choice" for i in items)
                    if needs_encoder:
                        require(engine, "logprobs", f"scoring the multiple-choice items of {config.suite}")
                    encoder = encoder_for(engine.format, engine) if needs_encoder else None
                    for item in items:
                        if (label, item.id) in done:
                            continue
                        row = (_choose(loaded, encoder, system, item) if item.scorer == "choice"
                               else _call(loaded, system, item) if item.scorer == "tool_call"
                               else _generate(loaded, system, item))
                        row = {"system": label, "id": item.id, "tags": list(item.tags), "scorer": item.scorer,
                               "expected": item.expected, "engine": engine.kind, **row}
                        score(item, row, judge, config)
                        sink.write(json.dumps(row) + "\n")
                        sink.flush()
                        rows.append(row)
                        ran, count = True, count + 1
                        if progress is not None:
                            progress(label, count, total)
                    if engine.capabilities.local and (ran or label not in memory):
                        memory[label] = peak_rss()  # a remote's memory is not ours to measure
                finally:
                    loaded.close()
    finally:
        if judge is not None:
            judge.close()
    report = summarize(rows, items, config, memory, planned)
    write_reports(report, rows, items, out)
    return report
