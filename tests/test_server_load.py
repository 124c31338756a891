"""``mistralkit serve`` under load: a full queue answers 429, clients that leave give their place
back, fuzzed requests never get a 5xx. One real server subprocess (embedded model, ``--queue-size 8``,
``--parallel 1`` so that requests wait behind each other)
serves the whole module; the tests talk to it over loopback HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

MODEL = "gemma-3-270m:q4_k_m"
QUEUE = 8
CLIENTS = 50
DEFAULT_MAX_TOKENS = 8  # the server's default for requests that name no max_tokens (fuzzed ones)
REQUEST_TIMEOUT_S = 120  # a request that takes longer than this counts as hung
COUNTING = "".join(f"{i}\n" for i in range(1, 40))  # greedy decoding keeps counting: no early stop
LONG = 4000  # max_tokens that would take minutes on a CPU: a request that must be cut short


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except httpx.TransportError:
            found = None
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def serving(mk_home, log: Path, *args: str):
    """``python -m mistralkit serve --model MODEL ARGS`` on a free loopback port; yields its base URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRALKIT_", "LLM_"))}
    env["MISTRALKIT_HOME"] = str(mk_home)
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "mistralkit", "serve", "--port", str(port), "--model", MODEL,
                                    *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: process.poll() is not None or httpx.get(f"{url}/health").json()["status"] == "ok",
                    90, "the server's /health")
        assert process.poll() is None, f"the server exited early:\n{log.read_text()}"
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(model, mk_home, tmp_path_factory):
    """``mistralkit serve --queue-size 8 --parallel 1``; yields its base URL."""
    with serving(mk_home, tmp_path_factory.mktemp("serve-load") / "serve.log", "--queue-size", str(QUEUE),
                 "--max-tokens", str(DEFAULT_MAX_TOKENS), "--parallel", "1") as url:
        yield url


def _sample(url: str, name: str, **labels: str) -> float:
    """One value from ``GET /metrics`` (0 when the series does not exist yet)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def _depth(url: str) -> float:
    return _sample(url, "mistralkit_queue_depth", model=MODEL)


def _send_raw(url: str, path: str, body: dict) -> socket.socket:
    """Send a POST and leave the answer unread: closing the socket is the client walking away."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def _events(response: httpx.Response):
    """The JSON events of an SSE response, as they arrive (closing this generator hangs up)."""
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line.removeprefix("data: "))


def test_fifty_concurrent_requests_get_a_completion_or_a_429_and_the_server_stays_healthy(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count from 1 to 100."}],
            "max_tokens": 16, "temperature": 0}
    refused_before = _sample(server, "mistralkit_requests_total", route="/v1/chat/completions", status="429")
    start = threading.Barrier(CLIENTS)

    def one(_: int) -> tuple[httpx.Response, float]:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            start.wait(timeout=60)
            began = time.monotonic()
            response = client.post(f"{server}/v1/chat/completions", json=body)
            return response, time.monotonic() - began

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(one, range(CLIENTS), timeout=REQUEST_TIMEOUT_S + 60))

    done = [r for r, _ in results if r.status_code == 200]
    refused = [r for r, _ in results if r.status_code == 429]
    assert len(done) + len(refused) == CLIENTS, sorted({r.status_code for r, _ in results})
    assert max(seconds for _, seconds in results) < REQUEST_TIMEOUT_S
    assert len(done) >= QUEUE  # nothing is refused before QUEUE requests hold a place
    assert refused, "50 requests at once against a queue of 8: some must be refused"
    for response in done:
        answer = response.json()
        assert answer["choices"][0]["finish_reason"] in ("stop", "length")
        assert isinstance(answer["choices"][0]["message"]["content"], str)
        assert 1 <= answer["usage"]["completion_tokens"] <= 16
    for response in refused:
        assert response.json()["error"]["type"] == "rate_limit_error"
        assert response.json()["error"]["code"] == "queue_full"
        assert int(response.headers["Retry-After"]) >= 1

    _wait_until(lambda: _depth(server) == 0, 10, "the queue to empty")
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    again = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT_S)
    assert again.status_code == 200, again.text
    refused_after = _sample(server, "mistralkit_requests_total", route="/v1/chat/completions", status="429")
    assert refused_after - refused_before == len(refused)


def test_a_client_that_leaves_mid_stream_gives_its_place_back(server):
    body = {"model": MODEL, "prompt": COUNTING, "max_tokens": LONG, "temperature": 0, "stream": True}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        with client.stream("POST", f"{server}/v1/completions", json=body) as response:
            assert response.status_code == 200
            events = _events(response)  # held open: closing it would close the connection
            texts = [next(events)["choices"][0]["text"] for _ in range(6)]
            assert "".join(texts).strip(), texts
            assert _depth(server) == 1
    # Generating the remaining ~3900 tokens would take minutes here: the place comes back long before.
    _wait_until(lambda: _depth(server) == 0, 10, "the abandoned stream's place to come back")
    again = httpx.post(f"{server}/v1/completions", json={**body, "max_tokens": 4, "stream": False},
                       timeout=REQUEST_TIMEOUT_S)
    assert again.status_code == 200, again.text
    assert again.json()["usage"]["completion_tokens"] <= 4


def test_a_client_that_leaves_while_waiting_runs_nothing(server):
    """Two requests wait behind a running stream; their clients leave (one streaming, one not).

    Their places come back while the first still runs, and their generations never start: the next
    request with the running one's prompt finds that whole prompt still in the model's KV cache,
    which any generation on the others' different prompts would have overwritten."""
    running = {"model": MODEL, "prompt": COUNTING, "max_tokens": LONG, "temperature": 0, "stream": True}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        with client.stream("POST", f"{server}/v1/completions", json=running) as response:
            events = _events(response)
            next(event for event in events if event["choices"] and event["choices"][0]["text"])
            waiting = [
                _send_raw(server, "/v1/completions", {**running, "prompt": "Once upon a time", "stream": False}),
                _send_raw(server, "/v1/chat/completions",
                          {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a story."}],
                           "max_tokens": LONG, "stream": True}),
            ]
            _wait_until(lambda: _depth(server) == 3, 30, "both requests to wait in the queue")
            for sock in waiting:
                sock.close()
            _wait_until(lambda: _depth(server) == 1, 10, "the waiting requests' places to come back")
            assert next(events)["choices"][0]["text"] is not None  # the running stream goes on
    _wait_until(lambda: _depth(server) == 0, 10, "the running stream's place to come back")

    check = httpx.post(f"{server}/v1/completions", json={**running, "max_tokens": 1, "stream": False},
                       timeout=REQUEST_TIMEOUT_S)
    usage = check.json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1


def _bounded_schema(url: str) -> dict:
    """The server's OpenAPI document, narrowed so that every generation stays a few tokens long.

    A fuzzer is free to ask for max_tokens up to 2**20 (or none, which means the server's default):
    on a CPU that is minutes per case, so max_tokens (and /v1/responses' max_output_tokens, Ollama's
    num_predict) is capped at DEFAULT_MAX_TOKENS here and the server is started with that default.
    ``model`` is pinned to the served model in valid cases, so
    they reach generation instead of stopping at 404 (negative cases still send other names), and
    ``session_id`` may be null or "new" so valid chats are not all 404 for an unknown session."""
    document = httpx.get(f"{url}/openapi.json", timeout=10).json()
    for name, schema in document["components"]["schemas"].items():
        props = schema.get("properties", {})
        for key in ("max_tokens", "max_completion_tokens", "max_output_tokens", "num_predict"):  # every route's
            prop = props.get(key, {})
            for branch in [prop, *prop.get("anyOf", [])]:
                if branch.get("type") in ("integer", "number"):
                    branch["maximum"] = DEFAULT_MAX_TOKENS
        if name.endswith("Request") and "model" in props:
            props["model"] = {"enum": [MODEL]}
        if "session_id" in props:
            props["session_id"] = {"anyOf": [{"enum": [None, "new"]}, props["session_id"]]}
    return document


def test_fuzzed_requests_never_get_a_server_error(server):
    """schemathesis cases for every operation, valid and invalid, ~15 each: no 5xx.

    No shrinking (a failure is reported as generated, with a curl line to replay it) and no
    example database, so the run stays bounded and leaves nothing behind."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup

    api = schemathesis.openapi.from_dict(_bounded_schema(server))
    failures: list[str] = []
    for result in api.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(max_examples=15, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case):
                response = case.call(base_url=server, timeout=REQUEST_TIMEOUT_S)
                try:
                    case.validate_response(response, checks=[not_a_server_error])
                except FailureGroup as exc:  # collect them all, then fail once
                    failures.append(f"{operation.label} ({mode}): {exc.message}")

            try:
                call()
            except Unsatisfiable:
                pass  # no invalid input exists (no parameters, or only a free-form path segment)

    assert not failures, "\n\n".join(failures)
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
