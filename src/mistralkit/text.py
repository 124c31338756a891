"""Text at the edges (command-line arguments, standard input, JSONL files, request bodies).

Python strings can hold what UTF-8 cannot encode: lone surrogates from a JSON ``"\\ud800"``
escape, and the ``\\udcXX`` stand-ins that ``surrogateescape`` makes of undecodable bytes in
arguments and standard input. llama.cpp, SQLite and JSON output all need real UTF-8, so such
text is refused where it comes in, with the place it came from.

>>> bad_text({"messages": [{"content": "a\\ud800b"}]})
('messages[0].content', 1, 'a lone surrogate U+D800')
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from .errors import InvalidParameter, MistralkitError

_SURROGATE = re.compile("[\ud800-\udfff]")


def problem(text: str) -> tuple[int, str] | None:
    """(character offset, what) of the first code point UTF-8 cannot encode, or None."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    code = ord(found.group())
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte that did not decode
        return found.start(), f"an invalid UTF-8 byte 0x{code - 0xDC00:02x}"
    return found.start(), f"a lone surrogate U+{code:04X}"


def bad_text(value: Any, where: str = "") -> tuple[str, int, str] | None:
    """The first string inside ``value`` (str, list, dict) that UTF-8 cannot encode: (where, offset, what)."""
    if isinstance(value, str):
        found = problem(value)
        return (where, *found) if found else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (found := bad_text(key, where)):
                return found
            if found := bad_text(item, f"{where}.{key}" if where else str(key)):
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if found := bad_text(item, f"{where}[{i}]"):
                return found
    return None


def describe(found: tuple[str, int, str], origin: str) -> str:
    where, offset, what = found
    place = f"{origin}: {where}" if where else origin
    return f"{place}: not valid UTF-8 text ({what} at character {offset + 1})"


def check(value: Any, origin: str) -> Any:
    """``value`` unchanged, or InvalidParameter naming ``origin`` and the field where the bad text is."""
    found = bad_text(value)
    if found is not None:
        raise InvalidParameter(describe(found, origin), hint="send UTF-8 text")
    return value


def decode(data: bytes, origin: str) -> str:
    """Strict UTF-8 (a leading BOM is dropped), or InvalidParameter naming ``origin`` and the byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidParameter(f"{origin}: not valid UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                               f"{exc.start})", hint="convert it to UTF-8 first, e.g. with iconv") from None


def read_stdin() -> str:
    """All of standard input as UTF-8 text."""
    return decode(sys.stdin.buffer.read(), "standard input")


def check_argv(argv: list[str]) -> None:
    """Refuse arguments that are not UTF-8 (Python keeps their bytes as surrogates)."""
    for i, arg in enumerate(argv, 1):
        if (found := problem(arg)) is not None:
            raise InvalidParameter(f"argument {i} is not valid UTF-8 text ({found[1]} at character {found[0] + 1})",
                                   hint="pass UTF-8 text; for a file in another encoding, convert it first")


def read_bounded(path, limit: int, what: str) -> bytes:
    """The bytes of the file at ``path``, refused when there are more than ``limit`` (``/dev/zero`` or a
    pipe that never ends would otherwise be read forever). ``OSError`` as an InvalidParameter."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InvalidParameter(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise InvalidParameter(f"{path}: the {what} is larger than {limit // 2**20} MiB",
                               hint="is it the right file? (a device such as /dev/zero never ends)")
    return data


def read_json_object(path, error: type[MistralkitError] = InvalidParameter) -> dict[str, Any]:
    """The JSON object in the file at ``path``; anything else (unreadable, not JSON, not an object) is
    ``error`` naming the file."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{path} is not a JSON object")
    return data
