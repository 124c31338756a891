"""``mistralkit vllm serve``: the command built for each kind of weights and adapter, the refusals, and
the process life cycle against a stand-in ``vllm`` executable (vLLM itself needs a CUDA GPU)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mistralkit.errors import InvalidModelFile, InvalidParameter, MissingDependency
from mistralkit.scaleout.vllm import build_command, plan, require_vllm

MISTRAL_FLAGS = ["--tokenizer-mode", "mistral", "--config-format", "mistral", "--load-format", "mistral"]

FAKE_VLLM = '''#!{python}
"""Stands in for vLLM, which cannot run without a CUDA GPU (none here): parses
`vllm serve MODEL ... --host H --port P --served-model-name N [--lora-modules NAME=PATH ...]`,
records its arguments in $FAKE_VLLM_RECORD, answers GET /v1/models as vLLM's OpenAI server does,
and exits on SIGINT like vLLM. FAKE_VLLM_DELAY is how long it "loads" (1 s), FAKE_VLLM_FAIL=1 makes
it die while loading, FAKE_VLLM_SERVE_FOR=S crash S seconds after it answers, FAKE_VLLM_STUBBORN=1
ignore SIGINT."""
import json, os, signal, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
record = os.environ["FAKE_VLLM_RECORD"]


def note(**fields):
    data = json.load(open(record)) if os.path.exists(record) else {{}}
    data.update(fields)
    json.dump(data, open(record, "w"))


note(argv=args, pid=os.getpid(), pgid=os.getpgrp())
print("INFO fake vLLM: loading weights", flush=True)
if os.environ.get("FAKE_VLLM_FAIL"):
    print("torch.OutOfMemoryError: CUDA out of memory (fake)", flush=True)
    sys.exit(3)
if os.environ.get("FAKE_VLLM_STUBBORN"):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
value = lambda flag: args[args.index(flag) + 1]
models = [value("--served-model-name")]
if "--lora-modules" in args:
    for item in args[args.index("--lora-modules") + 1:]:
        if item.startswith("--"):
            break
        models.append(item.split("=")[0])


class Models(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/v1/models":
            self.send_error(404)
            return
        body = json.dumps({{"object": "list", "data": [{{"id": m, "object": "model"}} for m in models]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


time.sleep(float(os.environ.get("FAKE_VLLM_DELAY", "1")))  # "loading": mistralkit must wait for the port
server = ThreadingHTTPServer((value("--host"), int(value("--port"))), Models)
print("INFO fake vLLM: serving", flush=True)
if os.environ.get("FAKE_VLLM_SERVE_FOR"):  # then crash, as a GPU fault would
    import threading
    threading.Timer(float(os.environ["FAKE_VLLM_SERVE_FOR"]), lambda: os._exit(7)).start()
try:
    server.serve_forever()
except KeyboardInterrupt:
    note(stopped="SIGINT")
'''


# --- weights and adapters on disk -------------------------------------------------------------

def mistral_folder(root: Path, heads: int = 32, kv_heads: int = 8) -> Path:
    folder = root / "Mistral-7B-Instruct-v0.3"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"dim": 4096, "n_layers": 32, "n_heads": heads,
                                                    "n_kv_heads": kv_heads, "vocab_size": 32768}))
    (folder / "consolidated.safetensors").write_bytes(b"placeholder")
    (folder / "tekken.json").write_text("{}")
    return folder


def hf_folder(root: Path, heads: int = 32, tokenizer: str = "tokenizer.json", name: str = "ministral-hf") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "mistral", "num_attention_heads": heads,
                                                    "num_key_value_heads": 8, "max_position_embeddings": 32768}))
    (folder / "model.safetensors").write_bytes(b"placeholder")
    (folder / tokenizer).write_text("{}")
    return folder


def run_folder(root: Path, name: str, rank: int, **config) -> Path:
    """The layout `mistralkit tune` leaves: OUT/adapter/ from peft save_pretrained + training_summary.json."""
    run = root / name
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "bias": "none", "target_modules": ["q_proj"],
         **config}))
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"placeholder")
    (run / "training_summary.json").write_text(json.dumps({"base": {"ref": "mistral-7b-instruct-v0.3"}}))
    return run


@pytest.fixture(autouse=True)
def _home(mk_home):
    """Catalog, remotes and logs in the test session's MISTRALKIT_HOME."""


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")


def test_mistral_format_folder_gets_the_mistral_flags(tmp_path, two_gpus):
    folder = mistral_folder(tmp_path)
    assert build_command(str(folder)) == [
        "vllm", "serve", str(folder), *MISTRAL_FLAGS, "--served-model-name", "vllm-mistral-7b-instruct-v0.3",
        "--host", "127.0.0.1", "--port", "8000", "--tensor-parallel-size", "2"]


def test_hf_folder_gets_no_mistral_flags(tmp_path, two_gpus):
    folder = hf_folder(tmp_path)
    command = build_command(str(folder), name="m3", port=8123, host="0.0.0.0", max_model_len=8192,
                            gpu_memory_utilization=0.85, extra=["--enable-prefix-caching"])
    assert command == ["vllm", "serve", str(folder), "--served-model-name", "m3", "--host", "0.0.0.0",
                       "--port", "8123", "--tensor-parallel-size", "2", "--max-model-len", "8192",
                       "--gpu-memory-utilization", "0.85", "--enable-prefix-caching"]
    remote = plan(str(folder), name="m3", port=8123, host="0.0.0.0", max_model_len=8192).remote
    assert remote == {"name": "m3", "api": "openai", "base_url": "http://127.0.0.1:8123/v1", "model": "m3",
                      "key_env": None, "flavor": "vllm", "ctx": 8192}


def test_hf_folder_with_only_a_mistral_tokenizer_gets_the_mistral_tokenizer(tmp_path, two_gpus):
    folder = hf_folder(tmp_path, tokenizer="tekken.json")
    command = build_command(str(folder))
    assert command[3:5] == ["--tokenizer-mode", "mistral"] and "--load-format" not in command


def test_hub_ids_pass_through_and_mistralai_gets_the_flags(two_gpus):
    assert build_command("mistralai/Mistral-7B-Instruct-v0.3")[2:9] == [
        "mistralai/Mistral-7B-Instruct-v0.3", *MISTRAL_FLAGS]
    other = build_command("hf:HuggingFaceTB/SmolLM2-135M-Instruct")
    assert other[2] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "--tokenizer-mode" not in other
    with pytest.raises(InvalidModelFile, match="GGUF"):
        build_command("TheBloke/Mistral-7B-Instruct-v0.2-GGUF")


def test_gguf_is_refused_with_a_pointer_to_hf_weights(tmp_path):
    gguf = tmp_path / "model.q4_k_m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    for ref in (str(gguf), "mistral-7b-instruct-v0.3"):  # a file, and a catalog name (GGUF quantizations)
        with pytest.raises(InvalidModelFile) as caught:
            build_command(ref)
        assert "GGUF" in caught.value.message and "experimental" in caught.value.message
        assert "mistralkit serve" in caught.value.hint and "\n" not in caught.value.message


def test_adapters_from_run_folders(tmp_path, two_gpus):
    folder = hf_folder(tmp_path)
    support = run_folder(tmp_path, "support", rank=32)
    legal = run_folder(tmp_path, "legal", rank=8)
    command = build_command(str(folder), adapters=[str(support), f"law={legal / 'adapter'}"])
    at = command.index("--enable-lora")
    assert command[at:] == ["--enable-lora", "--lora-modules", f"support={support / 'adapter'}",
                            f"law={legal / 'adapter'}", "--max-loras", "2", "--max-lora-rank", "32"]
    spec = plan(str(folder), adapters=[str(support)])
    assert [r["name"] for r in spec.remotes] == ["vllm-ministral-hf", "support"]
    assert spec.adapters[0]["model"] == "support"


def test_lora_rank_is_rounded_up_to_what_vllm_accepts(tmp_path, two_gpus):
    folder = hf_folder(tmp_path)
    assert "--max-lora-rank" not in build_command(str(folder), adapters=[str(run_folder(tmp_path, "a", 16))])
    command = build_command(str(folder), adapters=[str(run_folder(tmp_path, "b", 24))])
    assert command[-2:] == ["--max-lora-rank", "32"]
    with pytest.raises(InvalidParameter, match="ranks up to 512"):
        build_command(str(folder), adapters=[str(run_folder(tmp_path, "c", 1024))])


def test_adapters_vllm_cannot_load_are_refused(tmp_path, two_gpus):
    folder = hf_folder(tmp_path)
    with pytest.raises(InvalidParameter, match="DoRA"):
        build_command(str(folder), adapters=[str(run_folder(tmp_path, "dora", 16, use_dora=True))])
    with pytest.raises(InvalidParameter, match="modules_to_save"):
        build_command(str(folder), adapters=[str(run_folder(tmp_path, "mts", 16, modules_to_save=["lm_head"]))])
    with pytest.raises(InvalidParameter, match="no PEFT adapter"):
        build_command(str(folder), adapters=[str(tmp_path)])
    with pytest.raises(InvalidParameter, match="two models would be served"):
        build_command(str(folder), name="same", adapters=[f"same={run_folder(tmp_path, 'x', 8)}"])


def test_served_names_are_remote_names_that_hide_no_model(tmp_path, two_gpus):
    odd = hf_folder(tmp_path, name="My Model+v2")
    assert plan(str(odd)).remote["name"] == "vllm-my-model-v2"
    assert plan(str(odd), adapters=[str(run_folder(tmp_path, "Support v2", 8))]).adapters[0]["name"] == "support-v2"
    with pytest.raises(InvalidParameter, match="catalog model"):
        plan(str(odd), name="mistral-7b-instruct-v0.3")
    with pytest.raises(InvalidParameter, match="bad served name"):
        plan(str(odd), name="a:b")


def test_tensor_parallel_must_divide_the_heads(tmp_path, monkeypatch):
    folder = mistral_folder(tmp_path)
    with pytest.raises(InvalidParameter) as caught:
        build_command(str(folder), tensor_parallel=3)
    assert caught.value.message == "--tensor-parallel-size 3: 32 attention heads do not split across 3 GPUs"
    assert "1, 2, 4, 8" in caught.value.hint
    assert "--tensor-parallel-size" in build_command(str(folder), tensor_parallel=4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")  # the default: the largest size the heads allow
    spec = plan(str(folder))
    assert spec.command[spec.command.index("--tensor-parallel-size") + 1] == "2"
    assert any("3 GPUs visible" in note for note in spec.notes)


def test_hub_ids_are_checked_against_the_hub_cache_when_there(tmp_path, monkeypatch):
    from huggingface_hub import constants

    repo = "mistralai/Mistral-7B-Instruct-v0.3"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    unknown = plan(repo)  # nothing cached: heads unknown, a power of two of the GPUs
    assert unknown.command[unknown.command.index("--tensor-parallel-size") + 1] == "2"
    cached = tmp_path / "hub" / "models--mistralai--Mistral-7B-Instruct-v0.3"
    (cached / "refs").mkdir(parents=True)
    (cached / "refs" / "main").write_text("0123abcd")
    (cached / "snapshots" / "0123abcd").mkdir(parents=True)
    (cached / "snapshots" / "0123abcd" / "params.json").write_text(json.dumps({"n_heads": 32, "n_kv_heads": 8}))
    with pytest.raises(InvalidParameter, match="32 attention heads do not split across 3 GPUs"):
        build_command(repo, tensor_parallel=3)


def test_flags_mistralkit_sets_are_refused_after_the_separator(tmp_path, two_gpus):
    folder = hf_folder(tmp_path)
    for extra in (["--port", "9000"], ["--served_model_name=x"], ["-tp", "2"]):
        with pytest.raises(InvalidParameter, match="would change what mistralkit registers"):
            build_command(str(folder), extra=extra)


def test_missing_vllm_names_the_install_and_the_command(tmp_path, two_gpus):
    spec = plan(str(hf_folder(tmp_path)))
    with pytest.raises(MissingDependency) as caught:
        require_vllm(spec, {"PATH": str(tmp_path)})
    assert "pip install vllm" in caught.value.message and "\n" not in caught.value.message
    assert caught.value.hint == f"it would run: {spec.shell}"


# --- the real CLI -----------------------------------------------------------------------------

def assert_clean_error(result, *phrases):
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    error = result.stderr[result.stderr.index("error: "):]
    assert len(error.strip().splitlines()) <= 2, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


@pytest.mark.slow
def test_cli_dry_run_and_json(cli, tmp_path):
    folder = mistral_folder(tmp_path)
    support = run_folder(tmp_path, "support", rank=32)
    env = {"CUDA_VISIBLE_DEVICES": "0,1", "PATH": "/usr/bin:/bin"}
    args = ("vllm", "serve", str(folder), "--adapter", str(support), "--port", "8001", "--dry-run")
    dry = cli(*args, "--", "--enable-prefix-caching", env=env)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    command = shlex.split(lines[0])
    assert command[:9] == ["vllm", "serve", str(folder), *MISTRAL_FLAGS]
    assert command[-6:] == ["--enable-lora", "--lora-modules", f"support={support / 'adapter'}", "--max-lora-rank",
                            "32", "--enable-prefix-caching"]
    base = "vllm-mistral-7b-instruct-v0.3"
    assert lines[1] == f"remote: {base} -> http://127.0.0.1:8001/v1 (model {base})"
    assert lines[2] == "remote: support -> http://127.0.0.1:8001/v1 (model support)"
    as_json = cli(*args, "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["command"] == command[:-1]
    assert data["remote"]["base_url"] == "http://127.0.0.1:8001/v1" and data["remote"]["flavor"] == "vllm"
    assert data["adapters"][0]["name"] == "support"


@pytest.mark.slow
def test_cli_refusals_are_one_line(cli, tmp_path):
    folder = hf_folder(tmp_path)
    env = {"CUDA_VISIBLE_DEVICES": "0", "PATH": str(tmp_path)}  # no vllm on this PATH
    missing = cli("vllm", "serve", str(folder), env=env)
    assert_clean_error(missing, "pip install vllm", f"vllm serve {folder} --served-model-name vllm-ministral-hf")
    split = cli("vllm", "serve", str(folder), "--tensor-parallel-size", "5", "--dry-run", env=env)
    assert_clean_error(split, "32 attention heads do not split across 5 GPUs")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    assert_clean_error(cli("vllm", "serve", str(gguf), "--dry-run", env=env), "GGUF", "mistralkit serve")


# --- the process, against the stand-in -------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def fake_vllm(tmp_path) -> dict[str, str]:
    """An environment whose PATH starts with the stand-in `vllm` (see FAKE_VLLM's docstring)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "vllm"
    exe.write_text(FAKE_VLLM.format(python=sys.executable))
    exe.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_VLLM_RECORD": str(tmp_path / "record.json"), "CUDA_VISIBLE_DEVICES": "0"}


def record(env) -> dict:
    return json.loads(Path(env["FAKE_VLLM_RECORD"]).read_text())


def served_models(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as answer:
        return [m["id"] for m in json.load(answer)["data"]]


def gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_launch_runs_the_built_command_and_stops_it(tmp_path, fake_vllm):
    from mistralkit.scaleout.process import launch

    spec = plan(str(hf_folder(tmp_path)), adapters=[str(run_folder(tmp_path, "support", 32))], port=free_port(),
                environ=fake_vllm)
    progress: list[str] = []
    server = launch(spec, register=False, environ=fake_vllm, on_progress=progress.append)
    try:
        assert record(fake_vllm)["argv"] == spec.command[1:]
        assert served_models(spec.url) == ["vllm-ministral-hf", "support"]
        assert progress and progress[0].startswith("started (pid") and spec.shell in progress[0]
    finally:
        code = server.stop()
    assert code == 0 and record(fake_vllm)["stopped"] == "SIGINT"
    assert gone(record(fake_vllm)["pgid"])
    assert "fake vLLM: serving" in server.log_path.read_text()


def test_launch_registers_the_remotes_and_stop_removes_them(tmp_path, fake_vllm):
    from mistralkit.models.remotes import lookup
    from mistralkit.scaleout.process import launch

    spec = plan(str(hf_folder(tmp_path)), adapters=[str(run_folder(tmp_path, "support", 8))], name="vt-m",
                port=free_port(), environ=fake_vllm)
    with launch(spec, environ=fake_vllm) as server:
        assert server.registered == ["vt-m", "support"]
        assert lookup("vt-m") is not None and lookup("support") is not None
    assert lookup("vt-m") is None and lookup("support") is None


def test_vllm_dying_while_loading_shows_its_last_lines(tmp_path, fake_vllm):
    from mistralkit.errors import MistralkitError
    from mistralkit.scaleout.process import launch

    spec = plan(str(hf_folder(tmp_path)), port=free_port(), environ=fake_vllm)
    with pytest.raises(MistralkitError) as caught:
        launch(spec, register=False, environ={**fake_vllm, "FAKE_VLLM_FAIL": "1"})
    assert caught.value.message.startswith("vLLM exited with code 3 before it answered")
    assert "CUDA out of memory (fake)" in caught.value.hint


def test_a_vllm_that_ignores_sigint_gets_sigterm(tmp_path, fake_vllm):
    from mistralkit.scaleout.process import launch

    spec = plan(str(hf_folder(tmp_path)), port=free_port(), environ=fake_vllm)
    server = launch(spec, register=False, environ={**fake_vllm, "FAKE_VLLM_STUBBORN": "1"})
    assert server.stop(grace_s=1.0) == -signal.SIGTERM
    assert "stopped" not in record(fake_vllm)


def test_start_reports_a_vllm_that_stops_on_its_own(tmp_path, fake_vllm, monkeypatch):
    from mistralkit.errors import MistralkitError
    from mistralkit.scaleout.process import start

    for key, value in {**fake_vllm, "FAKE_VLLM_SERVE_FOR": "0.5"}.items():
        monkeypatch.setenv(key, value)
    ready = []
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(MistralkitError, match="vLLM stopped on its own with exit code 7") as caught:
        start(str(hf_folder(tmp_path)), port=free_port(), register=False, on_ready=ready.append)
    assert ready and ready[0].process.returncode == 7
    assert "fake vLLM: serving" in caught.value.hint
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_busy_port_is_refused_before_starting(tmp_path, fake_vllm):
    from mistralkit.scaleout.process import launch

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        spec = plan(str(hf_folder(tmp_path)), port=holder.getsockname()[1], environ=fake_vllm)
        with pytest.raises(InvalidParameter, match="cannot listen on 127.0.0.1"):
            launch(spec, register=False, environ=fake_vllm)
    assert not Path(fake_vllm["FAKE_VLLM_RECORD"]).exists()


@pytest.mark.slow
def test_cli_serve_runs_until_ctrl_c(tmp_path, fake_vllm, mk_home):
    folder = hf_folder(tmp_path)
    port = free_port()
    env = {k: v for k, v in fake_vllm.items() if not k.startswith(("MISTRALKIT_", "LLM_"))}
    child = subprocess.Popen([sys.executable, "-m", "mistralkit", "vllm", "serve", str(folder), "--name", "vt-cli",
                              "--port", str(port), "--json", "--ready-timeout", "60"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**env, "MISTRALKIT_HOME": str(mk_home)})
    try:
        line = child.stdout.readline()  # printed once vLLM answers and the remote is registered
        if not line:
            pytest.fail(f"no JSON line; exit {child.wait(30)}: {child.stderr.read()}")
        ready = json.loads(line)
        assert ready["remote"]["name"] == "vt-cli" and served_models(f"http://127.0.0.1:{port}") == ["vt-cli"]
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert "vLLM ready on" in err and "vLLM stopped; remotes removed" in err
    assert record(fake_vllm)["stopped"] == "SIGINT" and gone(record(fake_vllm)["pgid"])


def test_a_remote_of_the_same_name_is_not_replaced(tmp_path, fake_vllm):
    from mistralkit.models.remotes import Remote, add, remove
    from mistralkit.scaleout.process import launch

    add(Remote("vt-taken", "openai", "http://10.0.0.5:8000/v1", "other"))
    try:
        spec = plan(str(hf_folder(tmp_path)), name="vt-taken", port=free_port(), environ=fake_vllm)
        with pytest.raises(InvalidParameter, match="a remote named 'vt-taken' exists already"):
            launch(spec, environ=fake_vllm)
        assert not Path(fake_vllm["FAKE_VLLM_RECORD"]).exists()  # refused before vLLM started
    finally:
        remove("vt-taken")


@pytest.mark.slow
def test_cli_ctrl_c_while_vllm_loads_stops_it(tmp_path, fake_vllm, mk_home):
    env = {k: v for k, v in fake_vllm.items() if not k.startswith(("MISTRALKIT_", "LLM_"))}
    child = subprocess.Popen([sys.executable, "-m", "mistralkit", "vllm", "serve", str(hf_folder(tmp_path)),
                              "--name", "vt-loading", "--port", str(free_port())], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**env, "MISTRALKIT_HOME": str(mk_home), "FAKE_VLLM_DELAY": "60"})
    try:
        for line in child.stderr:  # vLLM is started, and "loading" for a minute
            if line.startswith("started (pid"):
                break
        else:
            pytest.fail(f"vLLM was not started; exit {child.wait(30)}")
        deadline = time.monotonic() + 30
        while not Path(fake_vllm["FAKE_VLLM_RECORD"]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130 and "vLLM stopped before it was ready" in err, err
    assert gone(record(fake_vllm)["pgid"])
    from mistralkit.models.remotes import lookup

    assert lookup("vt-loading") is None
