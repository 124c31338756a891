"""The tier report of ``mistralkit eval`` (``evaluate.decision``): Wilson intervals against textbook
values and scipy, the items-needed estimate against the exact binomial power it promises, the p95's
bootstrap interval, the pass / not proven / fail rules, and the sentences read from constructed
outcomes through ``report.summarize`` (the same path a run takes); the end-to-end run is in test_eval.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mistralkit.cli.evaluate import _print_table
from mistralkit.evaluate import decision
from mistralkit.evaluate.decision import FAIL, NO_THRESHOLD, NOT_PROVEN, PASS
from mistralkit.evaluate.report import markdown, summarize
from mistralkit.evaluate.runner import EvalConfig, System
from mistralkit.evaluate.suite import Item


def test_wilson_interval_matches_the_textbook_and_scipy():
    # by hand from (p + z²/2n ± z·√(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.96
    assert decision.wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=5e-5)
    assert decision.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)
    assert decision.wilson(10, 10) == pytest.approx((10 / (10 + 1.96**2), 1.0), abs=5e-5)  # 0.7225
    for k, n in [(1, 3), (5, 9), (94, 120), (255, 300), (999, 1000), (17, 2000)]:
        ci = stats.binomtest(k, n).proportion_ci(method="wilson")
        assert decision.wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert decision.wilson(0, 0) is None


def exact_power(n: int, accuracy: float, bar: float) -> float:
    """P(the Wilson lower bound of k/n clears ``bar``) for k ~ Binomial(n, accuracy): the bound clears
    the bar exactly where the one-sided score test (k/n - bar) / √(bar(1-bar)/n) passes 1.96."""
    last_short = math.floor(n * bar + stats.norm.ppf(0.975) * math.sqrt(n * bar * (1 - bar)))
    return float(stats.binom.sf(last_short, n, accuracy))


def test_the_lower_bound_clears_a_bar_exactly_where_the_score_test_does():
    for n, bar in [(50, 0.7), (120, 0.75), (300, 0.8)]:
        z = [(k / n - bar) / math.sqrt(bar * (1 - bar) / n) for k in range(n + 1)]
        assert [decision.wilson(k, n)[0] > bar for k in range(n + 1)] == [s > 1.96 for s in z]


def test_items_needed_gives_the_power_it_promises():
    # by hand: ((1.96·√(.75·.25) + 0.8416·√(.78·.22)) / 0.03)² = (1.1973 / 0.03)² = 1592.9
    assert decision.items_needed(0.78, 0.75) == 1593
    # 9 right of 9 is 100% but Wilson's lower bound is 0.70; 12 of 12 is the first run of all-right to clear 0.75
    assert decision.items_needed(1.0, 0.75) == 12
    assert decision.wilson(11, 11)[0] < 0.75 < decision.wilson(12, 12)[0]
    for accuracy, bar in [(0.78, 0.75), (0.9, 0.8), (0.85, 0.75), (0.95, 0.9), (0.6, 0.5)]:
        n = decision.items_needed(accuracy, bar)
        assert 0.75 <= exact_power(n, accuracy, bar) <= 0.85, (accuracy, bar, n)  # 80%, normal approximation
        assert exact_power(n // 2, accuracy, bar) < 0.6
    assert decision.items_needed(0.75, 0.75) is None and decision.items_needed(0.7, 0.75) is None


def test_the_p95_interval_is_a_bootstrap_of_the_items():
    assert decision.p95_interval([2.5] * 40) == (2.5, 2.5) and decision.p95_interval([]) is None
    latencies = list(np.linspace(1.0, 20.0, 20))
    low, high = decision.p95_interval(latencies)
    assert low <= np.percentile(latencies, 95) <= high <= 20.0 and decision.p95_interval(latencies) == (low, high)
    # Exponential latencies, true p95 = ln 20: a percentile bootstrap of a tail quantile covers somewhat less
    # than 95% at 200 items (about 90%); a wrong statistic (the median, say) would cover it never
    rng, covered = np.random.default_rng(5), 0
    for _ in range(20):
        low, high = decision.p95_interval(list(rng.exponential(size=200)))
        covered += low <= math.log(20) <= high
    assert covered >= 16


def test_a_bar_is_met_not_proven_or_failed_by_the_estimate_and_its_interval():
    assert decision.check(0.85, (0.81, 0.89), 0.75, at_least=True) == PASS
    assert decision.check(0.78, (0.70, 0.85), 0.75, at_least=True) == NOT_PROVEN
    assert decision.check(0.75, (0.67, 0.82), 0.75, at_least=True) == NOT_PROVEN  # at the bar passes the verdict
    assert decision.check(0.73, (0.65, 0.80), 0.75, at_least=True) == FAIL
    assert decision.check(11.6, (11.2, 12.0), 15.0, at_least=False) == PASS
    assert decision.check(14.0, (12.0, 16.0), 15.0, at_least=False) == NOT_PROVEN
    assert decision.check(16.0, (15.5, 17.0), 15.0, at_least=False) == FAIL
    assert decision.check(0.9, (0.8, 0.95), None, at_least=True) == NO_THRESHOLD
    assert decision.overall([PASS, NO_THRESHOLD]) == PASS and decision.overall([NO_THRESHOLD] * 2) == NO_THRESHOLD
    assert decision.overall([NOT_PROVEN, PASS]) == NOT_PROVEN and decision.overall([NOT_PROVEN, FAIL]) == FAIL


def test_numbers_read_as_their_bar_only_when_they_are_it():
    assert decision.percent(0.7833) == "78%" and decision.percent(0.7499, 0.75) == "74.99%"
    assert decision.percent(0.746, 0.75) == "74.6%" and decision.percent(0.75, 0.75) == "75%"
    assert decision.bar_percent(0.755) == "75.5%" and decision.seconds(11.64) == "11.6"
    assert decision.seconds(2.345) == "2.35" and decision.seconds(0.0841) == "0.084" and decision.points(-0.04) == "0"


# --- sentences from constructed outcomes -----------------------------------------------------------

N = 300


def item(i: int) -> Item:
    return Item(id=f"q{i}", messages=({"role": "user", "content": f"question {i}"},), scorer="exact", expected="yes")


def rows_of(system: str, right: set[int], latency) -> list[dict]:
    return [{"system": system, "id": f"q{i}", "tags": [], "scorer": "exact", "expected": "yes",
             "engine": "llama.cpp", "output": "yes" if i in right else "no", "correct": i in right,
             "latency_s": latency(i), "ttft_s": 0.1, "completion_tokens": 3, "tokens_per_s": 30.0}
            for i in range(N)]


def tiers(min_accuracy: float | None, max_latency: float | None) -> tuple[dict, list[dict], list[Item]]:
    """free: 255/300 right, 4-12 s; premium: 285/300 (35 items only it gets, 5 only free gets), 1-2 s;
    prompt: 256/300, 11 items apart from free (6 to 5), free's latencies."""
    free, premium, prompt = set(range(255)), {*range(250), *range(255, 290)}, {*range(250), *range(255, 261)}
    slow, fast = (lambda i: 4 + 8 * i / (N - 1)), (lambda i: 1 + i / (N - 1))
    rows = rows_of("free", free, slow) + rows_of("premium", premium, fast) + rows_of("prompt", prompt, slow)
    config = EvalConfig(suite="s.jsonl", systems=[System("free"), System("premium"), System("prompt")], out="o",
                        min_accuracy=min_accuracy, max_latency=max_latency)
    items = [item(i) for i in range(N)]
    return summarize(rows, items, config, {}), rows, items


def test_sentences_say_viable_and_whether_a_gap_is_real():
    report = tiers(0.75, 15.0)[0]
    found = report["decision"]
    free, premium, prompt = found["systems"]
    # Wilson of 255/300 is 0.805-0.886, of 285/300 0.920-0.970 (scipy, rounded)
    assert free["sentence"].startswith("free: viable — accuracy 85% (81-89%) ≥ 75%; p95 11.6 s (")
    assert free["sentence"].endswith(" s) ≤ 15 s.") and free["latency_p95_ci95_s"][1] <= 12.0
    assert premium["sentence"].startswith("premium: viable — accuracy 95% (92-97%) ≥ 75%; p95 1.95 s (")
    assert [s["decision"] for s in found["systems"]] == [PASS, PASS, PASS]
    free_premium, free_prompt, premium_prompt = found["pairs"]
    assert stats.binomtest(5, 40).pvalue < 0.001  # 5 items only free got right, 35 only premium
    assert free_premium["sentence"].startswith("premium is 10 points better than free (")
    assert ", McNemar p < 0.001): the gap is real. premium answers 6.50 s faster (median of the per-item " \
           "differences, " in free_premium["sentence"]
    assert (free_premium["better"], free_premium["real"], free_premium["points"]) == ("premium", True,
                                                                                      pytest.approx(10.0))
    low, high = free_premium["points_ci95"]
    assert 0 < low < 10 < high
    # 6 items only prompt got right, 5 only free: 0.3 points, p = 1 (binomial test on 5 of 11)
    assert stats.binomtest(5, 11).pvalue == 1.0
    assert free_prompt["sentence"].startswith("prompt and free differ by 0.3 points (")
    assert ", McNemar p = 1): no evidence prompt is better on these 300 items." in free_prompt["sentence"]
    assert "Latency: no clear difference (median per-item prompt - free: 0 s, 0 to 0 s)." in free_prompt["sentence"]
    assert premium_prompt["sentence"].startswith("premium is 10 points better than prompt (")
    assert found["sentences"] == [s["sentence"] for s in found["systems"]] + [p["sentence"] for p in found["pairs"]]


def test_not_proven_names_the_items_needed_and_a_missing_bar_is_said():
    report = tiers(0.83, None)[0]
    free, premium, prompt = report["decision"]["systems"]
    # 255/300 = 85%, Wilson 80.5-88.6% straddles 83%; the textbook size for 85% against 83% at 80% power:
    needed = math.ceil(((1.96 * math.sqrt(0.83 * 0.17) + 0.8416 * math.sqrt(0.85 * 0.15)) / 0.02) ** 2)
    assert free["items_needed"] == needed and free["decision"] == NOT_PROVEN
    assert free["sentence"].startswith(
        f"free: not proven at this sample size — accuracy 85% (81-89%) ≥ 83%, but the interval reaches below it: "
        f"about {needed} items would prove it (80% power if 85% holds; 300 here); p95 11.6 s (")
    assert free["sentence"].endswith(" s), no --max-latency given.")
    assert premium["decision"] == PASS and premium["latency_check"] == NO_THRESHOLD
    nothing = tiers(None, None)[0]["decision"]["systems"][0]
    assert nothing["decision"] == NO_THRESHOLD and nothing["sentence"].startswith(
        "free: no verdict — accuracy 85% (81-89%), no --min-accuracy given; p95 11.6 s (")


def test_a_p95_inside_the_bar_whose_interval_crosses_it_is_not_proven_and_below_the_bar_fails():
    report = tiers(0.9, 11.7)[0]
    free, premium, _ = report["decision"]["systems"]
    assert free["latency_p95_s"] == pytest.approx(11.6) and free["latency_p95_ci95_s"][1] > 11.7
    assert (free["latency_check"], free["accuracy_check"], free["decision"]) == (NOT_PROVEN, FAIL, FAIL)
    assert free["sentence"] == (f"free: not viable — accuracy 85% (81-89%) < 90%; p95 11.6 s "
                                f"({decision.seconds_range(free['latency_p95_ci95_s'])}) ≤ 11.7 s, but the interval "
                                f"reaches above it (more items would narrow it).")
    assert premium["accuracy_check"] == PASS  # 95%, Wilson 92-97%


def test_terminal_and_markdown_show_the_same_table_and_sentences(capsys, tmp_path):
    report, rows, items = tiers(0.83, 15.0)
    text = markdown(report, rows, items)
    section = text[text.index("## Decision"):text.index("## Items")]
    assert "| system | items | accuracy (95% CI) | min accuracy | latency p95 (95% CI) | max latency | decision |" \
           in section
    assert f"| free | 300 | 85% (81-89%) | ≥ 83%: not proven (~{report['decision']['systems'][0]['items_needed']} " \
           f"items) | 11.6 s (" in section
    _print_table(report, Path(tmp_path))
    printed = capsys.readouterr().out
    tail = printed[printed.index("Decision."):]
    for row in decision.table_rows(report["decision"]):
        assert "| " + " | ".join(row) + " |" in section
        assert all(cell in tail for cell in row)
    for sentence in report["decision"]["sentences"]:
        assert f"- {sentence}" in section and f"  {sentence}" in tail
    assert "Wilson score 95% interval" in section and "Wilson score 95% interval" in tail
