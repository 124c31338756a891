"""Shared fixtures. Every test runs with MISTRALKIT_HOME in a temporary folder, so the user's
real data is never touched; the embedded model is assembled once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mistralkit.engines import GenerationParams


@pytest.fixture(scope="session")
def mk_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("mkhome")
    os.environ["MISTRALKIT_HOME"] = str(home)
    for name in [k for k in os.environ if k.startswith(("MISTRALKIT_", "LLM_")) and k != "MISTRALKIT_HOME"]:
        del os.environ[name]
    return home


@pytest.fixture(scope="session")
def model(mk_home):
    from mistralkit.models import resolve

    return resolve()


@pytest.fixture(scope="session")
def engine(model):
    from mistralkit.engines import load_engine

    eng = load_engine(model, n_ctx=2048)
    yield eng
    eng.close()


@pytest.fixture
def greedy() -> GenerationParams:
    return GenerationParams(max_tokens=24, greedy=True)


def run_cli(*args: str, home: Path, stdin: str | None = None, env: dict | None = None,
            user: int | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run ``python -m mistralkit ARGS`` as a user would; ``user`` drops privileges (for root runs)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRALKIT_", "LLM_"))}
    full_env.update({"MISTRALKIT_HOME": str(home), **(env or {})})
    command = [sys.executable, "-m", "mistralkit", *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.fixture
def cli(mk_home):
    def call(*args: str, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("home", mk_home)
        return run_cli(*args, **kwargs)

    return call
