"""Chat formats, chosen from the model's own data (catalog entry, then GGUF metadata).

``select(model, tokenizer)`` walks ``RULES`` in order; the first rule that recognizes the model
builds its format. Adding a format is adding a file and a row.
"""

from __future__ import annotations

from collections.abc import Callable

from ..models.gguf_info import GGUFInfo
from ..models.store import LocalModel
from .base import ChatFormat, Message, Tokenizer
from .jinja import JinjaFormat
from .mistral import MistralFormat
from .plain import PlainFormat

__all__ = ["ChatFormat", "Message", "Tokenizer", "mistral_version", "select"]


def mistral_version(info: GGUFInfo) -> str | None:
    """Which mistral-common tokenizer a GGUF was converted from, or None if it is not a Mistral one."""
    template = info.chat_template or ""
    name = (info.name or "").lower()
    mistralish = "[INST]" in template or any(word in name for word in ("mistral", "mixtral", "ministral"))
    if not mistralish:
        return None
    if info.tokenizer_pre == "tekken":
        # mistral-common ships one tekken vocabulary (v3 layout); later tekken models share its ids.
        return "tekken"
    if info.tokenizer_model != "llama":
        return None
    if "[SYSTEM_PROMPT]" in template:
        return "v7"
    if info.vocab_size == 32000:
        return "v1"
    if info.vocab_size == 32768:
        return "v3"
    return None


def _mistral(model: LocalModel, tokenizer: Tokenizer) -> ChatFormat | None:
    version = model.mistral_tokenizer or mistral_version(model.info)
    return MistralFormat(version) if version else None


def _jinja(model: LocalModel, tokenizer: Tokenizer) -> ChatFormat | None:
    template = model.info.chat_template
    return JinjaFormat(template, tokenizer) if template else None


def _plain(model: LocalModel, tokenizer: Tokenizer) -> ChatFormat | None:
    return PlainFormat(tokenizer)


RULES: tuple[Callable[[LocalModel, Tokenizer], ChatFormat | None], ...] = (_mistral, _jinja, _plain)


def select(model: LocalModel, tokenizer: Tokenizer) -> ChatFormat:
    for rule in RULES:
        chat_format = rule(model, tokenizer)
        if chat_format is not None:
            return chat_format
    raise AssertionError("the plain format accepts every model")
