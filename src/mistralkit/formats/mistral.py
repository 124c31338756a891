"""Mistral models: tokens come from mistral-common, so they are exactly Mistral's own.

The tokenizer version (v1, v2, v3, v7, tekken) decides the layout, including where the system
prompt goes: v1 prepends it to the first user message, v2/v3/tekken to the last one, v7 gives it
its own ``[SYSTEM_PROMPT]`` block.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from .base import Message, check_messages

# Tokenizer files shipped inside mistral-common's data/ folder.
TOKENIZER_FILES = {
    "v1": "tokenizer.model.v1",
    "v2": "mistral_instruct_tokenizer_240216.model.v2",
    "v3": "mistral_instruct_tokenizer_240323.model.v3",
    "v7": "mistral_instruct_tokenizer_241114.model.v7",
    "tekken": "tekken_240718.json",
}


@lru_cache(maxsize=8)
def load_tokenizer(version: str):
    """mistral-common's ``MistralTokenizer`` for ``version`` (cached: loading takes ~0.1-1 s)."""
    import mistral_common
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    data = Path(mistral_common.__file__).parent / "data"
    return MistralTokenizer.from_file(str(data / TOKENIZER_FILES[version]))


def _to_mistral(messages: Sequence[Message]):
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage

    kinds = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    return [kinds[m["role"]](content=m["content"]) for m in messages]


class MistralFormat:
    """Encodes with mistral-common's tokenizer of the given version."""

    def __init__(self, version: str) -> None:
        if version not in TOKENIZER_FILES:
            raise ValueError(f"unknown Mistral tokenizer version {version!r}")
        self.version = version
        self.name = f"mistral-{version}"
        self._tokenizer = load_tokenizer(version)
        self.stop_token_ids = frozenset({self._tokenizer.instruct_tokenizer.tokenizer.eos_id})
        self.stop_strings: tuple[str, ...] = ()

    def encode(self, messages: Sequence[Message]) -> list[int]:
        from mistral_common.protocol.instruct.request import ChatCompletionRequest

        check_messages(messages)
        request = ChatCompletionRequest(messages=_to_mistral(messages))
        return list(self._tokenizer.encode_chat_completion(request).tokens)

    def decode(self, tokens: Sequence[int]) -> str:
        return self._tokenizer.decode(list(tokens))
