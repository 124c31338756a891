"""Model store: pull (hub and plain URLs, resume, integrity, refusals), import, rm, verify, list.

Downloads go to a real HTTP server on 127.0.0.1 (tests/loopback_hub.py) that stands in for the
Hugging Face hub, which this machine cannot reach.
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

import numpy as np
import pytest

from loopback_hub import LoopbackHub, sha256_of

from conftest import run_cli


def write_gguf(path: Path, mb: int = 2, seed: int = 0) -> Path:
    """A small but real GGUF file (llama metadata, one random tensor)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_block_count(1)
    cols = mb * (1 << 20) // (4 * 64)
    writer.add_tensor("token_embd.weight", np.random.default_rng(seed).standard_normal((64, cols)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def home(tmp_path) -> Path:
    """A fresh MISTRALKIT_HOME per test, with a user catalog naming the loopback hub's models."""
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    return home


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_gguf(tmp_path / "tiny.Q4_K_M.gguf", mb=3)


@pytest.fixture
def hub():
    with LoopbackHub() as server:
        yield server


def catalog_entry(home: Path, name: str, repo: str, file: str, size: int, sha256: str = "") -> None:
    with (home / "config" / "catalog.toml").open("a") as out:
        out.write(f"""
[[models]]
name = "{name}"
title = "{name} (test)"
kind = "llm"
repo = "{repo}"
license = "mit"
params = 0.001
context_length = 256
chat_format = "plain"
good_for = "tests"
default_quant = "q4_k_m"
arch = {{ layers = 1, heads = 1, kv_heads = 1, head_dim = 64, embedding = 64, vocab = 64 }}
[models.files.q4_k_m]
file = "{file}"
size = {size}
sha256 = "{sha256}"
""")


def mk(home: Path, hub: LoopbackHub | None, *args: str, env: dict | None = None, timeout: int = 120):
    full_env = {"HF_HOME": str(home / "hf"), "HF_TOKEN": "", **({"HF_ENDPOINT": hub.url} if hub else {}), **(env or {})}
    return run_cli(*args, home=home, env=full_env, timeout=timeout)


def registered(home: Path) -> dict:
    path = home / "data" / "models" / "registry.json"
    return json.loads(path.read_text())["models"] if path.exists() else {}


def visible_files(home: Path) -> list[Path]:
    """Files a user would see as models: everything in the store outside .partial."""
    root = home / "data" / "models"
    return [p for p in root.rglob("*.gguf") if ".partial" not in p.parts] if root.exists() else []


def test_pull_from_hub_verifies_with_published_sha256_and_registers(home, hub, tiny):
    hub.add("acme/tiny-GGUF/tiny.Q4_K_M.gguf", tiny)
    catalog_entry(home, "tiny-test", "acme/tiny-GGUF", tiny.name, tiny.stat().st_size)
    done = mk(home, hub, "models", "pull", "tiny-test", "--json")
    assert done.returncode == 0, done.stderr
    pulled = json.loads(done.stdout)[0]
    assert pulled["name"] == "tiny-test:q4_k_m" and pulled["sha256"] == sha256_of(tiny)
    assert Path(pulled["path"]).read_bytes() == tiny.read_bytes()
    assert registered(home)["tiny-test:q4_k_m"]["sha256"] == sha256_of(tiny)
    listed = json.loads(mk(home, hub, "models", "list", "--json").stdout)
    assert "tiny-test:q4_k_m" in {row["name"] for row in listed["local"]}
    assert mk(home, hub, "models", "path", "tiny-test").stdout.strip() == pulled["path"]
    assert mk(home, hub, "models", "verify", "tiny-test").returncode == 0
    again = mk(home, hub, "models", "pull", "tiny-test")
    assert again.returncode == 0 and "already here" in again.stdout


def test_dropped_connection_resumes_with_range_and_is_byte_identical(home, hub, tiny):
    hub.add("acme/tiny-GGUF/tiny.Q4_K_M.gguf", tiny)
    catalog_entry(home, "tiny-test", "acme/tiny-GGUF", tiny.name, tiny.stat().st_size, sha256_of(tiny))
    hub.state.cut_after = 1_000_000
    done = mk(home, hub, "models", "pull", "tiny-test", "--json")
    assert done.returncode == 0, done.stderr
    assert set(hub.ranges()) == {"bytes=1000000-"}  # the hub URL and the content URL it redirects to
    assert Path(json.loads(done.stdout)[0]["path"]).read_bytes() == tiny.read_bytes()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_or_interrupted_pull_resumes_on_the_next_run(home, hub, tiny, sig):
    hub.add("acme/tiny-GGUF/tiny.Q4_K_M.gguf", tiny)
    catalog_entry(home, "tiny-test", "acme/tiny-GGUF", tiny.name, tiny.stat().st_size)
    hub.state.throttle = 1_000_000  # ~3 s for the whole file
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISTRALKIT_")}
    env.update(MISTRALKIT_HOME=str(home), HF_ENDPOINT=hub.url, HF_HOME=str(home / "hf"), HF_TOKEN="")
    proc = subprocess.Popen([sys.executable, "-m", "mistralkit", "models", "pull", "tiny-test"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = home / "data" / "models" / ".partial" / "tiny-test-q4_k_m.part"
    deadline = time.time() + 60
    while time.time() < deadline and (not part.exists() or part.stat().st_size < 500_000):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    if sig == signal.SIGINT:  # Ctrl-C: one line, exit 130, the bytes kept
        assert proc.returncode == 130 and "resume" in stderr and "Traceback" not in stderr
    kept = part.stat().st_size
    assert 0 < kept < tiny.stat().st_size
    assert visible_files(home) == [] and registered(home) == {}
    hub.state.throttle = None
    done = mk(home, hub, "models", "pull", "tiny-test", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)[0]
    assert result["resumed_from"] >= kept - (1 << 20)  # whatever reached the disk before the kill
    assert hub.ranges()[-1] == f"bytes={result['resumed_from']}-"
    assert Path(result["path"]).read_bytes() == tiny.read_bytes()
    assert not part.exists()


@pytest.mark.parametrize("published", ["catalog", "hub"])
def test_corrupted_byte_is_detected_and_nothing_is_registered(home, hub, tiny, published):
    hub.add("acme/tiny-GGUF/tiny.Q4_K_M.gguf", tiny, corrupt=True)
    sha = sha256_of(tiny) if published == "catalog" else ""
    catalog_entry(home, "tiny-test", "acme/tiny-GGUF", tiny.name, tiny.stat().st_size, sha)
    done = mk(home, hub, "models", "pull", "tiny-test")
    assert done.returncode != 0
    assert "sha256 mismatch" in done.stderr and "Traceback" not in done.stderr
    assert registered(home) == {} and visible_files(home) == []
    assert not list((home / "data" / "models" / ".partial").glob("*.part"))


@pytest.mark.parametrize(("token", "status"), [("", "401"), ("wrong", "403")])
def test_gated_model_says_accept_the_license_and_set_hf_token(home, hub, tiny, token, status):
    hub.add("acme/tiny-GGUF/tiny.Q4_K_M.gguf", tiny)
    hub.state.token = "secret"
    catalog_entry(home, "tiny-test", "acme/tiny-GGUF", tiny.name, tiny.stat().st_size)
    refused = mk(home, hub, "models", "pull", "tiny-test", env={"HF_TOKEN": token})
    assert refused.returncode != 0 and status in refused.stderr
    assert "gated" in refused.stderr and "HF_TOKEN" in refused.stderr and "acme/tiny-GGUF" in refused.stderr
    assert registered(home) == {}
    allowed = mk(home, hub, "models", "pull", "tiny-test", env={"HF_TOKEN": "secret"})
    assert allowed.returncode == 0, allowed.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_network_gives_a_clear_error_and_leaves_no_file(home, tiny):
    catalog_entry(home, "tiny-test", "acme/tiny-GGUF", tiny.name, tiny.stat().st_size)
    done = mk(home, None, "models", "pull", "tiny-test", env={"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"})
    assert done.returncode != 0 and "cannot reach" in done.stderr and "models import" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2
    assert visible_files(home) == [] and registered(home) == {}
    offline = mk(home, None, "models", "pull", "tiny-test", env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode != 0 and "HF_HUB_OFFLINE" in offline.stderr


def test_plain_url_with_user_sha256(home, hub, tiny):
    hub.add("files/tiny.Q4_K_M.gguf", tiny)
    url = f"{hub.url}/files/tiny.Q4_K_M.gguf"
    wrong = mk(home, hub, "models", "pull", url, "--name", "mine", "--sha256", "0" * 64)
    assert wrong.returncode != 0 and "sha256 mismatch" in wrong.stderr
    done = mk(home, hub, "models", "pull", url, "--name", "mine", "--sha256", sha256_of(tiny), "--json")
    assert done.returncode == 0, done.stderr
    assert registered(home)["mine"]["url"] == url
    missing = mk(home, hub, "models", "pull", f"{hub.url}/files/nothing.gguf")
    assert missing.returncode != 0 and "404" in missing.stderr


def test_not_enough_disk_space_is_refused_before_downloading(home, hub, tmp_path):
    huge = tmp_path / "huge.gguf"
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    try:
        with huge.open("wb") as out:
            out.truncate(free * 2)  # sparse: costs nothing
    except OSError:
        pytest.skip("this filesystem cannot hold a sparse file that large")
    hub.add("files/huge.gguf", huge, sha256="0" * 64)  # hashing terabytes of zeros would take minutes
    done = mk(home, hub, "models", "pull", f"{hub.url}/files/huge.gguf")
    assert done.returncode != 0 and "not enough disk space" in done.stderr
    assert hub.ranges() == [] and not [m for m, _, _ in hub.state.log if m == "GET"]


def test_pulled_real_model_chats(home, hub, model):
    """The embedded GGUF, served by the loopback hub, pulled by name and used by `run`."""
    hub.add("acme/gemma-GGUF/gemma.gguf", model.path)
    catalog_entry(home, "gemma-mirror", "acme/gemma-GGUF", "gemma.gguf", model.path.stat().st_size)
    assert mk(home, hub, "models", "pull", "gemma-mirror").returncode == 0
    answer = mk(home, hub, "run", "--model", "gemma-mirror", "--greedy", "-n", "8", "The capital of France is")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip()


def test_import_in_place_then_rm_keeps_the_users_file(home, tiny):
    done = mk(home, None, "models", "import", str(tiny), "--name", "mine", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["path"] == str(tiny)
    assert mk(home, None, "models", "path", "mine").stdout.strip() == str(tiny)
    taken = mk(home, None, "models", "import", str(tiny), "--name", "mine")
    assert taken.returncode != 0 and "taken" in taken.stderr
    removed = mk(home, None, "models", "rm", "mine")
    assert removed.returncode == 0 and "unregistered" in removed.stdout
    assert tiny.exists() and registered(home) == {}


def test_import_copy_then_rm_deletes_the_copy(home, tiny):
    done = mk(home, None, "models", "import", str(tiny), "--copy", "--json")
    copy = Path(json.loads(done.stdout)["path"])
    assert copy != tiny and copy.read_bytes() == tiny.read_bytes()
    assert mk(home, None, "models", "rm", "tiny.q4_k_m").returncode == 0
    assert not copy.exists() and tiny.exists()


def test_verify_detects_a_changed_file(home, tiny):
    mk(home, None, "models", "import", str(tiny), "--name", "mine")
    assert mk(home, None, "models", "verify", "mine").returncode == 0
    with tiny.open("r+b") as handle:
        handle.seek(2000)
        handle.write(b"\x00\x01")
    bad = mk(home, None, "models", "verify", "--json")
    assert bad.returncode != 0 and json.loads(bad.stdout)[0]["ok"] is False
    assert "failed verification" in bad.stderr


def test_import_refuses_what_is_not_a_model(home, tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    refused = mk(home, None, "models", "import", str(text))
    assert refused.returncode != 0 and "not a GGUF file" in refused.stderr and "Traceback" not in refused.stderr
    folder = tmp_path / "folder"
    folder.mkdir()
    refused = mk(home, None, "models", "import", str(folder))
    assert refused.returncode != 0 and "neither a GGUF file nor a model directory" in refused.stderr
    assert registered(home) == {}


def test_hf_directory_imports_and_chat_explains_what_it_lacks(home, tmp_path):
    """An HF folder runs on the transformers engine; this one has no tokenizer, which is said in one line."""
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "mistral"}')
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    done = mk(home, None, "models", "import", str(folder), "--name", "hf-mistral", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["format"] == "hf"
    chat = mk(home, None, "run", "--model", "hf-mistral", "hi")
    assert chat.returncode != 0 and "no tokenizer" in chat.stderr and "Traceback" not in chat.stderr
    assert "tokenizer.json" in chat.stderr  # the hint: what the folder needs


def test_unknown_names_and_quants_are_clear(home):
    for args, text in [(("models", "pull", "no-such-model"), "unknown model"),
                       (("models", "pull", "mistral-7b-instruct-v0.3:q9_x"), "q4_k_m"),
                       (("models", "rm", "no-such-model"), "unknown model"),
                       (("run", "--model", "mistral-7b-instruct-v0.3", "hi"), "models pull")]:
        done = mk(home, None, *args)
        assert done.returncode != 0 and text in done.stderr and "Traceback" not in done.stderr, args


def test_pull_group_gets_every_model_of_the_group(home, hub, tiny):
    """--embeddings: the embedded MiniLM is already here; the e5 file comes from the (loopback) hub."""
    from mistralkit.models import catalog

    for ref in catalog.group("embeddings"):
        entry, quant = catalog.lookup(ref)
        if not entry.files[quant].bundled:
            hub.add(f"{entry.repo}/{entry.files[quant].file}", tiny)
    done = mk(home, hub, "models", "pull", "--embeddings", "--json")
    assert done.returncode == 0, done.stderr
    results = {r["name"]: r for r in json.loads(done.stdout)}
    assert set(results) == {catalog.lookup(ref)[0].ref(catalog.lookup(ref)[1]) for ref in catalog.group("embeddings")}
    assert results["all-minilm-l6-v2:f32"]["already"]
