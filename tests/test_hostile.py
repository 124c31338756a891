"""Issue 28's hostile probe as a table: what used to crash, exhaust memory, hang or leak, and what each
must get now, against one real ``mistralkit serve``.

Every server row checks the status, that no 5xx comes back, that the server still answers /health
within a few seconds afterwards, that its memory stays bounded, and that no server folder shows in
the answer. The abandoned-work rows check that the server's CPU is idle again within about a
second of the client leaving, and that the lock the work held is free for the next client.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from conftest import run_cli
from test_server_api import KEY, MODEL, Serve, write_lora

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def allowed(model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("allowed-folder")
    write_lora(folder / "zero.gguf", model.path, 0.0)
    (folder / "notes.txt").write_text("not a model\n")
    return folder


@pytest.fixture(scope="module")
def server(model, mk_home, allowed, tmp_path_factory):
    serve = Serve(mk_home, tmp_path_factory.mktemp("serve") / "hostile.log", "--api-key", KEY, "--threads", "1",
                  "--body-timeout", "1", "--max-body", "8M", "--allow-model-paths", str(allowed))
    loaded = httpx.post(f"{serve.url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=120)  # memory measured
    assert loaded.status_code == 200, loaded.text  # from here on is the model's, loaded
    yield serve
    serve.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of the process and its children (the checker's), all threads."""
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def alive(server) -> None:
    started = time.monotonic()
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200 and server.proc.poll() is None
    assert time.monotonic() - started < 5


# --- grammars: every way a schema reaches llama.cpp ------------------------------------------------

def as_response_format(schema):
    return "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "JSON please"}],
                                    "max_tokens": 4, "response_format": {"type": "json_schema", "json_schema": {
                                        "name": "x", "schema": schema}}}


def as_ollama_format(schema):
    return "/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "JSON please"}], "stream": False,
                         "format": schema, "options": {"num_predict": 4}}


def as_forced_tool(schema):
    inner = {k: v for k, v in schema.items() if k != "$defs"}  # definitions stay at the parameters' root
    parameters = {"type": "object", "properties": {"a": inner}, "required": ["a"], "$defs": schema.get("$defs", {})}
    return "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "call it"}],
                                    "max_tokens": 4, "tools": [{"type": "function", "function": {
                                        "name": "f", "parameters": parameters}}],
                                    "tool_choice": {"type": "function", "function": {"name": "f"}}}


def as_text_format(schema):
    return "/v1/responses", {"model": MODEL, "input": "JSON please", "max_output_tokens": 4,
                             "text": {"format": {"type": "json_schema", "name": "x", "schema": schema}}}


ROUTES = {"response_format": as_response_format, "ollama format": as_ollama_format, "forced tool": as_forced_tool,
          "text.format": as_text_format}


def deep(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    return schema


SCHEMAS = {  # name -> (schema, expected status, a phrase of the error)
    "maxLength 20000": ({"type": "string", "maxLength": 20000}, 200, ""),
    "maxItems 20000": ({"type": "array", "maxItems": 20000, "items": {"type": "integer"}}, 200, ""),
    "pattern a{0,20000}": ({"type": "string", "pattern": "^a{0,20000}$"}, 200, ""),
    "arrays of long strings": ({"type": "array", "maxItems": 5000, "items": {
        "type": "array", "maxItems": 5000, "items": {"type": "string", "maxLength": 50000}}}, 200, ""),
    "minLength a billion": ({"type": "string", "minLength": 1_000_000_000}, 400, "minLength"),
    "maxLength 20 million": ({"type": "string", "maxLength": 20_000_000}, 400, "maxLength"),
    "minItems a billion": ({"type": "array", "minItems": 1_000_000_000}, 400, "minItems"),
    "pattern a{0,2000000}": ({"type": "string", "pattern": "^a{0,2000000}$"}, 400, "pattern"),
    "enum of 100000": ({"enum": list(range(100_000))}, 400, "enum"),
    "nesting 40 deep": (deep(40), 400, "deeper than 32"),
    "a $ref chain of 200": ({"$defs": {**{f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(200)},
                                       "d200": {"type": "string"}}, "$ref": "#/$defs/d0"}, 400, "deeper than 32"),
    "root refers to itself": ({"$ref": "#"}, 400, ""),
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", SCHEMAS)
def test_a_schema_cannot_crash_or_exhaust_the_server(server, route, case):
    schema, status, phrase = SCHEMAS[case]
    if route == "forced tool" and case == "root refers to itself":
        schema, phrase = {"$ref": "#/properties/a"}, ""  # inside the tool's parameters: still a loop
    path, body = ROUTES[route](schema)
    before = rss_mb(server.proc.pid)
    started = time.monotonic()
    reply = httpx.post(server.url + path, json=body, headers=AUTH, timeout=60)
    assert reply.status_code == status, reply.text[:500]
    assert time.monotonic() - started < 30
    if status >= 400:
        text = reply.text
        assert phrase in text and len(text) < 2000, text[:500]
    alive(server)
    assert rss_mb(server.proc.pid) - before < 300, case


# --- work whose client left ---------------------------------------------------------------------------

def leave_after(url: str, body: dict, seconds: float) -> None:
    """Send ``body`` and hang up after ``seconds`` without waiting for the answer."""
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=body, headers=AUTH, timeout=httpx.Timeout(60, read=seconds))


def idle_after_leaving(server, url: str, body: dict) -> float:
    """CPU seconds the server spends from 1.2 s to 2.2 s after its client left."""
    leave_after(url, body, 1.0)
    time.sleep(1.2)
    start = cpu_s(server.proc.pid)
    time.sleep(1.0)
    return cpu_s(server.proc.pid) - start


def test_an_abandoned_correction_stops_and_frees_the_checker(server):
    sentence = "Hier, Lucas et sa soeur son allé au cinéma avec 3 amis et ils on mangé des bonbon. "
    text = "\n\n".join(sentence * 12 for _ in range(90))  # ~90,000 characters, minutes of checking
    httpx.post(f"{server.url}/v1/correct", json={"text": "Il a manger."}, headers=AUTH, timeout=120)  # warm
    busy = idle_after_leaving(server, f"{server.url}/v1/correct", {"text": text})
    assert busy < 0.3, busy
    started = time.monotonic()
    reply = httpx.post(f"{server.url}/v1/correct", json={"text": "Il a manger une pomme."}, headers=AUTH, timeout=60)
    assert reply.status_code == 200 and time.monotonic() - started < 5
    assert "mangé" in reply.json()["corrected"]


def test_a_correction_too_large_for_one_request_is_413_naming_the_field(server):
    reply = httpx.post(f"{server.url}/v1/correct", json={"text": "Il a manger. " * 80_000}, headers=AUTH, timeout=60)
    assert reply.status_code == 413 and reply.json()["error"]["param"] == "text"
    assert "100,000" in reply.json()["error"]["message"]
    alive(server)


def test_abandoned_embeddings_stop_and_free_the_lock(server):
    texts = [f"sentence number {i} about the weather in a town by the sea, and the boats" for i in range(2048)]
    body = {"model": "all-minilm-l6-v2", "input": ["warm"]}
    assert httpx.post(f"{server.url}/v1/embeddings", json=body, headers=AUTH, timeout=120).status_code == 200
    busy = idle_after_leaving(server, f"{server.url}/v1/embeddings", {**body, "input": texts})
    assert busy < 0.3, busy
    started = time.monotonic()
    assert httpx.post(f"{server.url}/v1/embeddings", json=body, headers=AUTH, timeout=60).status_code == 200
    assert time.monotonic() - started < 3


def test_too_many_embedding_inputs_is_400_naming_input(server):
    for path, field in (("/v1/embeddings", "input"), ("/api/embed", "input")):
        reply = httpx.post(server.url + path, json={"model": "all-minilm-l6-v2", "input": ["x"] * 60_000},
                           headers=AUTH, timeout=60)
        assert reply.status_code == 400 and "2,048" in reply.text and field in reply.text, reply.text[:300]
    alive(server)


# --- nothing about the server's files in answers ---------------------------------------------------

def test_no_server_folder_in_health_ps_metrics_or_errors(server, allowed):
    reply = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=120, json={
        "model": f"{MODEL}+zero.gguf", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    assert reply.status_code == 200, reply.text
    answers = {"health": httpx.get(f"{server.url}/health").text,
               "ps": httpx.get(f"{server.url}/api/ps", headers=AUTH).text,
               "metrics": httpx.get(f"{server.url}/metrics", headers=AUTH).text}
    for name in ("notes.txt", str(allowed / "notes.txt")):  # by name, and by its full path
        answers[f"model {name}"] = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=60, json={
            "model": name, "messages": [{"role": "user", "content": "hi"}]}).text
    assert f"{MODEL}+zero.gguf" in answers["health"] and "zero.gguf" in answers["ps"]
    for name, text in answers.items():
        assert str(allowed) not in text and str(Path.home()) + "/" not in text, (name, text[:500])
    assert "notes.txt" in answers["model notes.txt"]


# --- the smaller items --------------------------------------------------------------------------------

@dataclass
class Row:
    path: str
    body: dict
    status: int
    phrase: str


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
SMALL = {
    "max_tokens and max_completion_tokens differ": Row(
        "/v1/chat/completions", {**CHAT, "max_completion_tokens": 5}, 400, "differ"
    ),
    "max_completion_tokens alone is used": Row(
        "/v1/chat/completions", {**CHAT, "max_tokens": None, "max_completion_tokens": 1}, 200, ""
    ),
    "stream: yes on /api/chat": Row(
        "/api/chat", {"model": MODEL, "messages": CHAT["messages"], "stream": "yes"}, 400, "stream"
    ),
    "stream: 1 on /v1": Row("/v1/chat/completions", {**CHAT, "stream": 1}, 400, "stream"),
    "logit_bias key in Arabic-Indic digits": Row(
        "/v1/chat/completions", {**CHAT, "logit_bias": {"٣": 5}}, 400, "token ids"
    ),
    "a tool result for no call": Row(
        "/v1/chat/completions",
        {**CHAT, "messages": [*CHAT["messages"], {"role": "tool", "tool_call_id": "call_nobody", "content": "sunny"}]},
        400,
        "answers no call",
    ),
    "function_call_output for no call": Row(
        "/v1/responses",
        {
            "model": MODEL,
            "max_output_tokens": 2,
            "input": [
                {"type": "message", "role": "user", "content": "hi"},
                {"type": "function_call_output", "call_id": "call_nobody", "output": "sunny"},
            ],
        },
        400,
        "answers no call",
    ),
}


@pytest.mark.parametrize("case", SMALL, ids=list(SMALL))
def test_small_request_faults_get_a_clear_answer(server, case):
    row = SMALL[case]
    body = {k: v for k, v in row.body.items() if v is not None}
    reply = httpx.post(server.url + row.path, json=body, headers=AUTH, timeout=60)
    assert reply.status_code == row.status, reply.text[:300]
    assert row.phrase in reply.text
    alive(server)


def test_half_sent_headers_are_closed_with_408(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")
        started = time.monotonic()
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer
    assert time.monotonic() - started < 4
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:  # nothing sent at all
        assert silent.recv(4096).startswith(b"HTTP/1.1 408")
    alive(server)


def test_sigterm_stops_a_long_correction_and_exits_0(model, mk_home, tmp_path):
    """The README promises SIGTERM finishes or cancels in-flight work: a correction of minutes stops at
    its next piece, its client gets an answer, and the server exits 0 within seconds."""
    own = Serve(mk_home, tmp_path / "sigterm.log", "--api-key", KEY, "--threads", "1", "--max-body", "8M")
    sentence = "Hier, Lucas et sa soeur son allé au cinéma avec 3 amis et ils on mangé des bonbon. "
    answers: list[int] = []

    def correct() -> None:
        reply = httpx.post(f"{own.url}/v1/correct", json={"text": "\n\n".join(sentence * 12 for _ in range(90))},
                           headers=AUTH, timeout=120)
        answers.append(reply.status_code)

    client = threading.Thread(target=correct)
    client.start()
    time.sleep(3)
    started = time.monotonic()
    own.proc.send_signal(signal.SIGTERM)
    assert own.proc.wait(timeout=30) == 0, own.output()[-2000:]
    assert time.monotonic() - started < 10
    client.join(timeout=30)
    assert answers and answers[0] in (499, 503), answers
    assert "Traceback" not in own.output()


def test_zz_server_log_has_no_traceback(server):
    assert "Traceback" not in server.output() and server.proc.poll() is None


# --- the command line ------------------------------------------------------------------------------

class Drip(BaseHTTPRequestHandler):
    """A LanguageTool that answers one byte a second."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for byte in b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n[]":
            time.sleep(1)
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


def test_a_languagetool_that_drips_bytes_is_cut_off_at_the_deadline():
    from mistralkit.corrector.languagetool import LanguageToolChecker
    from mistralkit.errors import CheckerUnavailable

    drip = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    threading.Thread(target=drip.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(CheckerUnavailable, match="did not answer within 2 s"):
            LanguageToolChecker(f"http://127.0.0.1:{drip.server_address[1]}", timeout_s=2)
        assert time.monotonic() - started < 4
    finally:
        drip.shutdown()


class Recorder(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_POST(self):  # noqa: N802
        Recorder.hits.append(self.path)
        self.send_response(500)
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args) -> None:
        pass


def test_a_remote_whose_key_variable_is_unset_is_never_contacted(mk_home, tmp_path):
    home = tmp_path / "home"
    recorder = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{recorder.server_address[1]}/v1"
        added = run_cli("remotes", "add", "lab", "--url", url, "--model", "m", "--key-env", "LAB_KEY", home=home)
        assert added.returncode == 0, added.stderr
        done = run_cli("run", "-m", "lab", "hi", home=home, env={"LAB_KEY": ""})
        assert done.returncode != 0 and "LAB_KEY" in done.stderr and "Traceback" not in done.stderr
        assert Recorder.hits == []
    finally:
        recorder.shutdown()


@pytest.mark.parametrize(("setup", "args", "phrase"), [
    ("dir", ("config", "show"), "is not a file"),
    ("remotes 5", ("config", "show"), "[remotes.NAME]"),
    ("remotes 5", ("run", "-n", "1", "hi"), "[remotes.NAME]"),
])
def test_a_config_file_that_is_wrong_is_an_error_not_ignored(tmp_path, setup, args, phrase):
    home = tmp_path / "home"
    config = home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    if setup == "dir":
        config.mkdir()
    else:
        config.write_text("[remotes]\nr1 = 5\n")
    done = run_cli(*args, home=home)
    assert done.returncode != 0 and phrase in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_model_name_too_long_for_a_file_is_refused_before_registering(mk_home, model, tmp_path):
    home = tmp_path / "home"
    done = run_cli("models", "import", str(model.path), "--name", "a" * 300, home=home)
    assert done.returncode == 2 and "bad model name" in done.stderr and "Traceback" not in done.stderr
    listed = run_cli("models", "list", "--json", home=home)
    assert "a" * 300 not in listed.stdout


def test_protect_file_that_never_ends_is_refused(mk_home):
    started = time.monotonic()
    done = run_cli("correct", "--protect-file", "/dev/zero", "Il a manger.", home=mk_home)
    assert done.returncode == 2 and "larger than 1 MiB" in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 30


def test_an_adapter_config_without_alpha_or_rank_reads_as_peft_does(tmp_path):
    from mistralkit.errors import InvalidParameter
    from mistralkit.tune.export import gguf_alpha, read_peft_config

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "target_modules": ["q_proj"]}))
    config = read_peft_config(tmp_path)
    assert (config["r"], config["lora_alpha"], gguf_alpha(config)) == (8, 8, 8.0)  # PEFT's LoraConfig defaults
    for bad in ({"lora_alpha": "16"}, {"r": 0}, [1]):
        (tmp_path / "adapter_config.json").write_text(json.dumps(bad))
        with pytest.raises(InvalidParameter):
            read_peft_config(tmp_path)


def test_a_zero_width_space_inside_a_word_is_left_alone():
    from mistralkit import correct

    result = correct("Il va man\u200bger une pomme et il a manger.", mode="rules")
    assert "man\u200bger" in result.corrected and result.corrected.endswith("il a mangé.")
    assert [p.kind for p in result.protected if p.value == "man\u200bger"] == ["invisible"]
