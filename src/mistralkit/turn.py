"""A chat turn made ready to generate: plain messages, tools, a tool choice and a response grammar in;
the prompt, the grammar and the reader of the answer out.

One place for every caller that turns a conversation into a generation: the OpenAI routes
(``/v1/chat/completions``, ``/v1/responses``), the Ollama routes (``/api/chat``, ``/api/generate``)
and ``mistralkit eval``'s tool items. Nothing here knows HTTP: the inputs are plain dicts, the errors
are ``BadParameter`` naming the field.

Tool choice: "none" leaves the tools out of the prompt; "auto" puts them in it (Mistral models in
mistral-common's layout, models whose chat template takes tools through that template, others in
the fallback layout of ``formats.tools``) and the model decides; "required" and a named function
constrain the output with a llama.cpp grammar built from the functions' ``parameters`` schemas, so
even a base model returns arguments that validate. A forced call needs an engine with grammars
(llama.cpp); others get a 400, except an engine that calls tools itself (a remote API, capability
``tools``), which gets the tools, the choice and the tool turns as they are and returns its calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .engines import require
from .engines.base import check_fits
from .errors import BadParameter
from .formats.base import gather_system
from .formats.mistral import MistralFormat
from .formats.tools import (fallback_messages, new_call_id, parse_fallback, parse_mistral, parse_template,
                            with_control_tokens)

CALL_OPENINGS = ("{", "[", "<tool_call>", "<|python_tag|>")  # how the answers of every layout here open a call
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
FIT_HINT = "shorten the messages or start the server with a larger --ctx"


# --- functions and the choice among them ------------------------------------------------------

def check_function_name(value: str) -> str:
    if not FUNCTION_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid function name: use 1-64 letters, digits, '_' or '-'")
    return value


def check_parameters(value: Any) -> Any:
    """A function's ``parameters``: a JSON Schema of type "object" (or nothing)."""
    if value and value.get("type") != "object":
        raise ValueError(f'must be a JSON Schema with "type": "object", got "type": {value.get("type")!r}')
    if value and not isinstance(value.get("properties", {}), dict):
        raise ValueError('"properties" must be an object')
    return value


@dataclass(frozen=True)
class Function:
    """A function the model may call: its name, what it does, its arguments' JSON Schema."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None

    def schema(self) -> dict[str, Any]:
        """The arguments' JSON Schema (an object with no declared properties when none was given)."""
        return self.parameters or {"type": "object", "properties": {}}

    def as_tool(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.schema()}


def functions_of(tools: Sequence[Any]) -> list[Function]:
    """OpenAI tool definitions (``{"type": "function", "function": {...}}``, or the Responses API's flat
    ``{"name": ...}``) as functions, checked as a request's are; a bad one names ``tools.N``."""
    out = []
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        definition = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(definition, dict) or not isinstance(definition.get("name"), str):
            raise BadParameter(f"{where}: a tool needs a function with a name", where)
        try:
            check_function_name(definition["name"])
            parameters = definition.get("parameters")
            if parameters is not None and not isinstance(parameters, dict):
                raise ValueError("parameters must be a JSON Schema object")
            check_parameters(parameters)
        except ValueError as exc:
            raise BadParameter(f"{where}: {exc}", where) from None
        out.append(Function(definition["name"], definition.get("description"), parameters))
    return out


def choose(functions: Sequence[Function], choice: Any = None) -> tuple[str, list[Function]]:
    """The tool-choice rules: ("none" | "auto" | "required" | "named", the functions the model may call).
    ``choice`` is OpenAI's ``tool_choice`` as JSON: absent, a mode, or ``{"function": {"name": ...}}``.

    >>> choose([])
    ('none', [])
    >>> choose([Function("f"), Function("g")], {"type": "function", "function": {"name": "g"}})[1]
    [Function(name='g', description=None, parameters=None)]
    """
    names = [f.name for f in functions]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise BadParameter(f"tools: the function {duplicate!r} is defined twice", "tools")
    if choice is not None and not functions:
        raise BadParameter("tool_choice is only allowed when tools are given", "tool_choice",
                           hint="send tools, or leave tool_choice out")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        if name not in names:
            raise BadParameter(f"tool_choice names the function {name!r}, which is not in tools ({', '.join(names)})",
                               "tool_choice")
        return "named", [f for f in functions if f.name == name]
    if choice not in (None, "none", "auto", "required"):
        raise BadParameter(f'tool_choice must be "none", "auto", "required" or a named function, got {choice!r}',
                           "tool_choice")
    mode = choice or ("auto" if functions else "none")
    return mode, list(functions) if mode != "none" else []


def grammar_for(mode: str, functions: Sequence[Function]) -> str | None:
    """GBNF for a forced call: the one function's arguments, or a choice of ``{"name", "arguments"}``."""
    if mode not in ("named", "required"):
        return None
    from .grammar import GrammarError, schema_grammar

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
        place = f"tools: {functions[index].name}'s parameters" + (f" at {where}" if where else "")
        raise BadParameter(f"{place}: {exc.reason}", "tools", exc.hint) from None


# --- the turn ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class NativeTools:
    """Tools for an engine that calls them itself, and its ``tool_choice`` ("auto", "none",
    "required" or a function's name)."""

    tools: tuple[dict, ...]
    choice: str


def _no_calls(text: str, token_ids: list[int]) -> None:
    return None


@dataclass
class Turn:
    """How to run one chat turn, and how to read its answer."""

    messages: list[dict]  # the conversation as text turns (what the history saves)
    prompt: list  # token ids, or messages for an engine without a tokenizer
    grammar: str | None
    named: str | None = None  # a forced single function: the output is its arguments alone
    parse: Callable[[str, list[int]], list[dict] | None] = field(default=_no_calls)  # the calls in an answer
    parallel: bool = True  # parallel_tool_calls: false keeps the first call of an answer only
    mode: str = "none"  # tool_choice: none, auto, required, named
    marker: int | None = None  # the token that opens a call ([TOOL_CALLS]), where the format has one
    native: NativeTools | None = None  # the engine calls tools itself (a remote API): what it is given
    tools: bool = True  # tools or tool turns are involved: the answer is read for calls

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


def involves_tools(messages: Sequence[dict], functions: Sequence[Function], choice: Any) -> bool:
    return bool(functions) or choice is not None or any(m["role"] == "tool" or m.get("tool_calls") for m in messages)


def prepare(engine, messages: list[dict], functions: Sequence[Function] = (), choice: Any = None, *,
            parallel: bool = True, grammar: str | None = None, grammar_field: str = "response_format",
            raw: str | None = None, answer_schema: dict | None = None) -> Turn:
    """The prompt, grammar and answer reader of a chat turn on ``engine``, checked: a grammar the
    engine cannot run or refuses, a prompt that does not fit its context, a bad tool choice are
    errors now (a 400 before anything streams). ``messages`` are OpenAI's, as dicts (tool turns
    included); ``grammar``: the response format's GBNF, ``grammar_field`` the field it came from;
    ``raw``: a text prompted as it is, without the chat format (Ollama's ``raw: true``). System
    messages after the first turn join the first one for a local model (``gather_system``).

    With tools, a response format holds where no call is forced: ``tool_choice`` none answers in
    the format; auto answers a call (``{"name", "arguments"}``) or the format's JSON (its schema,
    ``answer_schema``; ``{}`` for any JSON object), one grammar allowing either."""
    if engine.capabilities.tokens:
        messages = gather_system(messages)
    if involves_tools(messages, functions, choice):
        mode, chosen = choose(functions, choice)
        answer = (grammar, answer_schema or {}) if grammar is not None else None
        turn = _tool_turn(engine, messages, mode, chosen, parallel, answer, grammar_field)
    else:
        text_turns = [{"role": m["role"], "content": m["content"]} for m in messages]
        if raw is not None:
            require(engine, "tokens", "raw: true (a raw-text prompt)")
            prompt = engine.encode_text(raw)
        else:
            prompt = engine.prompt_tokens(text_turns) if engine.capabilities.tokens else text_turns
        if grammar is not None:
            require(engine, "grammar", grammar_field)
            engine.check_grammar(grammar)
        turn = Turn(text_turns, prompt, grammar, tools=False)
    if engine.capabilities.tokens:
        check_fits(turn.prompt, engine.n_ctx, hint=FIT_HINT)
    return turn


def _tool_turn(engine, messages: list[dict], mode: str, functions: list[Function], parallel: bool,
               answer: tuple[str, dict] | None = None, answer_field: str = "response_format") -> Turn:
    """``answer``: the response format's grammar and schema, where one was asked (see ``prepare``)."""
    text_turns = fallback_messages(messages, [])
    tools = [f.as_tool() for f in functions]
    if engine.capabilities.tools:  # a remote API: tools and tool turns go as they are, calls come back
        choice = functions[0].name if mode == "named" else mode
        return Turn(text_turns, messages, None, None, _no_calls, parallel, mode, None,
                    NativeTools(tuple(tools), choice))
    grammar = grammar_for(mode, functions)
    if answer is not None and mode in ("auto", "none"):
        grammar = answer[0] if mode == "none" else _call_or_answer_grammar(functions, answer[1])
        require(engine, "grammar", answer_field)
    if grammar is not None:
        require(engine, "grammar", f"tool_choice={mode!r}")
        engine.check_grammar(grammar)
    chat_format = engine.format
    marker = None
    if isinstance(chat_format, MistralFormat) and chat_format.tool_calls_token is not None:
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
        parse = _no_calls
    elif answer is not None:  # auto with a response format: a call's JSON, or the answer's
        names = {f.name for f in functions}

        def parse(text: str, token_ids: list[int]) -> list[dict] | None:
            return _parse_call_json(text, names)
    return Turn(text_turns, prompt, grammar, functions[0].name if mode == "named" else None, parse, parallel, mode,
                marker)


def _single_token(engine, text: str) -> int | None:
    """The id of the one control token that ``text`` is in this engine's vocabulary, or None."""
    ids = engine.tokenize(text, special=True)
    return ids[0] if len(ids) == 1 and engine.token_text(ids[0]) == text else None


def _call_or_answer_grammar(functions: Sequence[Function], answer_schema: dict) -> str:
    """GBNF for a call of one of ``functions`` (as ``required`` writes it) or the answer's JSON."""
    from .grammar import GrammarError, schema_grammar

    calls = [{"type": "object", "properties": {"name": {"const": f.name}, "arguments": f.schema()},
              "required": ["name", "arguments"], "additionalProperties": False} for f in functions]
    try:
        return schema_grammar({"anyOf": [*calls, answer_schema or {"type": "object"}]})
    except GrammarError as exc:  # each part compiled alone before; together they still may not
        raise BadParameter(f"tools with response_format: {exc.reason}", "response_format", exc.hint) from None


def _parse_call_json(text: str, names: set[str]) -> list[dict] | None:
    """A call when the answer is ``{"name": <a tool>, "arguments": {...}}`` and nothing else; None: the answer."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and value.keys() == {"name", "arguments"} and value["name"] in names:
        return [{"name": value["name"], "arguments": json.dumps(value["arguments"], ensure_ascii=False)}]
    return None


def _parse_required(text: str, token_ids: list[int]) -> list[dict] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None  # cut short (max_tokens): the text is returned as it is
    return [{"name": value["name"], "arguments": json.dumps(value["arguments"], ensure_ascii=False)}]


# --- a required call, read as it streams ------------------------------------------------------

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
