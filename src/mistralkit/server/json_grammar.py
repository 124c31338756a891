"""JSON schema to a llama.cpp grammar (GBNF), with integer bounds enforced.

llama-cpp-python's converter (``json_schema_to_gbnf``) writes every ``integer`` as any run of up to
16 digits and ignores ``minimum``/``maximum``: a schema's ``"days": {"maximum": 7}`` could come
back as 3000000000000000. Here each bounded integer is swapped for a placeholder string constant
before conversion, and the placeholder's rule is then replaced by one that spells the allowed
numbers digit by digit (no leading zeros, as JSON writes them).
"""

from __future__ import annotations

import copy
import json
from typing import Any

MAX_DIGITS = 16  # as long as the converter's own unbounded integers may run


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """GBNF for ``schema``; raises the converter's exceptions for schemas it cannot express."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    ranges: list[str] = []

    def swap(node: Any) -> Any:
        if isinstance(node, list):
            return [swap(item) for item in node]
        if not isinstance(node, dict):
            return node
        if node.get("type") == "integer" and _bounds(node) != (None, None):
            ranges.append(integer_rule(*_bounds(node)))
            return {"const": _placeholder(len(ranges) - 1)}
        return {key: swap(value) if key not in ("const", "enum", "default", "examples") else value
                for key, value in node.items()}

    gbnf = json_schema_to_gbnf(json.dumps(swap(copy.deepcopy(schema))))
    for index, rule in enumerate(ranges):
        gbnf = gbnf.replace(json.dumps(json.dumps(_placeholder(index))), f"({rule}) space")
    return gbnf


def _placeholder(index: int) -> str:
    return f"mistralkit-integer-{index}-placeholder"


def _bounds(node: dict[str, Any]) -> tuple[int | None, int | None]:
    """The inclusive (low, high) an integer schema allows (None: unbounded)."""
    low = high = None
    if isinstance(node.get("minimum"), int | float):
        low = _ceil(node["minimum"])
    if isinstance(node.get("exclusiveMinimum"), int | float) and not isinstance(node["exclusiveMinimum"], bool):
        low = max(low if low is not None else -(10**MAX_DIGITS), _floor(node["exclusiveMinimum"]) + 1)
    if isinstance(node.get("maximum"), int | float):
        high = _floor(node["maximum"])
    if isinstance(node.get("exclusiveMaximum"), int | float) and not isinstance(node["exclusiveMaximum"], bool):
        high = min(high if high is not None else 10**MAX_DIGITS, _ceil(node["exclusiveMaximum"]) - 1)
    return low, high


def _floor(x: float) -> int:
    return int(x) if x >= 0 or x == int(x) else int(x) - 1


def _ceil(x: float) -> int:
    return -_floor(-x)


def integer_rule(low: int | None, high: int | None) -> str:
    """A GBNF alternation matching the integers in [low, high] (None: unbounded that way)."""
    biggest = 10**MAX_DIGITS - 1
    low = -biggest if low is None else max(low, -biggest)
    high = biggest if high is None else min(high, biggest)
    if low > high:
        raise ValueError(f"no integer lies between minimum {low} and maximum {high}")
    parts = []
    if low < 0:  # the negatives, as "-" and their magnitudes
        parts.append(f'"-" ({_naturals(max(1, -high), -low)})')
    if high >= 0:
        parts.append(_naturals(max(0, low), high))
    return " | ".join(parts)


def _naturals(low: int, high: int) -> str:
    """Alternatives for the whole numbers low..high (0 <= low <= high), grouped by digit count."""
    out = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        first = 0 if digits == 1 else 10 ** (digits - 1)
        a, b = max(low, first), min(high, 10**digits - 1)
        if a <= b:
            out.extend(_same_length(str(a), str(b)))
    return " | ".join(out)


def _same_length(a: str, b: str) -> list[str]:
    """Sequences matching the numbers from ``a`` to ``b``, two digit strings of one length."""
    if not a:
        return ['""']
    if a[0] == b[0]:
        return [f'"{a[0]}" ({" | ".join(_same_length(a[1:], b[1:]))})' if len(a) > 1 else f'"{a[0]}"']
    rest = len(a) - 1
    if a[1:] == "0" * rest and b[1:] == "9" * rest:  # every tail: one class and free digits
        return [_digits(a[0], b[0]) + " [0-9]" * rest]
    out = []
    low_first, high_first = a[0], b[0]
    if a[1:] != "0" * rest:
        out.append(f'"{a[0]}" ({" | ".join(_same_length(a[1:], "9" * rest))})')
        low_first = chr(ord(a[0]) + 1)
    if b[1:] != "9" * rest:
        out.append(f'"{b[0]}" ({" | ".join(_same_length("0" * rest, b[1:]))})')
        high_first = chr(ord(b[0]) - 1)
    if low_first <= high_first:
        out.insert(1 if a[1:] != "0" * rest else 0, _digits(low_first, high_first) + " [0-9]" * rest)
    return out


def _digits(a: str, b: str) -> str:
    return f'"{a}"' if a == b else f"[{a}-{b}]"
