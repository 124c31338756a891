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
    engine.reset_cache()
    first = complete(engine, QUESTION, greedy)
    follow = [*QUESTION, {"role": "assistant", "content": first.text}, {"role": "user", "content": "And Italy?"}]
    before = engine.evaluated_tokens()  # llama.cpp's own count of prompt tokens it evaluated
    second = complete(engine, follow, greedy)
    assert second.usage.cached_tokens >= first.usage.prompt_tokens
    assert engine.evaluated_tokens() - before == second.usage.prompt_tokens - second.usage.cached_tokens


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
    with pytest.raises(
        ContextOverflow, match=r"the prompt is \d+ tokens but this model's context window is 2048 tokens"
    ):
        list(engine.generate("word " * 3000, GenerationParams(max_tokens=8)))


@pytest.mark.parametrize("field, value", [("temperature", -0.1), ("top_p", 0), ("max_tokens", 0), ("top_k", -1)])
def test_invalid_params(field, value):
    with pytest.raises(InvalidParameter, match=field):
        GenerationParams(**{field: value})


def test_ctx_larger_than_model_is_refused(model):
    from mistralkit.models.memory import context_size

    with pytest.raises(InvalidParameter, match="larger than gemma-3-270m:q4_k_m's context length"):
        context_size(model.name, model.info.context_length, 65536)
    assert context_size(model.name, model.info.context_length, None) == 4096


def test_stop_matcher_holds_back_partial_stops():
    m = StopMatcher(["\nUser:"])
    assert m.feed("Hello") == ("Hello", False)
    assert m.feed("\nUs") == ("", False)
    assert m.feed("ual") == ("\nUsual", False)
    assert m.feed(" end\nUser: more") == (" end", True)


# --- the contract: capabilities, log-probabilities, refusals -----------------------------------

def test_llamacpp_engine_declares_what_it_can_do(engine, model):
    caps = engine.capabilities
    assert (caps.tokens, caps.logprobs, caps.grammar, caps.adapters, caps.local) == (True, True, True, True, True)
    assert engine.kind == "llama.cpp" and engine.name == model.name


def test_logprobs_agree_between_one_pass_and_token_by_token(engine, model):
    from mistralkit.engines import load_engine

    tokens = engine.prompt_tokens(QUESTION) + engine.tokenize("The capital is Paris.", special=False)
    start = len(tokens) - 6
    stepwise = engine.logprobs(tokens, start)
    with load_engine(model, n_ctx=256, n_batch=256, all_logits=True) as whole:
        one_pass = whole.logprobs(tokens, start)
    assert len(stepwise) == len(one_pass) == 6
    assert all(v < 0 for v in stepwise)
    # llama.cpp's quantized matmuls round differently for a batch than for one token, which moves a
    # 270M Q4 model's log-probs by up to ~0.2 nats; a wrong row (an off-by-one) moves them by several.
    assert stepwise[:3] == pytest.approx(one_pass[:3], abs=1e-3)
    assert stepwise == pytest.approx(one_pass, abs=0.3)


def test_score_is_logprobs_with_token_texts_and_alternatives(engine):
    """``Engine.score`` (the server's echo) reads the same sequence as ``logprobs``; the best alternative of a
    token that is the best equals its own value exactly (lm-eval's is_greedy compares with ==)."""
    tokens = engine.prompt_tokens(QUESTION) + engine.tokenize("The capital is Paris.", special=False)
    scored = engine.score(tokens, 1, top=3)
    assert [e.logprob for e in scored] == pytest.approx(engine.logprobs(tokens, 1), abs=1e-3)
    assert b"".join(e.token for e in scored).endswith(b"The capital is Paris.")
    for entry in scored:
        values = [v for _, v in entry.top]
        assert len(values) == 3 and values == sorted(values, reverse=True) and entry.logprob <= values[0]
    assert any(entry.logprob == entry.top[0][1] for entry in scored)
    with pytest.raises(InvalidParameter, match="outside the vocabulary"):
        engine.score([2, engine.n_vocab], 1)


def test_the_greedy_token_is_the_most_likely_one(engine):
    prompt = engine.prompt_tokens(QUESTION)
    first = complete(engine, prompt, GenerationParams(max_tokens=1, greedy=True, repeat_penalty=1.0)).token_ids[0]
    chosen = engine.logprobs([*prompt, first], len(prompt))[0]
    others = [engine.logprobs([*prompt, t], len(prompt))[0] for t in (first + 1, first + 7, 100, 1000)]
    assert all(chosen >= other for other in others)


def test_ignore_eos_generates_exactly_max_tokens(engine):
    done = complete(engine, "Say nothing.", GenerationParams(max_tokens=12, greedy=True, ignore_eos=True))
    assert done.usage.completion_tokens == 12 and done.finish_reason == "length"


def test_load_engine_refuses_what_the_engine_cannot_take(model):
    from mistralkit.engines import load_engine
    from mistralkit.errors import InvalidModelFile, Unsupported

    with pytest.raises(Unsupported, match="--quant"):
        load_engine(model, quant=4)
    with pytest.raises(InvalidModelFile, match="no engine runs"):
        load_engine(type(model)(model.name, model.path, None, None, "sentence-transformers"))


def test_a_missing_capability_is_a_one_line_refusal():
    from mistralkit.engines import Capabilities, EngineBase, require
    from mistralkit.errors import Unsupported

    class TextOnly(EngineBase):
        """An engine that can only stream text (as a remote API is): every optional method refuses."""

        name, kind, capabilities = "api-model", "openai", Capabilities(local=False)

    engine = TextOnly()
    for call in (lambda: engine.prompt_tokens("hi"), lambda: engine.logprobs([1, 2], 1),
                 lambda: engine.check_grammar("root ::= \"a\""), lambda: engine.tokenize("x", special=False),
                 lambda: engine.token_text(1), lambda: engine.encode_text("x"),
                 lambda: require(engine, "adapters", "--adapter")):
        with pytest.raises(Unsupported) as caught:
            call()
        assert "\n" not in str(caught.value) and "api-model" in str(caught.value)


def test_json_mode_ends_at_the_closing_brace(engine):
    """llama.cpp's JSON grammar allows whitespace after the object; the answer must not run on in it."""
    import json

    from mistralkit.grammar import json_object_grammar

    JSON_GBNF = json_object_grammar()

    ask = [{"role": "user", "content": "Give me a JSON object describing a cat."}]
    free = complete(engine, ask, GenerationParams(max_tokens=96, greedy=True, grammar=JSON_GBNF))
    done = complete(engine, ask, GenerationParams(max_tokens=96, greedy=True, grammar=JSON_GBNF, json_end=True))
    assert isinstance(json.loads(done.text), dict) and done.text == done.text.rstrip() and done.text.endswith("}")
    assert done.finish_reason == "stop" and free.text.startswith(done.text)


def test_json_end_finds_the_close_across_pieces_and_inside_strings():
    from mistralkit.engines.stops import JsonEnd

    end = JsonEnd()
    pieces = ['  {"a": "x}', '\\"]{", "b": [1, {"c"', ': 2}]', '}  \n', "more"]
    out = []
    for piece in pieces:
        text, closed = end.feed(piece)
        out.append(text)
        if closed:
            break
    assert "".join(out) == '  {"a": "x}\\"]{", "b": [1, {"c": 2}]}'
    assert JsonEnd().feed('"just a string" ') == ('"just a string" ', False)
