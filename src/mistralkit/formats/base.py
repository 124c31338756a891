"""The ChatFormat contract: messages in, prompt tokens and stop conditions out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, TypedDict

from ..errors import InvalidParameter

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


class Message(TypedDict):
    role: Role
    content: str


class Tokenizer(Protocol):
    """What a format needs from the model's own vocabulary (the engine provides it)."""

    bos_id: int | None
    eos_id: int | None
    add_bos: bool

    def tokenize(self, text: str, *, special: bool) -> list[int]: ...

    def token_text(self, token_id: int) -> str: ...


class ChatFormat(Protocol):
    """Turns a conversation into the exact prompt tokens the model was trained on."""

    name: str
    stop_token_ids: frozenset[int]
    stop_strings: tuple[str, ...]
    supports_tools: bool  # ``encode_with_tools`` lays tools out as the model was trained to read them

    def encode(self, messages: Sequence[Message]) -> list[int]:
        """Tokens for ``messages`` followed by the cue for the assistant's next answer."""
        ...

    def encode_with_tools(self, messages: Sequence[dict], tools: Sequence[dict]) -> list[int]:
        """``encode`` with the tool definitions and calls in the model's own layout (``supports_tools``)."""
        ...


def check_messages(messages: Sequence[Message]) -> None:
    """Reject conversations no format can encode, with a message that says why."""
    if not messages:
        raise InvalidParameter("the conversation is empty", hint="send at least one user message")
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise InvalidParameter(f"message {index}: unknown role {role!r}", hint=f"use one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise InvalidParameter(f"message {index}: content must be a string")
        if role == "system" and index != 0:
            raise InvalidParameter(f"message {index}: a system message must come first")
    if messages[-1]["role"] != "user":
        raise InvalidParameter("the last message must be from the user")


def gather_system(messages: Sequence[dict]) -> list[dict]:
    """OpenAI takes system (and developer) messages anywhere, several of them; the chat formats of
    local models take one, first (Gemma's and Mistral's templates refuse any other). So every
    system message joins the first place, in order, separated by a blank line; the other turns
    keep their order. A conversation with one system message, first, is returned as it is."""
    systems = [m for m in messages if m.get("role") == "system"]
    if not systems or (len(systems) == 1 and messages[0].get("role") == "system"):
        return list(messages)
    merged = {"role": "system", "content": "\n\n".join(str(m.get("content") or "") for m in systems)}
    return [merged, *(m for m in messages if m.get("role") != "system")]


def split_system(messages: Sequence[Message]) -> tuple[str | None, list[Message]]:
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], list(messages[1:])
    return None, list(messages)
