"""Models that carry a Jinja chat template in their GGUF (Gemma, Llama, TinyLlama, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..errors import InvalidParameter
from .base import Message, Tokenizer, check_messages


def _raise(message: str) -> None:
    raise InvalidParameter(f"the model's chat template refused the conversation: {message}")


class JinjaFormat:
    """Renders the template the way Hugging Face does, then tokenizes with the model's vocabulary."""

    name = "jinja"

    def __init__(self, template: str, tokenizer: Tokenizer) -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._template = env.from_string(template)
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
        tokens = self._tokenizer.tokenize(self.render(messages), special=True)
        bos = self._tokenizer.bos_id
        if self._tokenizer.add_bos and bos is not None and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens
