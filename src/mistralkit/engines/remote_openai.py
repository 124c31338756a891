"""OpenAI-compatible chat completions (OpenAI, Mistral's API, vLLM, llama.cpp, ``mistralkit serve``).

``POST {base_url}/chat/completions`` with ``stream: true``. What differs between servers is a row of
``FLAVORS``: Mistral's API takes ``random_seed`` for ``seed`` and reports usage in its last chunk
without being asked (it has no ``stream_options``). Only OpenAI's own parameters are sent
(max_tokens, temperature, top_p, seed, stop, frequency/presence penalties, logit_bias, tools and
tool_choice); llama.cpp's top_k, min_p and repeat_penalty are not. Tool calls come back in the last
chunk, assembled from the streamed fragments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import RemoteError
from ..formats.base import Message
from .base import GenerationParams
from .remote import Delta, RemoteEngine
from .remote_http import Event, one_line

MAX_STOPS = 4  # OpenAI's limit; the engine enforces any others itself


@dataclass(frozen=True)
class Flavor:
    seed_field: str = "seed"
    usage_option: bool = True  # send stream_options.include_usage


FLAVORS = {"openai": Flavor(), "vllm": Flavor(), "mistral": Flavor(seed_field="random_seed", usage_option=False)}


class OpenAIEngine(RemoteEngine):
    kind = "openai"

    def request(self, messages: list[Message], params: GenerationParams,
                key: str | None) -> tuple[str, dict[str, str], dict]:
        flavor = FLAVORS[self.remote.flavor or "openai"]
        body: dict = {"model": self.remote.model, "messages": [_openai_message(m) for m in messages], "stream": True,
                      "max_tokens": params.max_tokens}
        if params.tools:
            body["tools"] = [{"type": "function", "function": {k: v for k, v in tool.items() if v is not None}}
                             for tool in params.tools]
            choice = params.tool_choice
            body["tool_choice"] = (choice if choice in ("auto", "none", "required")
                                   else {"type": "function", "function": {"name": choice}})
        if params.is_greedy:
            body["temperature"] = 0.0
        else:
            body["temperature"], body["top_p"] = params.temperature, params.top_p
        if flavor.usage_option:
            body["stream_options"] = {"include_usage": True}
        if params.seed is not None:
            body[flavor.seed_field] = params.seed
        if params.stop:
            body["stop"] = list(params.stop[:MAX_STOPS])
        if params.frequency_penalty:
            body["frequency_penalty"] = params.frequency_penalty
        if params.presence_penalty:
            body["presence_penalty"] = params.presence_penalty
        if params.logit_bias:  # token ids are the remote model's own: the caller knows its vocabulary
            body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
        headers = {"Accept": "text/event-stream"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return f"{self.remote.base_url}/chat/completions", headers, body

    def parse(self, events: Iterator[Event], where: str) -> Iterator[Delta]:
        for event in events:
            if event.data.strip() == "[DONE]":
                yield Delta(done=True)
                return
            data = event.json(where)
            if not isinstance(data, dict):
                raise RemoteError(f"{where} sent an event that is not an object", status=502)
            if data.get("error"):
                error = data["error"]
                said = error.get("message") if isinstance(error, dict) else error
                raise RemoteError(f"{where} failed mid-answer: {one_line(str(said), None)}", status=502)
            usage = data.get("usage")
            if isinstance(usage, dict):
                details = usage.get("prompt_tokens_details") or {}
                yield Delta(prompt_tokens=_int(usage.get("prompt_tokens")),
                            completion_tokens=_int(usage.get("completion_tokens")),
                            cached_tokens=_int(details.get("cached_tokens")) if isinstance(details, dict) else None)
            for choice in data.get("choices") or []:
                delta = choice.get("delta") or {}
                delta = delta if isinstance(delta, dict) else {}
                for call in delta.get("tool_calls") or ():
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict) and isinstance(call.get("index", 0), int):
                        yield Delta(call=(call.get("index", 0), call.get("id"), function.get("name"),
                                          str(function.get("arguments") or "")))
                text = delta.get("content")
                yield Delta(text=text if isinstance(text, str) else "", finish=choice.get("finish_reason") or None)


def _openai_message(message: Message) -> dict:
    """A message (``formats.tools`` shape for tool turns) as OpenAI's API takes it."""
    out: dict = {"role": message["role"], "content": message["content"]}
    if message.get("tool_calls"):
        out["content"] = message["content"] or None
        out["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in message["tool_calls"]
        ]
    if message["role"] == "tool":
        out["tool_call_id"] = message.get("tool_call_id")
    return out


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
