"""Continuous batching (engines/batch.py): several sequences in one llama.cpp context, real inference.

llama.cpp is not batch-invariant, so nothing here asserts that batched text equals unbatched text
token for token; the tests assert what must hold: each stream ends as its own parameters say,
cancels stop only their own stream, prefixes are reused (counted by llama.cpp itself), scores agree.
"""

import json
import re
import threading
import time

import jsonschema
import pytest

from mistralkit.engines import GenerationParams, complete, load_engine

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


@pytest.fixture(scope="module")
def batched(model):
    engine = load_engine(model, n_ctx=2048, parallel=4, n_batch=64)
    yield engine
    engine.close()


def schema_grammar() -> str:
    from mistralkit.grammar import schema_grammar

    return schema_grammar(SCHEMA)


def run_streams(engine, jobs: dict[str, tuple], cancel_when: dict[str, object]) -> dict[str, dict]:
    """Run every job (request, params) on its own thread, all at once; ``cancel_when[name](chunks)``
    returning True cancels that one."""
    results: dict[str, dict] = {}
    barrier = threading.Barrier(len(jobs))

    def run(name: str) -> None:
        request, params = jobs[name]
        cancel = threading.Event()
        chunks = []
        barrier.wait()
        for chunk in engine.generate(request, params, cancel):
            chunks.append(chunk)
            if name in cancel_when and cancel_when[name](chunks):
                cancel.set()
        results[name] = {"text": "".join(c.text for c in chunks), "finish": chunks[-1].finish_reason,
                         "usage": chunks[-1].usage}

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


@pytest.mark.parametrize(
    "sampling", [{"greedy": True}, {"temperature": 0.9, "seed": 3}, {"temperature": 1.5, "seed": 4}]
)
def test_a_grammar_holds_where_the_model_would_write_something_else(batched, sampling):
    """The grammar is asked about each picked token; one it refuses is drawn again from what it
    allows. Here it refuses the model's own first choices (a town, not yes/no and digits)."""
    grammar = 'root ::= ("yes" | "no") ", " [0-9] [0-9] " times."'
    params = GenerationParams(max_tokens=16, grammar=grammar, repeat_penalty=1.0, **sampling)
    done = complete(batched, "The capital of France is", params)
    assert re.fullmatch(r"(yes|no), [0-9]{2} times\.", done.text), done.text
    assert done.finish_reason == "stop"


def test_concurrent_streams_each_end_by_their_own_rules(batched):
    g = dict(greedy=True, repeat_penalty=1.0)
    jobs = {
        "comma": ("Count from one to twenty: one, two, three,", GenerationParams(max_tokens=40, stop=(",",), **g)),
        "length": ("Write a long story about a cat.", GenerationParams(max_tokens=9, ignore_eos=True, **g)),
        "json": ([{"role": "user", "content": "Give a person as JSON."}],
                 GenerationParams(max_tokens=60, grammar=schema_grammar(), json_end=True, **g)),
        "mid_decode": ("Tell me about the sea.", GenerationParams(max_tokens=200, ignore_eos=True, **g)),
        "waits": ("The alphabet: a, b, c,", GenerationParams(max_tokens=6, ignore_eos=True, temperature=0.7, seed=3)),
    }
    results = run_streams(batched, jobs, {"mid_decode": lambda chunks: len(chunks) == 3})
    assert set(results) == set(jobs)
    assert results["comma"]["finish"] == "stop" and "," not in results["comma"]["text"]
    assert results["length"]["finish"] == "length" and results["length"]["usage"].completion_tokens == 9
    assert results["json"]["finish"] == "stop"
    jsonschema.validate(json.loads(results["json"]["text"]), SCHEMA)
    assert results["mid_decode"]["finish"] == "cancelled"
    assert results["mid_decode"]["usage"].completion_tokens <= 6
    # The fifth stream waited for a free slot (4 slots) and still ran to its end.
    assert results["waits"]["finish"] == "length" and results["waits"]["usage"].completion_tokens == 6


def test_a_cancel_mid_prefill_stops_evaluating_that_prompt(batched):
    """A 1500-token prompt is evaluated 64 tokens a step; cancelling it after a few steps leaves the
    rest unevaluated (llama.cpp's own count says so) while a short stream beside it completes."""
    batched.reset_cache()
    long_prompt = batched.encode_text("The quick brown fox jumps over the lazy dog. " * 150)[:1500]
    cancel = threading.Event()
    before, steps = batched.evaluated_tokens(), batched.batcher.stats.prompt_tokens
    out = {}

    def long_one():
        out["long"] = list(batched.generate(long_prompt, GenerationParams(max_tokens=5, greedy=True), cancel))

    thread = threading.Thread(target=long_one)
    thread.start()
    while batched.batcher.stats.prompt_tokens - steps < 200:  # a few 64-token steps in
        time.sleep(0.005)
    cancel.set()
    short = complete(batched, "Hello,", GenerationParams(max_tokens=4, greedy=True, ignore_eos=True))
    thread.join(timeout=120)
    last = out["long"][-1]
    assert last.finish_reason == "cancelled" and last.usage.completion_tokens == 0
    assert batched.evaluated_tokens() - before < len(long_prompt) - 500
    assert short.finish_reason == "length" and short.usage.completion_tokens == 4


def test_turn_ten_of_a_chat_reuses_turn_nine(batched):
    """Each turn evaluates only what is new, by llama.cpp's own count of evaluated prompt tokens,
    while another conversation runs in the other slots."""
    batched.reset_cache()
    params = GenerationParams(max_tokens=8, greedy=True)
    messages = []
    evaluated = []
    for turn in range(10):
        messages.append({"role": "user", "content": f"Question {turn}: what is {turn} plus {turn}?"})
        other = threading.Thread(target=complete, args=(batched, f"Unrelated text number {turn}.", params))
        other.start()
        other.join()  # the other chat ran in another slot, and must not evict this one's cache
        before = batched.evaluated_tokens()
        done = complete(batched, messages, params)
        evaluated.append(batched.evaluated_tokens() - before)
        messages.append({"role": "assistant", "content": done.text})
    prompt_10 = batched.count_tokens(messages[:-1])
    assert evaluated[-1] < 40 < prompt_10 / 4, (evaluated, prompt_10)
    assert done.usage.cached_tokens >= prompt_10 - 40


def test_a_prompt_that_only_starts_alike_takes_an_idle_slot_not_a_conversation():
    """The chat template's first tokens (BOS, "User:") are shared by every conversation: sharing them
    is no reason to evict one. A slot is reused when its cache holds more than half of the prompt."""
    from mistralkit.engines.batch import Slot, choose_slot

    other = Slot(0, tokens=[2, 2887, 236787, 1286, 10619, 1816, 236743, 236771], last_used=5.0)
    empty = Slot(1)
    chat = Slot(2, tokens=[2, 2887, 236787, 19566, 236743, 236771, 107], last_used=9.0)
    turn_two = [2, 2887, 236787, 19566, 236743, 236771, 107, 74314, 236787, 236743, 236771]
    new_chat = [2, 2887, 236787, 555, 556, 557]
    assert choose_slot([other, empty, chat], turn_two) is chat
    assert choose_slot([other, empty, chat], new_chat) is empty  # 3 of its 6 tokens cached: an idle slot
    assert choose_slot([other, chat], [2, 2887, 236787, 99]) is other  # no idle slot: the least recently used
    assert choose_slot([other, chat], [2, 2887, 236787, 1286, 10619, 1816]) is other  # all 6 cached: reused


def first_token(engine, messages) -> tuple[list[int], object]:
    """The greedy first token of an answer and its log-probabilities (the top 5), read from the stream."""
    chunks = list(engine.generate(messages, GenerationParams(max_tokens=1, greedy=True, top_logprobs=5)))
    return [t for c in chunks for t in c.token_ids], next(lp for c in chunks for lp in c.logprobs)


def test_a_prompt_borrows_the_start_another_slot_holds_and_that_slot_keeps_its_cache(batched):
    """Several clients with one long system prompt: the second one's prompt shares it with the first
    one's slot, but that is under half of its prompt, so it takes an idle slot (the first conversation
    keeps its own) and the shared start is borrowed from the first slot's cells: llama.cpp evaluates
    only the rest, and the answer's distribution is the one a cold evaluation gives."""
    system = {"role": "system", "content": "You answer questions about European capitals in one short sentence. " * 3}
    alice = [system, {"role": "user", "content": "What is the capital of France?"}]
    bob = [
        system,
        {
            "role": "user",
            "content": "My cousin lives near the sea and keeps asking me about old "
            "harbour towns, trains and rivers. " * 3 + "What is the capital of Italy?",
        },
    ]
    a_tokens, b_tokens = batched.prompt_tokens(alice), batched.prompt_tokens(bob)
    shared = next(i for i, (x, y) in enumerate(zip(a_tokens, b_tokens)) if x != y)
    assert 20 < shared < len(b_tokens) / 2, (shared, len(b_tokens))

    batched.reset_cache()
    complete(batched, alice, GenerationParams(max_tokens=1, greedy=True))
    before = batched.evaluated_tokens()
    borrowed = first_token(batched, bob)
    assert batched.evaluated_tokens() - before == len(b_tokens) - shared  # llama.cpp's own count
    again = complete(batched, alice, GenerationParams(max_tokens=1, greedy=True))
    assert again.usage.cached_tokens == len(a_tokens) - 1  # alice's slot was not taken

    batched.reset_cache()
    before = batched.evaluated_tokens()
    cold = first_token(batched, bob)
    assert batched.evaluated_tokens() - before == len(b_tokens)
    assert borrowed[0] == cold[0]
    assert [t for t, _ in borrowed[1].top] == [t for t, _ in cold[1].top]
    # equal up to llama.cpp's rounding, which differs with how the prompt was cut into steps (as in
    # the scoring test below; up to 0.25 nats on an AVX2-only CPU, 0.1 with AVX-512); a wrong or
    # shifted cache would change the ranking itself
    assert [p for _, p in borrowed[1].top] == pytest.approx([p for _, p in cold[1].top], rel=0.05, abs=0.35)


def test_prompts_arriving_together_are_prefilled_one_at_a_time(model):
    """Three prompts that fit one step together: the first one's answer starts after its own
    prefill, not after all three (TTFT). Observed from llama.cpp's count of evaluated prompt
    tokens when the first stream's first token arrives."""
    engine = load_engine(model, n_ctx=2048, parallel=3, n_batch=512)
    try:
        tokens = [engine.encode_text(" ".join(f"word{k}x{i}" for i in range(30))) for k in range(3)]
        sizes = [len(t) for t in tokens]
        assert sum(sizes) <= 512 and min(sizes) > 64, sizes  # one step could hold them all
        before = engine.evaluated_tokens()
        seen: dict[int, int] = {}
        params = GenerationParams(max_tokens=4, greedy=True, ignore_eos=True)

        def run(k: int) -> None:
            for chunk in engine.generate(tokens[k], params):
                if chunk.token_ids and k not in seen:
                    seen[k] = engine.evaluated_tokens() - before

        batcher = engine.batcher
        threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
        with batcher.step_lock:  # the loop waits: all three are waiting when its next step begins
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while batcher.queued < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            order = [tokens.index(seq.tokens) for seq in batcher.waiting]  # admission order
        for t in threads:
            t.join(timeout=300)
        assert len(order) == 3 and set(seen) == {0, 1, 2}
        assert seen[order[0]] < sum(sizes) - min(sizes), (seen, order, sizes)  # not everyone's prefill first
    finally:
        engine.close()


def test_scoring_beside_generation_agrees_with_scoring_alone(batched):
    tokens = batched.encode_text("The capital of France is Paris. The capital of Italy is Rome.")
    alone = batched.logprobs(tokens, 4)
    scores = {}
    thread = threading.Thread(target=lambda: scores.setdefault("beside", batched.logprobs(tokens, 4)))
    stream = batched.generate("Write a poem.", GenerationParams(max_tokens=30, ignore_eos=True, greedy=True))
    next(stream)
    thread.start()
    rest = list(stream)
    thread.join(timeout=120)
    assert rest[-1].finish_reason in ("stop", "length") and rest[-1].usage.completion_tokens > 1
    assert len(scores["beside"]) == len(alone) == len(tokens) - 4
    # quantized matmuls round differently in a bigger batch; a wrong row would be off by nats
    assert scores["beside"] == pytest.approx(alone, abs=0.3)


def test_parallel_must_be_positive(model):
    from mistralkit.errors import InvalidParameter

    with pytest.raises(InvalidParameter, match="parallel=0"):
        load_engine(model, parallel=0)
