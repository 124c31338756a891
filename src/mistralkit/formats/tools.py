"""Tool calls in prompts and in answers.

Messages here are dicts: ``{"role": "system"|"user"|"assistant"|"tool", "content": str}``, an assistant
turn that called tools adds ``"tool_calls": [{"id", "name", "arguments"}]`` (arguments: JSON text),
a tool result adds ``"tool_call_id"`` (and ``"name"``). A tool is ``{"name", "description", "parameters"}``.

Mistral models get mistral-common's own tool layout (``MistralFormat.encode_with_tools``) and answer
``[TOOL_CALLS][{"name": ..., "arguments": {...}}]`` (v2/v3/v7/tekken); newer ones (tokenizer v11,
v13: Mistral Small 3.2, Devstral, Magistral) answer ``[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}`` per
call (v13 without the id), with ``[ARGS]`` and ``[CALL_ID]`` control tokens. A model whose Jinja chat
template takes ``tools`` (Llama 3.x, Qwen, Hermes, ...) gets its own template, fed as Hugging Face's
``apply_chat_template`` feeds it (``hf_messages``), and its answers are read by ``parse_template``.
Every other model gets the documented fallback layout, which only needs system/user/assistant turns:

* the system prompt ends with a block listing the tools as JSON and asking, when a call is wanted,
  for an answer that is exactly ``{"tool_call": {"name": "...", "arguments": {...}}}``;
* an assistant turn that called tools is that JSON (one line per call);
* tool results become a user turn of lines ``Tool result (name, call id): content``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
from collections.abc import Sequence

ALNUM = string.ascii_letters + string.digits
MISTRAL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")

FALLBACK_INSTRUCTION = (
    "You can call these tools (JSON Schema of their arguments given):\n{tools}\n"
    'To call one, answer with exactly {{"tool_call": {{"name": "<tool name>", "arguments": {{...}}}}}} '
    "and nothing else. Otherwise answer normally.")


def new_call_id() -> str:
    """``call_`` and 9 alphanumerics: the 9 are also a valid Mistral call id."""
    return "call_" + "".join(secrets.choice(ALNUM) for _ in range(9))


def mistral_call_id(call_id: str) -> str:
    """The 9-alphanumeric id mistral-common requires, for any id a client sends (stable per id)."""
    tail = call_id.removeprefix("call_")
    if MISTRAL_ID.match(tail):
        return tail
    digest = hashlib.sha256(call_id.encode("utf-8")).digest()
    return "".join(ALNUM[b % len(ALNUM)] for b in digest[:9])


def tool_spec(tools: Sequence[dict]) -> str:
    return json.dumps([{"name": t["name"], "description": t.get("description") or "",
                        "parameters": t.get("parameters") or {"type": "object", "properties": {}}}
                       for t in tools], ensure_ascii=False)


def fallback_messages(messages: Sequence[dict], tools: Sequence[dict]) -> list[dict]:
    """``messages`` (with tool turns) as plain system/user/assistant turns in the fallback layout."""
    out: list[dict] = []
    block = FALLBACK_INSTRUCTION.format(tools=tool_spec(tools)) if tools else ""
    rest = list(messages)
    system = rest.pop(0)["content"] if rest and rest[0]["role"] == "system" else ""
    if system or block:
        out.append({"role": "system", "content": "\n\n".join(p for p in (system, block) if p)})
    names = {c["id"]: c["name"] for m in rest for c in m.get("tool_calls") or ()}
    for message in rest:
        role, content = message["role"], message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            content = "\n".join(json.dumps({"tool_call": {"name": c["name"], "arguments": _json(c["arguments"])}},
                                           ensure_ascii=False) for c in message["tool_calls"])
        elif role == "tool":
            role, name = "user", message.get("name") or names.get(message.get("tool_call_id"), "tool")
            content = f"Tool result ({name}, {message.get('tool_call_id')}): {content}"
        if out and out[-1]["role"] == role == "user":  # several results, or results then a question
            out[-1] = {"role": "user", "content": f"{out[-1]['content']}\n{content}"}
        else:
            out.append({"role": role, "content": content})
    return out


def _json(text: str):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _leading_json(text: str):
    try:
        value, _ = json.JSONDecoder().raw_decode(text.strip())
    except ValueError:
        return None
    return value


def _call(item) -> dict | None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return None
    arguments = item.get("arguments", item.get("parameters", {}))
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"name": item["name"], "arguments": text}


def parse_fallback(text: str) -> list[dict] | None:
    """The calls in a fallback-layout answer (``{"tool_call": {...}}``, one per line), or None for text."""
    calls = []
    for line in text.strip().splitlines() or [""]:
        value = _leading_json(line)
        call = _call(value.get("tool_call")) if isinstance(value, dict) else None
        if call is None:
            return None
        calls.append(call)
    return calls


NAMED_CALL = re.compile(r"\[TOOL_CALLS\]\s*([^\[\]\s]+?)\s*(?:\[CALL_ID\]\s*([^\[\]\s]*?)\s*)?\[ARGS\]")


def parse_named_calls(text: str) -> list[dict] | None:
    """The calls in a v11/v13 answer, ``[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}`` per call (the
    ``[CALL_ID]`` part only in v11; its id is kept as ``"id"``), or None when it is not one.

    >>> parse_named_calls('[TOOL_CALLS]add[ARGS]{"a": 1}[TOOL_CALLS]neg[CALL_ID]k3Xp9Qz1b[ARGS]{"b": 2}')
    [{'name': 'add', 'arguments': '{"a": 1}'}, {'name': 'neg', 'arguments': '{"b": 2}', 'id': 'k3Xp9Qz1b'}]
    """
    body, calls = text.strip(), []
    decoder = json.JSONDecoder()
    while body:
        head = NAMED_CALL.match(body)
        if head is None:
            return None
        try:
            arguments, end = decoder.raw_decode(body, head.end())
        except ValueError:
            return None
        call = {"name": head.group(1), "arguments": json.dumps(arguments, ensure_ascii=False)}
        if head.group(2):
            call["id"] = head.group(2)
        calls.append(call)
        body = body[end:].strip()
    return calls or None


def parse_mistral(text: str, starts_with_tool_token: bool = False) -> list[dict] | None:
    """The calls in a Mistral answer: ``[TOOL_CALLS]`` then a JSON list of ``{"name", "arguments"}``,
    or v11/v13's ``[TOOL_CALLS]name[ARGS]{...}`` calls (``parse_named_calls``).

    llama.cpp leaves control tokens out of the text, so ``starts_with_tool_token`` says whether the
    answer's first token was ``[TOOL_CALLS]``; the JSON list alone is accepted too. (v11/v13 answers
    need their control tokens: render them with ``with_control_tokens``.)

    >>> parse_mistral('[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}}]')
    [{'name': 'add', 'arguments': '{"a": 1}'}]
    """
    body = text.strip()
    if "[ARGS]" in body:
        return parse_named_calls(body)
    marked = starts_with_tool_token or body.startswith("[TOOL_CALLS]")
    body = body.removeprefix("[TOOL_CALLS]").strip()
    if not marked and not body.startswith('[{"name"'):
        return None
    value = _leading_json(body)
    items = value if isinstance(value, list) else [value]
    calls = [_call(item) for item in items]
    return calls if calls and all(calls) else None


def hf_messages(messages: Sequence[dict]) -> list[dict]:
    """Messages in the shape chat templates expect (Hugging Face's convention): an assistant turn's
    ``tool_calls`` as ``{"id", "type": "function", "function": {"name", "arguments": <object>}}``,
    a tool result with ``tool_call_id`` and ``name``."""
    names = {c["id"]: c["name"] for m in messages for c in m.get("tool_calls") or ()}
    out = []
    for message in messages:
        turn = {"role": message["role"], "content": message.get("content") or ""}
        if message.get("tool_calls"):
            turn["tool_calls"] = [{"id": c["id"], "type": "function",
                                   "function": {"name": c["name"], "arguments": _json(c["arguments"])}}
                                  for c in message["tool_calls"]]
        if message["role"] == "tool":
            turn["tool_call_id"] = message.get("tool_call_id")
            turn["name"] = message.get("name") or names.get(message.get("tool_call_id"), "tool")
        out.append(turn)
    return out


def hf_tools(tools: Sequence[dict]) -> list[dict]:
    """Tools as chat templates expect them: OpenAI's ``{"type": "function", "function": {...}}``."""
    return [
        {
            "type": "function",
            "function": {
                "name": t["name"],
                "description": t.get("description") or "",
                "parameters": t.get("parameters") or {"type": "object", "properties": {}},
            },
        }
        for t in tools
    ]


TAGGED_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def parse_template(text: str) -> list[dict] | None:
    """The calls in an answer to a tool-aware chat template, or None for text. Accepted: Hermes/Qwen
    ``<tool_call>{"name", "arguments"}</tool_call>`` blocks, Mistral's ``[TOOL_CALLS][...]`` and
    ``[TOOL_CALLS]name[ARGS]{...}`` (``parse_mistral``), and
    answers that are only JSON calls (Llama 3.x ``{"name", "parameters"}``, one per line or ``;``
    separated, or a list), besides the fallback layout's ``{"tool_call": ...}`` lines.

    >>> parse_template('<tool_call>\\n{"name": "add", "arguments": {"a": 1}}\\n</tool_call>')
    [{'name': 'add', 'arguments': '{"a": 1}'}]
    >>> parse_template('{"name": "add", "parameters": {"a": 1}}; {"name": "add", "parameters": {"a": 2}}')[1]
    {'name': 'add', 'arguments': '{"a": 2}'}
    """
    body = text.strip()
    if "<tool_call>" in body:
        calls = [_call(_leading_json(block)) for block in TAGGED_CALL.findall(body)]
        return calls if calls and all(calls) else None
    if body.startswith("[TOOL_CALLS]"):
        return parse_mistral(body)
    fallback = parse_fallback(body)
    if fallback:
        return fallback
    calls: list[dict] = []
    decoder = json.JSONDecoder()
    rest = body.removeprefix("<|python_tag|>").strip()
    while rest:
        try:
            value, end = decoder.raw_decode(rest)
        except ValueError:
            return None
        items = value if isinstance(value, list) else [value]
        found = [_call(item) for item in items]
        if not found or not all(found):
            return None
        calls.extend(found)  # type: ignore[arg-type]
        rest = rest[end:].lstrip().removeprefix(";").lstrip()
    return calls or None


def with_control_tokens(token_ids: Sequence[int], token_text) -> str:
    """An answer's text with its control tokens written out (``token_text``: one token's text,
    control tokens included), for layouts whose calls are delimited by them (v11's ``[ARGS]``)."""
    return "".join(token_text(t) for t in token_ids)
