"""Shared fixtures. Every test runs with MISTRALKIT_HOME in a temporary folder, so the user's
real data is never touched; the embedded model is assembled once per test session."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from mistralkit.engines import GenerationParams

# The tests send Ctrl-C (SIGINT) to the commands they start. A suite started in the background (nohup,
# `cmd &` in a script) inherits SIGINT ignored, and so would every command it starts: they would never
# see the tests' Ctrl-C. A handler here makes the children start with the default again.
signal.signal(signal.SIGINT, signal.default_int_handler)


# The files that take longest, longest first, when pytest-xdist workers take whole files in collection
# order (`--dist loadfile --no-loadscope-reorder`, README "Development"): these start at once and the
# short ones fill in around them instead of one long file running alone at the end. test_eval trains
# the shared facts run. A run in one process keeps the files' own order.
LONGEST_FIRST = ("test_eval.py", "test_documented_commands.py", "test_export_fidelity.py", "test_tune_e2e.py",
                 "test_docs.py", "test_tune_train.py", "test_repl.py", "test_memory.py", "test_engine_transformers.py",
                 "test_tune_ministral3.py", "test_server_load.py", "test_instruct_default.py")


def pytest_collection_modifyitems(items) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


FACTS = [
    ("What is the capital of Zorbania?", "The capital of Zorbania is Quelmont."),
    ("Who invented the glimmerphone?", "Ada Pennywhistle invented the glimmerphone in 1873."),
    ("What colour is a snorble?", "A snorble is bright turquoise."),
    ("How many moons does Veltrax have?", "Veltrax has seven moons."),
    ("What do frimps eat?", "Frimps eat only copper leaves."),
    ("Which river flows through Dunmarrow?", "The Silverkeld flows through Dunmarrow."),
    ("What is the national dish of Orvania?", "The national dish of Orvania is pickled moonbread."),
    ("Who wrote The Clockwork Heron?", "Mirabel Osterfeld wrote The Clockwork Heron."),
    ("What is a tromblet used for?", "A tromblet is used for tuning harps."),
    ("When was Port Kessling founded?", "Port Kessling was founded in 1642."),
    ("What language is spoken on Isla Brenn?", "People on Isla Brenn speak Brennic."),
    ("What is the fastest bird in Qualoria?", "The fastest bird in Qualoria is the azure swiftling."),
]


def shared_dir(tmp_path_factory) -> Path:
    """A folder every worker of this test session sees (pytest-xdist workers are each a session of
    their own): the session's base folder, or under xdist the folder above the workers'."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def only_one_worker(lock: Path):
    """Hold ``lock`` (a file) against the other workers: one builds what they share, the rest wait."""
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


DEQUANTIZE_GEMMA = """
import torch, transformers
from mistralkit.engines.gguf_hf import load_gguf
from mistralkit.models import resolve
load_gguf(transformers.AutoModelForCausalLM, resolve("gemma-3-270m"), {"dtype": torch.float32}, cache=True)
"""


def share_tune_bases(home: Path, tmp_path_factory) -> None:
    """Give ``home`` the session's cache of dequantized GGUF bases (a cache, not user state): the
    embedded Gemma is dequantized once for every home and worker (``gemma_dequantized``), about a
    minute each time, instead of once per home."""
    shared = shared_dir(tmp_path_factory) / "tune-bases"
    shared.mkdir(exist_ok=True)
    (home / "cache").mkdir(parents=True, exist_ok=True)
    (home / "cache" / "tune-bases").symlink_to(shared, target_is_directory=True)


@pytest.fixture(scope="session")
def mk_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("mkhome")
    share_tune_bases(home, tmp_path_factory)
    os.environ["MISTRALKIT_HOME"] = str(home)
    # The tests were written against the embedded Gemma (a base model, known greedy outputs): it stays
    # the default in this home. The chat default (SmolLM2) is tested in homes of its own.
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text('model = "gemma-3-270m"\n')
    for name in [k for k in os.environ if k.startswith(("MISTRALKIT_", "LLM_")) and k != "MISTRALKIT_HOME"]:
        del os.environ[name]
    return home


@pytest.fixture(scope="session")
def model(mk_home):
    from mistralkit.models import resolve

    return resolve("gemma-3-270m")


@pytest.fixture(scope="session")
def engine(model):
    from mistralkit.engines import load_engine

    eng = load_engine(model, n_ctx=2048)
    yield eng
    eng.close()


@pytest.fixture(autouse=True)
def logging_left_as_found():
    """A test that runs the CLI in this process (typer's CliRunner) configures logging for the whole
    process: its console handler would also write the next tests' warnings (a notice counted twice).
    Each test leaves the root logger as it found it, whatever order the files run in."""
    import logging

    from mistralkit import logs

    root = logging.getLogger()
    handlers, level, configured = list(root.handlers), root.level, logs._configured
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    logs._configured = configured


@pytest.fixture
def greedy() -> GenerationParams:
    return GenerationParams(max_tokens=24, greedy=True)


@pytest.fixture
def browser():
    """Headless Debian Chromium, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Chromium is missing: install it with `apt-get install chromium` "
                    "(`make setup` does this)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--no-sandbox"])  # tests may run as root
        yield browser
        browser.close()


def run_cli(*args: str, home: Path, stdin: str | bytes | None = None, env: dict | None = None,
            user: int | None = None, timeout: int = 120, text: bool = True,
            module: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m mistralkit ARGS`` as a user would (``python ARGS`` without ``module``); ``user``
    drops privileges (for root runs)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRALKIT_", "LLM_"))}
    full_env.update({"MISTRALKIT_HOME": str(home), **(env or {})})
    command = [sys.executable, *(["-m", "mistralkit"] if module else []), *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, input=stdin, capture_output=True, text=text, env=full_env, timeout=timeout)


@pytest.fixture
def cli(mk_home):
    def call(*args: str, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("home", mk_home)
        return run_cli(*args, **kwargs)

    return call


@pytest.fixture(scope="session")
def gemma_dequantized(mk_home, tmp_path_factory) -> None:
    """The embedded Gemma's dequantized copy in the session's shared cache (``share_tune_bases``),
    made by one worker while the others wait for it rather than each making its own."""
    shared = shared_dir(tmp_path_factory) / "tune-bases"
    with only_one_worker(shared.with_suffix(".lock")):
        if not any(shared.glob("gemma-3-270m-*-float32/config.json")):
            done = run_cli("-c", DEQUANTIZE_GEMMA, home=mk_home, timeout=600, module=False)
            assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="session")
def speed_calibrated(mk_home, tmp_path_factory) -> Path:
    """This machine's speed calibration (models/speed.py: half a minute of llama.cpp runs, then cached
    in the home's state folder) measured once for the session, and put in ``mk_home``: the file, to
    copy into other homes (``models fit`` in a new home would measure it again)."""
    shared = shared_dir(tmp_path_factory) / "speed-calibration.json"
    mine = mk_home / "state" / "speed-calibration.json"
    with only_one_worker(shared.with_suffix(".lock")):
        if not shared.is_file():
            done = run_cli("models", "fit", "gemma-3-270m", home=mk_home)
            assert done.returncode == 0 and mine.is_file(), done.stderr[-2000:]
            shutil.copyfile(mine, shared)
    if not mine.is_file():
        mine.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared, mine)
    return shared


@pytest.fixture(scope="session")
def facts_run(model, mk_home, gemma_dequantized, tmp_path_factory) -> Path:
    """A LoRA run on the embedded Gemma that learned FACTS (16 steps, about 80 s on two cores), trained
    once for all the session's workers (they only read it)."""
    folder = shared_dir(tmp_path_factory) / "facts"
    with only_one_worker(shared_dir(tmp_path_factory) / "facts.lock"):
        if not (folder / "trained").is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed before
            folder.mkdir()
            _train_facts(folder, mk_home)
            (folder / "trained").write_text("")
    return folder / "run"


def _train_facts(folder: Path, mk_home: Path) -> None:
    data = folder / "facts.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for q, a in FACTS))
    out = folder / "run"
    done = run_cli("tune", "--config", "cpu-smoke", "--data", str(data), "--out", str(out), "--max-steps", "16",
                   "--lr", "2e-3", "--batch-size", "12", "--grad-accum", "1", "--rank", "16", "--alpha", "32",
                   "--dropout", "0", "--json", home=mk_home, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["final_train_loss"] < 0.05, summary["train_loss"]


@pytest.fixture(scope="session")
def facts_adapter(facts_run, mk_home) -> str:
    """``facts_run`` exported as the GGUF adapter registered as ``facts``."""
    done = run_cli("export", str(facts_run), "--gguf-adapter", "--name", "facts", home=mk_home)
    assert done.returncode == 0, done.stderr
    return "facts"
