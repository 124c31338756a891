"""The CLI as a user runs it: real subprocesses, real model, real SQLite."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def assert_clean_error(result, *phrases):
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert "error: " in result.stderr, result.stderr
    error = result.stderr[result.stderr.index("error: "):]
    assert len(error.strip().splitlines()) <= 2, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr


def test_run_streams_and_json(cli, mk_home):
    plain = cli("run", "--greedy", "-n", "12", "What is the capital of France?")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip()
    assert "embedded default model" in plain.stderr and "models pull" in plain.stderr
    as_json = cli("run", "--json", "--greedy", "-n", "12", "What is the capital of France?")
    data = json.loads(as_json.stdout)
    assert data["text"].strip() == plain.stdout.strip()
    assert data["model"] == "gemma-3-270m:q4_k_m" and data["finish_reason"] in ("stop", "length")
    assert {"prompt_tokens", "completion_tokens", "ttft_s", "gen_tps", "prompt_tps"} <= set(data["usage"])
    log = (mk_home / "state" / "mistralkit.log").read_text()
    assert "loaded " in log and "llama.cpp" in log  # our messages and llama.cpp's own, in the file only
    assert "llama_context" not in plain.stderr


def test_run_reads_stdin(cli):
    for args in (("run", "--json", "--greedy", "-n", "4"), ("run", "-", "--json", "--greedy", "-n", "4")):
        result = cli(*args, stdin="Tell me a joke")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["usage"]["prompt_tokens"] > 3


def test_one_shot_chat_is_saved(cli):
    result = cli("chat", "--greedy", "-n", "8", "--prompt", "Hello there")
    assert result.returncode == 0, result.stderr
    session_id = result.stderr.split("Session saved: ")[1].split()[0]
    shown = json.loads(cli("sessions", "show", session_id, "--json").stdout)
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant"]
    assert shown["messages"][0]["content"] == "Hello there"
    listed = json.loads(cli("sessions", "list", "--json").stdout)
    assert session_id in [s["id"] for s in listed]
    md = cli("sessions", "export", session_id, "--format", "md")
    assert md.returncode == 0 and "## User" in md.stdout
    assert cli("sessions", "rm", session_id).returncode == 0
    assert_clean_error(cli("sessions", "show", session_id), "no session")


def test_config_show_reports_sources(cli, tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text("top_k = 12\n")
    result = run_cli("config", "show", "--json", home=tmp_path,
                     env={"MISTRALKIT_TEMPERATURE": "0.2", "LLM_MAX_NEW_TOKENS": "64"})
    settings = json.loads(result.stdout)["settings"]
    assert settings["temperature"] == {"value": 0.2, "source": "env MISTRALKIT_TEMPERATURE"}
    assert settings["max_tokens"]["source"] == "env LLM_MAX_NEW_TOKENS"
    assert settings["top_k"]["value"] == 12 and settings["top_k"]["source"].startswith("config file")
    assert settings["top_p"]["source"] == "default"
    assert "setting" in cli("config", "show").stdout


@pytest.fixture
def history_hash(cli, mk_home):
    cli("chat", "--greedy", "-n", "4", "--prompt", "keep me")
    db = mk_home / "data" / "history.db"

    def digest():
        con = __import__("sqlite3").connect(db)
        rows = con.execute("SELECT * FROM messages ORDER BY id").fetchall()
        con.close()
        return hashlib.sha256(repr(rows).encode()).hexdigest()

    before = digest()
    yield
    assert digest() == before, "a failed command changed the history"


def test_bad_inputs_give_one_line_errors(cli, mk_home, tmp_path, history_hash):
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")
    truncated = tmp_path / "cut.gguf"
    with (mk_home / "data" / "models" / "gemma-3-270m-q4_k_m.gguf").open("rb") as src:
        truncated.write_bytes(src.read(20_000_000))
    cases = [
        (("run", "-m", str(tmp_path / "nope.gguf"), "hi"), ["model file not found"]),
        (("run", "-m", str(not_gguf), "hi"), ["not a GGUF file"]),
        (("run", "-m", str(truncated), "hi"), ["truncated"]),
        (("run", "-m", "llama-9000", "hi"), ["unknown model 'llama-9000'"]),
        (("run", "--temperature", "-1", "hi"), ["temperature=-1.0: must be >= 0"]),
        (("run", "--ctx", "100000", "hi"), ["--ctx 100000 is larger", "use --ctx 32768 or less"]),
        (("chat", "--session-id", "no such/session", "--prompt", "hi"), ["no session with id"]),  # not a name
        (("run", "--ctx", "128", "-n", "16", "word " * 400), ["over the context window of 128"]),
        (("sessions", "export", "x", "--format", "pdf"), ["unknown format"]),
    ]
    for args, phrases in cases:
        assert_clean_error(cli(*args), *phrases)
    assert_clean_error(cli("run", "hi", env={"MISTRALKIT_TOP_P": "2"}), "top_p")


def test_read_only_data_dir(mk_home):
    import tempfile

    home = __import__("pathlib").Path(tempfile.mkdtemp(prefix="mk-ro-"))  # traversable by nobody
    home.chmod(0o755)
    (home / "data").mkdir(parents=True)
    shutil.copytree(mk_home / "data" / "models", home / "data" / "models")
    run_cli("chat", "--greedy", "-n", "4", "--prompt", "saved before", home=home)
    db = home / "data" / "history.db"
    for path in (home, *home.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    user = 65534 if os.geteuid() == 0 else None  # root ignores permissions: act as nobody
    if user is None:
        (home / "data").chmod(0o555)
    result = run_cli("chat", "--prompt", "hi", home=home, user=user)
    assert_clean_error(result, "history database", "MISTRALKIT_HOME")
    result = run_cli("run", "-m", "default", "hi", home=home / "elsewhere", user=user)
    assert_clean_error(result, "cannot write the model store")
    (home / "data").chmod(0o755)
    import sqlite3

    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT content FROM messages WHERE role='user'").fetchall() == [("saved before",)]
    con.close()
    shutil.rmtree(home)  # outside pytest's tmp dirs: a 250 MB model copy would stay in /tmp


def test_help_is_fast_and_light():
    code = ("import sys, runpy; sys.argv=['mistralkit','--help']\n"
            "try:\n    runpy.run_module('mistralkit', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'numpy') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "HEAVY []" in out
    for command in (["chat"], ["run"], ["sessions", "list"], ["sessions", "export"], ["config", "show"],
                    ["models", "list"], ["models", "pull"], ["models", "import"], ["models", "rm"],
                    ["models", "verify"], ["models", "info"], ["models", "path"], ["models", "fit"], ["embed"],
                    ["serve"], ["data", "validate"], ["data", "stats"], ["data", "split"], ["data", "convert"],
                    ["tune"], ["export"], ["bench"], ["eval"]):
        help_text = subprocess.run([sys.executable, "-m", "mistralkit", *command, "--help"],
                                   capture_output=True, text=True).stdout
        assert "Example" in help_text, command


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_stops_run_mid_answer_and_keeps_what_was_said(mk_home, as_json):
    """SIGINT during `mistralkit run` reaches the engine: it stops at the next token, exit 130."""
    import selectors
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRALKIT_", "LLM_"))}
    env["MISTRALKIT_HOME"] = str(mk_home)
    # Greedy counting without a repeat penalty goes on to the token limit (4000: about a minute).
    args = [sys.executable, "-m", "mistralkit", "run", "-n", "4000", "--greedy", "--repeat-penalty", "1",
            *(["--json"] if as_json else []), "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if as_json:
            time.sleep(
                15
            )  # the model loads and starts writing (4000 tokens take over a minute); --json prints at the end
        else:  # read until a few numbers are out (a busy machine may take a while), then interrupt
            selector = selectors.DefaultSelector()
            selector.register(proc.stdout, selectors.EVENT_READ)
            said = b""
            deadline = time.monotonic() + 120
            while len(said.split()) < 6 and time.monotonic() < deadline:
                if selector.select(timeout=5):
                    said += os.read(proc.stdout.fileno(), 4096)
            assert len(said.split()) >= 6, f"too little text in 120 s: {said!r}"
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        out = said + out if not as_json else out
        stopped_in = time.monotonic() - interrupted
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert stopped_in < 10 and "Traceback" not in err.decode()
    if as_json:
        report = json.loads(out)
        assert report["finish_reason"] == "cancelled" and 0 < report["usage"]["completion_tokens"] < 4000
    else:
        assert 6 <= len(out.decode().split()) < 1000, out
