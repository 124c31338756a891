"""Request bodies of the OpenAI-compatible API (what the official client sends), validated by pydantic.

Extra fields beyond OpenAI's: ``session_id`` (save the turn in the history; ``"new"`` starts a
session), and llama.cpp's ``top_k``, ``min_p``, ``repeat_penalty``. A sampling field sent as
``null`` means its default, as OpenAI reads it. Image parts are refused with a 400 that says what
to send instead; token-id embedding input is read as OpenAI's cl100k_base ids. Tool calling
(``tools``, ``tool_choice``, tool and tool-call messages) is validated here and carried out by ``turn.py``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import Field, StrictBool, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..defaults import SAMPLING_DEFAULTS
from ..engines import GenerationParams
from ..errors import BadParameter, InvalidParameter
from ..http.body import BaseBody, RequestBody
from ..turn import Function, Turn, check_function_name, check_parameters, prepare


# Fields where JSON null means "the default" (clients send every field, null when unset).
NULL_MEANS_DEFAULT = frozenset({"temperature", "top_p", "top_k", "min_p", "repeat_penalty", "frequency_penalty",
                                "presence_penalty", "stream", "n", "max_tokens", "max_completion_tokens", "seed",
                                "stop", "logit_bias", "stream_options", "response_format", "tools",
                                "tool_choice", "parallel_tool_calls", "logprobs", "top_logprobs", "random_seed"})


class TextPart(BaseBody):
    type: Literal["text"]
    text: str


class ImagePart(BaseBody):
    type: Literal["image_url", "input_image", "image"]


class FunctionCall(BaseBody):
    name: str
    arguments: str = "{}"  # JSON text, as OpenAI sends it

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, value: str) -> str:
        try:
            parsed = json.loads(value)
        except ValueError:
            raise ValueError(f"must be a JSON object as text, got {value[:40]!r}") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"must be a JSON object as text, got {type(parsed).__name__}")
        return value


class ToolCall(BaseBody):
    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDefinition(BaseBody):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema of type "object"
    strict: StrictBool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_function_name(value)

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value):
        return check_parameters(value)

    def plain(self) -> Function:
        return Function(self.name, self.description, self.parameters)


class ToolDefinition(BaseBody):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseBody):
    name: str


class NamedToolChoice(BaseBody):
    type: Literal["function"]
    function: FunctionName


class ChatMessage(BaseBody):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart | ImagePart] | None = ""
    tool_calls: list[ToolCall] | None = None  # an assistant turn that called tools
    tool_call_id: str | None = None  # a tool message: the call it answers
    name: str | None = None

    @model_validator(mode="after")
    def _content(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise PydanticCustomError("content_null", f"a {self.role} message needs content (null is only "
                                      "accepted for an assistant turn)")
        if self.role == "tool" and not self.tool_call_id:
            raise PydanticCustomError("tool_call_id", "a tool message needs tool_call_id (the id of the call "
                                      "it answers)")
        if self.tool_calls and self.role != "assistant":
            raise PydanticCustomError("tool_calls", "only an assistant message carries tool_calls")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            if any(isinstance(part, ImagePart) for part in self.content):
                raise InvalidParameter("image inputs are not supported: no vision model is served here yet",
                                       hint="send text parts only")
            return "".join(part.text for part in self.content)
        return self.content or ""

    def plain(self) -> dict:
        """The message as engines take it: OpenAI's ``developer`` role is a system message (the one
        place that says so for every route)."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}

    def as_dict(self) -> dict:
        """The message with its tool calls or the call it answers, as ``turn.prepare`` takes it."""
        out = self.plain()
        if self.tool_calls:
            out["tool_calls"] = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                                 for c in self.tool_calls]
        if self.role == "tool":
            out["tool_call_id"] = self.tool_call_id
            if self.name:
                out["name"] = self.name
        return out


class StreamOptions(BaseBody):
    include_usage: StrictBool = False


class JsonSchema(BaseBody):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(BaseBody):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchema | None = None


class Sampling(RequestBody):
    model: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in NULL_MEANS_DEFAULT)}
        return data

    max_tokens: int | None = Field(default=None, ge=1, le=1 << 20)
    # defaults: engines.base.SAMPLING_DEFAULTS; bounds: the engine's, with a ceiling for what a request may ask
    temperature: float = Field(default=SAMPLING_DEFAULTS["temperature"], ge=0, le=2)
    top_p: float = Field(default=SAMPLING_DEFAULTS["top_p"], gt=0, le=1)
    top_k: int = Field(default=SAMPLING_DEFAULTS["top_k"], ge=0, le=1 << 20)
    min_p: float = Field(default=SAMPLING_DEFAULTS["min_p"], ge=0, le=1)
    repeat_penalty: float = Field(default=SAMPLING_DEFAULTS["repeat_penalty"], gt=0, le=10)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None  # token id (as text) -> -100..100
    seed: int | None = Field(default=None, ge=-1, le=2**32 - 2)  # -1: random
    random_seed: int | None = Field(default=None, ge=0, le=2**32 - 2)  # Mistral's API's name for seed
    stop: str | list[str] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)  # one choice per request
    speculative: Literal["off", "ngram"] | None = None  # mistralkit's: speculative decoding (default: the server's)

    @model_validator(mode="after")
    def _one_seed(self):
        """``random_seed`` (Mistral's API) is ``seed``: either, or both the same."""
        if self.random_seed is not None:
            if self.seed is not None and self.seed != self.random_seed:
                raise ValueError(f"seed ({self.seed}) and random_seed ({self.random_seed}) differ: send one of them")
            self.seed = self.random_seed
        return self

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value):
        for token, bias in (value or {}).items():
            if not re.fullmatch(r"[0-9]{1,9}", token.strip()):  # ASCII digits: int() also reads "٣" as 3
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
            stop=stops, grammar=grammar, json_end=grammar is not None,  # every grammar here is JSON
            top_logprobs=self.wanted_logprobs(), speculative=self.speculative)

    def wanted_logprobs(self) -> int | None:
        """Alternatives per token to report with each token's log-probability; None: none asked."""
        return None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1 << 20)
    response_format: ResponseFormat | None = None
    session_id: str | None = Field(default=None, max_length=64)
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["auto", "none", "required", "any"] | NamedToolChoice | None = None  # any: Mistral's required
    parallel_tool_calls: StrictBool = True
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    functions: list[Any] | None = None  # OpenAI's legacy form of tools: refused, see _no_legacy_functions
    function_call: Any = None

    @field_validator("functions", "function_call")
    @classmethod
    def _no_legacy_functions(cls, value, info):
        """The legacy ``functions``/``function_call`` are refused, not ignored: a client that sent them
        waits for ``message.function_call``, which would never come."""
        if value is not None:
            new = "tools" if info.field_name == "functions" else "tool_choice"
            raise ValueError(f"OpenAI's deprecated form of {new}, which mistralkit does not take: send {new}")
        return value

    @model_validator(mode="after")
    def _results_answer_calls(self):
        """A tool message answers a call an earlier assistant turn made (OpenAI refuses it otherwise)."""
        called: set[str] = set()
        for index, message in enumerate(self.messages):
            called.update(call.id for call in message.tool_calls or ())
            if message.role == "tool" and message.tool_call_id not in called:
                raise ValueError(f"messages[{index}]: tool_call_id {message.tool_call_id!r:.80} answers no call "
                                 "of an earlier assistant message")
        return self

    @model_validator(mode="after")
    def _one_max(self):
        """``max_completion_tokens`` is OpenAI's current name for ``max_tokens``: either, or both the same."""
        given = {self.max_tokens, self.max_completion_tokens} - {None}
        if len(given) > 1:
            raise ValueError(f"max_tokens ({self.max_tokens}) and max_completion_tokens ({self.max_completion_tokens}) "
                             "differ: send one of them")
        self.max_tokens = self.max_tokens or self.max_completion_tokens
        return self

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, value, info):
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("needs logprobs: true as well")
        return value

    def wanted_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def prepare(self, engine, grammar_field: str = "response_format", raw: str | None = None) -> Turn:
        """This request's turn on ``engine``: prompt, grammar and answer reader, checked (``turn.prepare``)."""
        messages = [m.as_dict() for m in self.messages]
        functions = [tool.function.plain() for tool in self.tools or ()]
        choice = self.tool_choice.model_dump() if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice
        choice = "required" if choice == "any" else choice
        fmt = self.response_format
        schema = fmt.json_schema.schema_ if fmt is not None and fmt.json_schema is not None else None
        return prepare(engine, messages, functions, choice, parallel=self.parallel_tool_calls, grammar=self.grammar(),
                       grammar_field=grammar_field, raw=raw, answer_schema=schema)

    def grammar(self) -> str | None:
        """GBNF text for ``response_format`` (llama.cpp enforces it token by token)."""
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        from ..grammar import GrammarError, json_object_grammar, schema_grammar

        if fmt.type == "json_object" or fmt.json_schema is None or not fmt.json_schema.schema_:
            return json_object_grammar()
        try:
            return schema_grammar(fmt.json_schema.schema_)
        except GrammarError as exc:
            raise BadParameter(f"response_format.json_schema.schema: {exc.message}", "response_format",
                               exc.hint) from None


MAX_INPUTS = 2048  # texts in one embeddings request (OpenAI's limit)


def few_enough(texts: list[str], field: str = "input") -> list[str]:
    """``texts``, when one request may embed that many."""
    if len(texts) > MAX_INPUTS:
        raise BadParameter(f"{field}: {len(texts):,} texts, more than the {MAX_INPUTS:,} one request may embed",
                           field, hint="send them in several requests")
    return texts
