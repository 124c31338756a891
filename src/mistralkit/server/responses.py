"""``/v1/responses``: OpenAI's Responses API over the chat machinery.

A request becomes a ``ChatRequest`` (``input`` items to messages, ``instructions`` to a system
message, ``text.format`` to ``response_format``, flat function tools to chat tools) and runs through
``start_chat``, so prompts, grammars, tool calls and errors are the chat endpoint's. The answer
comes back as output items (a ``message`` with ``output_text``, or ``function_call`` items), and a
stream as Responses events: ``response.created``, ``response.in_progress``, the items' ``added``,
``delta`` and ``done`` events, then ``response.completed`` (``response.incomplete`` when cut at
``max_output_tokens``).

Nothing is stored: ``store`` is accepted and ignored, ``previous_response_id`` is a 400 (send the
whole conversation as ``input``); ``background``, ``reasoning`` effort and built-in tools other than
``file_search`` (served from the docs collections: file_search.py) are refused with a 400 that names them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field, StrictBool, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

from ..errors import MistralkitError
from ..http.errors import redact
from ..http.sse import EventStream
from .file_search import Grounding, prepare, split_tools
from .openai_routes import ChatRun, collect, start_chat
from .schemas import BadParameter, BaseBody, ChatRequest, Sampling

router = APIRouter(prefix="/v1", tags=["openai"])


class FunctionTool(BaseBody):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class TextFormat(BaseBody):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None


class TextOptions(BaseBody):
    format: TextFormat | None = None


class ResponsesRequest(Sampling):
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=1 << 20)
    text: TextOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    previous_response_id: str | None = None
    store: StrictBool | None = None  # accepted; nothing is stored here
    background: StrictBool | None = None
    reasoning: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    include: list[str] | None = None  # "file_search_call.results": the passages found, in the file_search_call

    @field_validator("previous_response_id")
    @classmethod
    def _no_previous(cls, value):
        if value:
            raise ValueError("responses are not stored here: send the whole conversation as input")
        return value

    @field_validator("background")
    @classmethod
    def _no_background(cls, value):
        if value:
            raise ValueError("background responses are not supported: stream instead")
        return value

    @field_validator("reasoning")
    @classmethod
    def _no_reasoning(cls, value):
        if value and any(v is not None for v in value.values()):
            raise ValueError("reasoning options are not supported by the models served here")
        return value

    def chat(self) -> ChatRequest:
        """The same request for the chat endpoint (a 400 naming the Responses field when it is wrong)."""
        body: dict[str, Any] = {"model": self.model, "messages": self._messages()}
        for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "frequency_penalty",
                     "presence_penalty", "logit_bias", "seed", "stop"):
            if name in self.model_fields_set:
                body[name] = getattr(self, name)
        body["max_tokens"] = self.max_output_tokens or self.max_tokens
        if self.tools:
            body["tools"] = [self._tool(i, tool) for i, tool in enumerate(self.tools)]
        if self.tool_choice is not None:
            body["tool_choice"] = self._tool_choice()
        if self.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = self.parallel_tool_calls
        fmt = self.text.format if self.text else None
        if fmt is not None and fmt.type != "text":
            body["response_format"] = (
                {"type": "json_object"}
                if fmt.type == "json_object"
                else {
                    "type": "json_schema",
                    "json_schema": {"name": fmt.name, "schema": fmt.schema_ or {}, "strict": fmt.strict},
                }
            )
        try:
            return ChatRequest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise BadParameter(f"{where}: {first['msg']}", where) from None

    def _messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.instructions}] if self.instructions else []
        if isinstance(self.input, str):
            return [*messages, {"role": "user", "content": self.input}]
        for index, item in enumerate(self.input):
            kind = item.get("type", "message")
            where = f"input.{index}"
            if kind == "message":
                content = item.get("content", "")
                if isinstance(content, list):
                    content = [self._part(part, f"{where}.content.{i}") for i, part in enumerate(content)]
                messages.append({"role": item.get("role", "user"), "content": content})
            elif kind == "function_call":
                call = {"id": _needs(item, "call_id", where), "type": "function",
                        "function": {"name": _needs(item, "name", where), "arguments": item.get("arguments", "{}")}}
                last = messages[-1] if messages else None
                if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                    last["tool_calls"].append(call)  # parallel calls: one assistant turn
                else:
                    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            elif kind == "function_call_output":
                output = item.get("output", "")
                messages.append({"role": "tool", "tool_call_id": _needs(item, "call_id", where),
                                 "content": output if isinstance(output, str) else json.dumps(output)})
            else:
                raise BadParameter(f"{where}: items of type {kind!r} are not supported (send message, "
                                   "function_call and function_call_output items)", where)
        return messages

    @staticmethod
    def _part(part: Any, where: str) -> dict[str, Any]:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            return {"type": "text", "text": part.get("text", "")}
        if kind in ("input_image", "image_url"):
            return {"type": "input_image"}  # refused with the chat endpoint's message
        raise BadParameter(f"{where}: content parts of type {kind!r} are not supported (send input_text)", where)

    @staticmethod
    def _tool(index: int, tool: dict[str, Any]) -> dict[str, Any]:
        if tool.get("type") != "function":
            raise BadParameter(f"tools.{index}: only function tools are supported here, not {tool.get('type')!r} "
                               "(built-in tools need OpenAI's servers)", f"tools.{index}")
        try:
            function = FunctionTool.model_validate(tool)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise BadParameter(f"tools.{index}.{'.'.join(map(str, first['loc']))}: {first['msg']}",
                               f"tools.{index}") from None
        return {"type": "function", "function": function.model_dump(exclude={"type"}, exclude_none=True)}

    def _tool_choice(self) -> Any:
        choice = self.tool_choice
        if isinstance(choice, str):
            return choice
        if choice.get("type") == "function" and isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": choice["name"]}}
        raise BadParameter('tool_choice: "auto", "none", "required" or {"type": "function", "name": ...}',
                           "tool_choice")


def _needs(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise BadParameter(f"{where}: a {item.get('type')} item needs {key}", f"{where}.{key}")
    return value


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


class Response:
    """The response object, built up as its items come."""

    def __init__(self, body: ResponsesRequest, chat: ChatRun, grounding: Grounding | None = None) -> None:
        self.body, self.chat, self.grounding = body, chat, grounding
        self.id = f"resp_{chat.run.id}"
        self.created_at = int(time.time())
        self.output: list[dict[str, Any]] = [grounding.item] if grounding else []

    def cite(self, item: dict[str, Any]) -> dict[str, Any]:
        """The message ``item`` with the file citations of its text (when file_search gave sources)."""
        if self.grounding is not None:
            part = item["content"][0]
            part["annotations"], part["invalid_citations"] = self.grounding.annotate(part["text"])
        return item

    def shape(self, status: str) -> dict[str, Any]:
        run, body = self.chat.run, self.body
        usage = run.usage
        fmt = body.text.format if body.text and body.text.format else TextFormat()
        incomplete = status == "incomplete"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": run.model,
            "output": self.output,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "tool_choice": body.tool_choice or "auto",
            "tools": body.tools or [],
            "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True)},
            "metadata": body.metadata or {},
            "store": False,
            "truncation": "disabled",
            "previous_response_id": None,
            "reasoning": None,
            "user": body.user,
            "usage": None
            if usage is None
            else {
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                "input_tokens_details": {"cached_tokens": usage.cached_tokens},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }

    @property
    def status(self) -> str:
        return "incomplete" if self.chat.run.finish == "length" else "completed"


@router.post("/responses")
async def responses(body: ResponsesRequest, request: Request):
    """OpenAI's Responses API: ``input`` (text or items), ``instructions``, ``max_output_tokens``,
    ``text.format`` (JSON, JSON schema), function tools; streamed as Responses events or not."""
    tool, others = split_tools(body.tools)
    grounding = None
    if tool is None:
        chat_body = body.chat()
    else:
        chat_body = body.model_copy(update={"tools": others}).chat()
        grounding = await prepare(chat_body, tool, body.include, request)
    chat = await start_chat(chat_body, request)
    response = Response(body, chat, grounding)
    if body.stream:
        return EventStream(_events(response), request.app.state.config.keepalive_s)
    run = chat.run
    try:
        await collect(run)
    finally:
        await run_in_threadpool(chat.on_end, run.text, run.usage is None)
    calls = chat.calls()
    if calls:
        response.output += [_call_item(_item_id("fc"), c["id"], c["function"]["name"], c["function"]["arguments"])
                            for c in calls]
    else:
        response.output.append(response.cite(_message_item(_item_id("msg"), run.text, response.status)))
    return response.shape(response.status)


async def _events(response: Response) -> AsyncIterator[str]:
    """The Responses event stream, translated from the chat deltas (text, or tool calls)."""
    chat, run = response.chat, response.chat.run
    sequence = 0

    def event(kind: str, **fields: Any) -> str:
        nonlocal sequence
        sequence += 1
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': sequence - 1, **fields})}\n\n"

    open_item: dict[str, Any] | None = None
    text = ""

    def close(status: str = "completed") -> list[str]:
        """Close the open item; the last one takes the response's status (incomplete when cut short)."""
        nonlocal open_item
        item, open_item = open_item, None
        if item is None:
            return []
        index = len(response.output) - 1
        if item["type"] == "message":
            item["content"][0]["text"] = text
            part = response.cite(item)["content"][0]
            item["status"] = status
            return [event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                          text=text, logprobs=[]),
                    event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                          part=part),
                    event("response.output_item.done", output_index=index, item=item)]
        item["status"] = status
        return [event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                      arguments=item["arguments"]),
                event("response.output_item.done", output_index=index, item=item)]

    def open_(item: dict[str, Any]) -> list[str]:
        nonlocal open_item
        out = close()
        open_item = item
        response.output.append(item)
        out.append(event("response.output_item.added", output_index=len(response.output) - 1,
                         item={**item, "status": "in_progress"}))
        if item["type"] == "message":
            out.append(event("response.content_part.added", item_id=item["id"], output_index=len(response.output) - 1,
                             content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
        return out

    complete = False
    try:
        yield event("response.created", response=response.shape("in_progress"))
        yield event("response.in_progress", response=response.shape("in_progress"))
        for index, item in enumerate(response.output):  # the file_search_call, done before the answer starts
            yield event("response.output_item.added", output_index=index, item={**item, "status": "in_progress"})
            for step in ("in_progress", "searching", "completed"):
                yield event(f"response.file_search_call.{step}", output_index=index, item_id=item["id"])
            yield event("response.output_item.done", output_index=index, item=item)
        run.streamed = True
        async for delta in chat.deltas()(run):
            for call in delta.get("tool_calls") or ():
                function = call.get("function", {})
                if "id" in call:
                    for line in open_(_call_item(_item_id("fc"), call["id"], function.get("name", ""), "",
                                                 "in_progress")):
                        yield line
                if function.get("arguments") and open_item is not None:
                    open_item["arguments"] += function["arguments"]
                    yield event("response.function_call_arguments.delta", item_id=open_item["id"],
                                output_index=len(response.output) - 1, delta=function["arguments"])
            piece = delta.get("content")
            if piece:
                if open_item is None or open_item["type"] != "message":
                    for line in open_(_message_item(_item_id("msg"), "", "in_progress")):
                        yield line
                text += piece
                yield event(
                    "response.output_text.delta",
                    item_id=open_item["id"],
                    output_index=len(response.output) - 1,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
        if not any(item["type"] != "file_search_call" for item in response.output):  # an empty answer: one message
            for line in open_(_message_item(_item_id("msg"), "", "in_progress")):
                yield line
        for line in close(response.status):
            yield line
        status = response.status
        yield event(f"response.{status}", response=response.shape(status))
        complete = True
    except MistralkitError as exc:
        yield event("error", code="server_error", message=redact(exc.message), param=None)
    finally:
        import anyio

        with anyio.CancelScope(shield=True):
            await run_in_threadpool(chat.on_end, run.text, not complete or run.usage is None)
