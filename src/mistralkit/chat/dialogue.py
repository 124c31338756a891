"""A conversation a program holds: its history, ``send`` for the next turn, ``save`` to the history
database (the same sessions ``mistralkit chat`` and ``sessions`` show).

>>> import mistralkit
>>> with mistralkit.Conversation(system="Answer briefly.") as chat:  # doctest: +SKIP
...     chat.send("What is LoRA?").text
...     chat.send("And QLoRA?").text          # sees the first exchange
...     chat.save("project-alpha")            # resume with: mistralkit chat --session-id project-alpha
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Self

from ..api import Loaded, load, params_from
from ..engines import Completion, complete
from ..formats.base import Message
from ..settings import load as load_settings
from .conversation import fit


class Conversation:
    """A chat with one loaded model. Settings as ``load_settings`` takes them (``{"greedy": True}``); or a
    ``Loaded`` model to share. The oldest turns leave the prompt when the context is full, as in the REPL."""

    def __init__(self, settings: dict | None = None, *, system: str | None = None, loaded: Loaded | None = None,
                 messages: list[Message] | None = None) -> None:
        self.loaded = loaded or load(load_settings(settings or {}).settings)
        self._owns = loaded is None
        self.system = system if system is not None else self.loaded.settings.system
        self.messages: list[Message] = list(messages or [])  # user and assistant turns, oldest first
        self.session_id: str | None = None
        self._unsaved = len(self.messages)

    def send(self, text: str, on_text: Callable[[str], None] | None = None,
             cancel: threading.Event | None = None) -> Completion:
        """The model's answer to ``text`` after the history; both join the history."""
        engine = self.loaded.engine
        params = params_from(self.loaded.settings)
        head: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        fitted = fit([*head, *self.messages, {"role": "user", "content": text}], engine.count_tokens, engine.n_ctx,
                     params.max_tokens)
        result = complete(engine, fitted.messages, params, cancel, on_text)
        self.messages += [{"role": "user", "content": text}, {"role": "assistant", "content": result.text}]
        self._unsaved += 2
        return result

    def save(self, name: str | None = None) -> str:
        """Write the turns not saved yet to the history database; the session's id (``name`` for a new one)."""
        from .history import Store, StoredMessage

        store = Store()
        try:
            if self.session_id is None:
                self.session_id = store.create_session(self.loaded.model.name, self.system,
                                                       params_from(self.loaded.settings).to_dict(),
                                                       title=_title(self.messages), session_id=name).id
            if self._unsaved:
                store.add_messages(self.session_id, [StoredMessage(m["role"], m["content"])  # type: ignore[arg-type]
                                                     for m in self.messages[-self._unsaved:]])
                self._unsaved = 0
        finally:
            store.close()
        return self.session_id

    def close(self) -> None:
        if self._owns:
            self.loaded.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _title(messages: list[Message]) -> str | None:
    first = next((m["content"] for m in messages if m["role"] == "user"), None)
    return first[:60] if isinstance(first, str) else None
