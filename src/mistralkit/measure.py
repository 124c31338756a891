"""Helpers shared by tune, eval and bench: this process's peak memory, and matplotlib for PNG charts.

    reset_peak_rss(); load_something(); print(peak_rss() / 2**20, "MiB")
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Peak resident memory in bytes since start or the last ``reset_peak_rss`` (VmHWM; else ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
