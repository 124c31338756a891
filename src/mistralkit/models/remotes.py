"""Named remote APIs (OpenAI-compatible, Anthropic) that ``--model NAME`` can point at.

Stub until the remote engines land: no remote is configured, so every model is local.
"""

from __future__ import annotations


def lookup(ref, environ=None, config_file=None):
    """The RemoteModel ``ref`` names (None: the one ``MODEL_TYPE`` selects), or None for local models."""
    return None
