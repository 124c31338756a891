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
import math
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
    lows = [math.ceil(v) for v in (_number(node, "minimum"),) if v is not None]
    lows += [math.floor(v) + 1 for v in (_number(node, "exclusiveMinimum"),) if v is not None]
    highs = [math.floor(v) for v in (_number(node, "maximum"),) if v is not None]
    highs += [math.ceil(v) - 1 for v in (_number(node, "exclusiveMaximum"),) if v is not None]
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _number(node: dict[str, Any], key: str) -> float | None:
    """``node[key]`` when it is a number (draft 4's boolean ``exclusiveMinimum`` is not)."""
    value = node.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


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
    """Sequences matching the numbers from ``a`` to ``b``, two digit strings of one length: ``a``'s
    first digit with the tails from ``a``'s up, the first digits between with any tail, ``b``'s
    first digit with the tails up to ``b``'s."""
    if len(a) == 1:
        return [_digits(a, b)]
    if a[0] == b[0]:
        return [f'"{a[0]}" ({" | ".join(_same_length(a[1:], b[1:]))})']
    zeros, nines = "0" * (len(a) - 1), "9" * (len(a) - 1)
    head = [f'"{a[0]}" ({" | ".join(_same_length(a[1:], nines))})'] if a[1:] != zeros else []
    tail = [f'"{b[0]}" ({" | ".join(_same_length(zeros, b[1:]))})'] if b[1:] != nines else []
    low, high = chr(ord(a[0]) + len(head)), chr(ord(b[0]) - len(tail))
    middle = [_digits(low, high) + " [0-9]" * len(zeros)] if low <= high else []
    return head + middle + tail


def _digits(a: str, b: str) -> str:
    return f'"{a}"' if a == b else f"[{a}-{b}]"
