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
# GGUF key that mistralkit's own writers (tune/to_gguf.py, tune/merge.py) set to the tokenizer above a
# model was trained with: a merge keeps the layout it learned whatever its file or folder is called.
GGUF_KEY = "mistralkit.mistral_tokenizer"


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


def to_mistral(messages: Sequence[Message]):
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

    @property
    def n_vocab(self) -> int:
        """Tokens in this tokenizer's vocabulary (32,000 for v1, 32,768 for v2-v7, 131,072 for tekken)."""
        return self._tokenizer.instruct_tokenizer.tokenizer.n_words

    def encode(self, messages: Sequence[Message]) -> list[int]:
        from mistral_common.protocol.instruct.request import ChatCompletionRequest

        check_messages(messages)
        request = ChatCompletionRequest(messages=to_mistral(messages))
        return list(self._tokenizer.encode_chat_completion(request).tokens)

    def decode(self, tokens: Sequence[int]) -> str:
        return self._tokenizer.decode(list(tokens))

    @property
    def supports_tools(self) -> bool:
        return self.tool_calls_token is not None  # tokenizers before v3 have no tool layout

    @property
    def tool_calls_token(self) -> int | None:
        """The ``[TOOL_CALLS]`` control token's id, or None for a version without tools (v1)."""
        try:
            return self._tokenizer.instruct_tokenizer.tokenizer.get_special_token("[TOOL_CALLS]")
        except Exception:  # noqa: BLE001 - mistral-common raises plain exceptions for a missing token
            return None

    def encode_with_tools(self, messages: Sequence[dict], tools: Sequence[dict]) -> list[int]:
        """Tokens for a conversation with tools and tool turns, as mistral-common lays them out.

        ``messages`` and ``tools`` are shaped as in ``formats.tools``; call ids become the
        9 alphanumerics Mistral requires (``formats.tools.mistral_call_id``).
        """
        from mistral_common.exceptions import MistralCommonException
        from mistral_common.protocol.instruct.request import ChatCompletionRequest
        from mistral_common.protocol.instruct.tool_calls import Function, Tool

        from ..errors import InvalidParameter

        specs = [Tool(function=Function(name=t["name"], description=t.get("description") or "",
                                        parameters=t.get("parameters") or {"type": "object", "properties": {}}))
                 for t in tools]
        try:
            request = ChatCompletionRequest(messages=_to_mistral_with_tools(messages), tools=specs or None)
            return list(self._tokenizer.encode_chat_completion(request).tokens)
        except (MistralCommonException, ValueError, AssertionError) as exc:
            raise InvalidParameter(f"mistral-common refused the conversation: {exc}") from exc


def _to_mistral_with_tools(messages: Sequence[dict]):
    from mistral_common.protocol.instruct.messages import AssistantMessage, ToolMessage
    from mistral_common.protocol.instruct.tool_calls import FunctionCall, ToolCall

    from .tools import mistral_call_id

    names = {c["id"]: c["name"] for m in messages for c in m.get("tool_calls") or ()}
    out = []
    for m in messages:
        if m["role"] == "tool":
            call_id = m.get("tool_call_id") or ""
            out.append(ToolMessage(content=m["content"], tool_call_id=mistral_call_id(call_id),
                                   name=m.get("name") or names.get(call_id)))
        elif m["role"] == "assistant" and m.get("tool_calls"):
            out.append(AssistantMessage(content=None, tool_calls=[
                ToolCall(id=mistral_call_id(c["id"]), function=FunctionCall(name=c["name"], arguments=c["arguments"]))
                for c in m["tool_calls"]]))
        else:
            out.extend(to_mistral([{"role": m["role"], "content": m["content"]}]))
    return out
