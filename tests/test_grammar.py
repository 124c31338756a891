"""The grammars mistralkit writes (``mistralkit.grammar``), checked by llama.cpp's own grammar engine.

Three kinds of test: what a schema lets through and what it refuses (the oracle is llama.cpp's
grammar checker, fed the text token by token; every accepted example is also valid for
``jsonschema``); hostile schemas, each either refused with the place in the schema named or compiled
by llama.cpp in a child process that must neither crash nor take long; and the number rules,
checked exhaustively around their bounds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from grammar_oracle import Oracle
from mistralkit.grammar import GrammarError, json_object_grammar, schema_grammar


@pytest.fixture(scope="module")
def oracle(model) -> Oracle:
    return Oracle(str(model.path))


PERSON = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "maxLength": 12},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "tags": {"type": "array", "items": {"enum": ["a", "ab", "b"]}, "maxItems": 3}}}
TREE = {"$defs": {"node": {"type": "object", "required": ["v", "kids"], "properties": {
    "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
    "$ref": "#/$defs/node"}

CASES = [  # (schema, accepted texts, refused texts)
    (PERSON, ['{"name": "Bob"}', '{"name": "Bob", "age": 7}', '{"name":"Bo","tags":["ab", "a"]}',
              '{"name": "Bob", "age": 7, "tags": []}'],
     ['{"name": "Bob", "age": 121}', '{"name": "Bobbbbbbbbbbbbbbbb"}', '{"age": 3, "name": "B"}',
      '{"name": "B", "tags": ["a", "a", "a", "a"]}', '{"name": "B", "extra": 1}', '{}']),
    ({"type": "object", "properties": {"a": {"type": "boolean"}}, "additionalProperties": {"type": "integer"}},
     ['{"a": true, "x": 1, "y": -2}', '{"x": 1}', "{}"], ['{"x": "s"}', '{"a": 1, "x": true}']),
    ({"type": "object"}, ['{"any": [1, {"b": null}], "c": "d"}', "{}"], ["[]", '"s"']),
    ({"enum": ["a", "aa", "aaa", 3, None, {"k": [1]}]},
     ['"a"', '"aa"', '"aaa"', "3", "null", '{"k": [1]}'], ['"aaaa"', '""', "4", '{"k": [2]}']),
    ({"const": "Paris"}, ['"Paris"'], ['"paris"', '"Paris "']),
    ({"type": "array", "minItems": 2, "maxItems": 3, "items": {"type": "integer"}},
     ["[1, 2]", "[1,2,3]"], ["[1]", "[1, 2, 3, 4]", "[]"]),
    ({"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]}, ['["x", 1.5]'], ['[1.5, "x"]']),
    ({"type": "string", "minLength": 2, "maxLength": 4}, ['"ab"', '"abcd"', '"\\u00e9\\n"'], ['"a"', '"abcde"']),
    ({"type": "string", "pattern": "^[A-Z]{2}-\\d{3,5}(x|yz)?$"}, ['"AB-123"', '"ZZ-12345yz"', '"AB-1234x"'],
     ['"AB-12"', '"ab-123"', '"AB-123456"', '"AB-123y"']),
    ({"type": "string", "pattern": 'say "hi"\\\\'}, ['"say \\"hi\\"\\\\"', '"x say \\"hi\\"\\\\ y"'], ['"say hi"']),
    ({"type": "string", "pattern": "^(?:[^aeiou\\s]|[0-9]){1,3}$"}, ['"bcd"', '"b1"'], ['"ba"', '"b c"', '""']),
    ({"type": "string", "pattern": "^\\w+@\\w+\\.(com|org)$"}, ['"ann@site.org"'], ['"ann@site.net"', '"@x.com"']),
    ({"type": "string", "format": "date"}, ['"2024-02-29"'], ['"2024-13-01"', '"24-01-01"']),
    ({"type": "string", "format": "uuid"}, ['"123e4567-e89b-12d3-a456-426614174000"'], ['"123e4567"']),
    (TREE, ['{"v": 1, "kids": [{"v": 2, "kids": []}]}'], ['{"v": 1}', '{"v": 1, "kids": [{"v": 2}]}']),
    ({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 1}]}, ["12", '"x"'], ['"xy"', "1.5"]),
    ({"type": ["integer", "null"], "minimum": 1, "maximum": 3}, ["2", "null"], ["4", '"2"']),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
      "allOf": [{"properties": {"b": {"type": "string"}}, "required": ["b"]}]},
     ['{"a": 1, "b": "x"}'], ['{"a": 1}', '{"b": "x"}']),
    ({"type": "string", "nullable": True}, ['"x"', "null"], ["1"]),
    (True, ['{"a": [1, 2.5e3, "x", false, null]}', "[]", '"s"', "-0.5"], ["{", "tru"]),
]


@pytest.mark.parametrize(("schema", "accepted", "refused"), CASES, ids=[json.dumps(c[0])[:60] for c in CASES])
def test_the_grammar_lets_through_what_the_schema_allows(oracle, schema, accepted, refused):
    gbnf = schema_grammar(schema)
    for text in accepted:
        if schema is not True and "nullable" not in schema:  # (nullable is OpenAPI's, not JSON Schema's)
            jsonschema.validate(json.loads(text), schema)  # the example is right
        assert oracle.accepts(gbnf, text), (text, gbnf)
    for text in refused:
        assert not oracle.accepts(gbnf, text), (text, gbnf)


def test_large_bounds_are_exact_without_20000_rules(oracle):
    """maxLength 20000 is spelled as blocks of 141: a few hundred rules, exact at the edges."""
    gbnf = schema_grammar({"type": "string", "maxLength": 20000})
    assert len(gbnf.splitlines()) < 20 and max(int(n) for n in re.findall(r"\{(?:\d+,)?(\d+)\}", gbnf)) <= 1000
    for n, ok in ((0, True), (19880, True), (19881, True), (20000, True), (20001, False)):
        assert oracle.accepts(gbnf, json.dumps("x" * n)) == ok, n
    between = schema_grammar({"type": "array", "items": {"type": "integer"}, "minItems": 1500, "maxItems": 1502})
    for n, ok in ((1499, False), (1500, True), (1502, True), (1503, False)):
        assert oracle.accepts(between, json.dumps([7] * n)) == ok, n


def test_json_object_grammar_is_any_object(oracle):
    assert oracle.accepts(json_object_grammar(), '{"a": {"b": [1, "c"]}}')
    assert not oracle.accepts(json_object_grammar(), "[1]")


def deep(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    return schema


def ref_chain(hops: int) -> dict:
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(hops)}
    defs[f"d{hops}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


REFUSED = {  # schema -> the place named in the error and a phrase of it
    "maxLength 20 million": ({"type": "string", "maxLength": 20_000_000}, "maxLength", "largest count"),
    "minLength a billion": ({"type": "object", "properties": {"s": {"type": "string", "minLength": 10**9}}},
                            "properties.s.minLength", "largest count"),
    "minItems a billion": ({"type": "array", "minItems": 10**9}, "minItems", "largest count"),
    "maxItems 2**63": ({"type": "array", "maxItems": 2**63}, "maxItems", "largest count"),
    "pattern a{0,200000}": ({"type": "string", "pattern": "^a{0,200000}$"}, "pattern", "largest count"),
    "pattern count of 10 digits": ({"type": "string", "pattern": "^a{0,9999999999}$"}, "pattern", "9,999,999"),
    "pattern (a?)*": ({"type": "string", "pattern": "^(a?)*$"}, "pattern", "can match nothing"),
    "pattern lookahead": ({"type": "string", "pattern": "^(?=a)a$"}, "pattern", "lookaround"),
    "pattern backreference": ({"type": "string", "pattern": "^(a)\\1$"}, "pattern", "escape \\1"),
    "pattern groups 40 deep": ({"type": "string", "pattern": "^" + "(" * 40 + "a" + ")" * 40 + "$"}, "pattern",
                               "nested deeper"),
    "pattern 5000 characters": ({"type": "string", "pattern": "a" * 5000}, "pattern", "characters long"),
    "nesting 40 deep": (deep(40), "properties.x", "deeper than 32"),
    "$ref chain of 100": (ref_chain(100), "#/$defs/d3", "deeper than 32"),
    "enum of 100000": ({"enum": list(range(100_000))}, "enum", "more than 1,000 enum values"),
    "a const of 200000 characters": ({"const": "x" * 200_000}, "const", "120,000 characters"),
    "300 optional properties": ({"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(300)}},
                                "properties", "300 optional properties"),
    "6000 properties": ({"type": "object", "required": [f"p{i}" for i in range(6000)],
                         "properties": {f"p{i}": {"type": "integer"} for i in range(6000)}}, "properties.p",
                        "more than 5,000 parts"),
    "many large distinct bounds": ({"type": "object", "required": [f"p{i}" for i in range(400)], "properties": {
        f"p{i}": {"type": "string", "maxLength": 99_000 + i} for i in range(400)}}, "", "elements"),
    "minimum Infinity": ({"type": "number", "minimum": float("inf")}, "", "beyond what 16 digits"),
    "maximum 1e-30": ({"type": "number", "maximum": 1e-30}, "", "more than 16 decimals"),
    "minLength -1": ({"type": "string", "minLength": -1}, "minLength", "whole number"),
    "maxItems 2.5": ({"type": "array", "maxItems": 2.5}, "maxItems", "whole number"),
    "min above max": ({"type": "string", "minLength": 5, "maxLength": 2}, "", "no count lies between"),
    "a lone surrogate in an enum": ({"enum": ["ok", "\ud800"]}, "enum", "lone surrogate"),
    "false": (False, "", "allows no value"),
    "a remote $ref": ({"$ref": "http://example.com/s.json"}, "$ref", "only references inside"),
    "a $ref to nothing": ({"$ref": "#/$defs/missing"}, "$ref", "points at nothing"),
    "type list empty": ({"type": []}, "", "empty list"),
    "unknown type": ({"type": "date"}, "type", "unknown type"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_a_schema_beyond_the_limits_is_refused_with_its_place(case):
    schema, where, phrase = REFUSED[case]
    with pytest.raises(GrammarError) as error:
        schema_grammar(schema)
    assert error.value.where.startswith(where) and phrase in error.value.message, error.value.message
    assert len(error.value.message) < 300


HOSTILE_ACCEPTED = {  # large but legitimate: the grammar must compile fast and not crash llama.cpp
    "maxLength 20000": {"type": "string", "maxLength": 20000},
    "maxLength 100000": {"type": "string", "maxLength": 100_000},
    "minLength 100000": {"type": "string", "minLength": 100_000},
    "maxItems 20000 of strings of 20000": {"type": "array", "maxItems": 20000,
                                           "items": {"type": "string", "maxLength": 20000}},
    "pattern a{0,20000}": {"type": "string", "pattern": "^a{0,20000}$"},
    "pattern a{5000,20000}b{0,999}": {"type": "string", "pattern": "^a{5000,20000}b{0,999}$"},
    "enum of 1000": {"enum": [f"value-{i:04d}" for i in range(1000)]},
    "nesting 30 deep": deep(30),
    "$ref chain of 25": ref_chain(25),
    "recursive tree": TREE,
    "root refers to itself": {"$ref": "#"},
    "200 optional properties": {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(200)}},
    "4000 required properties": {"type": "object", "required": [f"p{i}" for i in range(4000)],
                                 "properties": {f"p{i}": {"type": "integer"} for i in range(4000)}},
}


def test_large_legitimate_schemas_compile_quickly_in_llama_cpp(model, tmp_path):
    """Compiled in a child process (a crash would be its exit code, not this test's), each under 2 s."""
    grammars = {name: schema_grammar(schema) for name, schema in HOSTILE_ACCEPTED.items()}
    (tmp_path / "grammars.json").write_text(json.dumps(grammars))
    script = (f"import json, sys, time; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from grammar_oracle import Oracle\n"
              f"o = Oracle({str(model.path)!r})\n"
              f"for name, g in json.load(open({str(tmp_path / 'grammars.json')!r})).items():\n"
              "    t = time.perf_counter(); ok = o.compiles(g)\n"
              "    print(json.dumps([name, ok, time.perf_counter() - t]), flush=True)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = {name: (ok, seconds) for name, ok, seconds in map(json.loads, done.stdout.splitlines())}
    assert set(results) == set(grammars)
    slow = {name: seconds for name, (_, seconds) in results.items() if seconds > 2}
    assert not slow, slow
    refused = {name for name, (ok, _) in results.items() if not ok}
    assert refused == {"root refers to itself"}  # left recursion: llama.cpp says no (a 400 at the server)


# --- numbers -----------------------------------------------------------------------------------------

def _gbnf_regex(alternation: str) -> re.Pattern:
    """The range rules' GBNF subset (literals, classes, groups, |, *, +, ?) as a Python regex: an
    oracle for which number strings the rule lets through."""
    out = []
    for token in re.findall(r'"(?:[^"\\]|\\.)*"|\[[^\]]*\]|[()|*+?]', alternation):
        out.append(re.escape(json.loads(token)) if token.startswith('"') else "(?:" if token == "(" else token)
    return re.compile("(?:" + "".join(out) + ")")


@pytest.mark.parametrize(("low", "high"), [(1, 7), (0, 0), (-5, 5), (10, 99), (7, 1234), (-1234, -7), (None, 7),
                                           (3, None), (99, 101), (19, 20), (1000, 1999), (-100, 0), (123, 4567)])
def test_integer_bounds_become_a_grammar_of_exactly_those_numbers(low, high):
    """A generic converter lets any 16 digits through for an integer; ours spells the range."""
    from mistralkit.grammar.numbers import integer_rule

    pattern = _gbnf_regex(integer_rule(low, high))
    for n in range((low if low is not None else -3000) - 300, (high if high is not None else 3000) + 300):
        inside = (low is None or n >= low) and (high is None or n <= high)
        assert bool(pattern.fullmatch(str(n))) == inside, (low, high, n)
    for written in ("01", "-0", "00", "+1", " 1", "1.0"):
        assert not pattern.fullmatch(written), written


NUMBER_BOUNDS = [{"minimum": 0, "maximum": 1}, {"minimum": 0.25, "maximum": 0.75}, {"exclusiveMinimum": 0},
                 {"minimum": -2.5, "exclusiveMaximum": 3.05}, {"exclusiveMinimum": -1, "exclusiveMaximum": 1},
                 {"maximum": -0.5}, {"minimum": 1.5, "maximum": 1.5}, {"minimum": 10, "maximum": 12.125},
                 {"exclusiveMinimum": 0.1, "maximum": 0.1000001}, {"minimum": 0, "exclusiveMaximum": 0.05},
                 {"minimum": -100, "maximum": -99.9}, {"maximum": 0}, {"minimum": 0.5, "exclusiveMinimum": 0.5},
                 {"minimum": 99.99, "maximum": 101}]


def _decimals() -> list[str]:
    """Number strings around the bounds above: whole parts, fractions of one to three digits and a
    few long ones, both signs."""
    fractions = ["", ".0", ".00", ".05", ".1", ".10", ".1000001", ".1000002", ".125", ".1251", ".2", ".25",
                 ".249", ".5", ".50", ".501", ".75", ".751", ".9", ".99", ".999", ".0001"]
    fractions += [f".{n:03d}" for n in range(0, 1000, 37)]
    wholes = [0, 1, 2, 3, 4, 9, 10, 11, 12, 13, 99, 100, 101, 102, 1000]
    return [f"{sign}{whole}{fraction}" for sign in ("", "-") for whole in wholes for fraction in fractions]


@pytest.mark.parametrize("bounds", NUMBER_BOUNDS, ids=lambda bounds: json.dumps(bounds))
def test_number_bounds_become_a_grammar_of_exactly_those_decimals(bounds):
    """For ``number`` a generic converter lets any decimal through; ours keeps to the bounds, open or closed."""
    from mistralkit.grammar.numbers import number_rule

    pattern = _gbnf_regex(number_rule(**bounds))
    checks = {"minimum": Decimal.__ge__, "maximum": Decimal.__le__,
              "exclusiveMinimum": Decimal.__gt__, "exclusiveMaximum": Decimal.__lt__}
    for written in _decimals():
        if written.startswith("-0") and Decimal(written) == 0:
            continue  # "-0" is a valid JSON zero; the rule writes zero unsigned only
        inside = all(checks[key](Decimal(written), Decimal(repr(value))) for key, value in bounds.items())
        assert bool(pattern.fullmatch(written)) == inside, (bounds, written)
    for written in ("01", "1.", ".5", "+1", "1e0", "00.5", "0.5 "):
        assert not pattern.fullmatch(written), written


def test_bounded_numbers_inside_a_schema(oracle):
    weather = {"type": "object", "required": ["days", "hours", "score"], "properties": {
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "hours": {"type": "array", "items": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 25}},
        "score": {"type": ["number", "null"], "maximum": 1}}}
    gbnf = schema_grammar(weather)
    assert oracle.accepts(gbnf, '{"days": 7, "hours": [1, 24], "score": -3.5}')
    assert oracle.accepts(gbnf, '{"days": 1, "hours": [], "score": null}')
    for wrong in ('{"days": 8, "hours": [], "score": 0}', '{"days": 3, "hours": [25], "score": 0}',
                  '{"days": 3, "hours": [], "score": 1.5}', '{"days": 3000000000000000, "hours": [], "score": 0}'):
        assert not oracle.accepts(gbnf, wrong), wrong
    for impossible in ({"type": "integer", "minimum": 3, "maximum": 2},
                       {"type": "number", "minimum": 0.5, "exclusiveMaximum": 0.5}):
        with pytest.raises(GrammarError, match="no (integer|number) lies"):
            schema_grammar(impossible)
