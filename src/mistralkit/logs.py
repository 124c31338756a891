"""Logging: the console at the user's level, and a rotating file in the state dir at INFO or below.

llama.cpp's own messages (logger ``llama.cpp``) reach the console only at ``--log-level debug``
or when they are errors; they always reach the file.
"""

from __future__ import annotations

import logging
import logging.handlers

from . import paths

_configured = False


class _QuietNative(logging.Filter):
    def __init__(self, console_level: int) -> None:
        super().__init__()
        self.console_level = console_level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("llama.cpp"):
            return self.console_level <= logging.DEBUG or record.levelno >= logging.ERROR
        return True


def setup(level: str = "warning") -> None:
    """Configure logging once per process (later calls only change the console level)."""
    global _configured
    numeric = getattr(logging, level.upper())
    root = logging.getLogger()
    if _configured:
        for handler in root.handlers:
            if getattr(handler, "_mistralkit_console", False):
                handler.setLevel(numeric)
                handler.filters[0].console_level = numeric  # type: ignore[attr-defined]
        return
    _configured = True
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler()
    console.setLevel(numeric)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    console.addFilter(_QuietNative(numeric))
    console._mistralkit_console = True  # type: ignore[attr-defined]
    root.addHandler(console)
    try:
        paths.state_dir().mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(paths.log_file(), maxBytes=2_000_000, backupCount=3,
                                                       encoding="utf-8")
    except OSError:
        return  # a read-only state dir must not stop a chat; the console still logs
    handler.setLevel(min(numeric, logging.INFO))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
