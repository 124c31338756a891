"""Where mistralkit keeps its files.

XDG locations by default (via platformdirs); ``MISTRALKIT_HOME`` puts everything under one folder:
``$MISTRALKIT_HOME/{data,config,state,cache}``.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "mistralkit"


def _home() -> Path | None:
    home = os.environ.get("MISTRALKIT_HOME")
    return Path(home).expanduser() if home else None


def _dir(kind: str) -> Path:
    home = _home()
    if home is not None:
        return home / kind
    import platformdirs

    finder = {
        "data": platformdirs.user_data_dir,
        "config": platformdirs.user_config_dir,
        "state": platformdirs.user_state_dir,
        "cache": platformdirs.user_cache_dir,
    }[kind]
    return Path(finder(APP, appauthor=False))


def data_dir() -> Path:
    """Models and the history database."""
    return _dir("data")


def config_dir() -> Path:
    """``config.toml``."""
    return _dir("config")


def state_dir() -> Path:
    """Log files."""
    return _dir("state")


def cache_dir() -> Path:
    """Disposable files."""
    return _dir("cache")


def models_dir() -> Path:
    return data_dir() / "models"


def history_db() -> Path:
    return data_dir() / "history.db"


def config_file() -> Path:
    return config_dir() / "config.toml"


def log_file() -> Path:
    return state_dir() / "mistralkit.log"
