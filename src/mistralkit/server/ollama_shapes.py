"""Ollama's wire format: request bodies, their translation to our ``ChatRequest``, and errors as
``{"error": "message"}`` (the model rows of ``/api/tags``, ``/api/ps`` and ``/api/show``: ollama_models.py).

Accepted and ignored: ``keep_alive`` (models stay loaded until the memory budget needs the room),
``options.num_ctx`` (the server's ``--ctx`` decides; a prompt over it is still a 400), the load and
sampler options we do not have (``num_batch``, ``num_gpu``, ``num_thread``, ``mirostat``,
``typical_p``, ...), ``show``'s ``verbose``. ``num_predict`` -1 or -2 means
"until the context is full"; left out, it is the server's ``--max-tokens``, as on ``/v1``.

Tools on ``/api/chat`` are OpenAI's ``tools`` with ``tool_choice`` auto (Ollama has no choice): the
model decides. Calls come back as Ollama writes them, ``{"function": {"index", "name", "arguments":
{...}}}`` (arguments an object, not a JSON string), in the last message line before the done line when
streamed. A history's assistant ``tool_calls`` and ``tool`` results (``tool_name``: the function they
answer; left out, the oldest call not yet answered) are translated to OpenAI's turns with call ids.
Refused with a 400: images, ``think``, ``logprobs``, ``suffix``, ``template``, ``context``, and an
embedding ``dimensions`` other than the model's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, StrictBool, ValidationError, field_validator, model_validator

from ..errors import InvalidParameter, Unsupported
from ..http.errors import validation_message
from ..turn import Turn
from .schemas import BaseBody, ChatRequest, RequestBody, few_enough

FOREVER = -1, -2  # num_predict: Ollama's "no limit" and "fill the context"


class Options(BaseBody):
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    num_predict: int | None = None
    stop: list[str] | str | None = None
    num_ctx: int | None = None  # accepted, ignored: the server's --ctx decides


class OllamaFunctionCall(BaseBody):
    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] | str = Field(default_factory=dict)  # Ollama's: an object; a JSON text taken too
    index: int | None = None


class OllamaToolCall(BaseBody):
    function: OllamaFunctionCall
    id: str | None = Field(default=None, max_length=64)


class OllamaMessage(BaseBody):
    role: str
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = Field(default=None, max_length=64)  # a tool result: the function it answers
    tool_call_id: str | None = Field(default=None, max_length=64)


class _Generation(RequestBody):
    model: str = Field(min_length=1)
    stream: StrictBool = True  # Ollama streams unless told not to
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: Options = Field(default_factory=Options)
    keep_alive: float | str | None = None  # accepted, ignored
    think: StrictBool | str | None = None
    logprobs: StrictBool | None = None

    @field_validator("stream", "options", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info) -> Any:
        """``null`` means "not given", as in Ollama's Go structs."""
        if value is None:
            return True if info.field_name == "stream" else {}
        return value

    def refuse_unsupported(self, extra: dict[str, object]) -> None:
        asked = {"think": self.think not in (None, False), "logprobs": bool(self.logprobs), **extra}
        for name, given in asked.items():
            if given:
                raise Unsupported(f"{name}: not supported by mistralkit's Ollama API",
                                  hint=f"drop {name} from the request")


class OllamaChatRequest(_Generation):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None

    def check(self) -> None:
        self.refuse_unsupported({"images": any(m.images for m in self.messages)})

    def openai_messages(self) -> list[dict]:
        """The conversation in OpenAI's shape: calls get ids, each tool result the id of the call it answers."""
        out: list[dict] = []
        waiting: list[tuple[str, str]] = []  # (id, name) of calls not answered yet, oldest first
        for index, message in enumerate(self.messages):
            if message.role == "tool":
                out.append({"role": "tool", "content": message.content or "",
                            "tool_call_id": _answered(waiting, message, index)})
                continue
            turn: dict[str, Any] = {"role": message.role, "content": message.content or ""}
            if message.tool_calls:
                turn["tool_calls"] = [_openai_call(call, f"call_{index}x{n}")
                                      for n, call in enumerate(message.tool_calls)]
                waiting += [(call["id"], call["function"]["name"]) for call in turn["tool_calls"]]
            out.append(turn)
        return out


def _openai_call(call: OllamaToolCall, default_id: str) -> dict:
    arguments = call.function.arguments
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call.id or default_id, "type": "function", "function": {"name": call.function.name,
                                                                          "arguments": text}}


def _answered(waiting: list[tuple[str, str]], message: OllamaMessage, index: int) -> str:
    """The id of the call a tool result answers (by id, by ``tool_name``, else the oldest), taken off ``waiting``."""
    for position, (call_id, name) in enumerate(waiting):
        if message.tool_call_id == call_id or (not message.tool_call_id and message.tool_name in (None, name)):
            del waiting[position]
            return call_id
    raise InvalidParameter(f"messages[{index}]: a tool result that answers no earlier tool call"
                           + (f" named {message.tool_name!r:.70}" if message.tool_name else ""),
                           hint="put the assistant message with its tool_calls before the tool results")


def ollama_calls(calls: list[dict]) -> list[dict] | None:
    """OpenAI's calls (arguments a JSON text) as Ollama writes them (arguments an object); None when an
    answer's arguments are not a JSON object (cut short by num_predict): it is then text."""
    out = []
    for index, call in enumerate(calls):
        try:
            arguments = json.loads(call["function"]["arguments"] or "{}")
        except ValueError:
            return None
        if not isinstance(arguments, dict):
            return None
        out.append({"id": call["id"], "function": {"index": index, "name": call["function"]["name"],
                                                   "arguments": arguments}})
    return out


class OllamaGenerateRequest(_Generation):
    prompt: str | None = None
    system: str | None = None
    raw: StrictBool = False  # the prompt as raw text, no chat format (system is then ignored, as Ollama does)
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    images: list[str] | None = None

    def check(self) -> None:
        self.refuse_unsupported({"suffix": self.suffix, "template": self.template, "context": self.context,
                                 "images": self.images})

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system and not self.raw else []
        return [*system, {"role": "user", "content": self.prompt or ""}]


class OllamaEmbedRequest(RequestBody):
    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
    truncate: StrictBool = True  # Ollama's default: cut a text to the model's limit
    dimensions: int | None = None
    options: dict[str, Any] | None = None  # accepted, ignored
    keep_alive: float | str | None = None  # accepted, ignored

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else few_enough(list(self.input))


class OllamaEmbeddingsRequest(RequestBody):
    model: str = Field(min_length=1)
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class ShowRequest(RequestBody):
    model: str | None = Field(default=None, min_length=1)
    name: str | None = Field(default=None, min_length=1)  # what older clients send
    verbose: StrictBool = False

    @model_validator(mode="after")
    def _named(self) -> ShowRequest:
        if not (self.model or self.name):
            raise ValueError("model: the model to show is required")
        return self

    @property
    def ref(self) -> str:
        return model_ref(self.model or self.name or "")


def model_ref(name: str) -> str:
    """Our name for an Ollama model name: ``gemma-3-270m:latest`` is ``gemma-3-270m``."""
    return name.strip().removesuffix(":latest")


_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty",
             "seed", "stop")
_OPTION_OF = {**{name: f"options.{name}" for name in _SAMPLING}, "max_tokens": "options.num_predict",
              "response_format": "format"}


def _response_format(fmt: str | dict | None) -> dict | None:
    if not fmt:
        return None
    if fmt == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}


def to_chat_request(model: str, messages: list[dict], options: Options, fmt: str | dict | None,
                    tools: list[dict] | None = None) -> ChatRequest:
    """The same request in our OpenAI shape, validated by the same rules (a bad value is a 400 here).

    ``num_predict`` -1 or -2 is left unset: the route sets it to the context size once the model is loaded.
    """
    values = {name: value for name in _SAMPLING if (value := getattr(options, name)) is not None}
    if options.num_predict is not None and options.num_predict not in FOREVER:
        values["max_tokens"] = options.num_predict
    try:
        return ChatRequest(model=model, messages=messages, response_format=_response_format(fmt), tools=tools or None,
                           **values)
    except ValidationError as exc:
        errors = [{**e, "loc": (_OPTION_OF.get(str(e["loc"][0]), e["loc"][0]), *e["loc"][1:]) if e["loc"] else ()}
                  for e in exc.errors()]
        raise InvalidParameter(validation_message(errors)[1]) from None


def prepare(body: ChatRequest, engine, raw: str | None = None) -> Turn:
    """The request's turn, prepared as ``/v1/chat/completions`` prepares one (``turn.prepare``); a bad
    ``format`` is refused in Ollama's words; ``raw``: the prompt's text as it is (``raw: true``)."""
    try:
        return body.prepare(engine, "format", raw)
    except InvalidParameter as exc:
        if "response_format" not in exc.message:
            raise
        message = exc.message.replace("response_format.json_schema.schema", "format")
        raise InvalidParameter(message.replace("response_format.json_schema", "format: the JSON schema"),
                               exc.hint) from None


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


def error_body(status: int, body: bytes) -> tuple[int, bytes]:
    """The app's error response (OpenAI's shape, or FastAPI's ``detail``) as Ollama's ``{"error"}``.

    Ollama has no 422: a body that does not validate is a 400 there."""
    try:
        data = json.loads(body)
    except ValueError:
        data = body.decode("utf-8", "replace")
    message = data
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data))
        message = error.get("message", error) if isinstance(error, dict) else error
    text = message if isinstance(message, str) else json.dumps(message)
    return (400 if status == 422 else status), json.dumps({"error": text}).encode()


class OllamaWire:
    """Plain ASGI, for ``/api/`` only: a body is JSON whatever its Content-Type says (Ollama's own curl
    examples send none), and every error response (route, validation, key guard, body limit,
    unknown path) is rewritten into Ollama's shape; the rest of the app keeps OpenAI's."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
        scope["headers"] = [*headers, (b"content-type", b"application/json")]  # in place: Measure reads the route
        start: dict | None = None
        body = b""

        async def rewriting(message):
            nonlocal start, body
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                return await send(message)
            body += message.get("body", b"")
            if message.get("more_body", False):
                return
            status, payload = error_body(start["status"], body)
            kept = [
                (k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")
            ]
            kept += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            await send({**start, "status": status, "headers": kept})
            await send({"type": "http.response.body", "body": payload})

        await self.app(scope, receive, rewriting)
