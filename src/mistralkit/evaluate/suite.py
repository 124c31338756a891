"""Evaluation suites: JSONL files of items, each scored one way.

One JSON object per line (blank lines skipped)::

    {"id": "capital", "prompt": "What is the capital of France?", "expected": "Paris", "tags": ["geo"]}
    {"id": "mc1", "messages": [{"role": "user", "content": "2 + 2 = ?"}], "choices": ["3", "4"], "expected": "4"}
    {"id": "year", "prompt": "When did it open?", "pattern": "\\b1889\\b"}
    {"id": "open", "prompt": "Summarise: ..."}                      # only with a judge (--judge)
    {"id": "call", "prompt": "Weather in Paris?", "tools": [...], "expected_call": {"name": "get_weather",
     "arguments": {"city": "Paris"}}}

How an item is scored follows from its keys: ``expected_call`` -> a tool call (``tools`` as OpenAI
defines them, optional ``tool_choice``; the answer must call that function with arguments that
contain the expected ones, see ``scorers.call_matches``); ``choices`` -> multiple choice by log-probability
(``expected`` is the right choice, or its index); ``pattern`` -> regex search in the output;
``expected`` -> normalized exact match, or containment with ``"match": "contains"`` (or
``--match contains`` for the whole suite); none of them -> the LLM judge, which must then be
configured. Every problem names ``FILE:LINE: FIELD``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DatasetError, InvalidParameter
from ..formats.base import ROLES, Message
from ..text import decode
from ..tune.data import json_object

SCORERS = ("tool_call", "choice", "regex", "exact", "contains", "judge")
KEYS = {"id", "prompt", "messages", "system", "expected", "choices", "pattern", "tags", "match", "tools",
        "tool_choice", "expected_call"}


@dataclass(frozen=True)
class Item:
    id: str
    messages: tuple[Message, ...]
    scorer: str
    expected: str | None = None
    choices: tuple[str, ...] = ()
    answer: int | None = None  # index of the right choice
    pattern: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    line: int = 0
    tools: tuple[dict, ...] = ()  # OpenAI tool definitions (tool_call items)
    tool_choice: Any = "auto"
    expected_call: dict | None = None  # {"name": ..., "arguments": {...}}


def _messages(obj: dict, fail) -> tuple[Message, ...]:
    if ("prompt" in obj) == ("messages" in obj):
        fail('give either "prompt" or "messages"', "prompt")
    if "prompt" in obj:
        if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
            fail("must be a non-empty string", "prompt")
        system = obj.get("system")
        if system is not None and not isinstance(system, str):
            fail("must be a string", "system")
        head: list[Message] = [{"role": "system", "content": system}] if system else []
        return (*head, {"role": "user", "content": obj["prompt"]})
    turns = obj["messages"]
    if not isinstance(turns, list) or not turns:
        fail("must be a non-empty list of messages", "messages")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            fail(f"each message needs a role ({', '.join(ROLES)}) and a string content", f"messages[{i}]")
        out.append({"role": turn["role"], "content": turn["content"]})
    if out[-1]["role"] != "user":
        fail("the last message must be the user's question", f"messages[{len(out) - 1}]")
    return tuple(out)


def _tool_call(obj: dict, fail) -> dict[str, Any]:
    """The tool_call item's fields, checked as the server checks a request (and the expected call)."""
    from ..errors import BadParameter
    from ..turn import choose, functions_of

    tools = obj.get("tools")
    if not isinstance(tools, list) or not tools:
        fail("a tool_call item needs a non-empty list of tools", "tools")
    tools = [{"type": "function", "function": t} if isinstance(t, dict) and "function" not in t and "name" in t
             else t for t in tools]  # the Responses API's flat shape too
    choice = obj.get("tool_choice", "auto")
    try:
        choose(functions_of(tools), choice)
    except BadParameter as exc:
        fail(exc.message, exc.param)
    expected = obj["expected_call"]
    if not isinstance(expected, dict) or not isinstance(expected.get("name"), str):
        fail('must be an object {"name": ..., "arguments": {...}}', "expected_call")
    names = [t["function"]["name"] for t in tools]
    if expected["name"] not in names:
        fail(f"names {expected['name']!r}, which is not one of the tools ({', '.join(names)})", "expected_call.name")
    if not isinstance(expected.get("arguments", {}), dict) or set(expected) - {"name", "arguments"}:
        fail('must be an object {"name": ..., "arguments": {...}}', "expected_call")
    return {"tools": tuple(tools), "tool_choice": choice,
            "expected_call": {"name": expected["name"], "arguments": expected.get("arguments", {})}}


def _choices(obj: dict, fail) -> tuple[tuple[str, ...], int]:
    choices = obj["choices"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        fail("must be a list of at least two non-empty strings", "choices")
    expected = obj.get("expected")
    if isinstance(expected, int) and not isinstance(expected, bool) and 0 <= expected < len(choices):
        return tuple(choices), expected
    if isinstance(expected, str) and expected in choices:
        return tuple(choices), choices.index(expected)
    fail("must be one of the choices (or its index)", "expected")
    raise AssertionError  # fail raises


def parse_item(raw: str, *, path: str, line: int, judge: bool, match: str = "exact") -> Item:
    def fail(message: str, where: str = "", hint: str | None = None):
        raise DatasetError(message, hint, path=path, line=line, field=where)

    obj = json_object(raw, fail)
    unknown = sorted(set(obj) - KEYS)
    if unknown:
        fail(f"unknown key {unknown[0]!r}", unknown[0], hint=f"keys: {', '.join(sorted(KEYS))}")
    item_id = obj.get("id", f"line-{line}")
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool) or str(item_id) == "":
        fail("must be a non-empty string or number", "id")
    tags = obj.get("tags", [])
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        fail("must be a list of strings", "tags")
    messages = _messages(obj, fail)
    common = dict(id=str(item_id), messages=messages, tags=tuple(tags), line=line)
    if "expected_call" in obj:
        fields = _tool_call(obj, fail)
        want = fields["expected_call"]
        shown = f"{want['name']}({json.dumps(want['arguments'], ensure_ascii=False)})"  # as reports show calls
        return Item(scorer="tool_call", expected=shown, **common, **fields)
    if "tools" in obj or "tool_choice" in obj:
        fail("tools are only used by tool_call items: add expected_call", "expected_call")
    if "choices" in obj:
        choices, answer = _choices(obj, fail)
        return Item(scorer="choice", choices=choices, answer=answer, expected=choices[answer], **common)
    if "pattern" in obj:
        if not isinstance(obj["pattern"], str) or not obj["pattern"]:
            fail("must be a non-empty regular expression", "pattern")
        try:
            re.compile(obj["pattern"])
        except re.error as exc:
            fail(f"not a valid regular expression: {exc}", "pattern")
        return Item(scorer="regex", pattern=obj["pattern"], **common)
    if "expected" in obj:
        if not isinstance(obj["expected"], str) or not obj["expected"].strip():
            fail("must be a non-empty string", "expected")
        how = obj.get("match", match)
        if how not in ("exact", "contains"):
            fail("must be exact or contains", "match")
        return Item(scorer=how, expected=obj["expected"], **common)
    if not judge:
        fail('nothing to score against: give "expected", "choices" or "pattern"', "expected",
             hint="or configure a judge model with --judge MODEL to score free answers")
    return Item(scorer="judge", **common)


def read_suite(path: str | Path, *, judge: bool = False, match: str = "exact") -> list[Item]:
    """Every item of a suite file; ids must be unique (resume keys on them)."""
    path = Path(path)
    if match not in ("exact", "contains"):
        raise InvalidParameter(f"--match {match!r}: must be exact or contains")
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise InvalidParameter(f"suite {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise InvalidParameter(f"suite {path} is a folder, not a JSONL file") from exc
    items: list[Item] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(data.splitlines(), start=1):
        raw = decode(line, f"{path}:{number}")
        if not raw.strip():
            continue
        item = parse_item(raw, path=str(path), line=number, judge=judge, match=match)
        if item.id in seen:
            raise DatasetError(f"duplicate id {item.id!r} (first on line {seen[item.id]})", path=str(path),
                               line=number, field="id")
        seen[item.id] = number
        items.append(item)
    if not items:
        raise InvalidParameter(f"suite {path} has no items")
    return items
