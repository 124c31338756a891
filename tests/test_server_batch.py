"""``mistralkit serve --parallel 4``: concurrent clients decoded together, slot metrics, SSE keep-alive.

One real server subprocess for the module (embedded model, 4 slots, a keep-alive of 0.3 s), driven
over loopback with the official ``openai`` client and raw HTTP.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import jsonschema
import openai
import pytest
from test_server_load import _sample, serving

MODEL = "gemma-3-270m:q4_k_m"
SLOTS = 4
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}


@pytest.fixture(scope="module")
def server(model, mk_home, tmp_path_factory):
    with serving(mk_home, tmp_path_factory.mktemp("serve-batch") / "serve.log", "--ctx", "2048",
                 "--parallel", str(SLOTS), "--keepalive", "0.3") as url:
        yield url


def test_four_clients_stream_at_once_each_to_its_own_end(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=300)
    jobs = {
        "plain": dict(messages=[{"role": "user", "content": "Tell me about the sea."}], max_tokens=40),
        "stop": dict(messages=[{"role": "user", "content": "List fruits, separated by commas."}], max_tokens=40,
                     stop=[","]),
        "json": dict(messages=[{"role": "user", "content": "Name a city, as JSON."}], max_tokens=40,
                     response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}),
        "short": dict(messages=[{"role": "user", "content": "Say hello."}], max_tokens=5),
    }
    results: dict[str, dict] = {}
    barrier = threading.Barrier(len(jobs) + 1)

    def run(name: str) -> None:
        barrier.wait()
        parts, finish = [], None
        for event in client.chat.completions.create(model=MODEL, stream=True, temperature=0, **jobs[name]):
            if event.choices:
                parts.append(event.choices[0].delta.content or "")
                finish = event.choices[0].finish_reason or finish
        results[name] = {"text": "".join(parts), "finish": finish}

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    barrier.wait()
    busy = 0.0
    while any(t.is_alive() for t in threads):  # llama.cpp-side occupancy, as /metrics reports it
        busy = max(busy, _sample(server, "mistralkit_slots_busy", model=MODEL))
        time.sleep(0.05)
    assert set(results) == set(jobs)
    assert busy >= 2, "four streams at once should hold more than one slot"
    assert results["stop"]["finish"] in ("stop", "length") and "," not in results["stop"]["text"]
    jsonschema.validate(json.loads(results["json"]["text"]), SCHEMA)
    assert results["short"]["finish"] in ("stop", "length")
    assert all(r["text"] for r in results.values())
    assert _sample(server, "mistralkit_slots", model=MODEL) == SLOTS
    assert _sample(server, "mistralkit_engine_generated_tokens_total", model=MODEL) > 0
    assert _sample(server, "mistralkit_decode_tokens_per_second", model=MODEL) > 0


def test_a_long_prompt_streams_keep_alive_comments_until_its_first_token(server):
    prompt = "The quick brown fox jumps over the lazy dog. " * 140  # ~1400 tokens: seconds of prefill here
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 2, "stream": True, "temperature": 0}
    lines = []
    with httpx.stream("POST", f"{server}/v1/completions", json=body, timeout=300) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            lines.append(line)
    comments = [i for i, line in enumerate(lines) if line.startswith(":")]
    first_text = next(i for i, line in enumerate(lines) if line.startswith("data: {")
                      and json.loads(line[6:])["choices"] and json.loads(line[6:])["choices"][0]["text"])
    assert comments and comments[0] < first_text, lines[:10]
    assert lines[-1] == "data: [DONE]" or lines[-2] == "data: [DONE]"
    # the official client ignores the comments
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=300)
    events = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=2, stream=True, temperature=0))
    assert events and all(e.object == "text_completion" for e in events)
