"""Eval reports: per-system accuracy (overall and per tag), latency percentiles, memory, verdicts,
every pair of systems compared on the items both scored (``paired``: McNemar, bootstrap intervals), and
the decision those make (``decision``: intervals against the thresholds, "not proven", sentences).

``OUT/report.json`` (everything, for scripts), ``OUT/report.md`` (a side-by-side table, the pairwise
comparisons, the decision, then every item with each system's answer) and ``OUT/report.png`` (accuracy
with its interval and latency per system, with the thresholds drawn). A system passes when its accuracy is at least
``--min-accuracy`` and its p95 latency at most ``--max-latency``.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from itertools import combinations
from pathlib import Path
from typing import Any

from ..measure import pyplot
from . import decision, paired
from .suite import Item

REMOTE_ENGINES = ("openai", "anthropic")  # their memory is not this machine's


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0-100), None for no values."""
    data = sorted(values)
    if not data:
        return None
    k = (len(data) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (k - low)


def _accuracy(rows: list[dict]) -> float | None:
    return sum(bool(r.get("correct")) for r in rows) / len(rows) if rows else None


def system_summary(label: str, rows: list[dict], memory: int | None, config,
                   planned: dict[str, Any] | None = None) -> dict[str, Any]:
    tags = sorted({t for r in rows for t in r.get("tags", [])})
    latencies = [r["latency_s"] for r in rows]
    generated = [r for r in rows if r["scorer"] != "choice"]
    speeds = [r["tokens_per_s"] for r in generated if r.get("tokens_per_s")]
    summary = {
        "system": label, "items": len(rows), "correct": sum(bool(r.get("correct")) for r in rows),
        "accuracy": _accuracy(rows),
        "accuracy_by_tag": {t: _accuracy([r for r in rows if t in r.get("tags", [])]) for t in tags},
        "latency_p50_s": percentile(latencies, 50), "latency_p95_s": percentile(latencies, 95),
        "ttft_p50_s": percentile([r["ttft_s"] for r in generated if r.get("ttft_s")], 50),
        "tokens_per_s_p50": percentile(speeds, 50), "peak_rss": memory,
        "tokens_per_answer": (sum(r.get("completion_tokens") or 0 for r in generated) / len(generated)
                              if generated else None),
        "engine": next((r["engine"] for r in rows if r.get("engine")), None),
        "planned": planned,  # the speed planner's answer of --max-tokens (runner.planned_answer), or None
    }
    failures = []
    if config.min_accuracy is not None and (summary["accuracy"] or 0) < config.min_accuracy:
        failures.append(f"accuracy {summary['accuracy']:.1%} < {config.min_accuracy:.0%}")
    if config.max_latency is not None and (summary["latency_p95_s"] or 0) > config.max_latency:
        failures.append(f"p95 latency {summary['latency_p95_s']:.2f} s > {config.max_latency:g} s")
    checked = config.min_accuracy is not None or config.max_latency is not None
    summary["verdict"] = {"checked": checked, "passed": checked and not failures, "failures": failures}
    return summary


def summarize(rows: list[dict], items: list[Item], config, memory: dict[str, int],
              planned: dict[str, dict[str, Any] | None] | None = None) -> dict[str, Any]:
    ids = {i.id for i in items}
    systems: list[str] = []
    for row in rows:
        if row["system"] not in systems and row["id"] in ids:
            systems.append(row["system"])
    own = {s: [r for r in rows if r["system"] == s and r["id"] in ids] for s in systems}
    per = [system_summary(s, own[s], memory.get(s), config, (planned or {}).get(s)) for s in systems]
    settings = asdict(config)
    settings["systems"] = [asdict(s) for s in config.systems]
    pairs = comparisons(rows, items, systems)
    latencies = {s: [r["latency_s"] for r in own[s] if r.get("latency_s") is not None] for s in systems}
    return {"suite": config.suite, "items": len(items), "systems": per, "settings": settings,
            "comparisons": pairs,
            "decision": decision.decide(per, latencies, pairs, config.min_accuracy, config.max_latency),
            "thresholds": {"min_accuracy": config.min_accuracy, "max_latency_s": config.max_latency},
            "machine": {"python": platform.python_version(), "platform": platform.platform()}}


def _scored(row: dict) -> bool:
    """A row that counts in a comparison: scored right or wrong, no error recorded."""
    return isinstance(row.get("correct"), bool) and not row.get("error")


def compare_pair(a: str, b: str, scored: dict[tuple[str, str], dict], items: list[Item]) -> dict[str, Any]:
    """``a`` against ``b`` on the suite items both scored (``scored``: (system, id) -> its scored row);
    ``not_compared`` counts the items one of them has no scored row for."""
    common = [i.id for i in items if (a, i.id) in scored and (b, i.id) in scored]
    first, second = [scored[(a, i)] for i in common], [scored[(b, i)] for i in common]
    found = paired.compare(a, b, [r["correct"] for r in first], [r["correct"] for r in second],
                           [r.get("latency_s") for r in first], [r.get("latency_s") for r in second])
    return {**found.to_dict(), "not_compared": len(items) - len(common)}


def comparisons(rows: list[dict], items: list[Item], systems: list[str]) -> list[dict[str, Any]]:
    """Every pair of systems, in report order (the first system against each later one, and so on)."""
    scored = {(r["system"], r["id"]): r for r in rows if _scored(r)}
    return [compare_pair(a, b, scored, items) for a, b in combinations(systems, 2)]


def _points(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.1f}"


def accuracy_text(c: dict[str, Any]) -> str:
    """``+22.0 pts [+8.0, +36.0]``: the accuracy difference a - b and its 95% interval."""
    if c["accuracy_diff"] is None:
        return "–"
    low, high = c["accuracy_diff_ci95"]
    return f"{_points(c['accuracy_diff'])} pts [{_points(low)}, {_points(high)}]"


def latency_text(c: dict[str, Any]) -> str:
    """``-0.120 s [-0.204, -0.051]``: the median per-item latency difference a - b and its 95% interval
    (to the millisecond: small models differ by less than 0.01 s an item)."""
    if c["latency_diff_median_s"] is None:
        return "–"
    low, high = c["latency_diff_ci95_s"]
    return f"{c['latency_diff_median_s']:+.3f} s [{low:+.3f}, {high:+.3f}]"


def comparisons_note(report: dict[str, Any]) -> str:
    """How the comparisons were computed, in one sentence."""
    found = report.get("comparisons") or []
    resamples, seed = (found[0]["resamples"], found[0]["seed"]) if found else (paired.RESAMPLES, paired.SEED)
    note = (f"Paired, on the items both systems scored (n); differences are a - b; 95% intervals from "
            f"{resamples} bootstrap resamples of the items (seed {seed}); exact McNemar p on the items only "
            f"one of the two got right; not significant where p >= {paired.ALPHA:g}.")
    return note + (" Each p is for its pair alone (no correction for multiple comparisons)." if len(found) > 1 else "")


def comparisons_markdown(report: dict[str, Any]) -> list[str]:
    found = report.get("comparisons") or []
    if not found:
        return []
    head = ["a", "b", "n", "a accuracy", "b accuracy", "accuracy a - b (95% CI)", "only a right", "only b right",
            "McNemar p", "latency a - b, median (95% CI)", "verdict"]
    lines = ["", "## Comparisons", "", comparisons_note(report), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in found:
        accuracies = [_fmt(c["a_accuracy"], "%", 100, 1), _fmt(c["b_accuracy"], "%", 100, 1)]
        cells = [_cell(c["a"]), _cell(c["b"]), str(c["n"]), *accuracies, accuracy_text(c),
                 str(c["a_right_b_wrong"]), str(c["a_wrong_b_right"]), f"{c['mcnemar_p']:.3g}", latency_text(c),
                 _cell(c["verdict"], 120)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cell(text: Any, width: int = 60) -> str:
    text = "" if text is None else str(text)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt(value: float | None, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}{unit}"


def markdown(report: dict[str, Any], rows: list[dict], items: list[Item]) -> str:
    systems = report["systems"]
    tags = sorted({t for s in systems for t in s["accuracy_by_tag"]})
    head = ["system", "engine", "accuracy", *[f"tag {t}" for t in tags], "latency p50", "latency p95",
            "planned answer", "TTFT p50", "tok/s", "tokens/answer", "peak RSS", "verdict"]
    lines = [f"# Evaluation of {report['suite']} ({report['items']} items)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in systems:
        verdict = s["verdict"]
        mark = (
            ("pass" if verdict["passed"] else "FAIL: " + "; ".join(verdict["failures"])) if verdict["checked"] else "–"
        )
        rss = "remote" if s.get("engine") in REMOTE_ENGINES else _fmt(s["peak_rss"], " MiB", 1 / 2**20, 0)
        cells = [s["system"], s.get("engine") or "–", f"{s['accuracy']:.1%} ({s['correct']}/{s['items']})",
                 *[_fmt(s["accuracy_by_tag"].get(t), "%", 100, 0) for t in tags],
                 _fmt(s["latency_p50_s"], " s"), _fmt(s["latency_p95_s"], " s"),
                 _fmt((s.get("planned") or {}).get("answer_s"), " s"), _fmt(s["ttft_p50_s"], " s"),
                 _fmt(s["tokens_per_s_p50"], "", 1, 1), _fmt(s.get("tokens_per_answer"), "", 1, 1), rss, mark]
        lines.append("| " + " | ".join(cells) + " |")
    lines += comparisons_markdown(report)
    if report.get("decision"):
        lines += decision.markdown_lines(report["decision"])
    names = [s["system"] for s in systems]
    by_key = {(r["system"], r["id"]): r for r in rows}
    lines += ["", "## Items", "", "| id | expected | " + " | ".join(map(_cell, names)) + " |",
              "|---|---|" + "---|" * len(names)]
    for item in items:
        answers = []
        for name in names:
            row = by_key.get((name, item.id))
            answers.append("–" if row is None else ("✓ " if row.get("correct") else "✗ ") + _cell(row["output"], 50))
        lines.append(f"| {_cell(item.id, 30)} | {_cell(item.expected or item.pattern or '(judge)', 40)} | "
                     + " | ".join(answers) + " |")
    return "\n".join(lines) + "\n"


def _interval_bars(report: dict[str, Any], accuracy: list[float]) -> list[list[float]]:
    """Error bars (below, above) of each system's Wilson interval, as the decision table gives it."""
    spans = [d["accuracy_ci95"] or (a / 100, a / 100) for d, a in zip(report["decision"]["systems"], accuracy)]
    return [[a - 100 * low for a, (low, _) in zip(accuracy, spans)],
            [100 * high - a for a, (_, high) in zip(accuracy, spans)]]


def plot(report: dict[str, Any], target: Path) -> str | None:
    """Accuracy and p50/p95 latency per system; returns why not when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return "matplotlib is not installed: no report.png (pip install matplotlib)"
    systems = report["systems"]
    names = [s["system"] for s in systems]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(names) + 3), 4))
    accuracy = [100 * (s["accuracy"] or 0) for s in systems]
    left.bar(names, accuracy, yerr=_interval_bars(report, accuracy), capsize=4, color="#4c78a8")
    left.set_ylim(0, 100)
    left.set_title("accuracy (%, 95% interval)")
    width = 0.38
    positions = range(len(names))
    right.bar([p - width / 2 for p in positions], [s["latency_p50_s"] or 0 for s in systems], width, label="p50")
    right.bar([p + width / 2 for p in positions], [s["latency_p95_s"] or 0 for s in systems], width, label="p95")
    right.set_xticks(list(positions), names)
    right.set_title("latency per item (s)")
    thresholds = report["thresholds"]
    if thresholds["min_accuracy"] is not None:
        left.axhline(100 * thresholds["min_accuracy"], color="red", linestyle="--", label="min accuracy")
        left.legend()
    if thresholds["max_latency_s"] is not None:
        right.axhline(thresholds["max_latency_s"], color="red", linestyle="--", label="max latency")
    right.legend()
    for axis in (left, right):
        axis.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return None


def write_reports(report: dict[str, Any], rows: list[dict], items: list[Item], out: Path) -> None:
    note = plot(report, out / "report.png")
    report["report_png"] = None if note else "report.png"
    if note:
        report["notes"] = [note]
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out / "report.md").write_text(markdown(report, rows, items), encoding="utf-8")
