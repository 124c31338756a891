"""Repo pulls (``hf:OWNER/REPO``): a tiny random Mistral folder served by the loopback hub becomes a
registered transformers model directory; resume, refusals and errors as for single files.

The Hugging Face hub cannot be reached from here: tests/loopback_hub.py stands in for it, a real HTTP
server on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loopback_hub import LoopbackHub
from test_models_store import _closed_port, mk, registered, write_gguf

from mistralkit.errors import InvalidModelFile, ModelNotFound
from mistralkit.models import registry, store
from mistralkit.models.download import IntegrityError
from mistralkit.models.pull import pull
from mistralkit.models.snapshot import pull_repo, resolve_or_pull, select_files

import torch
import transformers  # noqa: F401  (the [test] extra installs it; missing = failure)

REPO = "acme/tiny-mistral"
NAME = "acme--tiny-mistral"
PULLED = {"config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.model",
          "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    """A Mistral-style repo: HF shards + index, the real v3 tokenizer, and what a pull must skip."""
    import mistral_common
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=32768, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2)
    folder = tmp_path_factory.mktemp("repo") / "tiny-mistral"
    MistralForCausalLM(config).save_pretrained(folder, max_shard_size="5MB")
    data = Path(mistral_common.__file__).parent / "data"
    shutil.copyfile(data / "mistral_instruct_tokenizer_240323.model.v3", folder / "tokenizer.model")
    (folder / "consolidated.safetensors").write_bytes(b"\0" * (2 << 20))  # Mistral's format: not for transformers
    (folder / "params.json").write_text('{"dim": 32}')
    (folder / "README.md").write_text("# tiny\n")
    assert {p.name for p in folder.iterdir()} >= PULLED
    return folder


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh MISTRALKIT_HOME, also for the calls made in this process."""
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    monkeypatch.setenv("MISTRALKIT_HOME", str(home))
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return home


@pytest.fixture
def hub(tiny_repo, monkeypatch):
    with LoopbackHub() as server:
        server.add_folder(REPO, tiny_repo)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def gets(hub: LoopbackHub) -> list[str]:
    return [path for method, path, _ in hub.state.log if method == "GET"]


def same_files(folder: Path, source: Path) -> bool:
    return {p.name for p in folder.iterdir()} == PULLED and all(
        (folder / name).read_bytes() == (source / name).read_bytes() for name in PULLED)


def test_select_files_keeps_a_transformers_folder_and_skips_consolidated():
    listing = ["README.md", ".gitattributes", "params.json", "consolidated.safetensors", "config.json",
               "generation_config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
               "model.safetensors.index.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
               "special_tokens_map.json", "tekken.json", "chat_template.jinja", "original/model.safetensors"]
    chosen = select_files("mistralai/Some-Model", listing)
    assert set(chosen) == set(listing) - {"README.md", ".gitattributes", "params.json", "consolidated.safetensors",
                                          "original/model.safetensors"}


@pytest.mark.parametrize(("listing", "text"), [
    (["params.json", "consolidated.safetensors", "tokenizer.model"], "no config.json"),
    (["README.md", "tiny.Q4_K_M.gguf"], "hf:acme/x/tiny.Q4_K_M.gguf"),
    (["config.json", "tokenizer.json"], "no transformers weights"),
    (["config.json", "consolidated.safetensors"], "only Mistral's consolidated.safetensors"),
])
def test_select_files_refuses_what_is_not_a_transformers_repo(listing, text):
    with pytest.raises(InvalidModelFile) as caught:
        select_files("acme/x", listing)
    assert text in str(caught.value)


def test_cli_pull_registers_a_folder_that_transformers_loads(home, hub, tiny_repo):
    from transformers import AutoModelForCausalLM

    done = mk(home, hub, "models", "pull", f"hf:{REPO}", "--json")
    assert done.returncode == 0, done.stderr
    pulled = json.loads(done.stdout)[0]
    folder = Path(pulled["path"])
    assert pulled["name"] == NAME and folder == store.store_dir(NAME)
    assert same_files(folder, tiny_repo)
    record = registered(home)[NAME]
    assert (record["format"], record["source"], record["managed"]) == ("hf", "hub", True)
    commit = hub.state.commit(REPO)
    assert record["url"].endswith(f"/{REPO}/tree/{commit}")
    fetched = gets(hub)
    assert f"/{REPO}/resolve/{commit}/config.json" in fetched  # non-LFS: 200 right there, no content server
    assert f"/cdn/{REPO}/config.json" not in fetched and f"/cdn/{REPO}/tokenizer.model" in fetched
    assert not [p for p in fetched if p.endswith(("consolidated.safetensors", "params.json", "README.md"))]
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == "mistral" and model.config.vocab_size == 32768
    assert mk(home, hub, "models", "path", f"hf:{REPO}").stdout.strip() == str(folder)
    assert mk(home, hub, "models", "verify", NAME).returncode == 0
    again = mk(home, hub, "models", "pull", f"hf:{REPO}")
    assert again.returncode == 0 and "already here" in again.stdout
    assert mk(home, hub, "models", "info", NAME).returncode == 0
    assert mk(home, hub, "models", "rm", NAME).returncode == 0 and not folder.exists()


def test_resolve_or_pull_pulls_a_hub_id_once_then_resolves_it(home, hub, tiny_repo):
    model = resolve_or_pull(REPO)
    assert (model.name, model.format, model.path) == (NAME, "hf", store.store_dir(NAME))
    asked = len(hub.state.log)
    assert resolve_or_pull(REPO).path == model.path and resolve_or_pull(f"hf:{REPO}").path == model.path
    assert len(hub.state.log) == asked  # already here: the hub is not asked again
    assert store.resolve(f"hf:{REPO}").format == "hf" and store.resolve(NAME).path == model.path
    assert resolve_or_pull(str(tiny_repo)).path == tiny_repo.resolve()  # a local folder stays a local folder


def test_a_local_relative_path_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "merged").mkdir(parents=True)
    assert store.hub_repo("runs/merged") is None and store.hub_repo("runs/other") == "runs/other"
    assert store.hub_repo("hf:runs/merged") == "runs/merged"  # hf: says which one is meant
    assert store.hub_repo("acme/model.gguf") is None and store.hub_repo("hf:acme/x/file.gguf") is None


def test_dropped_connection_resumes_with_range(home, hub, tiny_repo):
    hub.state.cut_after = 1_000_000
    pulled = pull_repo(REPO)
    assert hub.ranges() and set(hub.ranges()) == {"bytes=1000000-"}
    assert same_files(Path(pulled.path), tiny_repo)


def test_interrupted_pull_is_never_registered_and_resumes(home, hub, tiny_repo):
    def stop_late(done: int, total: int | None) -> None:
        if total and done > total - (1 << 20):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pull_repo(REPO, progress=stop_late)
    assert not store.store_dir(NAME).exists() and registry.records() == {}
    before = len(hub.state.log)
    pulled = pull(f"hf:{REPO}")
    again = [path for method, path, _ in hub.state.log[before:] if method == "GET"]
    assert not [p for p in again if p.endswith(("config.json", "00001-of-00002.safetensors"))]  # kept, not refetched
    partial = pulled.resumed_from - _kept_before_last(tiny_repo)  # the part of the last shard kept
    assert partial > 0 and hub.ranges()[-1] == f"bytes={partial}-"
    assert same_files(Path(pulled.path), tiny_repo) and registry.get(NAME).format == "hf"
    assert not list(store.store_dir(NAME).parent.joinpath(".partial").glob(f"{NAME}@*"))


def _kept_before_last(folder: Path) -> int:
    """Bytes of the files pulled before the last shard (they stay in the staging folder)."""
    return sum((folder / name).stat().st_size for name in PULLED if name != "model-00002-of-00002.safetensors")


def test_non_lfs_file_is_checked_against_its_git_sha1(home, hub, tiny_repo):
    hub.add(f"{REPO}/config.json", tiny_repo / "config.json", corrupt=True, lfs=False)
    with pytest.raises(IntegrityError, match="git sha1 mismatch for config.json"):
        pull_repo(REPO)
    assert not store.store_dir(NAME).exists() and registry.records() == {}


def test_unknown_repo_is_a_clear_404(home, hub):
    with pytest.raises(ModelNotFound, match="no model repository acme/nope"):
        pull_repo("acme/nope")
    done = mk(home, hub, "models", "pull", "hf:acme/nope")
    assert done.returncode != 0 and "404" in done.stderr and "Traceback" not in done.stderr


def test_gguf_only_repo_points_at_the_file_syntax(home, hub, tmp_path):
    hub.add("acme/tiny-GGUF/tiny.Q4_K_M.gguf", write_gguf(tmp_path / "tiny.Q4_K_M.gguf", mb=1))
    done = mk(home, hub, "models", "pull", "hf:acme/tiny-GGUF")
    assert done.returncode != 0 and "no config.json" in done.stderr
    assert "hf:acme/tiny-GGUF/tiny.Q4_K_M.gguf" in done.stderr
    file_pull = mk(home, hub, "models", "pull", "hf:acme/tiny-GGUF/tiny.Q4_K_M.gguf", "--json")  # still a file pull
    assert file_pull.returncode == 0, file_pull.stderr
    assert registered(home)["tiny.q4_k_m"]["format"] == "gguf"


@pytest.mark.parametrize(("token", "status"), [("", "401"), ("wrong", "403")])
def test_gated_repo_says_accept_the_license_and_set_hf_token(home, hub, token, status):
    hub.state.token = "secret"
    refused = mk(home, hub, "models", "pull", f"hf:{REPO}", env={"HF_TOKEN": token})
    assert refused.returncode != 0 and status in refused.stderr
    assert "gated" in refused.stderr and "HF_TOKEN" in refused.stderr and REPO in refused.stderr
    assert registered(home) == {}
    if token:
        allowed = mk(home, hub, "models", "pull", f"hf:{REPO}", env={"HF_TOKEN": "secret"})
        assert allowed.returncode == 0, allowed.stderr


def test_offline_or_unreachable_hub_gives_a_clear_error(home):
    offline = mk(home, None, "models", "pull", f"hf:{REPO}", env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode != 0 and "HF_HUB_OFFLINE" in offline.stderr and "Traceback" not in offline.stderr
    down = mk(home, None, "models", "pull", f"hf:{REPO}", env={"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"})
    assert down.returncode != 0 and "cannot reach" in down.stderr and "models import" in down.stderr
    assert len(down.stderr.strip().splitlines()) <= 2
    assert registered(home) == {} and not store.store_dir(NAME).exists()


def test_tune_base_hub_id_is_pulled_then_trained(hub, home, tmp_path):
    """``mistralkit tune --base OWNER/REPO``: the repo comes through the model store, then trains."""
    from conftest import run_cli

    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"prompt": "Corrige : il a manger.", "response": "Il a mangé."}) + "\n")
    done = run_cli("tune", "--base", REPO, "--tokenizer", "v3", "--data", str(data), "--out", str(tmp_path / "run"),
                   "--max-steps", "1", "--rank", "2", "--json", home=home, env={"HF_ENDPOINT": hub.url},
                   timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["base"]["format"] == "hf" and summary["base"]["name"] == NAME
    assert registry.get(NAME).format == "hf" and len(summary["train_loss"]) == 1
    asked = len(gets(hub))
    again = run_cli("tune", "--base", REPO, "--tokenizer", "v3", "--data", str(data), "--out",
                    str(tmp_path / "run2"), "--max-steps", "1", "--rank", "2", "--json", home=home,
                    env={"HF_ENDPOINT": hub.url}, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(gets(hub)) == asked  # already in the store: nothing downloaded again


def test_run_with_a_hub_id_pulls_it_and_answers_on_the_transformers_engine(home, hub, tiny_repo):
    """`mistralkit run -m OWNER/REPO`: pulled through the store (once), then run by the transformers engine."""
    done = mk(home, hub, "run", "-m", REPO, "--greedy", "-n", "4", "--device", "cpu", "--json", "Bonjour")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["model"] == NAME and answer["usage"]["completion_tokens"] == 4
    assert same_files(store.store_dir(NAME), tiny_repo)
    listed = len(hub.state.log)
    again = mk(home, hub, "run", "-m", REPO, "--greedy", "-n", "4", "--device", "cpu", "--json", "Bonjour")
    assert again.returncode == 0 and json.loads(again.stdout)["text"] == answer["text"]
    assert len(hub.state.log) == listed, "the second run found it here"
