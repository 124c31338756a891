"""The rest of OpenAI's surface that clients send (issue 16), through the official ``openai`` client
against a real ``mistralkit serve``: one model by id, null fields, penalties and logit_bias that
change the output, embeddings' ``dimensions``, image parts refused clearly (token-id input:
test_server_lmeval.py)."""

from __future__ import annotations

import math

import httpx
import openai
import pytest
from test_server_api import MODEL, ONE_THREAD, Serve

from mistralkit.engines import GenerationParams, complete

pytestmark = pytest.mark.slow

COUNT = [{"role": "user", "content": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"}]
GREEDY = {"temperature": 0, "max_tokens": 16, "seed": 1}


@pytest.fixture(scope="module")
def server(model, mk_home, tmp_path_factory):
    serve = Serve(mk_home, tmp_path_factory.mktemp("serve") / "surface.log", *ONE_THREAD)
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return server.client()


def answer(client, messages=COUNT, **kwargs) -> str:
    return (
        client.chat.completions.create(model=MODEL, messages=messages, **{**GREEDY, **kwargs})
        .choices[0]
        .message.content
    )


def test_one_model_by_id(client, server):
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.body["code"] == "model_not_found"


def test_null_sampling_fields_mean_the_default(client, server):
    plain = answer(client)
    body = {"model": MODEL, "messages": COUNT, "max_tokens": 16, "seed": 1, "temperature": 0, "top_p": None,
            "frequency_penalty": None, "presence_penalty": None, "stop": None, "n": None, "logit_bias": None,
            "stream": None, "response_format": None}
    raw = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
    assert raw.status_code == 200, raw.text
    assert raw.json()["choices"][0]["message"]["content"] == plain


def test_penalties_change_a_repetitive_answer(client):
    """The base model repeats itself greedily; penalising tokens already said must break the loop."""
    story = [{"role": "user", "content": "Write a short story about a dragon."}]
    off = {"max_tokens": 32, "extra_body": {"repeat_penalty": 1.0}}
    plain = answer(client, story, **off)
    assert answer(client, story, **off) == plain and plain.count("Write a short story") >= 3
    assert answer(client, story, **off, presence_penalty=2.0).count("Write a short story") < 3
    assert answer(client, COUNT, **off, frequency_penalty=2.0) != answer(client, COUNT, **off)


def test_logit_bias_bans_the_token_greedy_would_pick(client, engine):
    first = complete(engine, COUNT, GenerationParams(max_tokens=1, greedy=True)).token_ids[0]
    banned = answer(client, max_tokens=8, logit_bias={str(first): -100})
    text = engine.token_text(first)
    assert not banned.startswith(text), (banned, text)
    with pytest.raises(openai.BadRequestError):
        answer(client, logit_bias={"999999999": 5})


def test_image_parts_get_a_400_that_says_what_to_send(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    assert "image inputs are not supported" in caught.value.body["message"]


def test_embedding_dimensions(client):
    full = client.embeddings.create(model="all-minilm-l6-v2", input="bonjour", dimensions=384)
    assert len(full.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="all-minilm-l6-v2", input="bonjour", dimensions=64)
    assert "384-dimensional" in caught.value.body["message"]


def test_json_mode_answers_end_at_the_closing_brace(client):
    import json

    for stream in (False, True):
        ask = {"model": MODEL, "messages": [{"role": "user", "content": "Give me a JSON object describing a cat."}],
               "response_format": {"type": "json_object"}, "max_tokens": 96, "temperature": 0, "seed": 1}
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**ask, stream=True)
                           if c.choices)
        else:
            text = client.chat.completions.create(**ask).choices[0].message.content
        assert text.endswith(("}", "]")) and isinstance(json.loads(text), (dict, list)), text


def test_chat_logprobs_are_the_models_log_probabilities(client, engine):
    """Each token's logprob agrees with the engine's own scoring of the same tokens; alternatives are
    sorted, the sampled (greedy) token is the best of them; streamed entries equal the whole answer's."""
    asked = {"max_tokens": 8, "logprobs": True, "top_logprobs": 5}
    choice = client.chat.completions.create(model=MODEL, messages=COUNT, **GREEDY | asked).choices[0]
    entries = choice.logprobs.content
    assert entries and "".join(e.token for e in entries) == choice.message.content
    generated = complete(engine, COUNT, GenerationParams(max_tokens=8, greedy=True)).token_ids
    prompt = engine.prompt_tokens(COUNT)
    scored = engine.logprobs([*prompt, *generated], len(prompt))
    # llama.cpp is not batch-invariant: the same tokens evaluated in another batch shape (prefix reused,
    # one step at a time vs the whole sequence at once) move by up to ~0.04 in log-probability here
    # (-0.26 to -0.30), so compare probabilities, where that is a few hundredths.
    reported = [math.exp(e.logprob) for e in entries]
    assert reported == pytest.approx([math.exp(v) for v in scored[:len(entries)]], abs=0.06)
    for entry in entries:
        values = [alt.logprob for alt in entry.top_logprobs]
        assert len(values) == 5 and values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert entry.top_logprobs[0].token == entry.token and entry.top_logprobs[0].logprob == entry.logprob
        assert bytes(entry.bytes) == entry.token.encode("utf-8")
    streamed = [e for c in client.chat.completions.create(model=MODEL, messages=COUNT, stream=True, **GREEDY | asked)
                if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in entries]
    assert [math.exp(e.logprob) for e in streamed] == pytest.approx(reported, abs=0.06)
    plain = client.chat.completions.create(model=MODEL, messages=COUNT, **GREEDY).choices[0]
    assert plain.logprobs is None and plain.message.content.startswith(choice.message.content)


def test_sampled_tokens_have_their_logprob_not_the_best(client):
    """At temperature 2 the sampled token is often not the most likely one: its own logprob is reported."""
    choice = client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=24, temperature=2, seed=3,
                                            top_p=1, extra_body={"top_k": 0, "min_p": 0},
                                            logprobs=True, top_logprobs=2).choices[0]
    entries = choice.logprobs.content
    assert any(e.logprob < e.top_logprobs[0].logprob for e in entries)
    assert all(e.top_logprobs[0].logprob >= e.logprob for e in entries)


def test_completion_logprobs_in_the_legacy_shape(client):
    choice = client.completions.create(model=MODEL, prompt="One, two, three,", max_tokens=6, temperature=0,
                                       logprobs=3).choices[0]
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text and len(lp.token_logprobs) == len(lp.tokens)
    assert all(
        len(alts) <= 3 and max(alts.values()) >= value for alts, value in zip(lp.top_logprobs, lp.token_logprobs)
    )
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    streamed = [t for c in client.completions.create(model=MODEL, prompt="One, two, three,", max_tokens=6,
                                                     temperature=0, logprobs=3, stream=True)
                if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    assert streamed == lp.tokens


def test_top_logprobs_without_logprobs_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=2, top_logprobs=3)
    assert "logprobs" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=2, logprobs=True, top_logprobs=21)


def test_special_tokens_never_leak_into_text(client, engine):
    """Control tokens and media placeholders forced out of the model (a +100 logit bias) are generated but
    render as nothing; a user-defined text token (Gemma's ``<table>``) stays text."""
    controls = [engine.tokenize(text, special=True) for text in ("<start_of_turn>", "<start_of_image>")]
    assert all(len(ids) == 1 for ids in controls)
    bias = {str(ids[0]): 100 for ids in controls}
    chat = client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=6, temperature=0, logit_bias=bias)
    raw = client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=6, temperature=0, logit_bias=bias,
                                    logprobs=0)
    assert chat.usage.completion_tokens == raw.usage.completion_tokens == 6
    assert chat.choices[0].message.content == raw.choices[0].text == ""
    assert raw.choices[0].logprobs.tokens == [""] * 6
    (table,) = engine.tokenize("<table>", special=True)
    kept = client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=2, temperature=0,
                                     logit_bias={str(table): 100})
    assert kept.choices[0].text == "<table><table>"
