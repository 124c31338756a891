"""Model references, files and metadata."""

from .store import LocalModel, resolve

__all__ = ["LocalModel", "resolve"]
