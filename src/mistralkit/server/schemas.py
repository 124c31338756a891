"""Request bodies of the OpenAI-compatible API (what the official client sends), validated by pydantic.

Extra fields beyond OpenAI's: ``session_id`` (save the turn in the history; ``"new"`` starts a
session), and llama.cpp's ``top_k``, ``min_p``, ``repeat_penalty``. A sampling field sent as
``null`` means its default, as OpenAI reads it. Image parts and token-id embedding input are
refused with a 400 that says what to send instead.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..engines import GenerationParams
from ..text import bad_text


# Fields where JSON null means "the default" (clients send every field, null when unset).
NULL_MEANS_DEFAULT = frozenset({"temperature", "top_p", "top_k", "min_p", "repeat_penalty", "frequency_penalty",
                                "presence_penalty", "stream", "n", "max_tokens", "max_completion_tokens", "seed",
                                "stop", "logit_bias", "stream_options", "response_format"})


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Request(_Body):
    """A whole request body: text that UTF-8 cannot encode (a ``"\\ud800"`` escape) is a 400."""

    @model_validator(mode="before")
    @classmethod
    def _utf8(cls, data: Any) -> Any:
        found = bad_text(data)
        if found is not None:
            where, offset, what = found
            raise PydanticCustomError("invalid_text", "{place}: not valid UTF-8 text ({what} at character {at})",
                                      {"place": where or "body", "what": what, "at": offset + 1, "where": where})
        return data


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ImagePart(_Body):
    type: Literal["image_url", "input_image", "image"]


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart | ImagePart] | None = ""

    @model_validator(mode="after")
    def _content(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise PydanticCustomError("content_null", f"a {self.role} message needs content (null is only "
                                      "accepted for an assistant turn)")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            if any(isinstance(part, ImagePart) for part in self.content):
                from ..errors import InvalidParameter

                raise InvalidParameter("image inputs are not supported: no vision model is served here yet",
                                       hint="send text parts only")
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Body):
    include_usage: bool = False


class JsonSchema(_Body):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchema | None = None


class Sampling(_Request):
    model: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in NULL_MEANS_DEFAULT)}
        return data

    max_tokens: int | None = Field(default=None, ge=1, le=1 << 20)
    temperature: float = Field(default=0.8, ge=0, le=2)
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = Field(default=40, ge=0, le=1 << 20)
    min_p: float = Field(default=0.05, ge=0, le=1)
    repeat_penalty: float = Field(default=1.1, gt=0, le=10)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None  # token id (as text) -> -100..100
    seed: int | None = Field(default=None, ge=-1, le=2**32 - 2)  # -1: random
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)  # one choice per request

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value):
        for token, bias in (value or {}).items():
            if not token.strip().isdigit():
                raise ValueError(f"logit_bias: keys are token ids, got {token!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias: {token}: the bias must be in [-100, 100], got {bias}")
        return value

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value):
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop: up to 4 non-empty strings")
        return value

    def params(self, default_max_tokens: int, grammar: str | None = None) -> GenerationParams:
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return GenerationParams(
            max_tokens=self.max_tokens or default_max_tokens, temperature=self.temperature, top_p=self.top_p,
            top_k=self.top_k, min_p=self.min_p, repeat_penalty=self.repeat_penalty,
            frequency_penalty=self.frequency_penalty, presence_penalty=self.presence_penalty,
            logit_bias=tuple((int(k), v) for k, v in (self.logit_bias or {}).items()), seed=self.seed,
            stop=stops, grammar=grammar)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1 << 20)
    response_format: ResponseFormat | None = None
    session_id: str | None = Field(default=None, max_length=64)

    def grammar(self) -> str | None:
        """GBNF text for ``response_format`` (llama.cpp enforces it token by token)."""
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

        if fmt.type == "json_object" or fmt.json_schema is None or not fmt.json_schema.schema_:
            return JSON_GBNF
        try:
            return json_schema_to_gbnf(json.dumps(fmt.json_schema.schema_))
        except Exception as exc:  # noqa: BLE001 - the converter raises plain exceptions for bad schemas
            from ..errors import InvalidParameter

            raise InvalidParameter(f"response_format.json_schema cannot be enforced: {exc}") from exc


class CompletionRequest(Sampling):
    prompt: str | list[str] = Field(min_length=1)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("prompt: one string (or a list of exactly one)")
        return value

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class EmbeddingRequest(_Request):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"  # the official client asks for base64 by default
    dimensions: int | None = Field(default=None, ge=1)

    def texts(self) -> list[str]:
        if isinstance(self.input, str):
            return [self.input]
        if any(not isinstance(item, str) for item in self.input):
            from ..errors import InvalidParameter

            raise InvalidParameter("input: token ids are not accepted (each model has its own tokenizer)",
                                   hint="send the text itself; LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False)")
        return list(self.input)  # type: ignore[arg-type]
