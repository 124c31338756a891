"""``mistralkit models fit`` (being written)."""

from __future__ import annotations


def fit() -> None:
    """Will the model fit in this much RAM?"""
    raise SystemExit("not implemented yet")
