"""Anthropic's Messages API: ``POST {base_url}/v1/messages`` with ``stream: true``.

System messages become the top-level ``system`` (the API refuses them in the list); ``max_tokens``
is always sent (the API requires it); stop strings become ``stop_sequences``. Anthropic takes no
seed, and its newer models refuse ``temperature`` and ``top_p`` together, so only the temperature
is sent (0 for greedy). Tools go as ``tools`` (``input_schema``) with ``tool_choice`` auto/any/tool;
tool turns as ``tool_use`` and ``tool_result`` blocks. Events: ``message_start`` (input tokens),
``content_block_start`` (a ``tool_use`` block: a call's id and name), ``content_block_delta`` with a
``text_delta`` or a call's ``input_json_delta``, ``message_delta`` (stop_reason, output tokens),
``message_stop``, ``error``.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import InvalidParameter, RemoteError
from ..formats.base import Message
from .base import GenerationParams
from .remote import Delta, RemoteEngine
from .remote_http import Event, Retry, one_line

VERSION = "2023-06-01"
RETRIED_ERRORS = ("overloaded_error", "api_error", "rate_limit_error")


class AnthropicEngine(RemoteEngine):
    kind = "anthropic"

    def request(self, messages: list[Message], params: GenerationParams,
                key: str | None) -> tuple[str, dict[str, str], dict]:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = _anthropic_turns([m for m in messages if m["role"] != "system"])
        if not turns:
            raise InvalidParameter("Anthropic's API needs a user message, not only a system prompt",
                                   hint="add a user message")
        if params.frequency_penalty or params.presence_penalty or params.logit_bias:
            raise InvalidParameter("Anthropic's API has no frequency_penalty, presence_penalty or logit_bias",
                                   hint="leave them out for an Anthropic remote")
        body: dict = {"model": self.remote.model, "messages": turns, "max_tokens": params.max_tokens,
                      "stream": True, "temperature": 0.0 if params.is_greedy else params.temperature}
        if system:
            body["system"] = system
        if params.tools and params.tool_choice != "none":
            body["tools"] = [{"name": t["name"], "description": t.get("description") or "",
                              "input_schema": t.get("parameters") or {"type": "object", "properties": {}}}
                             for t in params.tools]
            choice = params.tool_choice
            body["tool_choice"] = ({"type": "auto"} if choice == "auto" else {"type": "any"} if choice == "required"
                                   else {"type": "tool", "name": choice})
        if params.stop:
            body["stop_sequences"] = list(params.stop)
        headers = {"Accept": "text/event-stream", "anthropic-version": VERSION}
        if key:
            headers["x-api-key"] = key
        return f"{self.remote.base_url}/v1/messages", headers, body

    def parse(self, events: Iterator[Event], where: str) -> Iterator[Delta]:
        for event in events:
            data = event.json(where)
            kind = data.get("type") if isinstance(data, dict) else None
            if kind == "message_start":
                usage = (data.get("message") or {}).get("usage") or {}
                cached = _int(usage.get("cache_read_input_tokens"))
                prompt = sum(_int(usage.get(k)) or 0 for k in
                             ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"))
                yield Delta(prompt_tokens=prompt, cached_tokens=cached,
                            completion_tokens=_int(usage.get("output_tokens")))
            elif kind == "content_block_start":
                block = data.get("content_block") or {}
                if block.get("type") == "tool_use":
                    yield Delta(call=(_int(data.get("index")) or 0, block.get("id"), block.get("name"), ""))
            elif kind == "content_block_delta":
                delta = data.get("delta") or {}
                if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                    yield Delta(text=delta["text"])
                elif delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
                    yield Delta(call=(_int(data.get("index")) or 0, None, None, delta["partial_json"]))
            elif kind == "message_delta":
                usage = data.get("usage") or {}
                yield Delta(finish=(data.get("delta") or {}).get("stop_reason") or None,
                            completion_tokens=_int(usage.get("output_tokens")))
            elif kind == "message_stop":
                yield Delta(done=True)
                return
            elif kind == "error":
                error = data.get("error") or {}
                failure = RemoteError(f"{where} failed mid-answer ({error.get('type', 'error')}: "
                                      f"{one_line(str(error.get('message', '')), None)})", hint="retry later",
                                      status=502)
                if error.get("type") in RETRIED_ERRORS:
                    raise Retry(failure)
                raise failure
            elif kind is None:
                raise RemoteError(f"{where} sent an event without a type", status=502)


def _anthropic_turns(messages: list[Message]) -> list[dict]:
    """Turns as the Messages API takes them: an assistant's tool calls as ``tool_use`` blocks, tool
    results as ``tool_result`` blocks of one user turn (consecutive results together)."""
    import json

    out: list[dict] = []
    for message in messages:
        if message.get("tool_calls"):
            blocks: list[dict] = [{"type": "text", "text": message["content"]}] if message["content"] else []
            for call in message["tool_calls"]:
                try:
                    arguments = json.loads(call["arguments"] or "{}")
                except ValueError:
                    raise InvalidParameter(f"the tool call {call['id']} has arguments that are not JSON",
                                           hint="send the arguments the model gave, as a JSON object") from None
                blocks.append({"type": "tool_use", "id": call["id"], "name": call["name"], "input": arguments})
            out.append({"role": "assistant", "content": blocks})
        elif message["role"] == "tool":
            block = {"type": "tool_result", "tool_use_id": message.get("tool_call_id"), "content": message["content"]}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        else:
            out.append({"role": message["role"], "content": message["content"]})
    return out


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
