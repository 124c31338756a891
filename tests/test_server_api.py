"""``mistralkit serve`` through the official ``openai`` client: a real server process on 127.0.0.1
with the embedded Gemma 3 270M (a base model: greedy text is odd but deterministic) and the bundled
all-MiniLM-L6-v2 for embeddings.

Two servers live for the whole module: ``server`` (API key, 64 KiB body limit, no CORS) and ``side``
(no key, ``--ctx 256``, CORS for http://x.test). The shutdown test starts its own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mistralkit.server import ServerConfig

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m:q4_k_m"
KEY = "test-key-0123456789"
STORY = [{"role": "user", "content": "Write a short story about a dragon."}]  # runs past 16 tokens
GREEDY = {"temperature": 0, "max_tokens": 16, "seed": 1}
ONE_THREAD = ("--threads", "1")  # steadier than all cores when other test processes share the CPU


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """``python -m mistralkit serve ARGS`` as a child process, ready once ``GET /health`` answers."""

    def __init__(self, home: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        """``env``: extra environment variables for the server (on top of MISTRALKIT_HOME)."""
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRALKIT_", "LLM_"))}
        full_env.update({"MISTRALKIT_HOME": str(home), **(env or {})})
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "mistralkit", "serve", "--port", str(self.port), *args],
                                         env=full_env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"server not ready in 60 s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=120)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(model, mk_home, tmp_path_factory):
    serve = Serve(mk_home, tmp_path_factory.mktemp("serve") / "main.log", "--api-key", KEY, "--max-body", "64K",
                  *ONE_THREAD)
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def side(model, mk_home, tmp_path_factory):
    adapters = tmp_path_factory.mktemp("adapters")  # requests may name files here (--allow-model-paths)
    serve = Serve(mk_home, tmp_path_factory.mktemp("serve") / "side.log", "--ctx", "256", *ONE_THREAD,
                  "--cors-origin", "http://x.test", "--allow-model-paths", str(adapters))
    serve.adapters = adapters
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return server.client()


def chat(client, messages=STORY, **kwargs):
    return client.chat.completions.create(**{"model": MODEL, "messages": messages, **GREEDY, **kwargs})


def warm(client, messages=STORY) -> None:
    """Put ``messages`` in the model's prompt cache before outputs are compared.

    llama.cpp's numbers depend a little on how a prompt is split between cached and new tokens, so
    greedy text can change with what the server ran before; after this every request for these
    messages starts from the same cache state.
    """
    chat(client, messages, max_tokens=1)


def test_models_list_has_the_embedded_models(client):
    ids = [m.id for m in client.models.list().data]
    assert MODEL in ids and "all-minilm-l6-v2:f32" in ids


def test_chat_completion_text_finish_and_usage(client):
    reply = chat(client)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason == "length" and reply.model == MODEL
    usage = reply.usage
    assert usage.completion_tokens == GREEDY["max_tokens"] and usage.prompt_tokens > 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_equals_the_greedy_reply_and_ends_with_usage(client):
    warm(client)
    whole = chat(client).choices[0].message.content
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 5 and "".join(deltas) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == GREEDY["max_tokens"]
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + GREEDY["max_tokens"]
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_token_limit_is_respected(client, limit):
    reply = client.chat.completions.create(model=MODEL, messages=STORY, temperature=0, **{limit: 5})
    assert reply.usage.completion_tokens <= 5 and reply.choices[0].finish_reason == "length"


def test_stop_string_cuts_the_text_before_it(client):
    warm(client)
    whole = chat(client).choices[0].message.content
    stop = whole.split()[3]  # a word the greedy reply contains, past its start
    cut = chat(client, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == whole[:whole.index(stop)]
    assert stop not in cut.message.content


def test_seed_makes_sampling_reproducible(client):
    def sample(seed: int) -> str:
        return chat(client, temperature=0.8, seed=seed, max_tokens=12).choices[0].message.content

    warm(client)
    first = sample(7)
    assert sample(7) == first
    assert len({first, sample(8), sample(9)}) > 1  # and the seed is really used


def test_text_completion_streamed_and_not(client):
    args = {"model": MODEL, "prompt": "The capital of France is", "temperature": 0, "max_tokens": 16}
    client.completions.create(**{**args, "max_tokens": 1})  # the same cache state for both (see warm())
    whole = client.completions.create(**args)
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 16
    assert whole.usage.prompt_tokens > 3 and whole.choices[0].text.strip()
    chunks = list(client.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert len(texts) >= 5 and "".join(texts) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == 16


def test_embeddings_are_unit_vectors_of_384(client):
    texts = ["The cat sat on the mat.", "Quarterly tax filings are due in April."]
    default = client.embeddings.create(model="all-minilm-l6-v2", input=texts)  # the client asks for base64
    floats = client.embeddings.create(model="all-minilm-l6-v2", input=texts, encoding_format="float")
    vectors = np.array([d.embedding for d in default.data])
    assert vectors.shape == (2, 384) and [d.index for d in default.data] == [0, 1]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert np.allclose(vectors, [d.embedding for d in floats.data], atol=1e-6)
    assert default.usage.prompt_tokens > 0


def test_json_object_reply_parses(client):
    reply = chat(client, [{"role": "user", "content": "JSON:"}], max_tokens=64, response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_json_schema_reply_validates(client):
    schema = {"type": "object", "additionalProperties": False, "required": ["color", "age"],
              "properties": {"color": {"type": "string", "enum": ["red", "green", "blue"]},
                             "age": {"type": "integer", "minimum": 0, "maximum": 20}}}
    reply = chat(client, [{"role": "user", "content": "Describe a cat as JSON."}], max_tokens=64,
                 response_format={"type": "json_schema", "json_schema": {"name": "cat", "schema": schema}})
    data = json.loads(reply.choices[0].message.content)
    jsonschema.validate(data, schema)
    assert set(data) == {"color", "age"} and isinstance(data["age"], int)


def test_json_schema_number_bounds_hold_against_the_prompt(client):
    """The prompt asks for 250.75; the schema's bounds, enforced by the grammar, win."""
    schema = {"type": "object", "additionalProperties": False, "required": ["score"],
              "properties": {"score": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}}}
    reply = chat(client, [{"role": "user", "content": 'Copy this JSON exactly: {"score": 250.75}'}], max_tokens=32,
                 response_format={"type": "json_schema", "json_schema": {"name": "score", "schema": schema}})
    data = json.loads(reply.choices[0].message.content)
    jsonschema.validate(data, schema)
    assert 0 <= data["score"] < 1


def test_schema_llama_cpp_cannot_compile_is_a_400_not_a_crash(client, server):
    """An empty enum once turned into a grammar that crashed llama.cpp while sampling; a schema that
    refers to itself is refused by llama.cpp (left recursion), and says so."""
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, max_tokens=8, response_format={"type": "json_schema",
                                                    "json_schema": {"name": "x", "schema": {"enum": []}}})
    assert "enum must be a non-empty list" in info.value.message and info.value.param == "response_format"
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, max_tokens=8, response_format={"type": "json_schema",
                                                    "json_schema": {"name": "x", "schema": {"$ref": "#"}}})
    assert "grammar" in info.value.message
    assert chat(client, max_tokens=2).choices[0].message.content is not None  # still serving


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        chat(client, model="no-such-model")
    assert info.value.status_code == 404 and info.value.code == "model_not_found"
    assert "no-such-model" in info.value.message


def test_prompt_over_the_context_is_400_with_sizes(side):
    with pytest.raises(openai.BadRequestError) as info:
        chat(side.client(), [{"role": "user", "content": "hello " * 300}])
    assert info.value.code == "context_length_exceeded"
    assert info.value.body["type"] == "invalid_request_error"
    message = info.value.message
    assert "context window is 256 tokens" in message
    assert int(message.split("the prompt is ")[1].split()[0]) > 300


@pytest.mark.parametrize("bad", [{"temperature": 5}, {"top_p": 0}, {"n": 2}])
def test_bad_parameters_are_400_with_param_as_openai_answers(client, bad):
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, **bad)
    assert info.value.status_code == 400 and info.value.body["param"] == next(iter(bad))
    assert info.value.body["code"] == "invalid_request" and info.value.body["type"] == "invalid_request_error"


def test_api_key_is_required_except_for_health(server):
    with pytest.raises(openai.AuthenticationError) as info:
        server.client("wrong-key-0123456789").models.list()
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    bare = httpx.post(f"{server.url}/v1/chat/completions", json={"model": MODEL, "messages": STORY})
    assert bare.status_code == 401 and bare.json()["error"]["type"] == "authentication_error"
    assert bare.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{server.url}/metrics").status_code == 401


def test_metrics_count_requests_tokens_ttft_and_queue(server, client):
    chat(client, max_tokens=4)
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("mistralkit_requests_total", (("route", "/v1/chat/completions"), ("status", "200")))] >= 1
    assert samples[("mistralkit_tokens_total", (("direction", "out"), ("model", MODEL)))] >= 4
    assert samples[("mistralkit_time_to_first_token_seconds_bucket", (("le", "+Inf"), ("model", MODEL)))] >= 1
    assert samples[("mistralkit_queue_depth", (("model", MODEL),))] == 0


def test_body_over_the_limit_is_413(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "a" * 70_000}]}).encode()

    def chunked():  # no Content-Length: the limit is counted as the body streams in
        for start in range(0, len(body), 8192):
            yield body[start:start + 8192]

    for content in (body, chunked()):
        answer = httpx.post(f"{server.url}/v1/chat/completions", content=content, headers=headers)
        assert answer.status_code == 413
        assert answer.json()["error"] == {"message": "request body over the limit of 65536 bytes",
                                          "type": "invalid_request_error", "param": None, "code": "request_too_large"}


def test_cors_is_off_unless_an_origin_is_allowed(server, side):
    def allowed(base: str, origin: str) -> list[str | None]:
        preflight = httpx.options(f"{base}/v1/models", headers={"Origin": origin,
                                                                "Access-Control-Request-Method": "GET"})
        plain = httpx.get(f"{base}/health", headers={"Origin": origin})
        return [preflight.headers.get("access-control-allow-origin"), plain.headers.get("access-control-allow-origin")]

    assert allowed(server.url, "http://x.test") == [None, None]
    assert allowed(side.url, "http://x.test") == ["http://x.test", "http://x.test"]
    assert allowed(side.url, "http://y.test") == [None, None]


def test_non_loopback_bind_needs_a_key(cli):
    refused = cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), timeout=60)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "API key" in refused.stderr.splitlines()[0] and len(refused.stderr.strip().splitlines()) <= 2
    assert ServerConfig(host="0.0.0.0", insecure_no_auth=True).host == "0.0.0.0"  # the explicit opt-out


def test_session_id_saves_both_turns(server, client, cli):
    first = [{"role": "user", "content": "Hi there"}]
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=first, max_tokens=8,
                                                           temperature=0, extra_body={"session_id": "new"})
    session = raw.http_response.json()["session_id"]
    reply = raw.parse().choices[0].message.content
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "And again"}]
    again = chat(client, second, max_tokens=8, extra_body={"session_id": session})
    assert again.model_extra["session_id"] == session

    shown = cli("sessions", "show", session, "--json")
    assert shown.returncode == 0, shown.stderr
    saved = json.loads(shown.stdout)["messages"]
    assert [(m["role"], m["content"]) for m in saved] == [("user", "Hi there"), ("assistant", reply),
                                                          ("user", "And again"),
                                                          ("assistant", again.choices[0].message.content)]
    listed = httpx.get(f"{server.url}/v1/sessions", headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
    assert next(s for s in listed if s["id"] == session)["message_count"] == 4
    with pytest.raises(openai.NotFoundError):
        chat(client, first, max_tokens=2, extra_body={"session_id": "no-such-session"})


def test_sigterm_during_a_stream_exits_cleanly(model, mk_home, tmp_path):
    serve = Serve(mk_home, tmp_path / "serve.log", *ONE_THREAD)
    try:
        stream = chat(serve.client(), [{"role": "user", "content": "Tell me a very long story."}],
                      temperature=0.8, max_tokens=2000, stream=True)
        received, signalled = 0, None
        try:
            for chunk in stream:
                received += bool(chunk.choices and chunk.choices[0].delta.content)
                if received == 3 and signalled is None:
                    serve.proc.send_signal(signal.SIGTERM)
                    signalled = time.monotonic()
        except (openai.APIError, httpx.HTTPError):
            pass  # cut by the shutdown: allowed, as long as the stream ends
        assert signalled is not None and received < 2000
        assert serve.proc.wait(timeout=15) == 0
        assert time.monotonic() - signalled < 15
        assert "Traceback" not in serve.output()
    finally:
        serve.stop()


def write_lora(path: Path, base: Path, scale: float, rank: int = 4) -> Path:
    """A LoRA adapter GGUF on blk.0.attn_q of the base model: B = 0 changes nothing, a large B a lot."""
    import gguf

    from mistralkit.models.gguf_info import read_info

    n_in, n_out = next(t.shape for t in read_info(base).tensors if t.name == "blk.0.attn_q.weight")
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    writer.add_tensor("blk.0.attn_q.weight.lora_a", rng.standard_normal((rank, n_in)).astype(np.float32))
    writer.add_tensor("blk.0.attn_q.weight.lora_b", (scale * rng.standard_normal((n_out, rank))).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_lora_adapter_by_path(side, model):
    def complete(name: str) -> str:
        for max_tokens in (1, 12):  # the first one warms the prompt cache (see warm())
            reply = side.client().completions.create(model=name, prompt="The capital of France is",
                                                     temperature=0, max_tokens=max_tokens)
        return reply.choices[0].text

    base = complete(MODEL)
    assert complete(f"{MODEL}+{write_lora(side.adapters / 'zero.gguf', model.path, 0.0)}") == base
    assert complete(f"{MODEL}+{write_lora(side.adapters / 'big.gguf', model.path, 5.0)}") != base
    with pytest.raises(openai.NotFoundError):
        complete(f"{MODEL}+{side.adapters / 'missing.gguf'}")


def test_least_recently_used_model_is_unloaded_over_the_memory_budget(model, tmp_path):
    """Two names for the embedded GGUF are two models to the server; a 700 MiB budget holds one."""
    from conftest import run_cli

    home = tmp_path / "home"
    assert run_cli("models", "import", str(model.path), "--name", "gemma-copy", home=home).returncode == 0
    serve = Serve(home, tmp_path / "lru.log", "--memory-budget", "700M", *ONE_THREAD)
    try:
        client = serve.client()
        for name in ("gemma-copy", "gemma-3-270m:q4_k_m", "gemma-copy"):
            reply = client.chat.completions.create(model=name, max_tokens=2,
                                                   messages=[{"role": "user", "content": "Hi"}])
            assert reply.model == name
            assert httpx.get(f"{serve.url}/health").json()["models_loaded"] == [name]
    finally:
        assert serve.stop() == 0


def test_system_messages_anywhere_join_the_first(client):
    """OpenAI takes system and developer messages anywhere (pydantic-ai's retry sends one late); a local
    chat format takes one, first: they are joined there, in order (formats.base.gather_system)."""
    late = [{"role": "system", "content": "Be brief."}, *STORY,
            {"role": "developer", "content": "Use plain words."}, {"role": "system", "content": "No lists."}]
    merged = [{"role": "system", "content": "Be brief.\n\nUse plain words.\n\nNo lists."}, *STORY]
    warm(client, merged)
    joined, expected = chat(client, late), chat(client, merged)
    assert joined.choices[0].message.content == expected.choices[0].message.content
    assert joined.usage.prompt_tokens == expected.usage.prompt_tokens > chat(client, STORY).usage.prompt_tokens
