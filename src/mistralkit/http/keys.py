"""API keys (``serve``) and tokens (``datagen serve``) from a flag, the environment and a key file."""

from __future__ import annotations

import os
from pathlib import Path


def read_keys(given: list[str] | None, key_file: Path | None, env: str = "MISTRALKIT_API_KEY",
          flag: str = "--api-key") -> tuple[str, ...]:
    """Keys from the flag, the environment variable and the key file, checked (datagen's tokens too)."""
    from ..errors import InvalidParameter

    keys = list(given or [])
    if any(not k.strip() for k in keys):
        raise InvalidParameter(f"{flag} is empty: the server would be open to anyone",
                               hint=f'is the variable you passed set? `{flag} "$KEY"` with KEY unset passes ""')
    if env in os.environ:
        if not os.environ[env].strip():
            raise InvalidParameter(f"{env} is set but empty", hint="set it to a key, or unset it")
        keys.append(os.environ[env])
    if key_file is not None:
        try:
            from_file = [line.strip() for line in key_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise InvalidParameter(f"cannot read the API key file {key_file}: {reason}") from exc
        if not from_file:
            raise InvalidParameter(f"the API key file {key_file} holds no key", hint="write one key per line")
        keys += from_file
    keys = [k.strip() for k in keys]
    if any(len(k) < 8 for k in keys):
        raise InvalidParameter("API keys must be at least 8 characters")
    return tuple(dict.fromkeys(keys))
