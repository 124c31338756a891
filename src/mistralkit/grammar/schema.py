"""A JSON Schema as a GBNF grammar for llama.cpp, built within limits llama.cpp provably handles.

Supported as llama-cpp-python's converter does (and the answers it allows are the same): ``type``
(one or a list), ``properties``/``required``/``additionalProperties`` (absent with ``properties``:
no other keys), ``items``/``prefixItems``, ``minItems``/``maxItems``, ``minLength``/``maxLength``,
``pattern`` (see ``pattern.py``), ``format`` date, time, date-time and uuid, ``enum``, ``const``,
``anyOf``/``oneOf``/``allOf``, local ``$ref`` (recursion allowed), ``nullable``; plus bounds on
integers and numbers (``numbers.py``). Other keywords (``uniqueItems``, ``multipleOf``, ...) are not
enforced, and an additional property's name is not checked against the declared ones. Required
properties come first in their order, then the optional ones in theirs.

Limits (a schema over them is refused with its place named, a 400 at the server): nesting depth
``MAX_DEPTH`` (``$ref`` hops count), ``MAX_NODES`` schema nodes, ``MAX_ENUM`` enum values in all,
``MAX_TEXT`` characters of property names, enum and const values (the last three are OpenAI's own
limits for structured outputs), ``MAX_OPTIONAL`` optional properties in one object (each is a way
the checker must keep open), counts up to ``gbnf.MAX_BOUND`` and the grammar's size (``gbnf.Budget``).
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any
from urllib.parse import unquote

from .gbnf import Grammar, GrammarError, literal, repeat
from .numbers import BOUNDS, bound, integer_bounds, integer_rule, number_rule
from .pattern import pattern_rule

MAX_DEPTH = 32
MAX_NODES = 5000
MAX_ENUM = 1000
MAX_TEXT = 120_000
MAX_OPTIONAL = 256

BUILTINS = {
    "space": '" "?',
    "char": r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    "string": r'"\"" char* "\"" space',
    "integer-part": "[0-9] | [1-9] [0-9]{1,15}",
    "integer": '"-"? integer-part space',
    "number": '"-"? integer-part ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? space',
    "boolean": '("true" | "false") space',
    "null": '"null" space',
    "value": "object | array | string | number | boolean | null",
    "object": '"{" space (string ":" space value ("," space string ":" space value)*)? "}" space',
    "array": '"[" space (value ("," space value)*)? "]" space',
    "date": '[0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [1-2] [0-9] | "3" [0-1])',
    "time": '([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{3})? '
            '("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])',
    "date-time": 'date "T" time',
    "uuid": '[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}',
}
NEEDS = {"string": ["char", "space"], "integer": ["integer-part", "space"], "number": ["integer-part", "space"],
         "boolean": ["space"], "null": ["space"], "value": ["object", "array", "string", "number", "boolean", "null"],
         "object": ["string", "value", "space"], "array": ["value", "space"], "date-time": ["date", "time"]}
FORMATS = ("date", "time", "date-time", "uuid")
TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")


def schema_grammar(schema: Any) -> str:
    """GBNF for ``schema``; ``GrammarError`` (naming the place in the schema) when it cannot be."""
    converter = _Converter(schema)
    root = converter.visit(schema, "", 0, "answer")
    return converter.grammar.text(root)


def json_object_grammar() -> str:
    """GBNF for any JSON object (``response_format: json_object``, Ollama's ``format: "json"``)."""
    return schema_grammar({"type": "object"})


class _Converter:
    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.grammar = Grammar()
        self.refs: dict[str, str] = {}  # $ref -> its rule
        self.nodes = self.enums = self.text = 0

    def builtin(self, name: str) -> str:
        if name not in self.grammar.rules:
            self.grammar.rules[name] = ""  # taken before its parts, which may refer back (value)
            for part in NEEDS.get(name, []):
                self.builtin(part)
            self.grammar.define(name, BUILTINS[name])
        return name

    def count_text(self, text: str, where: str) -> None:
        if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
            raise GrammarError("a lone surrogate (an escape like \\ud800) is not text", where)
        self.text += len(text)
        if self.text > MAX_TEXT:
            raise GrammarError(f"names, enum and const values total more than {MAX_TEXT:,} characters", where)

    def visit(self, node: Any, where: str, depth: int, hint: str) -> str:
        """The rule (or builtin) for ``node``."""
        if depth > MAX_DEPTH:
            raise GrammarError(f"the schema nests deeper than {MAX_DEPTH} levels ($ref hops count)", where)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise GrammarError(f"the schema has more than {MAX_NODES:,} parts", where)
        if node is True or node == {}:
            return self.builtin("value")
        if node is False:
            raise GrammarError("the schema false allows no value", where)
        if not isinstance(node, dict):
            raise GrammarError("a schema must be an object or a boolean", where)
        if "$ref" in node:
            return self.ref(node["$ref"], _at(where, "$ref"), depth)
        if node.get("nullable") is True:
            rest = {k: v for k, v in node.items() if k != "nullable"}
            return self.union([rest, {"type": "null"}], where, depth, hint, "nullable")
        for key in ("anyOf", "oneOf"):
            if key in node:
                rest = {k: v for k, v in node.items() if k not in (key, "title", "description")}
                options = node[key]
                if not isinstance(options, list) or not options:
                    raise GrammarError(f"{key} must be a non-empty list of schemas", where)
                merged = [_merge([rest, option]) if rest and isinstance(option, dict) else option for option in options]
                return self.union(merged, where, depth, hint, key)
        if "allOf" in node:
            parts = node["allOf"]
            if not isinstance(parts, list):
                raise GrammarError("allOf must be a list of schemas", where)
            resolved = [self.resolve(part["$ref"], where) if isinstance(part, dict) and "$ref" in part else part
                        for part in parts]
            return self.visit(
                _merge([{k: v for k, v in node.items() if k != "allOf"}, *resolved]), where, depth + 1, hint
            )
        types = node.get("type")
        if isinstance(types, list):
            if not types:
                raise GrammarError("type is an empty list", where)
            return self.union([{**node, "type": one} for one in types], where, depth, hint, "type")
        if "const" in node:
            return self.literals([node["const"]], _at(where, "const"), hint)
        if "enum" in node:
            values = node["enum"]
            if not isinstance(values, list) or not values:
                raise GrammarError("enum must be a non-empty list", _at(where, "enum"))
            return self.literals(values, _at(where, "enum"), hint)
        if types is not None and types not in TYPES:
            raise GrammarError(f"unknown type {types!r}", _at(where, "type"))
        return self.typed(node, types, where, depth, hint)

    def typed(self, node: dict, kind: str | None, where: str, depth: int, hint: str) -> str:
        if kind == "object" or (kind is None and ({"properties", "required"} & node.keys()
                                                   or node.get("additionalProperties", True) is not True)):
            return self.object(node, where, depth, hint)
        if kind == "array" or (kind is None and ({"items", "prefixItems"} & node.keys())):
            return self.array(node, where, depth, hint)
        if kind == "string" or (kind is None and ({"pattern", "format", "minLength", "maxLength"} & node.keys())):
            return self.string(node, where, hint)
        if kind == "integer":
            return self.number(node, where, hint, integer=True)
        if kind == "number":
            return self.number(node, where, hint, integer=False)
        if kind in ("boolean", "null"):
            return self.builtin(kind)
        return self.builtin("value")

    def ref(self, ref: Any, where: str, depth: int) -> str:
        if not isinstance(ref, str):
            raise GrammarError("$ref must be a string", where)
        if ref in self.refs:
            return self.refs[ref]
        target = self.resolve(ref, where)
        name = self.grammar.fresh(ref.rsplit("/", 1)[-1] or "ref")
        self.refs[ref] = name
        self.grammar.define(name, self.visit(target, ref, depth + 1, name), where)
        return name

    def resolve(self, ref: str, where: str) -> Any:
        if not ref.startswith("#"):
            raise GrammarError(f"only references inside the schema (#/...) are followed, not {ref[:80]!r}", where)
        node = self.schema
        for part in [p for p in ref[1:].split("/") if p]:
            key = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise GrammarError(f"$ref {ref[:80]!r} points at nothing", where)
        return node

    def union(self, options: list, where: str, depth: int, hint: str, key: str) -> str:
        names = [self.visit(option, _at(where, f"{key}[{i}]"), depth + 1, f"{hint}-{i}")
                 for i, option in enumerate(options)]
        return names[0] if len(names) == 1 else self.grammar.add(hint, " | ".join(names), where)

    def literals(self, values: list, where: str, hint: str) -> str:
        """Any one of these JSON values, written as ``json.dumps`` writes them, as a trie of rules (one
        alternative per distinct next character, not one per value: the checker keeps far fewer ways open)."""
        self.enums += len(values)
        if self.enums > MAX_ENUM:
            raise GrammarError(f"more than {MAX_ENUM:,} enum values in all", where)
        texts = []
        for value in values:
            try:
                text = json.dumps(value, ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                raise GrammarError(f"a value that is not JSON ({exc})", where) from None
            self.count_text(text, where)
            texts.append(text)
        self.builtin("space")
        return self.grammar.add(hint, f"{self.trie(sorted(set(texts)), hint, where)} space", where)

    def trie(self, texts: list[str], hint: str, where: str) -> str:
        """A radix tree of ``texts`` as rules, built without recursion (one level per value at worst)."""
        branches: dict[int, list[tuple[str, int | None]]] = {}  # node -> (literal, child node) per branch
        pending, order, ids = [(0, texts)], [], itertools.count(1)
        while pending:
            node, group = pending.pop()
            order.append(node)
            by_head: dict[str, list[str]] = {}
            for text in group:
                by_head.setdefault(text[:1], []).append(text)
            branches[node] = []
            for head, same in by_head.items():
                if not head:
                    branches[node].append(('""', None))
                    continue
                shared = _common_prefix(same)
                rest = [text[len(shared):] for text in same]
                child = None if rest == [""] else next(ids)
                if child is not None:
                    pending.append((child, rest))
                branches[node].append((literal(shared), child))
        symbols: dict[int, str] = {}
        for node in reversed(order):  # children before their parents
            parts = [f"{text} {symbols[child]}" if child is not None else text for text, child in branches[node]]
            symbols[node] = parts[0] if len(parts) == 1 else self.grammar.add(f"{hint}-t", " | ".join(parts), where)
        return symbols[0]

    def object(self, node: dict, where: str, depth: int, hint: str) -> str:
        properties = node.get("properties", {})
        required = node.get("required", [])
        if not isinstance(properties, dict) or not isinstance(required, list):
            raise GrammarError("properties must be an object and required a list", where)
        extra = node.get("additionalProperties", not properties)
        self.builtin("space")
        kvs: dict[str, str] = {}
        for name, schema in properties.items():
            self.count_text(name, _at(where, "properties"))
            value = self.visit(schema, _at(where, f"properties.{name}"), depth + 1, f"{hint}-{name}")
            kvs[name] = self.grammar.add(f"{hint}-{name}-kv", f'{literal(json.dumps(name, ensure_ascii=False))} space '
                                         f'":" space {value}', where)
        order = [name for name in required if name in kvs] + [name for name in kvs if name not in required]
        needed = [kvs[name] for name in order if name in required]
        optional = [kvs[name] for name in order if name not in required]
        if extra is not False:
            value = self.visit({} if extra is True else extra, _at(where, "additionalProperties"), depth + 1,
                               f"{hint}-extra")
            key = self.builtin("string")
            optional.append(self.grammar.add(f"{hint}-extra-kv", f'{key} ":" space {value}', where) + "+")
        if len(optional) > MAX_OPTIONAL:
            raise GrammarError(f"{len(optional)} optional properties in one object (at most {MAX_OPTIONAL})",
                               _at(where, "properties"), hint="mark more of them required")
        body = '"{" space ' + ' "," space '.join(needed)
        if optional:
            choices = self.optional(optional, hint, where)
            body += f' ("," space ({choices}))?' if needed else f" ({choices})?"
        return self.grammar.add(hint, body + ' "}" space', where)

    def optional(self, kvs: list[str], hint: str, where: str) -> str:
        """Alternatives for a non-empty run of the optional properties, in order: the first one present,
        then each later one or not. ``name+`` (additional properties, last) may repeat."""
        rests: dict[int, str] = {}  # i -> each of kvs[i:] or not (only where a choice needs it)
        after = ""
        for i in range(len(kvs) - 1, -1, -1):
            kv = kvs[i]
            one = f'"," space {kv.removesuffix("+")}'
            step = f"({one})*" if kv.endswith("+") else f"({one})?"
            if i > 0 or kv.endswith("+"):
                after = self.grammar.add(f"{hint}-rest", f"{step} {after}".strip(), where)
                rests[i] = after
        choices = []
        for i, kv in enumerate(kvs):
            then = rests[i] if kv.endswith("+") else rests.get(i + 1, "")
            choices.append(f"{kv.removesuffix('+')} {then}".strip())
        return " | ".join(choices)

    def array(self, node: dict, where: str, depth: int, hint: str) -> str:
        self.builtin("space")
        tuple_items = node.get("prefixItems", node["items"] if isinstance(node.get("items"), list) else None)
        if tuple_items is not None:
            if not isinstance(tuple_items, list):
                raise GrammarError("prefixItems must be a list of schemas", where)
            names = [self.visit(item, _at(where, f"prefixItems[{i}]"), depth + 1, f"{hint}-{i}")
                     for i, item in enumerate(tuple_items)]
            return self.grammar.add(hint, '"[" space ' + ' "," space '.join(names) + ' "]" space', where)
        item = self.visit(node.get("items", True), _at(where, "items"), depth + 1, f"{hint}-item")
        low, high = _count(node, "minItems", where), _count(node, "maxItems", where)
        low = low or 0
        if high == 0:
            return self.grammar.add(hint, '"[" space "]" space', where)
        following = self.grammar.add(f"{hint}-next", f'"," space {item}', where)
        more = repeat(self.grammar, following, max(low - 1, 0), None if high is None else high - 1, f"{hint}-items",
                      _at(where, "maxItems" if high is not None else "minItems"))
        items = f"{item} {more}".strip()
        return self.grammar.add(hint, f'"[" space {items if low else f"({items})?"} "]" space', where)

    def string(self, node: dict, where: str, hint: str) -> str:
        self.builtin("space")
        if "pattern" in node:
            if not isinstance(node["pattern"], str):
                raise GrammarError("pattern must be a string", _at(where, "pattern"))
            content = pattern_rule(self.grammar, node["pattern"], f"{hint}-pattern", _at(where, "pattern"))
            return self.grammar.add(hint, rf'"\"" {content} "\"" space', where)
        if node.get("format") in FORMATS:
            return self.grammar.add(hint, rf'"\"" {self.builtin(node["format"])} "\"" space', where)
        low, high = _count(node, "minLength", where), _count(node, "maxLength", where)
        if low is None and high is None:
            return self.builtin("string")
        chars = repeat(self.grammar, self.builtin("char"), low or 0, high, f"{hint}-chars",
                       _at(where, "maxLength" if high is not None and high > (low or 0) else "minLength"))
        return self.grammar.add(hint, rf'"\"" {chars} "\"" space', where)

    def number(self, node: dict, where: str, hint: str, integer: bool) -> str:
        try:
            if integer:
                low, high = integer_bounds(node)
                if low is None and high is None:
                    return self.builtin("integer")
                rule = integer_rule(low, high)
            else:
                given = {key: bound(node, key) for key in BOUNDS}
                if all(value is None for value in given.values()):
                    return self.builtin("number")
                rule = number_rule(**given)
        except ValueError as exc:
            raise GrammarError(str(exc), where) from None
        self.builtin("space")
        return self.grammar.add(hint, f"({rule}) space", where)


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _count(node: dict, key: str, where: str) -> int | None:
    value = node.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0 \
            or value != int(value):
        raise GrammarError(f"{key} must be a whole number >= 0, not {value!r}", _at(where, key))
    return int(value)


def _merge(parts: list) -> dict:
    """Schemas that must all hold, as one (properties and required joined; otherwise the last wins)."""
    out: dict = {}
    for part in parts:
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                out["properties"] = {**out.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                out["required"] = [*out.get("required", []), *[v for v in value if v not in out.get("required", [])]]
            else:
                out[key] = value
    return out


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)
    i = 0
    while i < len(first) and first[i] == last[i]:
        i += 1
    return first[:i]
