"""Two systems on the same items: is the difference more than chance?

Paired statistics, because both systems answered the same items: an item both get right (or both
wrong) says nothing about which is better, only the discordant ones do. An unpaired test of two
accuracies throws the pairing away and is far weaker (on one published comparison: unpaired
p = 0.080, McNemar p = 0.008).

* accuracy: the exact McNemar test (a two-sided binomial test at 1/2 on the discordant items), and
  the difference a - b with a 95% percentile-bootstrap interval that resamples items, so each
  resampled item keeps both systems' outcomes;
* latency: the median of the per-item differences a - b, with the same bootstrap interval.

The bootstrap has a fixed seed: the same outcomes always give the same interval. The verdict follows
the McNemar p alone: with few discordant items the percentile interval can miss 0 while p >= 0.05
(5 to 0 of 10 items: p = 0.0625), and the exact test is the one to trust there.

    c = compare("tuned", "base", [True, True, False], [False, True, False], [1.2, 0.9, 1.0], [1.0, 0.8, 1.1])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 10_000
SEED = 0
ALPHA = 0.05  # p below this is significant; the intervals are at 1 - ALPHA
CHUNK = 2_000_000  # resampled values held at once (16 MB of indices), whatever the number of items


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p for ``b`` items only system a got right and ``c`` only b got right.

    >>> round(mcnemar_exact(10, 2), 4)
    0.0386
    """
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)  # integers until this one correctly rounded division


def bootstrap(values: Sequence[float], statistic: Callable, resamples: int = RESAMPLES,
              seed: int = SEED) -> np.ndarray:
    """``statistic(sample, axis=1)`` of ``resamples`` samples of ``values`` drawn with replacement."""
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK // len(data))
    found = []
    for start in range(0, resamples, per_chunk):
        rows = min(per_chunk, resamples - start)
        found.append(statistic(data[rng.integers(0, len(data), size=(rows, len(data)))], axis=1))
    return np.concatenate(found)


def interval(values: Sequence[float], statistic: Callable, resamples: int = RESAMPLES,
             seed: int = SEED) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of ``statistic`` over ``values``."""
    low, high = np.percentile(bootstrap(values, statistic, resamples, seed), [50 * ALPHA, 100 - 50 * ALPHA])
    return float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    """System a against system b on the ``n`` items both scored; every difference is a - b."""

    a: str
    b: str
    n: int
    a_accuracy: float | None
    b_accuracy: float | None
    accuracy_diff: float | None
    accuracy_diff_ci95: tuple[float, float] | None
    a_right_b_wrong: int  # McNemar's b
    a_wrong_b_right: int  # McNemar's c
    mcnemar_p: float
    latency_n: int  # items with a latency from both
    latency_diff_median_s: float | None
    latency_diff_ci95_s: tuple[float, float] | None
    resamples: int
    seed: int
    significant: bool
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def verdict(a: str, b: str, a_right_b_wrong: int, a_wrong_b_right: int, p: float) -> str:
    """``A better than B (p = 0.008)``, or ``not significant (p = 0.39)`` where p >= ALPHA."""
    if p >= ALPHA:
        return f"not significant ({p_text(p)})"
    better, worse = (a, b) if a_right_b_wrong > a_wrong_b_right else (b, a)
    return f"{better} better than {worse} ({p_text(p)})"


def latency_difference(a_latency: Sequence[float | None], b_latency: Sequence[float | None], resamples: int,
                       seed: int) -> tuple[int, float | None, tuple[float, float] | None]:
    """(items timed by both, median of the per-item differences a - b, its bootstrap interval)."""
    diffs = [x - y for x, y in zip(a_latency, b_latency, strict=True) if x is not None and y is not None]
    if not diffs:
        return 0, None, None
    return len(diffs), float(np.median(diffs)), interval(diffs, np.median, resamples, seed)


def compare(a: str, b: str, a_correct: Sequence[bool], b_correct: Sequence[bool],
            a_latency: Sequence[float | None], b_latency: Sequence[float | None],
            resamples: int = RESAMPLES, seed: int = SEED) -> Comparison:
    """Compare two systems from their outcomes and latencies on the same items, in the same order."""
    n = len(a_correct)
    if not n == len(b_correct) == len(a_latency) == len(b_latency):
        raise ValueError("both systems need an outcome and a latency on every item compared")
    only_a = sum(1 for x, y in zip(a_correct, b_correct) if x and not y)
    only_b = sum(1 for x, y in zip(a_correct, b_correct) if y and not x)
    p = mcnemar_exact(only_a, only_b)
    timed, median, median_ci = latency_difference(a_latency, b_latency, resamples, seed)
    if n == 0:
        return Comparison(a, b, 0, None, None, None, None, 0, 0, p, 0, None, None, resamples, seed, False,
                          "no items scored by both")
    diffs = [int(bool(x)) - int(bool(y)) for x, y in zip(a_correct, b_correct)]
    return Comparison(a, b, n, sum(map(bool, a_correct)) / n, sum(map(bool, b_correct)) / n,
                      (only_a - only_b) / n, interval(diffs, np.mean, resamples, seed), only_a, only_b, p,
                      timed, median, median_ci, resamples, seed, p < ALPHA, verdict(a, b, only_a, only_b, p))
