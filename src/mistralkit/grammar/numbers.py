"""Numbers with bounds as GBNF: the integers or decimals a schema's minimum/maximum (and the
exclusive forms) allow, spelled digit by digit (no leading zeros, as JSON writes them).

A generic converter writes every ``integer`` as any run of digits and ignores the bounds: a schema's
``"days": {"maximum": 7}`` could come back as 3000000000000000, ``"confidence": {"maximum": 1}`` as
87.5. A bounded number is written without an exponent.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

MAX_DIGITS = 16  # as long as an unbounded integer may run


BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def integer_bounds(node: dict[str, Any]) -> tuple[int | None, int | None]:
    """The inclusive (low, high) an integer schema allows (None: unbounded)."""
    lows = [math.ceil(v) for v in (bound(node, "minimum"),) if v is not None]
    lows += [math.floor(v) + 1 for v in (bound(node, "exclusiveMinimum"),) if v is not None]
    highs = [math.floor(v) for v in (bound(node, "maximum"),) if v is not None]
    highs += [math.ceil(v) - 1 for v in (bound(node, "exclusiveMaximum"),) if v is not None]
    return (max(lows) if lows else None), (min(highs) if highs else None)


def bound(node: dict[str, Any], key: str) -> float | None:
    """``node[key]`` when it is a number (draft 4's boolean ``exclusiveMinimum`` is not); a bound that
    16 digits cannot write (infinite, above 10**16, more than 16 decimals) is a ValueError."""
    value = node.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if not math.isfinite(value) or abs(value) > 10**MAX_DIGITS:
        raise ValueError(f"{key} {value!r} is beyond what {MAX_DIGITS} digits write")
    if -Decimal(repr(value)).as_tuple().exponent > MAX_DIGITS:  # type: ignore[operator]
        raise ValueError(f"{key} {value!r} has more than {MAX_DIGITS} decimals")
    return value


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


# Numbers. A decimal is a sign, a whole part (as above) and a fraction: the digits after the point,
# compared with a bound's digit by digit as if both ran on with zeros. A fraction's rule below is a
# list of alternatives, each a non-empty run of digits, and whether no digits at all also qualify.

Fraction = tuple[list[str], bool]
ANY: Fraction = (["[0-9]+"], True)


def number_rule(minimum: float | None = None, maximum: float | None = None,
                exclusiveMinimum: float | None = None, exclusiveMaximum: float | None = None) -> str:
    """A GBNF alternation matching the decimals (no exponent) a ``number`` schema's bounds allow."""
    low, low_open = _tightest([(minimum, False), (exclusiveMinimum, True)], max)
    high, high_open = _tightest([(maximum, False), (exclusiveMaximum, True)], min)
    if low is not None and high is not None and (low > high or (low == high and (low_open or high_open))):
        raise ValueError(f"no number lies between minimum {low} and maximum {high}")
    parts = []
    if low is None or low < 0:  # negatives: "-" and a magnitude in (max(0, -high), -low]
        top = None if low is None else -low
        bottom, bottom_open = (Decimal(0), True) if high is None or high >= 0 else (-high, high_open)
        parts.append(f'"-" ({_magnitudes(bottom, bottom_open, top, low_open)})')
    if high is None or high >= 0:
        bottom, bottom_open = (Decimal(0), False) if low is None or low < 0 else (low, low_open)
        parts.append(_magnitudes(bottom, bottom_open, high, high_open))
    return " | ".join(parts)


def _tightest(bounds: list[tuple[float | None, bool]], pick) -> tuple[Decimal | None, bool]:
    """The binding bound of several (value, exclusive) and whether it is exclusive."""
    given = [(Decimal(repr(value)), is_open) for value, is_open in bounds if value is not None]
    if not given:
        return None, False
    best = pick(value for value, _ in given)
    return best, any(is_open for value, is_open in given if value == best)


def _split(value: Decimal) -> tuple[int, str]:
    """A non-negative decimal's whole part and its fraction's digits, trailing zeros dropped."""
    whole, _, fraction = format(value, "f").partition(".")
    return int(whole), fraction.rstrip("0")


def _magnitudes(low: Decimal, low_open: bool, high: Decimal | None, high_open: bool) -> str:
    """Alternatives for the decimals from ``low`` to ``high`` (0 <= low; None: up to 16 digits)."""
    a, fa = _split(low)
    b, fb = (10**MAX_DIGITS, "") if high is None else _split(high)
    if a == b:
        return f"({_naturals(a, a)}) {_point(_between(fa, low_open, fb, high_open))}"
    out = [f"({_naturals(a, a)}) {_point(_above(fa, low_open))}"]
    if a + 1 <= b - 1:
        out.append(f"({_naturals(a + 1, b - 1)}) {_point(ANY)}")
    last = None if high is None else _below(fb, high_open)
    if last is not None:
        out.append(f"({_naturals(b, b)}) {_point(last)}")
    return " | ".join(out)


def _point(fraction: Fraction) -> str:
    """A fraction's rule behind the decimal point: optional where no digits qualify too."""
    alternatives, empty = fraction
    return f'("." ({" | ".join(alternatives)})){"?" if empty else ""}'


def _then(digit: str, rest: Fraction | None) -> list[str]:
    """``digit`` followed by the digits ``rest`` allows (nothing when ``rest`` allows nothing)."""
    if rest is None:
        return []
    alternatives, empty = rest
    return [f'"{digit}" ({" | ".join(alternatives)}){"?" if empty else ""}']


def _above(bound: str, strict: bool) -> Fraction:
    """Fractions >= ``bound`` (> when ``strict``)."""
    if not bound:
        return (['"0"* [1-9] [0-9]*'], False) if strict else ANY
    digit, rest = bound[0], bound[1:]
    higher = [f"[{chr(ord(digit) + 1)}-9] [0-9]*"] if digit < "9" else []
    return higher + _then(digit, _above(rest, strict)), False


def _below(bound: str, strict: bool) -> Fraction | None:
    """Fractions <= ``bound`` (< when ``strict``); None where none is (below zero)."""
    if not bound:
        return None if strict else (['"0"+'], True)
    digit, rest = bound[0], bound[1:]
    lower = [f"[0-{chr(ord(digit) - 1)}] [0-9]*"] if digit > "0" else []
    return lower + _then(digit, _below(rest, strict)), True


def _between(low: str, low_open: bool, high: str, high_open: bool) -> Fraction | None:
    """Fractions from ``low`` to ``high``, ``low`` <= ``high``."""
    if not low:
        if not low_open:
            return _below(high, high_open)
        if not high:
            return None
    first_low, first_high = (low or "0")[0], (high or "0")[0]
    if first_low == first_high:
        return _then(first_low, _between(low[1:], low_open, high[1:], high_open)), False
    out = _then(first_low, _above(low[1:], low_open))
    if ord(first_high) - ord(first_low) > 1:
        out.append(f"[{chr(ord(first_low) + 1)}-{chr(ord(first_high) - 1)}] [0-9]*")
    out += _then(first_high, _below(high[1:], high_open))
    return out, False
