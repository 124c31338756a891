"""A stand-in for Anthropic's Messages API, which cannot be reached from the tests.

A real HTTP server on 127.0.0.1 (a thread) answering ``POST /v1/messages``, streamed and not, in
the shapes of https://docs.anthropic.com/en/api/messages (the events ``message_start``,
``content_block_start``, ``ping``, ``content_block_delta``, ``content_block_stop``,
``message_delta``, ``message_stop``). It checks what the real API checks and answers its errors
in its JSON shape: ``x-api-key`` (401), ``anthropic-version`` (400), ``max_tokens`` (400), a
``system`` role inside ``messages`` (400: the system prompt is a top-level field), an unknown
model (404). The answer is deterministic: ``echo:`` and the words of the last user message
(``[SYSTEM]`` first when there is a system prompt), one word per token and per delta.

With ``tools`` and a ``tool_choice`` of ``tool`` (or ``any``: the first tool), the answer is one
``tool_use`` block calling it with ``{"echo": <the last user text>}`` (streamed as
``input_json_delta`` parts), ``stop_reason`` ``tool_use``. A ``tool_result`` must answer a
``tool_use`` id of the assistant turn before it (400 otherwise); the echo of a turn of results is
their contents.

For the retry and timeout tests, ``script`` holds HTTP codes to answer (with ``retry_after``)
before answering normally, and ``delay_s`` waits before any answer.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

MODELS = ("claude-stub-1",)
VERSION = "2023-06-01"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               429: "rate_limit_error", 500: "api_error", 503: "overloaded_error", 529: "overloaded_error"}


class Stub:
    """``with Stub(key) as stub:`` -> ``stub.url`` (the base_url; requests go to ``/v1/messages``)."""

    def __init__(self, key: str = "stub-key") -> None:
        self.key = key
        self.script: list[int] = []
        self.retry_after: str | None = None
        self.delay_s = 0.0
        self.word_delay_s = 0.0
        self.requests: list[dict] = []  # every request: {"headers": {...}, "body": {...}}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stub.handle(self)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # the API
    def handle(self, http: BaseHTTPRequestHandler) -> None:
        length = int(http.headers.get("content-length") or 0)
        raw = http.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            return self.error(http, 400, "request body is not valid JSON")
        self.requests.append({"headers": {k.lower(): v for k, v in http.headers.items()}, "body": body})
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.script:
            return self.error(http, self.script.pop(0), "scripted failure", self.retry_after)
        if http.path != "/v1/messages":
            return self.error(http, 404, f"no route {http.path}")
        refusal = self.refuse(http, body)
        if refusal:
            return self.error(http, *refusal)
        call = self.tool_call(body)
        if call is not None:
            return self.call(http, body, call)
        words, stop_reason, prompt_words = self.answer(body)
        if body.get("stream"):
            return self.stream(http, body, words, stop_reason, prompt_words)
        message = self.message(body, "".join(words), stop_reason, prompt_words, len(words))
        self.send(http, 200, "application/json", json.dumps(message).encode())

    def refuse(self, http: BaseHTTPRequestHandler, body: dict) -> tuple[int, str] | None:
        if http.headers.get("x-api-key") != self.key:
            return 401, "invalid x-api-key"
        if http.headers.get("anthropic-version") != VERSION:
            return 400, "anthropic-version: header is required"
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            return 400, "max_tokens: Field required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return 400, "messages: Field required"
        for i, m in enumerate(messages):
            if m.get("role") not in ("user", "assistant"):
                return 400, (f"messages.{i}.role: Input should be 'user' or 'assistant' (a system prompt goes "
                             "in the top-level system parameter)")
        called: set[str] = set()
        for i, m in enumerate(messages):
            blocks = m["content"] if isinstance(m.get("content"), list) else []
            for block in blocks:
                if block.get("type") == "tool_result" and block.get("tool_use_id") not in called:
                    return 400, f"messages.{i}: tool_result {block.get('tool_use_id')!r} answers no tool_use before it"
            called = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
        if "top_p" in body and "temperature" in body:
            return 400, "temperature and top_p cannot both be specified for this model"
        if body.get("model") not in MODELS:
            return 404, f"model: {body.get('model')}"
        return None

    @staticmethod
    def text_of(content) -> str:
        if isinstance(content, list):  # blocks: text, or tool results
            return " ".join(str(b.get("text") or b.get("content") or "") for b in content)
        return str(content)

    def tool_call(self, body: dict) -> dict | None:
        choice, tools = body.get("tool_choice") or {}, body.get("tools") or []
        if not tools or choice.get("type") not in ("tool", "any"):
            return None
        name = choice.get("name") if choice["type"] == "tool" else tools[0]["name"]
        last = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        return {"type": "tool_use", "id": "toolu_stub1", "name": name, "input": {"echo": self.text_of(last)}}

    def call(self, http: BaseHTTPRequestHandler, body: dict, call: dict) -> None:
        if not body.get("stream"):
            message = {**self.message(body, "", "tool_use", 1, 1), "content": [call]}
            return self.send(http, 200, "application/json", json.dumps(message).encode())
        http.send_response(200)
        http.send_header("content-type", "text/event-stream; charset=utf-8")
        http.end_headers()
        arguments = json.dumps(call["input"])
        parts = [arguments[:5], arguments[5:12], arguments[12:]]
        events = [("message_start", {"type": "message_start", "message": self.message(body, "", None, 1, 1)}),
                  ("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {**call, "input": {}}})]
        events += [
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": part},
                },
            )
            for part in parts
        ]
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                                      "usage": {"output_tokens": len(parts)}}),
                   ("message_stop", {"type": "message_stop"})]
        for name, data in events:
            http.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        http.wfile.flush()

    def answer(self, body: dict) -> tuple[list[str], str, int]:
        """The answer's tokens (a word and the spaces after it), its stop_reason, and the prompt's tokens."""
        last = self.text_of(next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user"))
        system = body.get("system")
        text = " ".join(["echo:", *([f"[{system}]"] if system else []), *str(last).split()])
        prompt_words = (sum(len(self.text_of(m["content"]).split()) for m in body["messages"])
                        + len(str(system or "").split()))
        stop_reason = "end_turn"
        for stop in body.get("stop_sequences") or []:
            if stop in text:
                text, stop_reason = text[: text.index(stop)], "stop_sequence"
        tokens = re.findall(r"\S+\s*|\s+", text)
        if len(tokens) > body["max_tokens"]:
            tokens, stop_reason = tokens[: body["max_tokens"]], "max_tokens"
        return tokens, stop_reason, prompt_words

    def message(self, body: dict, text: str, stop_reason: str | None, prompt: int, out: int) -> dict:
        return {"id": "msg_stub", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": text}] if text else [], "stop_reason": stop_reason,
                "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": out}}

    def stream(self, http: BaseHTTPRequestHandler, body: dict, words: list[str], stop_reason: str,
               prompt: int) -> None:
        http.send_response(200)
        http.send_header("content-type", "text/event-stream; charset=utf-8")
        http.end_headers()

        def event(name: str, data: dict) -> None:
            http.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            http.wfile.flush()

        try:
            event("message_start", {"type": "message_start", "message": self.message(body, "", None, prompt, 1)})
            event("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})
            event("ping", {"type": "ping"})
            for word in words:
                time.sleep(self.word_delay_s)
                event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": word}})
            event("content_block_stop", {"type": "content_block_stop", "index": 0})
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": len(words)},
                },
            )
            event("message_stop", {"type": "message_stop"})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a cancelled generation)

    def error(self, http: BaseHTTPRequestHandler, status: int, message: str, retry_after: str | None = None) -> None:
        body = {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}
        self.send(http, status, "application/json", json.dumps(body).encode(),
                  {"retry-after": retry_after} if retry_after else {})

    @staticmethod
    def send(http: BaseHTTPRequestHandler, status: int, kind: str, data: bytes, headers: dict | None = None) -> None:
        http.send_response(status)
        http.send_header("content-type", kind)
        http.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            http.send_header(name, value)
        http.end_headers()
        http.wfile.write(data)
