"""Models that carry a Jinja chat template in their GGUF (Gemma, Llama, TinyLlama, ...)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from ..errors import InvalidParameter
from .base import Message, Tokenizer, check_messages


def _raise(message: str) -> None:
    raise InvalidParameter(f"the model's chat template refused the conversation: {message}")


def _tojson(value, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class JinjaFormat:
    """Renders the template the way Hugging Face does, then tokenizes with the model's vocabulary."""

    name = "jinja"

    def __init__(self, template: str, tokenizer: Tokenizer) -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = _tojson  # Hugging Face's: plain JSON, no HTML escaping
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._template = env.from_string(template)
        self.supports_tools = "tools" in template  # the template reads a tools variable (HF's own test)
        self._tokenizer = tokenizer
        self._bos = tokenizer.token_text(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
        self._eos = tokenizer.token_text(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
        self.stop_token_ids = frozenset(t for t in (tokenizer.eos_id,) if t is not None)
        self.stop_strings: tuple[str, ...] = ()

    def render(self, messages: Sequence[Message]) -> str:
        check_messages(messages)
        return self._template.render(
            messages=list(messages), add_generation_prompt=True, bos_token=self._bos, eos_token=self._eos
        )

    def encode(self, messages: Sequence[Message]) -> list[int]:
        return self._tokens(self.render(messages))

    def encode_with_tools(self, messages: Sequence[dict], tools: Sequence[dict]) -> list[int]:
        """Tokens of a conversation with tool turns and ``tools`` (``formats.tools`` shapes), through
        the template as Hugging Face's ``apply_chat_template(messages, tools=...)`` renders it."""
        from .tools import hf_messages, hf_tools

        if not messages or messages[-1]["role"] not in ("user", "tool"):
            raise InvalidParameter("the last message must be from the user or a tool result")
        text = self._template.render(messages=hf_messages(messages), tools=hf_tools(tools) or None,
                                     add_generation_prompt=True, bos_token=self._bos, eos_token=self._eos)
        return self._tokens(text)

    def _tokens(self, text: str) -> list[int]:
        tokens = self._tokenizer.tokenize(text, special=True)
        bos = self._tokenizer.bos_id
        if self._tokenizer.add_bos and bos is not None and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens
