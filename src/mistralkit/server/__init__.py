"""``mistralkit serve``: an OpenAI-compatible HTTP API and a web chat page over local models."""

from .app import create_app
from .config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
