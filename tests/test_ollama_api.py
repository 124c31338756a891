"""``mistralkit serve``'s Ollama API through the official ``ollama`` client: one real server process on
127.0.0.1 (API key, 64 KiB body limit, one thread) with the embedded Gemma 3 270M and all-MiniLM-L6-v2."""

from __future__ import annotations

import json

import httpx
import jsonschema
import numpy as np
import ollama
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_server_api import KEY, MODEL, ONE_THREAD, Serve

from mistralkit import __version__
from mistralkit.models import catalog

pytestmark = pytest.mark.slow

EMBEDDER = "all-minilm-l6-v2"
STORY = [{"role": "user", "content": "Write a short story about a dragon."}]  # runs past 16 tokens
GREEDY = {"temperature": 0, "seed": 1, "num_predict": 16}
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(model, mk_home, tmp_path_factory):
    serve = Serve(mk_home, tmp_path_factory.mktemp("serve") / "ollama.log", "--api-key", KEY, "--max-body", "64K",
                  *ONE_THREAD)
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def client(server) -> ollama.Client:
    return ollama.Client(host=server.url, headers=AUTH, timeout=120)


def chat(client, messages=STORY, **options):
    return client.chat(model=MODEL, messages=messages, options={**GREEDY, **options})


def warm(client, messages=STORY) -> None:
    """The same prompt-cache state before outputs are compared (see test_server_api.warm)."""
    chat(client, messages, num_predict=1)


def test_version_is_mistralkits(server):
    assert httpx.get(f"{server.url}/api/version", headers=AUTH).json() == {"version": __version__}


def test_tags_list_the_local_models_in_ollamas_shape(client):
    models = {m.model: m for m in client.list().models}
    assert {MODEL, f"{EMBEDDER}:f32"} <= set(models)
    gemma = models[MODEL]
    assert gemma.details.quantization_level == "Q4_K_M" and gemma.details.format == "gguf"
    assert gemma.details.parameter_size == "270M" and gemma.size > 100_000_000
    assert gemma.digest == catalog.find(MODEL).files["q4_k_m"].sha256 and gemma.modified_at is not None


def test_show_reads_the_gguf_header(client):
    shown = client.show(MODEL)
    assert shown.details.family == "gemma3" and shown.details.quantization_level == "Q4_K_M"
    assert shown.modelinfo["general.architecture"] == "gemma3" and shown.modelinfo["gemma3.block_count"] == 18
    assert shown.modelinfo["tokenizer.ggml.tokens"] == []  # long arrays left out, as Ollama does
    assert "temperature 0.8" in shown.parameters and "num_ctx" in shown.parameters
    assert shown.capabilities == ["completion"] and f"FROM {MODEL}" in shown.modelfile
    assert client.show(f"{EMBEDDER}:latest").capabilities == ["embedding"]


def test_chat_counts_durations_and_stream_equals_the_whole(client):
    warm(client)
    whole = chat(client)
    assert whole.message.role == "assistant" and whole.message.content.strip() and whole.done
    assert whole.done_reason == "length" and whole.eval_count == GREEDY["num_predict"]
    assert whole.prompt_eval_count > 5 and whole.total_duration >= whole.eval_duration > 0
    assert whole.prompt_eval_duration > 0 and whole.load_duration >= 0 and whole.model == MODEL
    parts = list(client.chat(model=MODEL, messages=STORY, options=GREEDY, stream=True))
    assert len(parts) >= 5 and [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].done_reason == "length" and parts[-1].eval_count == GREEDY["num_predict"]


def test_streaming_is_the_default_as_in_ollama(server):
    body = {"model": MODEL, "messages": STORY, "keep_alive": "5m",  # accepted and ignored, as num_ctx
            "options": {**GREEDY, "num_predict": 4, "num_ctx": 8192, "mirostat": 0}}
    with httpx.stream("POST", f"{server.url}/api/chat", json=body, headers=AUTH, timeout=120) as reply:
        assert reply.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in reply.iter_lines() if line]
    assert lines[-1]["done"] is True and all(not line["done"] for line in lines[:-1]) and len(lines) >= 2


def test_generate_is_one_user_turn_and_raw_is_plain_text(client, server, engine):
    """Checked on the prompt's tokens (Ollama's ``context``), not on greedy text: two requests with the
    same prompt may decode differently where llama.cpp's sums differ by cache layout and CPU."""
    prompt, system = "Name three colours.", "You answer briefly."
    turn = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    as_chat = chat(client, turn)
    generated = client.generate(model=MODEL, prompt=prompt, system=system, options=GREEDY)
    n = generated.prompt_eval_count
    assert n == as_chat.prompt_eval_count and list(generated.context[:n]) == engine.format.encode(turn)
    answer = engine.detokenize(generated.context[n:])
    assert answer.startswith(generated.response) and len(generated.context) - n == generated.eval_count

    text = "The capital of France is"
    v1 = {"model": MODEL, "prompt": text, "temperature": 0, "seed": 1, "max_tokens": 16}
    completion = httpx.post(f"{server.url}/v1/completions", json=v1, headers=AUTH, timeout=120).json()
    raw = client.generate(model=MODEL, prompt=text, raw=True, options=GREEDY)
    n = raw.prompt_eval_count
    assert n == completion["usage"]["prompt_tokens"] and list(raw.context[:n]) == engine.encode_text(text)
    assert engine.detokenize(raw.context[n:]) == raw.response and raw.done_reason == "length"
    parts = list(client.generate(model=MODEL, prompt=text, raw=True, options=GREEDY, stream=True))
    last = parts[-1]
    assert last.done and list(last.context[:n]) == engine.encode_text(text)
    assert "".join(p.response for p in parts) == engine.detokenize(last.context[n:])


def test_no_prompt_only_loads_the_model(client):
    loaded = client.generate(model="gemma-3-270m:latest")  # the catalog's default quantization
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""
    running = {m.model: m for m in client.ps().models}
    assert running[MODEL].context_length > 0 and running[MODEL].details.family == "gemma3"


def test_format_json_parses(client):
    reply = client.chat(model=MODEL, messages=[{"role": "user", "content": "JSON:"}], format="json",
                        options={**GREEDY, "num_predict": 64})
    assert isinstance(json.loads(reply.message.content), dict)


def test_format_schema_validates(client):
    schema = {"type": "object", "additionalProperties": False, "required": ["color", "age"],
              "properties": {"color": {"type": "string", "enum": ["red", "green", "blue"]},
                             "age": {"type": "integer", "minimum": 0, "maximum": 20}}}
    reply = client.chat(model="gemma-3-270m:latest", messages=[{"role": "user", "content": "Describe a cat as JSON."}],
                        format=schema, options={**GREEDY, "num_predict": 64})
    data = json.loads(reply.message.content)
    jsonschema.validate(data, schema)


def test_embed_equals_v1_embeddings(client, server):
    texts = ["The cat sat on the mat.", "Quarterly tax filings are due in April."]
    ours = client.embed(model=EMBEDDER, input=texts)
    v1 = httpx.post(f"{server.url}/v1/embeddings", json={"model": EMBEDDER, "input": texts, "encoding_format": "float"},
                    headers=AUTH, timeout=120).json()
    vectors = np.array(ours.embeddings)
    assert vectors.shape == (2, 384) and ours.prompt_eval_count > 0
    assert np.allclose(vectors, [d["embedding"] for d in v1["data"]], atol=1e-6)
    legacy = client.embeddings(model=EMBEDDER, prompt=texts[0])
    assert np.allclose(legacy.embedding, vectors[0], atol=1e-6)


def test_unknown_model_is_404_with_our_message(client):
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="no-such-model", messages=STORY)
    assert info.value.status_code == 404
    assert "unknown model 'no-such-model'" in info.value.error and "mistralkit models list" in info.value.error


@pytest.mark.parametrize("bad", [{"temperature": -1}, {"temperature": "hot"}, {"num_predict": 0}])
def test_bad_options_are_400(client, bad):
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model=MODEL, messages=STORY, options=bad)
    name = next(iter(bad))
    assert info.value.status_code == 400 and f"options.{name}" in info.value.error


def test_what_we_do_not_do_is_refused_clearly(client, server):
    images = httpx.post(f"{server.url}/api/chat", headers=AUTH, json={
        "model": MODEL, "messages": [{"role": "user", "content": "What is this?", "images": ["aGk="]}]})
    assert images.status_code == 400 and "images" in images.json()["error"]
    with pytest.raises(ollama.ResponseError) as info:
        client.pull(MODEL)
    assert info.value.status_code == 501 and "mistralkit models pull" in info.value.error
    too_big = httpx.post(f"{server.url}/api/chat", content=b"x" * 70_000, headers=AUTH)
    assert too_big.status_code == 413 and "limit" in too_big.json()["error"]
    invalid = httpx.post(f"{server.url}/api/chat", json={"model": MODEL, "messages": "hi"}, headers=AUTH)
    assert invalid.status_code == 400  # FastAPI's 422, as Ollama answers it
    metrics = {(s.name, s.labels.get("route"), s.labels.get("status")): s.value for family in
               text_string_to_metric_families(httpx.get(f"{server.url}/metrics", headers=AUTH).text)
               for s in family.samples}
    assert metrics[("mistralkit_requests_total", "/api/chat", "400")] >= 1  # what the client got
    assert ("mistralkit_requests_total", "/api/chat", "422") not in metrics
    assert metrics[("mistralkit_errors_total", None, "413")] >= 1  # the body limit's answer is counted


def test_the_api_key_guards_api_as_v1(server, monkeypatch):
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)  # the client would send it
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=server.url).list()
    assert info.value.status_code == 401 and "API key" in info.value.error
    bare = httpx.post(f"{server.url}/api/chat", json={"model": MODEL, "messages": STORY})
    assert bare.status_code == 401 and isinstance(bare.json()["error"], str)
    assert bare.headers["www-authenticate"] == "Bearer"


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather forecast for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
# A call, its result and an answer, then a new question: the base model follows the pattern and calls.
TOOL_HISTORY = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather",
                                                                      "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "sunny, 24 C", "tool_name": "get_weather"},
    {"role": "assistant", "content": "It is sunny and 24 C in Paris."},
    {"role": "user", "content": "What is the weather in Lyon?"},
]


def test_chat_with_tools_returns_calls_in_ollamas_shape_streamed_or_not(client, server):
    """/api/chat with tools and a tool-call history: the call comes back with its arguments an object
    (Ollama's shape), whole, and streamed in one message line before the done line."""
    options = {"temperature": 0, "num_predict": 40}
    whole = client.chat(model=MODEL, messages=TOOL_HISTORY, tools=[WEATHER_TOOL], options=options)
    (call,) = whole.message.tool_calls
    assert call.function.name == "get_weather" and isinstance(call.function.arguments["city"], str)
    assert whole.message.content == "" and whole.done_reason == "stop"
    parts = list(client.chat(model=MODEL, messages=TOOL_HISTORY, tools=[WEATHER_TOOL], options=options, stream=True))
    called = [p for p in parts if p.message.tool_calls]
    assert len(called) == 1 and not called[0].done and parts[-1].done and not parts[-1].message.tool_calls
    assert called[0].message.tool_calls[0].function == call.function
    raw = httpx.post(f"{server.url}/api/chat", headers=AUTH, json={
        "model": MODEL, "messages": TOOL_HISTORY, "tools": [WEATHER_TOOL], "options": options, "stream": False})
    assert raw.json()["message"]["tool_calls"][0]["function"]["index"] == 0


def test_chat_with_tools_answers_text_when_the_model_writes_text(client):
    answer = client.chat(model=MODEL, messages=STORY, tools=[WEATHER_TOOL], options=GREEDY)
    assert answer.message.tool_calls is None and answer.message.content.strip()
    streamed = "".join(p.message.content for p in client.chat(model=MODEL, messages=STORY, tools=[WEATHER_TOOL],
                                                               options=GREEDY, stream=True))
    assert streamed == answer.message.content


@pytest.mark.parametrize("messages, says", [
    ([{"role": "tool", "content": "sunny", "tool_name": "get_weather"}, {"role": "user", "content": "So?"}],
     "messages[0]: a tool result that answers no earlier tool call named 'get_weather'"),
    ([*TOOL_HISTORY[:2], {"role": "tool", "content": "sunny", "tool_name": "get_time"}], "named 'get_time'"),
    ([{"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]}], "function.name"),
])
def test_bad_tool_histories_are_400_naming_the_message(server, messages, says):
    reply = httpx.post(f"{server.url}/api/chat", headers=AUTH,
                       json={"model": MODEL, "messages": messages, "tools": [WEATHER_TOOL], "stream": False})
    assert reply.status_code == 400 and says in reply.json()["error"]


def test_show_says_which_models_call_tools(client):
    assert client.show(MODEL).capabilities == ["completion"]  # a base model
    assert client.show(catalog.DEFAULT_MODEL).capabilities == ["completion", "tools"]  # the embedded instruct one
