"""Vocabularies and chat formats for the transformers engine, the same tokens as the other engines.

A Mistral model is tokenized by mistral-common (``MistralFormat``): its tokenizer version comes
from ``formats.mistral_tokenizer_of`` (the catalog, GGUF metadata, or the folder's own files, see
``formats/folder.py``). A GGUF base reads llama.cpp's vocabulary (vocab only, no weights), as the
llama.cpp engine does; any other folder uses its Hugging Face tokenizer, with the layout
``formats.select`` picks (the folder's Jinja chat template, else the plain layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from .. import formats
from ..errors import InvalidModelFile
from ..formats.base import ChatFormat
from ..formats.mistral import MistralFormat, load_tokenizer
from ..models.store import LocalModel



class Vocab(Protocol):
    """``formats.base.Tokenizer`` plus what generation needs: ``decode`` and the vocabulary ``size``."""

    bos_id: int | None
    eos_id: int | None
    add_bos: bool
    size: int

    def tokenize(self, text: str, *, special: bool) -> list[int]: ...

    def token_text(self, token_id: int) -> str: ...

    def decode(self, tokens: Sequence[int], special: bool = False) -> str:
        """Text of generated tokens, control tokens left out (``special``: written as their text)."""
        ...

    def close(self) -> None: ...


class MistralVocab:
    """mistral-common's tokenizer. Prompts come from messages, so text never carries control tokens."""

    def __init__(self, version: str) -> None:
        self._raw = load_tokenizer(version).instruct_tokenizer.tokenizer
        self.bos_id, self.eos_id, self.add_bos = self._raw.bos_id, self._raw.eos_id, True
        self.size = self._raw.n_words

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return list(self._raw.encode(text, bos=False, eos=False))

    def token_text(self, token_id: int) -> str:
        from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

        return self._raw.decode([token_id], special_token_policy=SpecialTokenPolicy.KEEP)

    def decode(self, tokens: Sequence[int], special: bool = False) -> str:
        from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

        policy = SpecialTokenPolicy.KEEP if special else SpecialTokenPolicy.IGNORE
        return self._raw.decode(list(tokens), special_token_policy=policy)

    def close(self) -> None:
        pass


class HFVocab:
    """The Hugging Face tokenizer of a model folder."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoTokenizer

        try:
            self._tok = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError, TypeError, KeyError, ImportError) as exc:
            raise InvalidModelFile(f"{folder} has no tokenizer that transformers can load: {exc}",
                                   hint="a model folder needs tokenizer.json (Mistral models: tekken.json or "
                                        "tokenizer.model.v3)") from exc
        self.bos_id, self.eos_id = self._tok.bos_token_id, self._tok.eos_token_id
        probe = self._tok.encode("a", add_special_tokens=True)
        self.add_bos = self.bos_id is not None and probe[:1] == [self.bos_id]
        self.size = len(self._tok)

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False, split_special_tokens=not special))

    def token_text(self, token_id: int) -> str:
        return self._tok.decode([token_id], skip_special_tokens=False)

    def decode(self, tokens: Sequence[int], special: bool = False) -> str:
        return self._tok.decode(list(tokens), skip_special_tokens=not special)

    def close(self) -> None:
        pass


class GGUFVocab:
    """llama.cpp's vocabulary of a GGUF (loaded without weights): the llama.cpp engine's tokens."""

    def __init__(self, model: LocalModel) -> None:
        import llama_cpp

        from .llama_native import open_llama

        self._llm = open_llama(model, n_ctx=64, purpose=" for its vocabulary", vocab_only=True)
        vocab = self._llm._model.vocab
        bos, eos = self._llm.token_bos(), self._llm.token_eos()
        self.bos_id = bos if bos >= 0 else None
        self.eos_id = eos if eos >= 0 else None
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.size = self._llm.n_vocab()

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def token_text(self, token_id: int) -> str:
        return self._llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    def decode(self, tokens: Sequence[int], special: bool = False) -> str:
        return self._llm.detokenize(list(tokens), special=special).decode("utf-8", errors="replace")

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()


MAX_HELD = 8  # tokens held for a character that never completes (invalid bytes) before they go out as is


class IncrementalDecoder:
    """Text of a growing token list, piece by piece, never cutting a UTF-8 character or a word's space.

    The last tokens are decoded again with a few before them (SentencePiece drops the space of a
    sequence's first word) and new text is released once it no longer ends in a partial character.
    The pieces join to ``decode(all tokens)``.
    """

    def __init__(self, vocab: Vocab) -> None:
        self._decode = vocab.decode
        self._ids: list[int] = []
        self._prefix = 0  # where the context decoded again starts
        self._read = 0  # tokens up to here are released

    def feed(self, token: int) -> str:
        self._ids.append(token)
        done = self._decode(self._ids[self._prefix:self._read])
        now = self._decode(self._ids[self._prefix:])
        partial = now.endswith("\ufffd") and len(self._ids) - self._read < MAX_HELD
        if len(now) <= len(done) or partial:
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return now[len(done):]

    def flush(self) -> str:
        done = self._decode(self._ids[self._prefix:self._read])
        now = self._decode(self._ids[self._prefix:])
        self._prefix = self._read = len(self._ids)
        return now[len(done):]


# --- which tokenizer and format --------------------------------------------------------------

def mistral_version_of(model: LocalModel) -> str | None:
    """The mistral-common tokenizer of ``model``: catalog, GGUF metadata, then the folder's files."""
    return formats.mistral_tokenizer_of(model)


def open_vocab(model: LocalModel, mistral_version: str | None) -> Vocab:
    if mistral_version:
        return MistralVocab(mistral_version)
    if model.format == "gguf":
        return GGUFVocab(model)
    return HFVocab(model.path)


def chat_format(model: LocalModel, vocab: Vocab, mistral_version: str | None) -> ChatFormat:
    """The prompt layout: mistral-common for Mistral tokenizers, else what ``formats.select`` finds
    (the GGUF's or the folder's chat template, else the plain layout)."""
    return MistralFormat(mistral_version) if mistral_version else formats.select(model, vocab)
