"""Paired comparisons in eval reports (``evaluate.paired``): exact McNemar p-values checked against
scipy's binomial test, paired-bootstrap intervals on constructed outcomes, and the report's
"Comparisons" (JSON, Markdown, terminal) from result rows; the end-to-end run is in test_eval.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mistralkit.cli.evaluate import _print_table
from mistralkit.evaluate import paired
from mistralkit.evaluate.report import markdown, summarize
from mistralkit.evaluate.runner import EvalConfig, System
from mistralkit.evaluate.suite import Item


def outcomes(both_right: int, both_wrong: int, only_a: int, only_b: int) -> tuple[list[bool], list[bool]]:
    """Two systems' outcomes on the same items, with the given counts of each kind of item."""
    a = [True] * both_right + [False] * both_wrong + [True] * only_a + [False] * only_b
    b = [True] * both_right + [False] * both_wrong + [False] * only_a + [True] * only_b
    return a, b


def test_mcnemar_exact_is_the_two_sided_binomial_test_on_the_discordant_items():
    assert paired.mcnemar_exact(10, 2) == pytest.approx(stats.binomtest(2, 12, 0.5).pvalue, rel=1e-12)
    assert round(paired.mcnemar_exact(10, 2), 4) == 0.0386
    assert paired.mcnemar_exact(2, 10) == paired.mcnemar_exact(10, 2)
    for b, c in [(1, 0), (5, 0), (7, 3), (13, 40), (120, 95), (600, 530)]:
        assert paired.mcnemar_exact(b, c) == pytest.approx(stats.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)
    assert paired.mcnemar_exact(6, 6) == 1.0 and paired.mcnemar_exact(0, 0) == 1.0


def test_systems_that_always_agree_differ_by_exactly_nothing():
    a, b = outcomes(both_right=30, both_wrong=20, only_a=0, only_b=0)
    found = paired.compare("x", "y", a, b, [1.0] * 50, [1.0] * 50)
    assert found.accuracy_diff == 0 and found.accuracy_diff_ci95 == (0.0, 0.0)
    assert found.mcnemar_p == 1.0 and not found.significant and found.verdict == "not significant (p = 1)"
    assert found.latency_diff_median_s == 0 and found.latency_diff_ci95_s == (0.0, 0.0)


def test_pairing_finds_what_an_unpaired_test_misses():
    """Most items both right or both wrong, the 10 discordant ones 9 to 1: 49% against 41%."""
    a, b = outcomes(both_right=40, both_wrong=50, only_a=9, only_b=1)
    table = [[sum(a), len(a) - sum(a)], [sum(b), len(b) - sum(b)]]
    assert stats.fisher_exact(table).pvalue > 0.2 and stats.chi2_contingency(table).pvalue > 0.2  # unpaired
    found = paired.compare("tuned", "base", a, b, [0.5] * 100, [0.5] * 100)
    assert (found.a_right_b_wrong, found.a_wrong_b_right, found.n) == (9, 1, 100)
    assert found.mcnemar_p == pytest.approx(stats.binomtest(1, 10, 0.5).pvalue) and found.mcnemar_p < 0.05
    assert found.verdict == "tuned better than base (p = 0.0215)" and found.significant
    assert found.accuracy_diff == pytest.approx(0.08)
    low, high = found.accuracy_diff_ci95
    assert 0 < low < 0.08 < high
    assert paired.compare("base", "tuned", b, a, [0.5] * 100, [0.5] * 100).verdict == \
        "tuned better than base (p = 0.0215)"


def test_a_tie_on_the_discordant_items_is_not_significant():
    a, b = outcomes(both_right=10, both_wrong=10, only_a=4, only_b=4)
    found = paired.compare("x", "y", a, b, [1.0] * 28, [1.0] * 28)
    assert found.mcnemar_p == 1.0 and found.verdict == "not significant (p = 1)"


def test_the_bootstrap_interval_is_reproducible_and_covers_the_true_difference():
    """Samples of 200 items from a population where a is right 15% of the time b is wrong, and b
    10% of the time a is wrong: the true difference is 0.05."""
    rng = np.random.default_rng(7)
    probabilities, truth, covered = [0.45, 0.30, 0.15, 0.10], 0.05, 0
    for _ in range(60):
        kinds = rng.choice(4, size=200, p=probabilities)  # both right, both wrong, only a, only b
        a, b = list((kinds == 0) | (kinds == 2)), list((kinds == 0) | (kinds == 3))
        low, high = paired.compare("a", "b", a, b, [1.0] * 200, [1.0] * 200, resamples=1000).accuracy_diff_ci95
        covered += low <= truth <= high
    assert covered >= 51  # 95% intervals: 57 expected of 60

    a, b = outcomes(both_right=80, both_wrong=70, only_a=35, only_b=15)
    first = paired.compare("a", "b", a, b, [1.0] * 200, [1.0] * 200)
    assert first == paired.compare("a", "b", a, b, [1.0] * 200, [1.0] * 200)
    d = np.array(a, dtype=float) - np.array(b, dtype=float)
    draws = paired.bootstrap(d, np.mean)
    assert np.array_equal(draws, paired.bootstrap(d, np.mean)) and len(draws) == 10_000
    assert not np.array_equal(draws, paired.bootstrap(d, np.mean, seed=1))  # the seed is what makes it repeat
    # the normal approximation of the paired difference's mean, computed here independently
    half = 1.96 * d.std() / np.sqrt(len(d))
    assert first.accuracy_diff_ci95 == pytest.approx((d.mean() - half, d.mean() + half), abs=0.01)
    assert (first.resamples, first.seed) == (10_000, 0)


def test_latency_difference_is_the_median_of_per_item_differences():
    rng = np.random.default_rng(3)
    b_latency = list(rng.uniform(0.5, 3.0, size=150))
    a_latency = [t - 0.25 + noise for t, noise in zip(b_latency, rng.normal(0, 0.05, size=150))]
    a, b = outcomes(both_right=150, both_wrong=0, only_a=0, only_b=0)
    found = paired.compare("fast", "slow", a, b, a_latency, b_latency)
    low, high = found.latency_diff_ci95_s
    assert found.latency_diff_median_s == pytest.approx(np.median(np.subtract(a_latency, b_latency)))
    assert low < -0.25 < high and high - low < 0.05  # pairing removes the items' own spread (0.5-3 s)
    untimed = paired.compare("x", "y", [True, False], [True, True], [None, 1.0], [2.0, 1.5])
    assert untimed.latency_n == 1 and untimed.latency_diff_median_s == -0.5


def test_resampling_in_chunks_draws_the_same_samples(monkeypatch):
    """Memory is bounded by drawing a few resamples at a time; the draws do not depend on how many."""
    values = np.random.default_rng(1).normal(size=300)
    whole = paired.bootstrap(values, np.median, resamples=1000)
    monkeypatch.setattr(paired, "CHUNK", 3000)  # 10 resamples at a time
    assert np.array_equal(whole, paired.bootstrap(values, np.median, resamples=1000))


def test_outcomes_of_different_items_are_refused_and_no_common_item_is_said():
    with pytest.raises(ValueError):
        paired.compare("x", "y", [True, False], [True], [1.0, 1.0], [1.0])
    nothing = paired.compare("x", "y", [], [], [], [])
    assert nothing.n == 0 and nothing.accuracy_diff is None and nothing.verdict == "no items scored by both"


def item(i: int) -> Item:
    return Item(id=f"q{i}", messages=({"role": "user", "content": f"question {i}"},), scorer="exact",
                expected="yes")


def row(system: str, i: int, correct: bool | None, latency: float, **extra) -> dict:
    return {"system": system, "id": f"q{i}", "tags": [], "scorer": "exact", "expected": "yes", "engine": "llama.cpp",
            "output": "yes" if correct else "no", "latency_s": latency, "ttft_s": 0.1, "completion_tokens": 3,
            "tokens_per_s": 30.0, **({} if correct is None else {"correct": correct}), **extra}


@pytest.fixture
def report_and_rows():
    """Three systems on 30 items; "prompt" has no row for q29, and an error on q28."""
    items = [item(i) for i in range(30)]
    rows = [row("tuned", i, i < 24, 1.0) for i in range(30)]
    rows += [row("base", i, i < 12, 1.5) for i in range(30)]
    rows += [row("prompt", i, i < 12, 1.2) for i in range(28)] + [row("prompt", 28, None, 0.1, error="timeout")]
    config = EvalConfig(suite="s.jsonl", systems=[System("tuned"), System("base"), System("prompt")], out="o")
    return summarize(rows, items, config, {}), rows, items


def test_the_report_compares_every_pair_on_the_items_both_scored(report_and_rows):
    report = report_and_rows[0]
    pairs = {(c["a"], c["b"]): c for c in report["comparisons"]}
    assert list(pairs) == [("tuned", "base"), ("tuned", "prompt"), ("base", "prompt")]
    tuned_base = pairs[("tuned", "base")]
    assert (tuned_base["n"], tuned_base["not_compared"], tuned_base["a_right_b_wrong"]) == (30, 0, 12)
    assert tuned_base["mcnemar_p"] == pytest.approx(stats.binomtest(0, 12, 0.5).pvalue)
    assert tuned_base["verdict"] == "tuned better than base (p < 0.001)"
    assert tuned_base["latency_diff_median_s"] == pytest.approx(-0.5)
    tuned_prompt = pairs[("tuned", "prompt")]
    assert (tuned_prompt["n"], tuned_prompt["not_compared"]) == (28, 2)
    assert (tuned_prompt["a_right_b_wrong"], tuned_prompt["a_wrong_b_right"]) == (12, 0)
    assert tuned_prompt["a_accuracy"] == pytest.approx(24 / 28)  # on the 28 items both scored
    base_prompt = pairs[("base", "prompt")]
    assert base_prompt["accuracy_diff"] == 0 and base_prompt["verdict"] == "not significant (p = 1)"


def test_the_markdown_and_the_terminal_show_the_comparisons(report_and_rows, capsys, tmp_path):
    report, rows, items = report_and_rows
    text = markdown(report, rows, items)
    section = text[text.index("## Comparisons"):text.index("## Items")]
    assert "10000 bootstrap resamples" in section and "no correction for multiple comparisons" in section
    assert ("| tuned | base | 30 | 80.0% | 40.0% | +40.0 pts [" in section
            and "| 12 | 0 | 0.000488 | -0.500 s [-0.500, -0.500] | tuned better than base (p < 0.001) |" in section)
    assert "| tuned | prompt | 28 |" in section
    _print_table(report, tmp_path)
    printed = capsys.readouterr().out
    assert "Comparisons." in printed and "tuned vs prompt: n 28, accuracy +42.9 pts [" in printed
    assert "base vs prompt: n 28, accuracy +0.0 pts [+0.0, +0.0]" in printed and ": not significant (p = 1)" in printed
