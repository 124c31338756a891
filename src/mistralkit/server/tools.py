"""OpenAI tool calling for ``/v1/chat/completions``: a request in, (prompt, grammar, parser) out.

``tool_choice``: "none" leaves the tools out of the prompt; "auto" puts them in it (Mistral models in
mistral-common's layout, models whose chat template takes tools through that template, others in
the fallback layout of ``formats.tools``) and the model decides;
"required" and a named function constrain the output with a llama.cpp grammar built from the
functions' ``parameters`` schemas, so even a base model returns arguments that validate. A forced
call needs an engine with grammars (llama.cpp); others get a 400, except an engine that calls tools
itself (a remote API, capability ``tools``), which gets the tools, the choice and the tool turns as
they are and returns its calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..engines import require
from ..formats.mistral import MistralFormat
from ..formats.tools import (fallback_messages, new_call_id, parse_fallback, parse_mistral, parse_template,
                             with_control_tokens)
from .schemas import ChatMessage, ChatRequest, FunctionDefinition


CALL_OPENINGS = ("{", "[", "<tool_call>", "<|python_tag|>")  # how the answers of every layout here open a call


@dataclass(frozen=True)
class NativeTools:
    """Tools for an engine that calls them itself, and its ``tool_choice`` ("auto", "none",
    "required" or a function's name)."""

    tools: tuple[dict, ...]
    choice: str


@dataclass
class ToolTurn:
    """How to run a chat request that involves tools, and how to read its answer."""

    messages: list[dict]  # the conversation as text turns (what the history saves)
    prompt: list  # token ids, or messages for an engine without a tokenizer
    grammar: str | None
    named: str | None  # a forced single function: the output is its arguments alone
    parse: Callable[[str, list[int]], list[dict] | None]  # the calls in an answer, or None for text
    parallel: bool = True  # parallel_tool_calls: false keeps the first call of an answer only
    mode: str = "auto"  # tool_choice: none, auto, required, named
    marker: int | None = None  # the token that opens a call ([TOOL_CALLS]), where the format has one
    native: NativeTools | None = None  # the engine calls tools itself (a remote API): what it is given

    def may_be_call(self, text: str, token_ids: list[int]) -> bool:
        """Whether an answer that begins with ``text`` can still turn out to be a call (False: it is
        text, and can stream as it comes)."""
        if self.native is not None:
            return False  # its calls come apart from its text
        if self.mode in ("required", "named"):
            return True
        if self.mode != "auto":
            return False
        if self.marker is not None and token_ids[:1] == [self.marker]:
            return True
        head = text.lstrip()
        return any(head.startswith(opening) or opening.startswith(head) for opening in CALL_OPENINGS)

    def calls(self, text: str, token_ids: list[int], native: Sequence[dict] = ()) -> list[dict] | None:
        """OpenAI ``tool_calls`` for an answer, or None when the model answered with text; ``native``:
        the calls an engine with native tools made (their ids are kept: the remote chose them)."""
        if self.native is not None:
            found = [{"name": c["name"], "arguments": c["arguments"] or "{}"} for c in native]
            ids = [c.get("id") or new_call_id() for c in native]
        else:
            found = [{"name": self.named, "arguments": text.strip()}] if self.named else self.parse(text, token_ids)
            ids = [call.pop("id", None) or new_call_id() for call in found or ()]  # v11 answers carry ids
        found = found if self.parallel or not found else found[:1]
        return [{"id": i, "type": "function", "function": call} for i, call in zip(ids, found or ())] or None


def message_dict(m: ChatMessage) -> dict:
    """A request message as ``formats.tools`` reads it."""
    out = m.plain()
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                             for c in m.tool_calls]
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id
        if m.name:
            out["name"] = m.name
    return out


def involves_tools(body: ChatRequest) -> bool:
    return (
        bool(body.tools) or body.tool_choice is not None or any(m.role == "tool" or m.tool_calls for m in body.messages)
    )


def _tool(f: FunctionDefinition) -> dict:
    return {"name": f.name, "description": f.description, "parameters": f.schema()}


def grammar_for(mode: str, functions: list[FunctionDefinition]) -> str | None:
    """GBNF for a forced call: the one function's arguments, or a choice of ``{"name", "arguments"}``."""
    if mode not in ("named", "required"):
        return None
    from ..grammar import GrammarError, schema_grammar
    from .schemas import BadParameter

    if mode == "named":
        schema = functions[0].schema()
    else:
        schema = {"oneOf": [{"type": "object", "properties": {"name": {"const": f.name}, "arguments": f.schema()},
                             "required": ["name", "arguments"]} for f in functions]}
    try:
        return schema_grammar(schema)
    except GrammarError as exc:
        where, index = exc.where, 0
        if mode == "required":  # oneOf[i].properties.arguments... is function i's parameters
            found = re.match(r"oneOf\[(\d+)\]\.properties\.arguments\.?", where)
            index, where = (int(found[1]), where[found.end():]) if found else (0, where)
        message = exc.reason
        place = f"tools: {functions[index].name}'s parameters" + (f" at {where}" if where else "")
        raise BadParameter(f"{place}: {message}", "tools", exc.hint) from None


REQUIRED_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')


class RequiredCall:
    """A ``required`` call read as it is generated: the grammar writes ``{"name": ..., "arguments":
    {...}}``, so the name is known once its string closes and the arguments are every character
    after ``"arguments":`` up to the end of their object (``feed`` returns each new fragment)."""

    def __init__(self) -> None:
        self.text = ""
        self.name: str | None = None
        self.done = False  # the arguments' object closed
        self._start = -1  # where the arguments begin in ``text``
        self._sent = 0  # characters of the arguments returned
        self._seen = 0  # characters of the arguments scanned
        self._depth = 0
        self._in_string = self._escaped = False

    def feed(self, piece: str) -> str:
        """Take the next piece of the answer; the arguments' new characters (after the name is known)."""
        self.text += piece
        if self.name is None:
            head = REQUIRED_HEAD.match(self.text)
            if head is None or head.end() == len(self.text):
                return ""  # the whitespace after "arguments": may go on
            self.name, self._start = json.loads(head.group(1)), head.end()
        if self.done:
            return ""
        arguments = self.text[self._start:]
        end = self._scan(arguments)
        upto = len(arguments) if end is None else end
        fragment, self._sent = arguments[self._sent:upto], upto
        return fragment

    def _scan(self, arguments: str) -> int | None:
        """Advance the brace count over the new characters; the end of the object, once it closed."""
        for i in range(self._seen, len(arguments)):
            ch = arguments[i]
            self._seen = i + 1
            if self._in_string:
                self._escaped, self._in_string = (False, True) if self._escaped else (ch == "\\", ch != '"')
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self.done = True
                    return i + 1
        return None


def _parse_required(text: str, token_ids: list[int]) -> list[dict] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None  # cut short (max_tokens): the text is returned as it is
    return [{"name": value["name"], "arguments": json.dumps(value["arguments"], ensure_ascii=False)}]


def prepare(body: ChatRequest, engine) -> ToolTurn:
    """The prompt, grammar and answer parser for a request with tools or tool turns."""
    mode, functions = body.chosen_tools()
    if engine.capabilities.tools:  # a remote API: tools and tool turns go as they are, calls come back
        messages = [message_dict(m) for m in body.messages]
        choice = functions[0].name if mode == "named" else mode
        return ToolTurn(fallback_messages(messages, []), messages, None, None, lambda text, ids: None,
                        body.parallel_tool_calls, mode, None, NativeTools(tuple(_tool(f) for f in functions), choice))
    grammar = grammar_for(mode, functions)
    if grammar is not None:
        require(engine, "grammar", f"tool_choice={mode!r}")
        engine.check_grammar(grammar)
    messages = [message_dict(m) for m in body.messages]
    tools = [_tool(f) for f in functions]
    chat_format = engine.format
    mistral = isinstance(chat_format, MistralFormat) and chat_format.tool_calls_token is not None
    text_turns = fallback_messages(messages, [])
    marker = None
    if mistral:
        prompt = chat_format.encode_with_tools(messages, tools)
        marker = chat_format.tool_calls_token

        def parse(text: str, token_ids: list[int]) -> list[dict] | None:
            return parse_mistral(text, bool(token_ids) and token_ids[0] == marker)
    elif chat_format is not None and chat_format.supports_tools and engine.capabilities.tokens:
        prompt = chat_format.encode_with_tools(messages, tools)
        marker = _single_token(engine, "[TOOL_CALLS]")

        def parse(text: str, token_ids: list[int]) -> list[dict] | None:
            if marker is not None and marker in token_ids:  # Mistral's layouts: read with the control tokens
                return parse_template(with_control_tokens(token_ids, engine.token_text))
            return parse_template(text)
    else:
        prompt = fallback_messages(messages, tools)
        if engine.capabilities.tokens:
            prompt = engine.prompt_tokens(prompt)

        def parse(text: str, token_ids: list[int]) -> list[dict] | None:
            return parse_fallback(text)
    if mode == "required":
        parse = _parse_required
    elif mode == "none":
        parse = lambda text, token_ids: None  # noqa: E731
    return ToolTurn(text_turns, prompt, grammar, functions[0].name if mode == "named" else None, parse,
                    body.parallel_tool_calls, mode, marker)


def _single_token(engine, text: str) -> int | None:
    """The id of the one control token that ``text`` is in this engine's vocabulary, or None."""
    ids = engine.tokenize(text, special=True)
    return ids[0] if len(ids) == 1 and engine.token_text(ids[0]) == text else None
