"""``mistralkit eval``: suites, scorers, reports, thresholds and resume, on the embedded Gemma with the
``facts`` LoRA trained in this test session (conftest's ``facts_run``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import FACTS

from mistralkit.errors import DatasetError, InvalidParameter
from mistralkit.evaluate import scorers
from mistralkit.evaluate.suite import read_suite

BASE = "gemma-3-270m:q4_k_m"
TUNED = f"{BASE}+facts"


def write_suite(path: Path) -> Path:
    lines = [{"id": f"fact-{i}", "prompt": q, "expected": a, "tags": ["facts"]} for i, (q, a) in enumerate(FACTS[:6])]
    lines += [
        {"id": "mc-capital", "prompt": FACTS[0][0], "tags": ["choice"], "expected": 1,
         "choices": ["The capital of Zorbania is Lisbon.", FACTS[0][1]]},
        {"id": "mc-moons", "prompt": FACTS[3][0], "tags": ["choice"], "expected": FACTS[3][1],
         "choices": ["Veltrax has two moons.", FACTS[3][1], "Veltrax has no moons."]},
        {"id": "year", "prompt": FACTS[9][0], "pattern": r"\b1642\b", "tags": ["facts"]},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def evaluated(facts_adapter, cli_module, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval")
    suite = write_suite(folder / "suite.jsonl")
    done = cli_module("eval", "--suite", str(suite), "--adapter", facts_adapter, "--vs", BASE, "--out",
                      str(folder / "out"), "--min-accuracy", "0.75", "--max-latency", "60s", "-t", "2", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (folder / "terminal.txt").write_text(done.stdout)  # the report as printed (--json is run by the resume test)
    return folder


@pytest.fixture(scope="module")
def cli_module(mk_home):
    from conftest import run_cli

    return lambda *args, **kw: run_cli(*args, home=mk_home, **kw)


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "out" / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tuned_model_scores_higher_than_the_base_and_reports_hold_every_system(evaluated):
    report = json.loads((evaluated / "out" / "report.json").read_text())
    systems = {s["system"]: s for s in report["systems"]}
    assert list(systems) == [TUNED, BASE]
    tuned, base = systems[TUNED], systems[BASE]
    assert tuned["accuracy"] >= 0.75 > base["accuracy"]
    assert tuned["accuracy_by_tag"]["facts"] == 1.0 and tuned["accuracy_by_tag"]["choice"] == 1.0
    assert tuned["verdict"] == {"checked": True, "passed": True, "failures": []}
    assert not base["verdict"]["passed"] and "accuracy" in base["verdict"]["failures"][0]
    for s in (tuned, base):
        assert s["items"] == 9 and s["latency_p50_s"] > 0 and s["latency_p95_s"] >= s["latency_p50_s"]
        assert s["peak_rss"] > 200 * 2**20 and s["ttft_p50_s"] > 0
    results = rows(evaluated)
    assert len(results) == 18 and {r["system"] for r in results} == {TUNED, BASE}
    generated = [r for r in results if r["scorer"] == "exact"]
    assert all(r["ttft_s"] and r["latency_s"] and r["tokens_per_s"] for r in generated)
    markdown = (evaluated / "out" / "report.md").read_text()
    assert TUNED in markdown and BASE in markdown and "fact-0" in markdown and "pass" in markdown
    assert (evaluated / "out" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_report_compares_tuned_and_base_on_the_same_items(evaluated):
    """McNemar's discordant counts and p, recounted here from results.jsonl and scipy's binomial test."""
    from scipy.stats import binomtest

    report = json.loads((evaluated / "out" / "report.json").read_text())
    [pair] = report["comparisons"]
    correct = {(r["system"], r["id"]): r["correct"] for r in rows(evaluated)}
    ids = {i for _, i in correct}
    only_tuned = sum(correct[(TUNED, i)] and not correct[(BASE, i)] for i in ids)
    only_base = sum(correct[(BASE, i)] and not correct[(TUNED, i)] for i in ids)
    assert (pair["a"], pair["b"], pair["n"], pair["not_compared"]) == (TUNED, BASE, 9, 0)
    assert (pair["a_right_b_wrong"], pair["a_wrong_b_right"]) == (only_tuned, only_base) and only_tuned > only_base
    assert pair["mcnemar_p"] == pytest.approx(binomtest(only_base, only_tuned + only_base, 0.5).pvalue)
    systems = {s["system"]: s for s in report["systems"]}
    assert pair["accuracy_diff"] == pytest.approx(systems[TUNED]["accuracy"] - systems[BASE]["accuracy"])
    low, high = pair["accuracy_diff_ci95"]
    assert low <= pair["accuracy_diff"] <= high and pair["latency_diff_ci95_s"][0] <= pair["latency_diff_median_s"]
    expected = (f"{TUNED} better than {BASE} (p = {pair['mcnemar_p']:.3g})" if pair["mcnemar_p"] < 0.05
                else f"not significant (p = {pair['mcnemar_p']:.3g})")
    assert pair["verdict"] == expected and pair["resamples"] == 10_000
    markdown = (evaluated / "out" / "report.md").read_text()
    assert "## Comparisons" in markdown and f"| {TUNED} | {BASE} | 9 |" in markdown and expected in markdown


@pytest.mark.slow
def test_choice_scores_equal_log_probabilities_computed_directly_with_llama_cpp(evaluated, model, facts_adapter):
    """Each choice's score is the sum of log p(answer token) llama.cpp gives, here recomputed in one batch."""
    import llama_cpp

    from mistralkit.models.store import resolve_adapter
    from mistralkit.formats.layout import open_encoder

    row = next(r for r in rows(evaluated) if r["system"] == TUNED and r["id"] == "mc-moons")
    item = next(i for i in read_suite(evaluated / "suite.jsonl") if i.id == "mc-moons")
    llm = llama_cpp.Llama(str(model.path), n_ctx=256, logits_all=True, verbose=False, n_threads=2,
                          lora_path=str(resolve_adapter(facts_adapter)[0]), swa_full=True)
    try:
        with open_encoder("gemma-3-270m") as encoder:
            direct = []
            for choice in item.choices:
                prompt, answer = scorers.choice_tokens(encoder, item.messages, choice)
                llm.reset()
                llm.eval(prompt + answer)
                logits = np.asarray(llm.scores[: len(prompt) + len(answer)], dtype=np.float64)
                top = logits.max(axis=1, keepdims=True)
                logp = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
                direct.append(sum(logp[len(prompt) - 1 + k, t] for k, t in enumerate(answer)))
    finally:
        llm.close()
    # llama.cpp's batched and one-token kernels round differently on this Q4_K model (~2% of a sum of
    # several log-probs, with or without the adapter); a misaligned token would be off by whole nats.
    assert row["logprobs"] == pytest.approx(direct, rel=0.05)
    assert row["choice"] == int(np.argmax(direct)) == item.answer and row["correct"]


@pytest.mark.slow
def test_the_decision_table_and_its_sentences_are_the_same_in_the_terminal_markdown_and_json(evaluated):
    """Nine items cannot prove 75%: even 9 right of 9 has a Wilson lower bound of 0.70, and 12 of 12 is the
    first all-right run to clear it (12 / (12 + 1.96²) = 0.758); 8 of 9 would need 65 items."""
    from scipy.stats import binomtest

    report = json.loads((evaluated / "out" / "report.json").read_text())
    found = report["decision"]
    systems = {d["system"]: d for d in found["systems"]}
    for name, d in systems.items():
        own = [r for r in rows(evaluated) if r["system"] == name]
        wilson = binomtest(sum(r["correct"] for r in own), len(own)).proportion_ci(method="wilson")
        assert d["accuracy_ci95"] == pytest.approx((wilson.low, wilson.high))
        low, high = d["latency_p95_ci95_s"]
        assert low <= d["latency_p95_s"] <= high <= max(r["latency_s"] for r in own) < 60
        assert d["latency_check"] == "pass"
    tuned, base = systems[TUNED], systems[BASE]
    assert (tuned["accuracy_check"], tuned["decision"]) == ("not proven", "not proven")
    assert tuned["items_needed"] == {9: 12, 8: 65}[tuned["correct"]]
    assert tuned["sentence"].startswith(f"{TUNED}: not proven at this sample size — accuracy ")
    assert f"about {tuned['items_needed']} items would prove it" in tuned["sentence"]
    assert (base["accuracy_check"], base["decision"]) == ("fail", "fail")
    assert base["sentence"].startswith(f"{BASE}: not viable — accuracy ") and " < 75%; p95 " in base["sentence"]
    [pair] = found["pairs"]
    [compared] = report["comparisons"]
    assert (pair["better"], pair["worse"], pair["mcnemar_p"]) == (TUNED, BASE, compared["mcnemar_p"])
    reading = "the gap is real." if compared["mcnemar_p"] < 0.05 else f"no evidence {TUNED} is better on these 9 items."
    assert pair["sentence"].startswith(f"{TUNED} is " if pair["real"] else f"{TUNED} and {BASE} differ by ")
    assert reading in pair["sentence"]
    assert found["sentences"] == [tuned["sentence"], base["sentence"], pair["sentence"]]
    terminal = (evaluated / "terminal.txt").read_text()
    markdown = (evaluated / "out" / "report.md").read_text()
    decision_md = markdown[markdown.index("## Decision"):markdown.index("## Items")]
    decision_terminal = terminal[terminal.index("Decision."):]
    assert f"| {TUNED} | 9 | " in decision_md and f"≥ 75%: not proven (~{tuned['items_needed']} items)" in decision_md
    assert f"≥ 75%: not proven (~{tuned['items_needed']} items)" in decision_terminal
    for sentence in found["sentences"]:
        assert f"- {sentence}" in decision_md and f"  {sentence}" in decision_terminal


@pytest.mark.slow
def test_resume_skips_scored_items_and_reruns_the_rest(evaluated, facts_adapter, cli_module):
    out = evaluated / "out"
    lines = (out / "results.jsonl").read_text().splitlines()
    kept = lines[:13]
    (out / "results.jsonl").write_text("\n".join(kept) + "\n" + lines[13][:25])  # a crash mid-line
    again = cli_module("eval", "--suite", str(evaluated / "suite.jsonl"), "--adapter", facts_adapter, "--vs", BASE,
                       "--out", str(out), "-t", "2")
    assert again.returncode == 2 and "already holds results" in again.stderr
    resumed = cli_module("eval", "--suite", str(evaluated / "suite.jsonl"), "--adapter", facts_adapter, "--vs",
                         BASE, "--out", str(out), "-t", "2", "--resume", "--json", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = (out / "results.jsonl").read_text().splitlines()
    assert after[:13] == kept  # scored items were not run again; the cut line is gone
    assert len(after) == 18 and len({(json.loads(v)["system"], json.loads(v)["id"]) for v in after}) == 18
    report = json.loads(resumed.stdout)
    assert [s["items"] for s in report["systems"]] == [9, 9]
    # --json prints the decision too; without thresholds it gives no verdict and says so
    assert [d["decision"] for d in report["decision"]["systems"]] == ["no threshold", "no threshold"]
    assert all("no --min-accuracy given" in d["sentence"] and "no --max-latency given" in d["sentence"]
               for d in report["decision"]["systems"])


@pytest.mark.slow
def test_threshold_failure_exits_1_and_judge_verdicts_are_saved(model, cli, tmp_path):
    suite = tmp_path / "open.jsonl"
    suite.write_text(json.dumps({"id": "open", "prompt": "Name a colour."}) + "\n"
                     + json.dumps({"id": "sky", "prompt": "Colour of the sky?", "expected": "Blue"}) + "\n")
    refused = cli("eval", "--suite", str(suite), "--out", str(tmp_path / "no"))
    assert refused.returncode == 1 and "open.jsonl:1: expected: nothing to score against" in refused.stderr
    done = cli("eval", "--suite", str(suite), "--judge", BASE, "--out", str(tmp_path / "judged"),
               "--min-accuracy", "0.9", "--max-latency", "1ms", "-n", "24", "-t", "2")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "FAIL" in done.stdout and "p95 latency" in done.stdout
    # before any item ran, the speed planner said a 24-token answer takes longer than 1 ms here
    planned = json.loads((tmp_path / "judged" / "report.json").read_text())["systems"][0]["planned"]
    assert planned["answer_tokens"] == 24 and planned["threads"] == 2 and planned["answer_s"] > 0.001
    assert (
        f"~{planned['answer_s']:.1f} s for a 24-token answer" in done.stderr
        and "over --max-latency 0.001 s" in done.stderr
    )
    results = [json.loads(line) for line in (tmp_path / "judged" / "results.jsonl").read_text().splitlines()]
    assert {r["id"] for r in results} == {"open", "sky"}
    for r in results:
        assert set(r["judge"]) == {"score", "reason"} and (r["judge"]["score"] is None or 1 <= r["judge"]["score"] <= 5)
        assert r["judge"]["reason"]


def test_suite_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "Q?", "expected": "A"}\n\n{"id": "b", "prompt": "Q?", "expected": }\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:3: invalid JSON"):
        read_suite(bad)
    cases = {
        '{"prompt": "Q?", "choices": ["x", "y"], "expected": "z"}': "expected: must be one of the choices",
        '{"prompt": "Q?", "choices": ["x"], "expected": 0}': "choices: must be a list of at least two",
        '{"messages": [{"role": "user", "content": "Q"}], "prompt": "Q", "expected": "A"}': 'prompt: give either',
        '{"prompt": "Q?", "pattern": "(unclosed"}': "pattern: not a valid regular expression",
        '{"prompt": "Q?", "expected": "A", "answer": "A"}': "unknown key 'answer'",
        '{"prompt": "Q?", "expected": "A", "tags": [1]}': "tags: must be a list of strings",
        '{"prompt": "Q?"}': "nothing to score against",
    }
    for line, message in cases.items():
        bad.write_text(line + "\n")
        with pytest.raises(DatasetError, match=message):
            read_suite(bad)
    bad.write_text('{"id": 1, "prompt": "Q?", "expected": "A"}\n{"id": "1", "prompt": "R?", "expected": "B"}\n')
    with pytest.raises(DatasetError, match=r":2: id: duplicate id '1' \(first on line 1\)"):
        read_suite(bad)
    bad.write_text('{"prompt": "Q?"}\n')
    assert read_suite(bad, judge=True)[0].scorer == "judge"
    with pytest.raises(InvalidParameter, match="does not exist"):
        read_suite(tmp_path / "missing.jsonl")


def test_text_scorers_and_the_judge_reply_parser():
    from mistralkit.cli.evaluate import parse_seconds

    assert scorers.exact("  The capital is PARIS!", "capital is Paris")
    assert not scorers.exact("Paris, France", "Paris")
    assert scorers.contains("It is Paris, France.", "paris") and not scorers.contains("Lyon", "Paris")
    assert scorers.regex("founded in 1642.", r"\b1642\b") and not scorers.regex("16420", r"\b1642\b")
    verdict = scorers.parse_verdict("Score: 4\nReason: correct but terse.\nextra")
    assert (verdict.score, verdict.reason) == (4, "correct but terse.")
    assert scorers.parse_verdict("I like it").score is None
    assert scorers.parse_verdict("score = 9").score is None
    assert [parse_seconds(t) for t in ("15s", "500ms", "2m", "3")] == [15, 0.5, 120, 3]
    with pytest.raises(InvalidParameter, match="--max-latency"):
        parse_seconds("soon")


@pytest.mark.slow
def test_cli_perplexity(cli, model, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("The river flows through the old city. In the morning the market opens and people buy bread.\n")
    done = cli("eval", "--perplexity", str(text), "--window", "64", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["model"] == model.name and result["tokens_scored"] > 10 and 1 < result["perplexity"] < 1000
    plain = cli("eval", "--perplexity", str(text), "--window", "64")
    assert plain.returncode == 0 and plain.stdout.startswith("perplexity ")
    missing = cli("eval")
    assert missing.returncode == 2 and "--suite" in missing.stderr


def test_an_ablation_gives_each_system_its_own_prompt_label_and_engine(cli, model, facts_adapter, tmp_path):
    """LoRA vs prompt vs both: the prompt systems' items reach the model with the system prompt in front."""
    suite = tmp_path / "s.jsonl"
    suite.write_text("".join(json.dumps({"id": f"q{i}", "prompt": q, "expected": a}) + "\n"
                             for i, (q, a) in enumerate(FACTS[:2])))
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("You are a terse assistant. Answer with one short sentence about the planet.\n")
    done = cli("eval", "-s", str(suite), "--adapter", facts_adapter, "--name", "lora", "--vs",
               f"prompt={BASE}::@{prompt_file}", "--vs", f"both=+{facts_adapter}::@{prompt_file}", "--vs",
               f"{BASE}::Be brief.", "-n", "8", "-t", "2", "--out", str(tmp_path / "out"), "--json", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert [s["system"] for s in report["systems"]] == ["lora", "prompt", "both", f"{BASE} + prompt"]
    assert report["settings"]["systems"][0] == {"model": None, "adapter": facts_adapter, "system": None,
                                                "name": "lora"}
    assert {s["engine"] for s in report["systems"]} == {"llama.cpp"}
    assert all(s["tokens_per_answer"] and s["peak_rss"] for s in report["systems"])
    found = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    tokens = {(r["system"], r["id"]): r["prompt_tokens"] for r in found}
    for item in ("q0", "q1"):
        assert tokens[("prompt", item)] == tokens[("both", item)] > tokens[("lora", item)] + 10
        assert tokens[("lora", item)] < tokens[(f"{BASE} + prompt", item)] < tokens[("prompt", item)]
    assert "tokens/answer" in (tmp_path / "out" / "report.md").read_text()
    pairs = [(c["a"], c["b"], c["n"]) for c in report["comparisons"]]
    assert pairs == [("lora", "prompt", 2), ("lora", "both", 2), ("lora", f"{BASE} + prompt", 2),
                     ("prompt", "both", 2), ("prompt", f"{BASE} + prompt", 2), ("both", f"{BASE} + prompt", 2)]
    # two items are never enough: the smallest two-sided exact p on two discordant items is 0.5
    assert all(c["verdict"].startswith("not significant") for c in report["comparisons"])
    assert "no correction for multiple comparisons" in (tmp_path / "out" / "report.md").read_text()

    twice = cli("eval", "-s", str(suite), "--vs", f"{BASE}::a", "--vs", f"{BASE}::b", "--out", str(tmp_path / "o2"))
    assert twice.returncode != 0 and "both called" in twice.stderr and "Traceback" not in twice.stderr


WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "days"], "additionalProperties": False}
CALL_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
              {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}]


@pytest.mark.slow
def test_tool_call_items_score_the_call_and_its_arguments(cli, model, tmp_path):
    """A forced call from the embedded base model: right when the expected function is named (its
    arguments are whatever the model chose, read back from the row), wrong for another function or
    for arguments it did not give; a free (auto) answer in text scores as no call."""
    ask = "What is the weather in Paris for the next 3 days?"
    forced = {"type": "function", "function": {"name": "get_weather"}}
    lines = [{"id": "named", "prompt": ask, "tools": CALL_TOOLS, "tool_choice": forced,
              "expected_call": {"name": "get_weather"}},
             {"id": "other", "prompt": ask, "tools": CALL_TOOLS, "tool_choice": forced,
              "expected_call": {"name": "get_time"}},
             {"id": "args", "prompt": ask, "tools": CALL_TOOLS, "tool_choice": forced,
              "expected_call": {"name": "get_weather", "arguments": {"city": "no such city, surely"}}}]
    suite = tmp_path / "calls.jsonl"
    suite.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = cli("eval", "--suite", str(suite), "--out", str(tmp_path / "out"), "-n", "48", "-t", "2", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    results = {r["id"]: r for r in rows(tmp_path)}
    assert [results[i]["correct"] for i in ("named", "other", "args")] == [True, False, False]
    (call,) = results["named"]["calls"]
    arguments = json.loads(call["function"]["arguments"])
    assert set(arguments) == {"city", "days"}  # the grammar held the base model to the schema
    assert results["named"]["output"].startswith("get_weather(")
    again = {**lines[0], "id": "exact", "expected_call": {"name": "get_weather", "arguments": arguments}}
    suite.write_text(json.dumps(again) + "\n")
    redo = cli("eval", "--suite", str(suite), "--out", str(tmp_path / "again"), "-n", "48", "-t", "2", "--json")
    assert redo.returncode == 0 and json.loads(redo.stdout)["systems"][0]["accuracy"] == 1.0


def test_call_matching_and_tool_item_errors(tmp_path):
    call = [{"function": {"name": "f", "arguments": '{"city": "Paris", "days": 3, "units": {"t": "C"}}'}}]
    assert scorers.call_matches(call, {"name": "f", "arguments": {"city": " paris", "units": {"t": "c"}}})
    assert not scorers.call_matches(call, {"name": "f", "arguments": {"days": 4}})
    assert not scorers.call_matches(call, {"name": "g"})
    assert not scorers.call_matches([{"function": {"name": "f", "arguments": "{cut"}}], {"name": "f"})
    assert not scorers.call_matches(None, {"name": "f"})
    assert not scorers.call_matches([{"function": {"name": "f", "arguments": '{"on": 1}'}}],
                                    {"name": "f", "arguments": {"on": True}})
    for line, where in [({"prompt": "?", "tools": CALL_TOOLS, "expected_call": {"name": "nope"}}, "expected_call.name"),
                        ({"prompt": "?", "expected_call": {"name": "f"}}, "tools"),
                        ({"prompt": "?", "tools": CALL_TOOLS, "tool_choice": "sometimes",
                          "expected_call": {"name": "get_time"}}, "tool_choice"),
                        ({"prompt": "?", "tools": CALL_TOOLS, "expected": "x"}, "expected_call")]:
        suite = tmp_path / "bad.jsonl"
        suite.write_text(json.dumps(line) + "\n")
        with pytest.raises(DatasetError) as caught:
            read_suite(suite)
        assert f"bad.jsonl:1: {where}" in str(caught.value), str(caught.value)
