"""Speculative decoding (``--speculative ngram``, engines/speculate.py): drafts looked up in the prompt and
the answer, verified in one step, and the same output as decoding one token a step.

Each test runs a request on one engine with drafts and without (the request's ``speculative``), and
compares the tokens; that drafts happened is seen in llama.cpp's own work: fewer decode steps for the
same tokens. Gemma 3 270M is a base model: its prompts are raw text that asks to be copied.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import httpx
import pytest

from mistralkit.engines import GenerationParams, complete
from mistralkit.engines.speculate import NgramDrafter

NOTE = ("Mrs Durand, 82, was admitted on 3 March for a fall at home. The X-ray showed no fracture. "
        "She was given paracetamol 1 g three times a day and walked with a frame on day two. "
        "She went home on 6 March with her daughter.")
COPY = f"Text: {NOTE}\nThe same text, copied word for word: {NOTE[:60]}"
PROMPTS = [
    COPY,
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n",
    "Liste des courses : pommes, poires, lait, pain, beurre.\nListe recopiée : pommes, poires,",
    "Once upon a time, in a small village by the sea, there lived",  # free text: few drafts kept
]


def test_drafts_are_what_followed_the_latest_occurrence_of_the_tail():
    drafter = NgramDrafter([1, 2, 3, 4, 5, 9, 2, 3])
    assert drafter.propose(2) == [4, 5]  # "2 3" came before, followed by 4 5
    drafter.append(7)
    assert drafter.propose(3) == []  # "2 3 7" and "3 7" never came before
    drafter = NgramDrafter([5, 6, 7, 8, 5, 6, 7, 1, 5, 6, 7])
    assert drafter.propose(2) == [1, 5]  # the latest occurrence wins
    drafter.verified(2, 0)
    assert drafter.propose(2) == [] and drafter.propose(2) == [1, 5]  # one step of rest after a miss
    drafter.verified(2, 0)
    assert [drafter.propose(2) for _ in range(3)] == [[], [], [1, 5]]  # then two


@pytest.fixture(scope="module")
def spec(model):
    from mistralkit.engines import load_engine

    engine = load_engine(model, n_ctx=2048, speculative="ngram")
    yield engine
    engine.close()


def tokens(engine, prompt, params, fresh=True, **changes):
    """The generated token ids, their text, the usage and the engine's decode steps for them; ``fresh``:
    the prompt evaluated from its start (a cached start changes how it is cut into calls, and their
    rounding: the runs compared must start alike)."""
    if fresh:
        engine.reset_cache()
    before = engine.batcher.stats.steps
    done = complete(engine, engine.encode_text(prompt), replace(params, **changes))
    return list(done.token_ids), done.text, done.usage, engine.batcher.stats.steps - before


GREEDY = GenerationParams(max_tokens=64, greedy=True)


@pytest.mark.parametrize("prompt", PROMPTS, ids=["copy", "code", "french-list", "free"])
def test_greedy_output_is_identical_with_and_without_drafts(spec, prompt):
    plain, text, _, plain_steps = tokens(spec, prompt, GREEDY, speculative="off")
    drafted, drafted_text, usage, steps = tokens(spec, prompt, GREEDY, speculative="ngram")
    assert drafted == plain and drafted_text == text
    assert usage.accepted_tokens <= usage.drafted_tokens
    assert plain_steps - steps == usage.accepted_tokens  # each kept draft is a llama_decode call saved
    if prompt is COPY:
        assert usage.accepted_tokens >= 20, usage  # the copy is mostly drafted


def test_seeded_sampling_is_identical_with_and_without_drafts(spec):
    """A draft is kept when the sampler picks it: the random draws come in the same order."""
    sampled = GenerationParams(max_tokens=48, temperature=0.7, seed=11)
    plain, *_ = tokens(spec, COPY, sampled, speculative="off")
    drafted, _, usage, _ = tokens(spec, COPY, sampled, speculative="ngram")
    assert drafted == plain and usage.accepted_tokens > 0


def test_a_grammar_and_a_stop_inside_a_kept_draft(spec):
    from mistralkit.grammar.schema import schema_grammar

    gbnf = schema_grammar({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})
    prompt = 'Patient: {"name": "Durand"}\nPatient again: {"name": "'
    plain, *_ = tokens(spec, prompt, GREEDY, speculative="off", grammar=gbnf, max_tokens=24)
    drafted, *_ = tokens(spec, prompt, GREEDY, speculative="ngram", grammar=gbnf, max_tokens=24)
    assert drafted == plain
    # "paracetamol" sits in the middle of the copied sentence: the stop lands inside an accepted run.
    _, text, _, _ = tokens(spec, COPY, GREEDY, speculative="off", stop=("paracetamol",))
    _, drafted_text, usage, _ = tokens(spec, COPY, GREEDY, speculative="ngram", stop=("paracetamol",))
    assert drafted_text == text and "paracetamol" not in text and usage.accepted_tokens > 0


def test_the_cache_after_refused_drafts_serves_the_next_turn_as_after_plain_decoding(spec):
    """The next turn reuses the cache the turn before left: after drafts that were refused and cut from
    it, it must continue exactly as after plain decoding (same cached length, so the same calls)."""
    follow = {}
    for mode in ("ngram", "off"):
        first, text, usage, _ = tokens(spec, COPY, GREEDY, speculative=mode)
        if mode == "ngram":
            assert usage.drafted_tokens > usage.accepted_tokens > 0  # some drafts refused, some kept
        turn = COPY + text + "\nThe same text once more: Mrs Durand"
        follow[mode] = tokens(spec, turn, GREEDY, fresh=False, speculative="off")
        assert follow[mode][2].cached_tokens > len(first)  # the turn before's cache was used
    assert follow["ngram"][0] == follow["off"][0]
    assert follow["ngram"][2].cached_tokens == follow["off"][2].cached_tokens


def test_cancel_in_the_middle_of_drafting(spec):
    cancel = threading.Event()
    stream = spec.generate(spec.encode_text(COPY), replace(GREEDY, max_tokens=200, speculative="ngram"), cancel)
    next(stream)
    cancel.set()
    last = list(stream)[-1]
    assert last.finish_reason == "cancelled" and last.usage.completion_tokens < 200
    plain, *_ = tokens(spec, COPY, GREEDY, speculative="off")
    again, *_ = tokens(spec, COPY, GREEDY, speculative="ngram")
    assert again == plain


def test_a_q8_0_cache_drafts_past_256_cells(model):
    """Past 256 cells, llama.cpp's one-row flash attention splits an f16 cache across threads and rounds
    otherwise than a 2-3 row call: the f16 engine stops drafting there; a q8_0 cache has no such path."""
    from mistralkit.engines import load_engine

    long_prompt = " ".join([NOTE] * 6) + "\nAgain: " + NOTE[:50]  # > 256 tokens
    engine = load_engine(model, n_ctx=2048, speculative="ngram", kv_type="q8_0")
    try:
        assert len(engine.encode_text(long_prompt)) > 300
        plain, *_ = tokens(engine, long_prompt, GREEDY, speculative="off")
        drafted, _, usage, _ = tokens(engine, long_prompt, GREEDY, speculative="ngram")
        assert drafted == plain and usage.accepted_tokens > 10
    finally:
        engine.close()


def test_f16_cache_past_256_cells_does_not_draft(spec):
    long_prompt = " ".join([NOTE] * 6) + "\nAgain: " + NOTE[:50]
    _, _, usage, _ = tokens(spec, long_prompt, GREEDY, speculative="ngram")
    assert usage.drafted_tokens == 0


def test_an_engine_loaded_without_speculation_runs_the_request_plainly_and_says_so(engine):
    _, _, usage, _ = tokens(engine, COPY, GREEDY, speculative="ngram")
    assert usage.drafted_tokens == 0
    assert engine.slot_stats()["unspeculated"]["no_flash_attention"] >= 1


def test_serve_speculative_reports_drafts_in_usage_and_metrics(model, mk_home, tmp_path):
    from test_server_api import Serve  # the suite's real server on loopback

    server = Serve(mk_home, tmp_path / "serve.log", "--speculative", "ngram")
    try:
        body = {"model": model.name, "prompt": COPY, "max_tokens": 48, "temperature": 0}
        answer = httpx.post(f"{server.url}/v1/completions", json=body, timeout=120).json()
        details = answer["usage"]["completion_tokens_details"]
        assert details["accepted_prediction_tokens"] > 0
        plain = httpx.post(f"{server.url}/v1/completions", json={**body, "speculative": "off"}, timeout=120).json()
        assert plain["choices"][0]["text"] == answer["choices"][0]["text"]
        assert plain["usage"]["completion_tokens_details"]["accepted_prediction_tokens"] == 0
        metrics = httpx.get(f"{server.url}/metrics").text
        accepted = next(line for line in metrics.splitlines() if line.startswith("mistralkit_engine_accepted_tokens"))
        assert float(accepted.split()[-1]) == details["accepted_prediction_tokens"]
    finally:
        server.stop()


def test_run_speculative_json_usage(cli):
    done = cli("run", "--speculative", "ngram", "--greedy", "--max-tokens", "40", "--json", COPY)
    assert done.returncode == 0, done.stderr
    usage = json.loads(done.stdout)["usage"]
    assert usage["accepted_tokens"] > 0 and usage["drafted_tokens"] >= usage["accepted_tokens"]
    bad = cli("run", "--speculative", "draft", "hi")
    assert bad.returncode != 0 and "speculative" in bad.stderr
