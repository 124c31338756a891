"""A plain completion layout for base models that carry no chat template.

Documented so users can reproduce it::

    {system}

    User: {message}
    Assistant: {answer}
    User: {message}
    Assistant:

Generation stops at a new ``User:`` line.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Message, Tokenizer, check_messages, split_system


class PlainFormat:
    name = "plain"
    supports_tools = False  # tools are described in a system message instead (formats/tools.py)
    stop_strings: tuple[str, ...] = ("\nUser:",)

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self.stop_token_ids = frozenset(t for t in (tokenizer.eos_id,) if t is not None)

    def render(self, messages: Sequence[Message]) -> str:
        check_messages(messages)
        system, turns = split_system(messages)
        lines = [f"{system}\n"] if system else []
        for message in turns:
            speaker = "User" if message["role"] == "user" else "Assistant"
            content = message["content"]
            # An answer is generated after "Assistant:" and usually starts with its own space;
            # keeping it verbatim lets the next turn reuse the cached tokens of this one.
            sep = "" if content[:1].isspace() else " "
            lines.append(f"{speaker}:{sep}{content.rstrip(chr(10))}")
        lines.append("Assistant:")
        return "\n".join(lines)

    def encode(self, messages: Sequence[Message]) -> list[int]:
        tokens = self._tokenizer.tokenize(self.render(messages), special=False)
        if self._tokenizer.add_bos and self._tokenizer.bos_id is not None:
            tokens.insert(0, self._tokenizer.bos_id)
        return tokens
