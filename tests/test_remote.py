"""Remote engines against real servers on 127.0.0.1: ``mistralkit serve`` (the embedded Gemma, with
an API key) as the OpenAI-compatible remote, ``anthropic_stub`` in place of Anthropic's API, and a
few tiny threaded HTTP servers for scripted failures. Plus where remotes are defined (``lookup``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from anthropic_stub import Stub
from test_server_api import KEY, Serve, free_port
from typer.testing import CliRunner

from mistralkit.engines import GenerationParams, complete, load_engine
from mistralkit.engines.remote import estimate_tokens, open_remote
from mistralkit.errors import InvalidParameter, RemoteError, RemoteRefused, Unsupported
from mistralkit.models import remotes
from mistralkit.models.remotes import Remote, RemoteModel, lookup

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m"
STORY = [{"role": "user", "content": "Write a short story about a dragon."}]
SECRET = "sk-test-SECRET-4f9d2c7e1b"  # recognisable: must appear in no message and no log line
FAST = {"retries": 2, "backoff_s": 0.01}
SEEDS = ("MODEL_TYPE", "OPENAI_API_KEY", "OPENAI_MODEL", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY",
         "ANTHROPIC_MODEL", "ANTHROPIC_BASE_URL", "LOCAL_LLM_PATH", "MISTRALKIT_OFFLINE")


@pytest.fixture(autouse=True)
def no_seed_vars(monkeypatch):
    for name in SEEDS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server(model, mk_home, tmp_path_factory):
    serve = Serve(mk_home, tmp_path_factory.mktemp("serve") / "remote.log", "--api-key", KEY, "--threads", "1")
    yield serve
    serve.stop()


def ours(server, name="ours", model=MODEL, key=KEY, **fields) -> RemoteModel:
    """Our own server as an OpenAI-compatible remote, its key in ``MK_TEST_KEY``."""
    remote = Remote(name, "openai", f"{server.url}/v1", model, key_env="MK_TEST_KEY", **{**FAST, **fields})
    return RemoteModel(name, remote, environ={"MK_TEST_KEY": key} if key else {})


def claude(stub: Stub, key: str | None = None, **fields) -> RemoteModel:
    remote = Remote("claude", "anthropic", stub.url, fields.pop("model", "claude-stub-1"), key_env="MK_TEST_AKEY",
                    **{**FAST, **fields})
    return RemoteModel("claude", remote, environ={"MK_TEST_AKEY": key or stub.key})


def direct(server, messages, **body) -> dict:
    """The server's own non-streamed answer."""
    answer = httpx.post(f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
                        json={"model": MODEL, "messages": messages, "temperature": 0, **body})
    assert answer.status_code == 200, answer.text
    return answer.json()


def chunks(engine, request, params, cancel=None) -> list:
    return list(engine.generate(request, params, cancel))


# --- OpenAI-compatible: our own server --------------------------------------------------------------

def test_streamed_greedy_text_and_usage_match_the_server(server):
    direct(server, STORY, max_tokens=1)  # same prompt-cache state for both answers (see test_server_api.warm)
    expected = direct(server, STORY, max_tokens=16, seed=1)
    with open_remote(ours(server)) as engine:
        assert (engine.kind, engine.capabilities.local, engine.n_ctx) == ("openai", False, 32768)
        got = chunks(engine, STORY, GenerationParams(max_tokens=16, greedy=True, seed=1))
    assert len([c for c in got if c.text]) > 1, "streamed in pieces"
    assert "".join(c.text for c in got) == expected["choices"][0]["message"]["content"]
    last = got[-1]
    assert last.finish_reason == expected["choices"][0]["finish_reason"] == "length"
    assert last.usage.prompt_tokens == expected["usage"]["prompt_tokens"]
    assert last.usage.completion_tokens == expected["usage"]["completion_tokens"] == 16
    assert 0 < last.usage.ttft_s <= last.usage.total_s


def test_stop_strings_and_max_tokens(server):
    direct(server, STORY, max_tokens=1)
    whole = direct(server, STORY, max_tokens=16)["choices"][0]["message"]["content"]
    words = whole.split()
    stop = words[len(words) // 2]
    with open_remote(ours(server)) as engine:
        result = complete(engine, STORY, GenerationParams(max_tokens=16, greedy=True, stop=(stop,)))
        assert result.finish_reason == "stop"
        assert result.text == whole[: whole.index(stop)] and stop not in result.text
        short = complete(engine, STORY, GenerationParams(max_tokens=3, greedy=True))
    assert (short.finish_reason, short.usage.completion_tokens) == ("length", 3)


def test_cancel_mid_stream(server):
    cancel = threading.Event()
    texts, last = [], None
    with open_remote(ours(server)) as engine:
        for chunk in engine.generate(STORY, GenerationParams(max_tokens=200, greedy=True), cancel):
            texts.append(chunk.text)
            cancel.set()
            last = chunk
    assert last.finish_reason == "cancelled"
    assert len(texts) <= 3  # the first piece, maybe one held back by nothing, then the end


def test_wrong_key_and_missing_model(server):
    with open_remote(ours(server, key=SECRET)) as engine, pytest.raises(RemoteError) as wrong:
        chunks(engine, "hi", GenerationParams(max_tokens=2))
    assert wrong.value.status == 401 and "MK_TEST_KEY" in wrong.value.hint
    assert SECRET not in str(wrong.value)
    with open_remote(ours(server, model="no-such-model")) as engine, pytest.raises(RemoteError) as missing:
        chunks(engine, "hi", GenerationParams(max_tokens=2))
    assert missing.value.status == 404 and "'no-such-model'" in missing.value.message
    assert "\n" not in missing.value.message and server.url in missing.value.message


def test_server_down_is_one_line_502():
    port = free_port()  # nothing listens there any more
    remote = Remote("down", "openai", f"http://127.0.0.1:{port}/v1", "m", **FAST)
    with open_remote(RemoteModel("down", remote, environ={})) as engine, pytest.raises(RemoteError) as down:
        chunks(engine, "hi", GenerationParams())
    error = down.value
    assert error.status == 502 and "\n" not in str(error)
    assert f"127.0.0.1:{port}" in error.message and "'down'" in error.message and "remotes check down" in error.hint


def test_run_command_answers_through_a_remote(server, cli, tmp_path):
    """The "done when" check: the seed variables of a .env turn `mistralkit run` into an API client."""
    messages = [{"role": "user", "content": "hi"}]
    direct(server, messages, max_tokens=1)
    expected = direct(server, messages, max_tokens=8)["choices"][0]["message"]["content"]
    env = {"MODEL_TYPE": "openai", "OPENAI_BASE_URL": f"{server.url}/v1", "OPENAI_API_KEY": KEY,
           "OPENAI_MODEL": MODEL}
    done = cli("run", "hi", "--greedy", "--max-tokens", "8", home=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected.strip()
    assert done.stderr.count("note: prompts go to a server on this machine") == 1, done.stderr
    offline = cli("run", "hi", home=tmp_path, env={**env, "MISTRALKIT_OFFLINE": "1"})
    assert offline.returncode == 1 and "MISTRALKIT_OFFLINE" in offline.stderr and "Traceback" not in offline.stderr


# --- Anthropic (the stub) ---------------------------------------------------------------------------

def test_anthropic_messages_stream():
    with Stub() as stub, open_remote(claude(stub)) as engine:
        assert engine.kind == "anthropic"
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "one two three four"}]
        got = chunks(engine, messages, GenerationParams(max_tokens=4, temperature=0.5, seed=3, stop=("zzz",)))
        sent = stub.requests[-1]
        result = complete(engine, "alpha beta gamma", GenerationParams(stop=("gamma",)))
    assert "".join(c.text for c in got) == "echo: [Be brief.] one "
    assert got[-1].finish_reason == "length"
    assert (got[-1].usage.prompt_tokens, got[-1].usage.completion_tokens) == (6, 4)
    assert sent["headers"]["anthropic-version"] == "2023-06-01" and sent["headers"]["x-api-key"] == stub.key
    body = sent["body"]
    assert body["system"] == "Be brief." and [m["role"] for m in body["messages"]] == ["user"]
    assert (body["max_tokens"], body["temperature"], body["stop_sequences"]) == (4, 0.5, ["zzz"])
    assert "top_p" not in body and "seed" not in body
    assert (result.text, result.finish_reason) == ("echo: alpha beta ", "stop")


def test_anthropic_tools_go_as_tools_and_calls_come_back():
    """Tools as Anthropic's ``tools``/``tool_choice``, the streamed ``tool_use`` block assembled into
    a call (its id kept), and the call and its result sent back as ``tool_use``/``tool_result``."""
    weather = {"name": "get_weather", "description": "Forecast", "parameters": {
        "type": "object", "properties": {"echo": {"type": "string"}}}}
    with Stub() as stub, open_remote(claude(stub)) as engine:
        forced = GenerationParams(max_tokens=16, tools=(weather,), tool_choice="get_weather")
        got = chunks(engine, [{"role": "user", "content": "Paris please"}], forced)
        body = stub.requests[-1]["body"]
        (call,) = got[-1].tool_calls
        follow = [{"role": "user", "content": "Paris please"},
                  {"role": "assistant", "content": "", "tool_calls": [call]},
                  {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
        answer = complete(engine, follow, GenerationParams(max_tokens=8, tools=(weather,)))
        sent = stub.requests[-1]["body"]["messages"]
        wrong = [*follow[:2], {**follow[2], "tool_call_id": "toolu_other"}]
        with pytest.raises(RemoteError, match="answers no tool_use"):
            complete(engine, wrong, GenerationParams(max_tokens=8))
    assert body["tools"] == [{"name": "get_weather", "description": "Forecast", "input_schema": weather["parameters"]}]
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert call == {"id": "toolu_stub1", "name": "get_weather", "arguments": '{"echo": "Paris please"}'}
    assert got[-1].finish_reason == "stop" and "".join(c.text for c in got) == ""
    assert sent[1]["content"] == [{"type": "tool_use", "id": "toolu_stub1", "name": "get_weather",
                                   "input": {"echo": "Paris please"}}]
    assert sent[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_stub1",
                                                    "content": "sunny"}]}
    assert answer.text == "echo: sunny" and answer.usage.completion_tokens == 2


def test_retries_429_and_503_then_ok():
    with Stub() as stub, open_remote(claude(stub)) as engine:
        stub.script, stub.retry_after = [429, 503], "0.1"
        started = time.monotonic()
        result = complete(engine, "hello", GenerationParams())
        assert time.monotonic() - started >= 0.18  # Retry-After (0.1 s) was honoured twice
        assert (result.text, len(stub.requests)) == ("echo: hello", 3)
        stub.script = [503, 503, 503]
        stub.retry_after = None
        with pytest.raises(RemoteError) as failed:
            complete(engine, "hello", GenerationParams())
        assert failed.value.status == 502 and "HTTP 503" in failed.value.message
        assert not stub.script  # three tries: the first and two retries
        stub.script, stub.retry_after = [429], "120"
        with pytest.raises(RemoteError) as limited:
            complete(engine, "hello", GenerationParams())
    assert limited.value.status == 429 and limited.value.hint == "retry in 120 s"  # not waited for


def test_timeout_is_504():
    with Stub() as stub, open_remote(claude(stub, timeout_s=0.2, retries=0)) as engine:
        stub.delay_s = 1.0
        with pytest.raises(RemoteError) as slow:
            complete(engine, "hello", GenerationParams())
    assert slow.value.status == 504 and "0.2 s" in slow.value.message


def test_anthropic_errors():
    with Stub() as stub:
        with open_remote(claude(stub, key=SECRET)) as engine, pytest.raises(RemoteError) as wrong:
            complete(engine, "hi", GenerationParams())
        assert wrong.value.status == 401 and SECRET not in str(wrong.value)
        with open_remote(claude(stub, model="claude-nope")) as engine, pytest.raises(RemoteError) as missing:
            complete(engine, "hi", GenerationParams())
        assert missing.value.status == 404
        with open_remote(claude(stub)) as engine, pytest.raises(InvalidParameter, match="needs a user message"):
            complete(engine, [{"role": "system", "content": "only this"}], GenerationParams())


class KeyEcho(BaseHTTPRequestHandler):
    """Answers 401 with the key it got in the message, as some APIs do: the engine must not repeat it."""

    def do_POST(self) -> None:
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {self.headers.get('authorization')}"}})
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args) -> None:
        pass


class Nonsense(BaseHTTPRequestHandler):
    """A 200 that is no API: an HTML page, an event stream of non-JSON, or one cut after its first word."""

    def do_POST(self) -> None:
        html = self.path.startswith("/html/")
        body = {"html": b"<html>hello</html>", "junk": b"data: {not json\n\n",
                "cut": b'data: {"choices": [{"delta": {"content": "Once"}}]}\n\n'}[self.path.split("/")[1]]
        self.send_response(200)
        self.send_header("content-type", "text/html" if html else "text/event-stream")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_nonsense_is_502():
    nonsense = ThreadingHTTPServer(("127.0.0.1", 0), Nonsense)
    threading.Thread(target=nonsense.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{nonsense.server_address[1]}"
    try:
        for path, said in (("html", "text/html, not an event stream"), ("junk", "an event that is not JSON"),
                           ("cut", "ended its answer before the end")):
            remote = Remote(path, "openai", f"{base}/{path}/v1", "m", **FAST)
            with open_remote(RemoteModel(path, remote, environ={})) as engine, pytest.raises(RemoteError) as bad:
                complete(engine, "hi", GenerationParams())
            assert bad.value.status == 502 and said in bad.value.message and "\n" not in str(bad.value)
    finally:
        nonsense.shutdown()
        nonsense.server_close()


def test_the_key_is_in_no_message_and_no_log(server, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    echo = ThreadingHTTPServer(("127.0.0.1", 0), KeyEcho)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    models = [ours(server, "leak-a", key=SECRET),
              RemoteModel("leak-b", Remote("leak-b", "openai", f"http://127.0.0.1:{echo.server_address[1]}/v1", "m",
                                           key_env="K", **FAST), environ={"K": SECRET}),
              RemoteModel("leak-c", Remote("leak-c", "openai", f"http://127.0.0.1:{free_port()}/v1", "m",
                                           key_env="K", **FAST), environ={"K": SECRET})]
    messages = []
    try:
        for model in models:
            with open_remote(model) as engine, pytest.raises(RemoteError) as failed:
                complete(engine, "hi", GenerationParams(max_tokens=2))
            messages.append(f"{failed.value.message} {failed.value.hint}")
    finally:
        echo.shutdown()
        echo.server_close()
    assert "Incorrect API key provided" in messages[1]
    out = capsys.readouterr()
    for text in (*messages, caplog.text, out.out, out.err):
        assert SECRET not in text and "SECRET" not in text


def test_notice_once_per_remote(server, caplog, capsys):
    model = ours(server, "notice-once")
    with open_remote(model) as engine:
        complete(engine, "hi", GenerationParams(max_tokens=1))
        complete(engine, "hi", GenerationParams(max_tokens=1))
    with open_remote(model) as engine:
        complete(engine, "hi", GenerationParams(max_tokens=1))
    err = capsys.readouterr().err
    assert err.count("note: prompts go to a server on this machine") == 1
    assert "'notice-once'" in err and "MISTRALKIT_OFFLINE=1" in err
    notes = [r for r in caplog.records if r.name == "mistralkit.remote" and r.levelno == logging.WARNING]
    assert len(notes) == 1


def test_offline_refuses_before_any_connection(monkeypatch):
    with Stub() as stub:
        with pytest.raises(RemoteRefused, match="MISTRALKIT_OFFLINE"):
            open_remote(RemoteModel("claude", claude(stub).remote, environ={"MISTRALKIT_OFFLINE": "1"}))
        engine = open_remote(claude(stub))
        monkeypatch.setenv("MISTRALKIT_OFFLINE", "1")
        with pytest.raises(RemoteRefused):
            engine.generate("hi", GenerationParams())
        assert stub.requests == []


def test_what_a_remote_cannot_do():
    model = RemoteModel("x", Remote("x", "openai", "http://127.0.0.1:9/v1", "m"), environ={})
    engine = open_remote(model)
    with pytest.raises(Unsupported, match="token prompts"):
        engine.generate([1, 2, 3], GenerationParams())
    with pytest.raises(Unsupported, match="constrained output"):
        engine.generate("hi", GenerationParams(grammar='root ::= "a"'))
    with pytest.raises(Unsupported):
        engine.logprobs([1, 2], 1)
    with pytest.raises(Unsupported, match="LoRA"):
        load_engine(model, adapter="x.gguf")
    assert load_engine(model, n_ctx=4096, threads=2).n_ctx == 4096
    assert engine.count_tokens([{"role": "user", "content": "abcdefg"}]) == estimate_tokens(
        [{"role": "user", "content": "abcdefg"}]) == 3 + 4


def test_missing_key_for_a_hosted_api_is_401_before_sending():
    model = lookup(None, environ={"MODEL_TYPE": "openai", "OPENAI_MODEL": "gpt-4o-mini"})
    with open_remote(model) as engine, pytest.raises(RemoteError) as missing:
        engine.generate("hi", GenerationParams())
    assert missing.value.status == 401 and "OPENAI_API_KEY" in missing.value.message
    assert "OPENAI_API_KEY" in missing.value.hint


def test_mistral_flavor_request():
    remote = Remote("mis", "openai", "https://api.mistral.ai/v1", "mistral-small-latest")
    assert (remote.flavor, remote.key_env) == ("mistral", None)
    engine = open_remote(RemoteModel("mis", remote, environ={}))
    url, headers, body = engine.request([{"role": "user", "content": "hi"}], GenerationParams(seed=7), "k")
    assert url == "https://api.mistral.ai/v1/chat/completions" and headers["Authorization"] == "Bearer k"
    assert body["random_seed"] == 7 and "seed" not in body and "stream_options" not in body
    generic = open_remote(RemoteModel("o", Remote("o", "openai", "http://127.0.0.1:9/v1", "m"), environ={}))
    _, headers, body = generic.request([{"role": "user", "content": "hi"}], GenerationParams(seed=7), None)
    assert body["seed"] == 7 and body["stream_options"] == {"include_usage": True} and "Authorization" not in headers


# --- where remotes come from ------------------------------------------------------------------------

def test_lookup_from_model_type(tmp_path: Path):
    config = tmp_path / "config.toml"
    env = {"MODEL_TYPE": "anthropic", "ANTHROPIC_MODEL": "claude-x", "ANTHROPIC_API_KEY": SECRET}
    found = lookup(None, environ=env, config_file=config)
    assert (found.name, found.remote.api, found.remote.base_url, found.remote.key_env) == (
        "anthropic", "anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY")
    assert SECRET not in repr(found) and found.format == "remote" and found.path is None
    assert lookup(None, environ={}, config_file=config) is None
    assert lookup(None, environ={"MODEL_TYPE": "local", "OPENAI_MODEL": "m"}, config_file=config) is None
    assert lookup("openai", environ={"OPENAI_MODEL": "m"}, config_file=config).remote.model == "m"
    assert lookup("openai", environ={}, config_file=config) is None
    assert lookup("gemma-3-270m", environ=env, config_file=config) is None
    assert lookup("/models/x.gguf", environ=env, config_file=config) is None
    with_path = {"MODEL_TYPE": "openai", "OPENAI_MODEL": "m", "LOCAL_LLM_PATH": "/models/x.gguf",
                 "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1/"}
    picked = lookup("/models/x.gguf", environ=with_path, config_file=config)  # the settings took LOCAL_LLM_PATH
    assert (picked.name, picked.remote.base_url) == ("openai", "http://127.0.0.1:8000/v1")
    with pytest.raises(InvalidParameter, match="OPENAI_MODEL"):
        lookup(None, environ={"MODEL_TYPE": "openai"}, config_file=config)
    with pytest.raises(InvalidParameter, match="MODEL_TYPE='gpt'"):
        lookup(None, environ={"MODEL_TYPE": "gpt"}, config_file=config)


def test_lookup_reads_dotenv(tmp_path: Path, monkeypatch):
    (tmp_path / ".env").write_text("MODEL_TYPE=openai\nOPENAI_MODEL='gpt-4o-mini'\nOPENAI_API_KEY=abc\n")
    monkeypatch.chdir(tmp_path)
    found = lookup(None, config_file=tmp_path / "config.toml")
    assert (found.name, found.remote.model, found.environ) == ("openai", "gpt-4o-mini", None)
    assert open_remote(found).api_key() == "abc"  # read from .env at request time


def test_config_toml_and_remotes_json(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text('temperature = 0.2\n[remotes.gpt]\nmodel = "gpt-4o-mini"\n'
                      '[remotes.local-vllm]\nbase_url = "http://127.0.0.1:8000/v1"\nmodel = "mistral-7b"\n'
                      'flavor = "vllm"\nctx = 8192\ntimeout-s = 5\n')
    gpt = lookup("gpt", environ={}, config_file=config).remote
    assert (gpt.base_url, gpt.key_env, gpt.flavor) == ("https://api.openai.com/v1", "OPENAI_API_KEY", "openai")
    vllm = lookup("local-vllm", environ={}, config_file=config).remote
    assert (vllm.flavor, vllm.ctx, vllm.timeout_s, vllm.key_env) == ("vllm", 8192, 5, None)
    assert open_remote(lookup("local-vllm", environ={}, config_file=config)).n_ctx == 8192

    saved = remotes.add(Remote("claude", "anthropic", "https://api.anthropic.com", "claude-x"), config_file=config)
    assert saved.key_env == "ANTHROPIC_API_KEY"
    assert json.loads((tmp_path / "remotes.json").read_text())["remotes"]["claude"]["model"] == "claude-x"
    assert lookup("claude", environ={}, config_file=config).remote == saved
    with pytest.raises(InvalidParameter, match="exists already"):
        remotes.add(saved, replace=False, config_file=config)
    with pytest.raises(InvalidParameter, match="defined in"):
        remotes.add(Remote("gpt", "openai", "http://127.0.0.1:1/v1", "m"), config_file=config)
    with pytest.raises(InvalidParameter, match="catalog model"):
        remotes.add(Remote("gemma-3-270m", "openai", "http://127.0.0.1:1/v1", "m"), config_file=config)
    rows = {row.remote.name: row for row in remotes.listing(environ={"OPENAI_MODEL": "m", "OPENAI_API_KEY": "x"},
                                                             config_file=config)}
    assert {n: (r.source, r.key_set) for n, r in rows.items()} == {
        "openai": ("environment", True), "claude": ("remotes.json", False), "gpt": ("config.toml", True),
        "local-vllm": ("config.toml", False)}
    assert remotes.remove("claude", config_file=config).name == "claude"
    assert lookup("claude", environ={}, config_file=config) is None
    with pytest.raises(InvalidParameter, match="edit it there"):
        remotes.remove("gpt", config_file=config)


@pytest.mark.parametrize("table, message", [
    ('model = "m"\nendpoint = "x"', "unknown key 'endpoint'"),
    ('base_url = "x"', "has no model"),
    ('model = "m"\napi = "gemini"', "api='gemini'"),
    ('model = "m"\nbase_url = "ftp://h/v1"', "base_url"),
    ('model = "m"\nflavor = "vllm"\napi = "anthropic"', "flavor='vllm'"),
    ('model = "m"\nctx = 10', "ctx=10"),
])
def test_bad_remote_tables_are_explained(tmp_path: Path, table, message):
    config = tmp_path / "config.toml"
    config.write_text(f"[remotes.r]\n{table}\n")
    with pytest.raises(InvalidParameter, match=message.replace("(", r"\(")) as bad:
        lookup("r", environ={}, config_file=config)
    assert str(config) in bad.value.message


def test_a_key_pasted_as_key_env_is_refused_without_echo():
    with pytest.raises(InvalidParameter) as bad:
        Remote("r", "openai", "https://api.openai.com/v1", "m", key_env=SECRET)
    assert SECRET not in str(bad.value) and "NAME of an environment variable" in bad.value.message


def test_remotes_cli(server, tmp_path, monkeypatch):
    from mistralkit.cli.remotes import app

    monkeypatch.setenv("MISTRALKIT_HOME", str(tmp_path))
    monkeypatch.setenv("MK_CLI_KEY", KEY)
    runner = CliRunner()
    added = runner.invoke(
        app, ["add", "mine", "--url", f"{server.url}/v1", "--model", MODEL, "--key-env", "MK_CLI_KEY"]
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["list", "--json"])
    assert [(r["name"], r["key_set"], r["source"]) for r in json.loads(listed.stdout)] == [
        ("mine", True, "remotes.json")
    ]
    checked = runner.invoke(app, ["check", "mine"])
    assert checked.exit_code == 0 and checked.stdout.startswith("OK mine:"), checked.output
    assert runner.invoke(app, ["remove", "mine"]).exit_code == 0
    assert "No remotes" in runner.invoke(app, ["list"]).output


def check_tools_pass_through(client, server) -> None:
    """Tools reach the remote as tools (not a prompt layout): a forced call comes back as the upstream
    made it (its id kept), streamed or not, and a conversation with its result continues."""
    from test_tools import ASK, TOOLS, _valid

    forced = {"model": "openai", "messages": ASK, "tools": TOOLS, "temperature": 0, "max_tokens": 48, "seed": 1,
              "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    upstream = direct(server, ASK, tools=TOOLS, max_tokens=48, seed=1, tool_choice=forced["tool_choice"])
    expected = upstream["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    choice = client.chat.completions.create(**forced).choices[0]
    (call,) = choice.message.tool_calls
    assert choice.finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert call.function.arguments == expected and _valid(call)
    streamed = "".join(d.function.arguments or "" for c in client.chat.completions.create(**forced, stream=True)
                       if c.choices for d in c.choices[0].delta.tool_calls or ())
    assert streamed == expected
    required = client.chat.completions.create(**{**forced, "tool_choice": "required"}).choices[0]
    assert required.message.tool_calls and _valid(required.message.tool_calls[0])
    result = client.chat.completions.create(model="openai", temperature=0, max_tokens=8, tools=TOOLS, messages=[
        *ASK, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"forecast": "sunny"}'}], tool_choice="none")
    assert result.choices[0].message.content and result.choices[0].message.tool_calls is None


def test_serve_proxies_a_remote_and_refuses_what_it_cannot_do(server, model, mk_home, tmp_path, cli):
    """`mistralkit serve` in front of a remote: the seed variables name it, clients ask for "openai";
    tools pass through to it."""
    import openai

    env = {"MODEL_TYPE": "openai", "OPENAI_BASE_URL": f"{server.url}/v1", "OPENAI_API_KEY": KEY,
           "OPENAI_MODEL": MODEL}
    proxy = Serve(mk_home, tmp_path / "proxy.log", "--threads", "1", env=env)
    try:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0, timeout=120)
        messages = [{"role": "user", "content": "Name a colour."}]
        direct(server, messages, max_tokens=1)
        expected = direct(server, messages, max_tokens=8)["choices"][0]["message"]["content"]
        got = client.chat.completions.create(model="openai", messages=messages, max_tokens=8, temperature=0, seed=0)
        assert got.choices[0].message.content == expected
        streamed = client.chat.completions.create(model="openai", messages=messages, max_tokens=8, temperature=0,
                                                  seed=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="openai", messages=messages, max_tokens=8,
                                           response_format={"type": "json_object"})
        assert caught.value.body["code"] == "unsupported_by_engine" and "openai engine" in caught.value.body["message"]
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(model="openai", prompt="Once upon", max_tokens=4)
        assert caught.value.body["code"] == "unsupported_by_engine"
        check_tools_pass_through(client, server)
    finally:
        proxy.stop()
    assert KEY not in proxy.output()
    listed = cli("remotes", "list", "--json", env=env)
    assert listed.returncode == 0 and [r["name"] for r in json.loads(listed.stdout)] == ["openai"], listed.stderr


def test_chat_eval_correct_and_datagen_work_take_a_remote_model(server, cli, tmp_path):
    """Every command's --model takes a configured remote: here `mine`, our own server on loopback."""
    from test_datagen_server import Server as DatagenServer
    from test_datagen_server import small_spec

    env = {"MK_CLI_KEY": KEY}
    added = cli("remotes", "add", "mine", "--url", f"{server.url}/v1", "--model", MODEL, "--key-env", "MK_CLI_KEY",
                home=tmp_path, env=env)
    assert added.returncode == 0, added.stderr
    messages = [{"role": "user", "content": "hi"}]
    direct(server, messages, max_tokens=1)
    expected = direct(server, messages, max_tokens=8)["choices"][0]["message"]["content"]
    chatted = cli("chat", "-m", "mine", "-p", "hi", "--greedy", "-n", "8", home=tmp_path, env=env)
    assert chatted.returncode == 0 and chatted.stdout.splitlines()[0].strip() == expected.strip(), chatted.stderr
    assert KEY not in (tmp_path / "data" / "history.db").read_bytes().decode("latin-1")

    suite = tmp_path / "suite.jsonl"
    suite.write_text(json.dumps({"id": "a", "prompt": "Say yes.", "pattern": "."}) + "\n")
    evaluated = cli("eval", "-s", str(suite), "-m", "mine", "-n", "4", "--out", str(tmp_path / "ev"), "--json",
                    home=tmp_path, env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    system = json.loads(evaluated.stdout)["systems"][0]
    assert (system["system"], system["engine"], system["peak_rss"], system["items"]) == ("mine", "openai", None, 1)
    choice = tmp_path / "choice.jsonl"
    choice.write_text(json.dumps({"id": "c", "prompt": "Pick.", "choices": ["a", "b"], "expected": 0}) + "\n")
    refused = cli("eval", "-s", str(choice), "-m", "mine", "--out", str(tmp_path / "ev2"), home=tmp_path, env=env)
    assert refused.returncode != 0 and "log-probabilities" in refused.stderr and "Traceback" not in refused.stderr

    corrected = cli("correct", "--mode", "hybrid", "-m", "mine", "Il son allé au marché.", home=tmp_path, env=env)
    assert corrected.returncode == 0 and corrected.stdout.strip(), corrected.stderr
    assert "prompts go to a server on this machine" in corrected.stderr

    spec = small_spec(tmp_path, 1)
    datagen = DatagenServer(spec, tmp_path / "state", tmp_path).start()
    try:
        worked = cli("datagen", "work", "--server", datagen.url, "-m", "mine", "--count", "1", "--tries", "1",
                     "-n", "24", "--json", home=tmp_path, env=env, timeout=300)
    finally:
        datagen.stop()
    assert worked.returncode == 0, worked.stderr[-2000:]
    assert json.loads(worked.stdout)["handled"] == 1
    assert "prompts go to a server on this machine" in worked.stderr
