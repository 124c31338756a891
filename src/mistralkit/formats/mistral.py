"""Mistral models: tokens come from mistral-common, so they are exactly Mistral's own.

The tokenizer version (v1, v2, v3, v7, tekken, tekken-v7) decides the layout, including where the
system prompt goes: v1 prepends it to the first user message, v2/v3/tekken to the last one,
v7/tekken-v7 give it its own ``[SYSTEM_PROMPT]`` block.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from ..files import write_text_atomic
from .base import Message, check_messages


class TokenizerFile(NamedTuple):
    file: str  # in mistral-common's data/ folder
    layout: str | None = None  # the instruct version to encode with, where it differs from the file's own


# Both tekken files mistral-common ships (tekken_240718, tekken_240911) declare version v3, and no
# later one ships. Later tekken models (Mistral Small 3.x, Magistral, Devstral, Ministral 3) use the
# v7 layout over a vocabulary taken to share these ids (its control tokens put [SYSTEM_PROMPT] at 17,
# as theirs do; their own files are not here to compare), so "tekken-v7" is that vocabulary declared
# v7. v11/v13 cannot be built from it (their encoders need [ARGS]/[CALL_ID], which it lacks)
# and differ from v7 only in tool calls and thinking, which mistralkit does not send.
TOKENIZER_FILES = {
    "v1": TokenizerFile("tokenizer.model.v1"),
    "v2": TokenizerFile("mistral_instruct_tokenizer_240216.model.v2"),
    "v3": TokenizerFile("mistral_instruct_tokenizer_240323.model.v3"),
    "v7": TokenizerFile("mistral_instruct_tokenizer_241114.model.v7"),
    "tekken": TokenizerFile("tekken_240718.json"),
    "tekken-v7": TokenizerFile("tekken_240718.json", "v7"),
}


def _data_dir() -> Path:
    import mistral_common

    return Path(mistral_common.__file__).parent / "data"


def _relabelled(source: Path, layout: str) -> Path:
    """A copy of a tekken file that declares ``layout``, kept in the cache; mistral-common builds the rest."""
    from .. import paths

    target = paths.cache_dir() / "tokenizers" / f"{source.stem}.{layout}.json"  # mistral-common wants *tekken*.json
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    data = json.loads(source.read_text(encoding="utf-8"))
    data["config"]["version"] = layout
    write_text_atomic(target, json.dumps(data, ensure_ascii=False))
    return target


@lru_cache(maxsize=8)
def load_tokenizer(version: str):
    """mistral-common's ``MistralTokenizer`` for ``version`` (cached: loading takes ~0.1-1 s)."""
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    spec = TOKENIZER_FILES[version]
    path = _data_dir() / spec.file
    return MistralTokenizer.from_file(str(_relabelled(path, spec.layout) if spec.layout else path))


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
