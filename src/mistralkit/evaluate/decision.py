"""The tier report: is each system good enough, is that proven at this sample size, and how far apart are
the systems. Computed once from the report's numbers (``decide``, called by ``report.summarize``) and
rendered by the terminal, report.md and report.json alike (``table_rows``, ``markdown_lines``,
``terminal_lines``), so the three say the same thing.

The rules:

* accuracy: correct/items with its 95% Wilson score interval. Not the textbook Wald interval
  p ± 1.96·√(p(1-p)/n): at the sizes suites have (tens to hundreds of items) and at accuracies near 100%
  its coverage falls far below 95%, and it calls 10/10 "100% ± 0". Not the exact Clopper-Pearson
  interval either: it is wider than it needs to be everywhere. Wilson keeps close to 95% at small n
  (Brown, Cai & DasGupta 2001) and is the score test inverted: its lower bound clears a bar exactly
  when the one-sided 2.5% score test says the accuracy is above that bar.
* latency: the p95 over items with a 95% percentile-bootstrap interval (``paired.interval``: items
  resampled, fixed seed). Approximate: a percentile bootstrap of a tail quantile covers less than it
  says at small n (on exponential latencies: 74% at 30 items, 87% at 100, 90% at 300), so a latency
  "pass" on a few dozen items is weaker than an accuracy "pass".
* a threshold is met when the whole interval is on its right side; "not proven at this sample size"
  when the point estimate is on the right side but the interval reaches across; failed when the
  point estimate is on the wrong side (the pass/fail verdict and exit code follow the point estimate).
* items needed, for an accuracy not proven: n = ((z₀.₉₇₅·√(b(1-b)) + z₀.₈₀·√(p(1-p))) / (p - b))², the
  one-sample size for a proportion: an 80% chance that the Wilson lower bound clears the bar b if the
  true accuracy is the measured p (normal approximation). None for a p95.
* pairs: ``paired.compare``'s difference a - b, its bootstrap interval and the exact McNemar p; the gap
  is larger than chance where p < 0.05.

    decision = decide(report["systems"], {"tuned": [1.2, 0.9]}, report["comparisons"], 0.75, 15.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist

import numpy as np

from . import paired

CONFIDENCE = 1 - paired.ALPHA
Z = NormalDist().inv_cdf(1 - paired.ALPHA / 2)  # 1.96
POWER = 0.8  # of the items-needed estimate

PASS, NOT_PROVEN, FAIL, NO_THRESHOLD, NO_DATA = "pass", "not proven", "fail", "no threshold", "no data"
LEADS = {PASS: "viable", NOT_PROVEN: "not proven at this sample size", FAIL: "not viable",
         NO_THRESHOLD: "no verdict", NO_DATA: "not viable"}


def wilson(correct: int, n: int, z: float = Z) -> tuple[float, float] | None:
    """The Wilson score interval of ``correct`` out of ``n`` (95% by default); None for no items.

    >>> [round(x, 3) for x in wilson(8, 10)]
    [0.49, 0.943]
    """
    if n <= 0:
        return None
    p, scale = correct / n, 1 + z * z / n
    center = (p + z * z / (2 * n)) / scale
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / scale
    return max(0.0, center - half), min(1.0, center + half)


def items_needed(accuracy: float, bar: float, power: float = POWER) -> int | None:
    """Items for a ``power`` chance that the Wilson lower bound clears ``bar`` if the accuracy truly is
    ``accuracy``; None when no number of items can (``accuracy`` at or below the bar).

    >>> items_needed(0.78, 0.75)
    1593
    """
    if accuracy <= bar:
        return None
    spread = Z * math.sqrt(bar * (1 - bar)) + NormalDist().inv_cdf(power) * math.sqrt(accuracy * (1 - accuracy))
    return max(1, math.ceil((spread / (accuracy - bar)) ** 2))


def _p95(sample: np.ndarray, axis: int) -> np.ndarray:
    return np.percentile(sample, 95, axis=axis)  # linear interpolation, as report.percentile


def p95_interval(latencies: Sequence[float]) -> tuple[float, float] | None:
    """The 95% percentile-bootstrap interval of the p95 of ``latencies`` (items resampled)."""
    return paired.interval(latencies, _p95) if latencies else None


def check(value: float | None, interval: tuple[float, float] | None, threshold: float | None,
          at_least: bool) -> str:
    """PASS, NOT_PROVEN or FAIL of ``value`` (and its interval) against a bar it must be at least
    (``at_least``) or at most; NO_THRESHOLD without a bar."""
    if threshold is None:
        return NO_THRESHOLD
    if value is None or interval is None:
        return NO_DATA
    sign = 1 if at_least else -1
    if sign * (value - threshold) < 0:
        return FAIL
    near = interval[0] if at_least else interval[1]
    return PASS if sign * (near - threshold) >= 0 else NOT_PROVEN


def overall(statuses: Sequence[str]) -> str:
    """A system's decision from its checks: the worst of them, NO_THRESHOLD when none had a bar."""
    checked = [s for s in statuses if s != NO_THRESHOLD]
    for status in (FAIL, NO_DATA, NOT_PROVEN):
        if status in checked:
            return status
    return PASS if checked else NO_THRESHOLD


@dataclass(frozen=True)
class SystemDecision:
    system: str
    items: int
    correct: int
    accuracy: float | None
    accuracy_ci95: tuple[float, float] | None
    min_accuracy: float | None
    accuracy_check: str
    items_needed: int | None  # when accuracy_check is NOT_PROVEN
    latency_p95_s: float | None
    latency_p95_ci95_s: tuple[float, float] | None
    max_latency_s: float | None
    latency_check: str
    decision: str
    sentence: str


@dataclass(frozen=True)
class PairDecision:
    """The pair as ``better`` against ``worse`` (the one with the higher accuracy first); every
    difference is better - worse."""

    better: str
    worse: str
    n: int
    points: float | None  # accuracy difference, percentage points
    points_ci95: tuple[float, float] | None
    mcnemar_p: float
    real: bool  # McNemar p < ALPHA
    latency_diff_median_s: float | None
    latency_diff_ci95_s: tuple[float, float] | None
    sentence: str


# --- how numbers read ------------------------------------------------------------------------------

def percent(value: float, bar: float | None = None) -> str:
    """``78%``; more digits where the rounded value would read as the bar it is not (74.6% < 75%)."""
    digits = 0
    while digits < 3 and bar is not None and value != bar and f"{100 * value:.{digits}f}" == f"{100 * bar:.{digits}f}":
        digits += 1
    return f"{100 * value:.{digits}f}%"


def bar_percent(bar: float) -> str:
    """A threshold as given: ``75%``, ``75.5%``."""
    return f"{100 * bar:g}%"


def percent_range(interval: tuple[float, float], bar: float | None = None) -> str:
    """``65-80%``, with ``percent``'s digits near the bar."""
    return f"{percent(interval[0], bar)[:-1]}-{percent(interval[1], bar)}"


def seconds(value: float) -> str:
    """Three figures or so: ``11.2``, ``2.35``, ``0.084``, ``123``."""
    size = abs(value)
    text = f"{value:.0f}" if size >= 100 else f"{value:.1f}" if size >= 10 else f"{value:.2f}" if size >= 1 \
        else f"{value:.3f}"
    return "0" if float(text) == 0 else text


def points(value: float) -> str:
    """Percentage points: ``9``, ``-3``, ``0.4`` (one decimal below one point)."""
    text = f"{value:.0f}" if abs(value) >= 1 else f"{value:.1f}"
    return "0" if float(text) == 0 else text


def seconds_range(interval: tuple[float, float]) -> str:
    return f"{seconds(interval[0])}-{seconds(interval[1])} s"


# --- the decision ----------------------------------------------------------------------------------

def accuracy_found(s: dict) -> str:
    """``73% (65-80%)``: a system's accuracy and its interval (``s``: a row of decision["systems"])."""
    if s["accuracy"] is None or s["accuracy_ci95"] is None:
        return "–"
    return f"{percent(s['accuracy'], s['min_accuracy'])} ({percent_range(s['accuracy_ci95'], s['min_accuracy'])})"


def latency_found(s: dict) -> str:
    """``11.7 s (11.2-11.9 s)``: a system's p95 latency and its interval."""
    if s["latency_p95_s"] is None or s["latency_p95_ci95_s"] is None:
        return "–"
    return f"{seconds(s['latency_p95_s'])} s ({seconds_range(s['latency_p95_ci95_s'])})"


def _accuracy_clause(s: dict) -> str:
    if s["accuracy"] is None:
        return "no accuracy (no items)"
    found = f"accuracy {accuracy_found(s)}"
    if s["min_accuracy"] is None:
        return f"{found}, no --min-accuracy given"
    bar = bar_percent(s["min_accuracy"])
    if s["accuracy_check"] == FAIL:
        return f"{found} < {bar}"
    if s["accuracy_check"] == PASS:
        return f"{found} ≥ {bar}"
    needed = (f"about {s['items_needed']} items would prove it ({POWER:.0%} power if "
              f"{percent(s['accuracy'])} holds; {s['items']} here)" if s["items_needed"]
              else "no number of items proves an accuracy that only equals the bar")
    return f"{found} ≥ {bar}, but the interval reaches below it: {needed}"


def _latency_clause(s: dict) -> str:
    if s["latency_p95_s"] is None:
        return "no latency measured"
    found = f"p95 {latency_found(s)}"
    if s["max_latency_s"] is None:
        return f"{found}, no --max-latency given"
    bar = f"{s['max_latency_s']:g} s"
    if s["latency_check"] == FAIL:
        return f"{found} > {bar}"
    if s["latency_check"] == PASS:
        return f"{found} ≤ {bar}"
    return f"{found} ≤ {bar}, but the interval reaches above it (more items would narrow it)"


def decide_system(summary: dict, latencies: Sequence[float], min_accuracy: float | None,
                  max_latency: float | None) -> SystemDecision:
    """One system's row of the table, from its ``report.system_summary`` and its per-item latencies."""
    n, correct, accuracy = summary["items"], summary["correct"], summary["accuracy"]
    accuracy_ci = wilson(correct, n)
    latency, latency_ci = summary["latency_p95_s"], p95_interval(latencies)
    accuracy_check = check(accuracy, accuracy_ci, min_accuracy, at_least=True)
    latency_check = check(latency, latency_ci, max_latency, at_least=False)
    needed = (items_needed(accuracy, min_accuracy) if accuracy_check == NOT_PROVEN and min_accuracy is not None
              else None)
    found = SystemDecision(summary["system"], n, correct, accuracy, accuracy_ci, min_accuracy, accuracy_check, needed,
                           latency, latency_ci, max_latency, latency_check,
                           overall([accuracy_check, latency_check]), "")
    row = asdict(found)
    return replace(found, sentence=f"{found.system}: {LEADS[found.decision]} — {_accuracy_clause(row)}; "
                                   f"{_latency_clause(row)}.")


def _latency_sentence(better: str, worse: str, median: float | None, interval: tuple[float, float] | None) -> str:
    if median is None or interval is None:
        return ""
    low, high = interval
    if low <= 0 <= high:
        return (f" Latency: no clear difference (median per-item {better} - {worse}: {seconds(median)} s, "
                f"{seconds(low)} to {seconds(high)} s).")
    word, size, span = ("faster", -median, (-high, -low)) if median < 0 else ("slower", median, (low, high))
    return (f" {better} answers {seconds(size)} s {word} (median of the per-item differences, "
            f"{seconds(span[0])} to {seconds(span[1])} s).")


def decide_pair(comparison: dict) -> PairDecision:
    """A ``paired.compare`` result (as in report.json) turned so the more accurate system comes first."""
    c = comparison
    a, b, diff = c["a"], c["b"], c["accuracy_diff"]
    flip = diff is not None and diff < 0
    better, worse = (b, a) if flip else (a, b)
    sign = -1 if flip else 1
    median = None if c["latency_diff_median_s"] is None else sign * c["latency_diff_median_s"]
    lat_ci = c["latency_diff_ci95_s"]
    lat_ci = None if lat_ci is None else tuple(sorted((sign * lat_ci[0], sign * lat_ci[1])))
    if diff is None:
        return PairDecision(a, b, 0, None, None, c["mcnemar_p"], False, None, None,
                            f"{a} and {b}: no items scored by both, nothing to compare.")
    gap = 100 * sign * diff
    ci = c["accuracy_diff_ci95"]
    low, high = sorted((100 * sign * ci[0], 100 * sign * ci[1]))
    real = c["mcnemar_p"] < paired.ALPHA
    numbers = f"({points(low)} to {points(high)}, McNemar {paired.p_text(c['mcnemar_p'])})"
    if real:
        text = f"{better} is {points(gap)} points better than {worse} {numbers}: the gap is real."
    elif gap == 0:
        text = (f"{better} and {worse} score the same {numbers}: no evidence either is better on these "
                f"{c['n']} items.")
    else:
        text = (f"{better} and {worse} differ by {points(gap)} points {numbers}: no evidence {better} is better "
                f"on these {c['n']} items.")
    return PairDecision(better, worse, c["n"], gap, (low, high), c["mcnemar_p"], real, median, lat_ci,
                        text + _latency_sentence(better, worse, median, lat_ci))


def decide(systems: list[dict], latencies: dict[str, list[float]], comparisons: list[dict],
           min_accuracy: float | None, max_latency: float | None) -> dict:
    """The tier report as it goes into report.json: the method, a row per system, a reading per pair,
    and every sentence in order (systems first)."""
    rows = [decide_system(s, latencies.get(s["system"], []), min_accuracy, max_latency) for s in systems]
    pairs = [decide_pair(c) for c in comparisons]
    return {
        "method": {"confidence": CONFIDENCE, "accuracy_interval": "wilson",
                   "latency_p95_interval": f"percentile bootstrap, {paired.RESAMPLES} resamples, seed {paired.SEED}",
                   "not_proven": "point estimate meets the threshold, the interval crosses it",
                   "items_needed": f"one-sample proportion, {POWER:.0%} power, score test at the interval's bound",
                   "pairs": f"exact McNemar p < {paired.ALPHA:g} is a real gap, each pair alone"},
        "systems": [asdict(r) for r in rows], "pairs": [asdict(p) for p in pairs],
        "sentences": [r.sentence for r in rows] + [p.sentence for p in pairs],
    }


# --- rendering (the same cells and sentences for the terminal and report.md) -----------------------

HEAD = ["system", "items", "accuracy (95% CI)", "min accuracy", "latency p95 (95% CI)", "max latency", "decision"]


def _check_cell(status: str, needed: int | None = None) -> str:
    if status == NOT_PROVEN and needed:
        return f"not proven (~{needed} items)"
    return status


def table_rows(decision: dict) -> list[list[str]]:
    """The decision table's cells, one list per system, in HEAD's order."""
    found = []
    for s in decision["systems"]:
        accuracy_bar = "" if s["min_accuracy"] is None else f"≥ {bar_percent(s['min_accuracy'])}: "
        latency_bar = "" if s["max_latency_s"] is None else f"≤ {s['max_latency_s']:g} s: "
        found.append([s["system"], str(s["items"]), accuracy_found(s),
                      accuracy_bar + _check_cell(s["accuracy_check"], s["items_needed"]), latency_found(s),
                      latency_bar + _check_cell(s["latency_check"]), s["decision"]])
    return found


def method_note(decision: dict) -> str:
    method = decision["method"]
    return (f"Accuracy: Wilson score {method['confidence']:.0%} interval; p95 latency: the items resampled "
            f"({method['latency_p95_interval']}). A bar met by the point estimate but crossed by the "
            f"interval is not proven; items needed for {POWER:.0%} power. Pairs: exact McNemar p < "
            f"{paired.ALPHA:g} is a real gap"
            + (" (each pair alone: no correction for multiple comparisons)." if len(decision["pairs"]) > 1 else "."))


def markdown_lines(decision: dict) -> list[str]:
    lines = ["", "## Decision", "", method_note(decision), "", "| " + " | ".join(HEAD) + " |",
             "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table_rows(decision)]
    return lines + [""] + [f"- {sentence}" for sentence in decision["sentences"]]


def terminal_lines(decision: dict) -> list[str]:
    rows = [HEAD, *table_rows(decision)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEAD))]
    lines = ["", f"Decision. {method_note(decision)}"]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return lines + [""] + [f"  {sentence}" for sentence in decision["sentences"]]
