"""Chat formats, chosen from the model's own data: its catalog entry's ``chat_format`` when it has
one, else its GGUF metadata (or, for a model folder, its own tokenizer files and chat template).

``select(model, tokenizer)`` tries the catalog's format first, then walks ``RULES`` in order; the
first rule that recognizes the model builds its format. Adding a format is adding a file and a row.
"""

from __future__ import annotations

from collections.abc import Callable

from ..models.gguf_info import GGUFInfo
from ..models.store import LocalModel
from .base import ChatFormat, Message, Tokenizer
from .folder import folder_chat_template, folder_mistral_version
from .jinja import JinjaFormat
from .mistral import GGUF_KEY, TOKENIZER_FILES, MistralFormat
from .plain import PlainFormat

__all__ = ["ChatFormat", "Message", "Tokenizer", "mistral_tokenizer_of", "mistral_version", "select"]

# (tokenizer family, template has a [SYSTEM_PROMPT] block, vocabulary size or None for any size)
# -> mistral-common tokenizer. The family is "tekken" (tokenizer.ggml.pre) or tokenizer.ggml.model.
GGUF_TOKENIZERS: dict[tuple[str, bool, int | None], str] = {
    ("tekken", False, None): "tekken",  # Mistral NeMo, Ministral 8B, Pixtral
    ("tekken", True, None): "tekken-v7",  # Mistral Small 3.x, Magistral, Devstral, Ministral 3
    ("llama", True, None): "v7",  # Mistral Large 2411
    ("llama", False, 32000): "v1",  # Mistral 7B v0.1/v0.2, Mixtral
    ("llama", False, 32768): "v3",  # Mistral 7B v0.3, Mixtral 8x22B
}


def _mistralish(info: GGUFInfo) -> bool:
    name = (info.name or "").lower()
    return "[INST]" in (info.chat_template or "") or any(w in name for w in ("mistral", "mixtral", "ministral"))


def mistral_version(info: GGUFInfo) -> str | None:
    """Which mistral-common tokenizer a GGUF was converted from, or None if it is not a Mistral one.

    The tokenizer a mistralkit merge recorded (``GGUF_KEY``) decides; then the name, template and vocabulary.
    """
    recorded = info.get(GGUF_KEY)
    if recorded in TOKENIZER_FILES:
        return recorded
    if not _mistralish(info):
        return None
    family = "tekken" if info.tokenizer_pre == "tekken" else info.tokenizer_model or ""
    key = (family, "[SYSTEM_PROMPT]" in (info.chat_template or ""))
    return GGUF_TOKENIZERS.get((*key, info.vocab_size)) or GGUF_TOKENIZERS.get((*key, None))


def mistral_tokenizer_of(model: LocalModel) -> str | None:
    """The mistral-common tokenizer that encodes ``model``'s prompts, or None for another format.

    A catalog entry decides (its ``mistral_tokenizer``, or None when its ``chat_format`` is not
    "mistral"); otherwise the GGUF metadata does.
    """
    entry = model.entry
    if entry is not None and entry.chat_format in CATALOG_FORMATS:
        if entry.chat_format != "mistral":
            return None
        if entry.mistral_tokenizer:
            return entry.mistral_tokenizer
    if model.info is not None:
        return mistral_version(model.info)
    return folder_mistral_version(model.path) if model.path is not None and model.path.is_dir() else None


def _mistral(model: LocalModel, tokenizer: Tokenizer) -> ChatFormat | None:
    version = mistral_tokenizer_of(model)
    return MistralFormat(version) if version else None


def _jinja(model: LocalModel, tokenizer: Tokenizer) -> ChatFormat | None:
    if model.info is not None:
        template = model.info.chat_template
    else:
        template = folder_chat_template(model.path) if model.path is not None and model.path.is_dir() else None
    return JinjaFormat(template, tokenizer) if template else None


def _plain(model: LocalModel, tokenizer: Tokenizer) -> ChatFormat | None:
    return PlainFormat(tokenizer)


Rule = Callable[[LocalModel, Tokenizer], ChatFormat | None]
# The catalog's `chat_format` values and the rule that builds each ("none": embedding models).
CATALOG_FORMATS: dict[str, Rule] = {"mistral": _mistral, "jinja": _jinja, "plain": _plain}
RULES: tuple[Rule, ...] = (_mistral, _jinja, _plain)


def select(model: LocalModel, tokenizer: Tokenizer) -> ChatFormat:
    named = CATALOG_FORMATS.get(model.entry.chat_format) if model.entry is not None else None
    # A catalog format the file cannot serve (a "jinja" entry whose GGUF lost its template) falls
    # back to what the metadata says.
    for rule in (named, *RULES) if named else RULES:
        chat_format = rule(model, tokenizer)
        if chat_format is not None:
            return chat_format
    raise AssertionError("the plain format accepts every model")
