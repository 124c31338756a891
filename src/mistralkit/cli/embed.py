"""``mistralkit embed`` (being written)."""

from __future__ import annotations


def embed() -> None:
    """Embed texts with a local embedding model."""
    raise SystemExit("not implemented yet")
