"""The code as pyflakes reads it (ruff's F rules): no unused imports or names, no undefined ones; and
no line over pyproject's line-length (E501, 120)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_unused_or_undefined_names():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F,E501", "--no-cache",
                             "src/mistralkit", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
