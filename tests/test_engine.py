"""Real llama.cpp inference with the embedded model (greedy, so outputs are stable)."""

import threading

import pytest

from mistralkit.engines import GenerationParams, complete
from mistralkit.engines.stops import StopMatcher
from mistralkit.errors import ContextOverflow, InvalidParameter

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_greedy_is_deterministic_and_reports_usage(engine, greedy):
    first = complete(engine, QUESTION, greedy)
    second = complete(engine, QUESTION, greedy)
    assert first.text == second.text and first.text.strip()
    usage = first.usage
    assert usage.prompt_tokens == engine.count_tokens(QUESTION)
    assert usage.completion_tokens == len(first.token_ids) or first.finish_reason == "stop"
    assert 0 < usage.ttft_s <= usage.total_s
    assert usage.prompt_tps > 0 and usage.gen_tps > 0
    assert first.finish_reason in ("stop", "length")


def test_streaming_equals_blocking(engine, greedy):
    chunks = list(engine.generate(QUESTION, greedy))
    assert chunks[-1].finish_reason is not None and chunks[-1].usage is not None
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == complete(engine, QUESTION, greedy).text


def test_max_tokens_gives_length(engine):
    result = complete(engine, "Count from one to one hundred: one, two,", GenerationParams(max_tokens=5, greedy=True))
    assert result.finish_reason == "length" and result.usage.completion_tokens == 5


def test_stop_string_is_cut_and_not_shown(engine):
    prompt = "Count from one to one hundred: one, two,"
    free = complete(engine, prompt, GenerationParams(max_tokens=12, greedy=True, repeat_penalty=1.0)).text
    assert "," in free.strip(), free
    stopped = complete(engine, prompt, GenerationParams(max_tokens=12, greedy=True, repeat_penalty=1.0, stop=(",",)))
    assert stopped.finish_reason == "stop"
    assert stopped.text == free[: free.index(",")]


def test_seed_makes_sampling_reproducible(engine):
    params = GenerationParams(max_tokens=16, temperature=1.0, seed=42)
    assert complete(engine, "Once upon a time", params).text == complete(engine, "Once upon a time", params).text


def test_kv_cache_prefix_is_reused_across_turns(engine, greedy):
    engine._llm.reset()
    first = complete(engine, QUESTION, greedy)
    follow = [*QUESTION, {"role": "assistant", "content": first.text}, {"role": "user", "content": "And Italy?"}]
    second = complete(engine, follow, greedy)
    assert second.usage.cached_tokens >= first.usage.prompt_tokens


def test_cancel_stops_between_tokens(engine):
    cancel = threading.Event()
    pieces = []
    for chunk in engine.generate("Write a long story.", GenerationParams(max_tokens=200, greedy=True), cancel):
        pieces.append(chunk)
        if len(pieces) == 3:
            cancel.set()
    assert pieces[-1].finish_reason == "cancelled"
    assert pieces[-1].usage.completion_tokens <= 5


def test_prompt_over_context_is_an_error_with_sizes(engine):
    with pytest.raises(ContextOverflow, match=r"the prompt is \d+ tokens but the context window holds 2048"):
        list(engine.generate("word " * 3000, GenerationParams(max_tokens=8)))


@pytest.mark.parametrize("field, value", [("temperature", -0.1), ("top_p", 0), ("max_tokens", 0), ("top_k", -1)])
def test_invalid_params(field, value):
    with pytest.raises(InvalidParameter, match=field):
        GenerationParams(**{field: value})


def test_ctx_larger_than_model_is_refused(model):
    from mistralkit.engines.llamacpp import context_size

    with pytest.raises(InvalidParameter, match="larger than gemma-3-270m:q4_k_m's context length"):
        context_size(model, 65536)
    assert context_size(model, None) == 4096


def test_stop_matcher_holds_back_partial_stops():
    m = StopMatcher(["\nUser:"])
    assert m.feed("Hello") == ("Hello", False)
    assert m.feed("\nUs") == ("", False)
    assert m.feed("ual") == ("\nUsual", False)
    assert m.feed(" end\nUser: more") == (" end", True)
