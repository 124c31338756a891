"""mistralkit: local-first toolkit for Mistral-family models.

>>> import mistralkit
>>> loaded = mistralkit.load(mistralkit.load_settings({"greedy": True}).settings)  # doctest: +SKIP
>>> mistralkit.run("Hello", loaded).text  # doctest: +SKIP
>>> with mistralkit.Conversation({"greedy": True}) as chat:  # doctest: +SKIP
...     chat.send("Hello").text, chat.send("And again?").text, chat.save("my-chat")
"""

__version__ = "0.1.0"

from .api import Loaded, load, load_settings, params_from, run  # noqa: E402
from .chat.dialogue import Conversation  # noqa: E402
from .corrector import Correction, correct  # noqa: E402
from .embeddings import Embeddings, embed  # noqa: E402

__all__ = ["Conversation", "Correction", "Embeddings", "Loaded", "__version__", "correct", "embed", "load",
           "load_settings", "params_from", "run"]
