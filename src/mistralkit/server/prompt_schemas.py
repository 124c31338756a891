"""Request bodies of the prompt-level endpoints: ``/v1/completions`` (text or token-id prompts, several in
one request, ``echo``), the tokenizer routes (``/tokenize``, ``/detokenize``) and ``/v1/embeddings`` (texts
or token ids)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, StrictBool, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..engines import GenerationParams
from ..http.body import RequestBody
from .schemas import MAX_INPUTS, Sampling

MAX_PROMPTS = 256  # prompts in one completions request (a batch of lm-eval's, several at once)
MAX_TOKEN_ID = 2**31 - 1  # llama.cpp's token type; the model's own vocabulary is checked once it is loaded


def _token_ids(value: list, where: str) -> list[int]:
    for i, token in enumerate(value):
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token <= MAX_TOKEN_ID:
            raise PydanticCustomError("token_id", "{where}[{i}]: a token id is an integer from 0, got {got}",
                                      {"where": where, "i": i, "got": repr(token)[:40]})
    return value


def prompt_list(value: Any, field: str = "prompt", most: int = MAX_PROMPTS) -> list[tuple[str, str | list[int]]]:
    """OpenAI's prompt (or input) shapes as (place, prompt) pairs, each prompt a text or token ids: a
    string, a list of strings, a list of ints (one tokenized prompt), or a list of lists of ints."""
    if isinstance(value, str):
        return [(field, value)]
    if not isinstance(value, list) or not value:
        raise PydanticCustomError("prompt", "a string, a list of strings, a list of token ids or a list of lists "
                                  "of token ids (not empty)")
    if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return [(field, _token_ids(value, field))]
    if len(value) > most:
        raise PydanticCustomError("too_many", "{n} items, more than the {most} one request may hold: send them "
                                  "in several requests", {"n": f"{len(value):,}", "most": f"{most:,}"})
    out: list[tuple[str, str | list[int]]] = []
    for i, item in enumerate(value):
        place = f"{field}[{i}]"
        if isinstance(item, str):
            out.append((place, item))
        elif isinstance(item, list) and item:
            out.append((place, _token_ids(item, place)))
        else:
            raise PydanticCustomError("prompt", "{place}: each item is a string or a non-empty list of token ids, "
                                      "got {got}", {"place": place, "got": repr(item)[:40]})
    return out


class CompletionRequest(Sampling):
    """The legacy completions body. Several prompts give one choice each; ``echo`` puts the prompt before
    the answer (with its tokens' log-probabilities when ``logprobs`` is set: lm-eval's multiple choice);
    ``max_tokens: 0`` with ``echo`` scores the prompt only."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=None, ge=0, le=1 << 20)
    logprobs: int | None = Field(default=None, ge=0, le=5)  # the legacy API: alternatives per token
    echo: StrictBool = False

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompts(cls, value):
        prompt_list(value)
        return value

    def prompts(self) -> list[tuple[str, str | list[int]]]:
        """(place in the body, prompt) of each prompt: ``("prompt[1]", [2, 818, ...])``."""
        return prompt_list(self.prompt)

    @model_validator(mode="after")
    def _echo_rules(self):
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens: 0 generates nothing: it needs echo: true (the prompt's log-probabilities)")
        if self.stream and (self.echo or len(self.prompts()) > 1):
            raise ValueError("stream: true takes one prompt without echo; send stream: false for echo or "
                             "several prompts")
        return self

    def wanted_logprobs(self) -> int | None:
        return self.logprobs

    def params(self, default_max_tokens: int, grammar: str | None = None) -> GenerationParams:
        return replace(super().params(default_max_tokens, grammar), logprob_of_end=self.logprobs is not None)


class TokenizeRequest(RequestBody):
    """``POST /tokenize``: vLLM's body (``prompt``, ``add_special_tokens``: BOS first, by default), which
    lm-eval's remote tokenizer sends, or llama.cpp's (``content``, ``add_special``: no BOS by default).
    Control-token texts (``<eos>``) become their ids, as both servers read them."""

    model: str | None = Field(default=None, min_length=1)
    prompt: str | None = None
    content: str | None = None
    add_special_tokens: StrictBool | None = None
    add_special: StrictBool | None = None

    @model_validator(mode="after")
    def _one_text(self):
        if (self.prompt is None) == (self.content is None):
            raise ValueError("send the text as prompt (or content, as llama.cpp's server takes it), once")
        return self

    @property
    def text(self) -> str:
        return self.prompt if self.prompt is not None else self.content  # type: ignore[return-value]

    @property
    def bos(self) -> bool:
        """Whether to put the model's BOS first: vLLM's default for ``prompt``, llama.cpp's for ``content``."""
        for asked in (self.add_special_tokens, self.add_special):
            if asked is not None:
                return asked
        return self.prompt is not None


class DetokenizeRequest(RequestBody):
    """``POST /detokenize``: token ids back to text (vLLM's and llama.cpp's body)."""

    model: str | None = Field(default=None, min_length=1)
    tokens: list[int]

    @field_validator("tokens", mode="before")
    @classmethod
    def _ids(cls, value):
        if not isinstance(value, list):
            raise PydanticCustomError("tokens", "a list of token ids")
        return _token_ids(value, "tokens")


class EmbeddingRequest(RequestBody):
    """Texts to embed: text, or token ids read as OpenAI's embedding models read them (cl100k_base ids,
    what LangChain's OpenAIEmbeddings sends; server/token_input.py), at most 2,048 items."""

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"  # the official client asks for base64 by default
    dimensions: int | None = Field(default=None, ge=1)

    @field_validator("input", mode="before")
    @classmethod
    def _inputs(cls, value):
        prompt_list(value, "input", MAX_INPUTS)
        return value

    def texts(self) -> list[str]:
        """The texts, token ids decoded (which may read a vocabulary file: call it off the event loop)."""
        from .token_input import texts

        items = prompt_list(self.input, "input", MAX_INPUTS)
        ids = [(place, item) for place, item in items if not isinstance(item, str)]
        decoded = iter(texts([place for place, _ in ids], [item for _, item in ids])) if ids else iter(())
        return [item if isinstance(item, str) else next(decoded) for _, item in items]
