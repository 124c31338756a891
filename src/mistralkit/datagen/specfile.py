"""YAML nodes with their line numbers, for spec errors that read ``FILE:LINE: what``."""

from __future__ import annotations

import math
import re
import string
from functools import lru_cache
from pathlib import Path

from ..errors import MissingDependency
from .errors import SpecError


class Found:
    """Collects the problems of one file as ``SpecError``s; call it with a node (or a line) and a text."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.errors: list[SpecError] = []

    def __call__(self, where, what: str, hint: str | None = None) -> None:
        line = where if isinstance(where, int) else where.start_mark.line + 1
        self.errors.append(SpecError(what, hint, path=self.path, line=line))

    def sorted(self) -> list[SpecError]:
        """This file's problems by line first, then those of other files (schema, seeds), each by line."""
        order: dict[str, int] = {self.path: 0}
        for error in self.errors:
            order.setdefault(error.path, len(order))
        return sorted(self.errors, key=lambda e: (order[e.path], e.line))


@lru_cache(maxsize=1)
def _loader():
    """A safe loader that keeps dates as text (records must stay JSON)."""
    try:
        import yaml
    except ImportError as exc:
        raise MissingDependency("mistralkit datagen needs PyYAML", hint="pip install 'mistralkit[datagen]'") from exc

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    return yaml, Loader


def read_yaml(path: Path, found: Found, text: str | None = None):
    """The root node of a YAML (or JSON) file, or None after recording why it cannot be read."""
    yaml, loader = _loader()
    if text is None:
        if not path.is_file():
            found.errors.append(SpecError("no such file" if not path.exists() else "not a file", path=str(path)))
            return None
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            found(text_line(path.read_bytes(), exc.start), f"not UTF-8 text (byte {exc.start + 1})")
            return None
    try:
        node = yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        found(mark.line + 1 if mark else 1, f"not valid YAML: {exc.problem or exc.context}")
        return None
    except yaml.YAMLError as exc:
        found(1, f"not valid YAML: {exc}")
        return None
    if node is None:
        found(1, "the file is empty")
    return node


def text_line(data: bytes, offset: int) -> int:
    return data[:offset].count(b"\n") + 1


def node_value(node):
    """The plain Python value of a node (mappings, lists, str, int, float, bool, None)."""
    _, loader = _loader()
    return loader("").construct_object(node, deep=True)


def _is(node, kind: str) -> bool:
    return type(node).__name__ == kind


def mapping(node, found: Found, keys, what: str) -> dict:
    """``{key: (key node, value node)}`` of a mapping node; repeated keys and keys not in ``keys`` are problems."""
    if not _is(node, "MappingNode"):
        found(node, f"{what} must be a mapping")
        return {}
    out: dict = {}
    for key, value in node.value:
        name = key.value if _is(key, "ScalarNode") else None
        if name is None or not name.strip():
            found(key, f"{what}: keys must be names")
        elif name in out:
            found(key, f"{what}: key {name!r} repeated (first on line {out[name][0].start_mark.line + 1})")
        elif keys is not None and name not in keys:
            found(key, f"{what}: unknown key {name!r}", hint=f"known keys: {', '.join(keys)}")
        else:
            out[name] = (key, value)
    return out


def read_numbers(fields: dict, rules: dict, found: Found, prefix: str = "") -> dict:
    """The numbers among ``fields`` (``mapping``'s result) checked by ``rules``: key -> (int or float, a test,
    what it must be); each bad one is a problem named ``PREFIX + key``, the good ones come back converted."""
    out = {}
    for key, (kind, good, what) in rules.items():
        if key in fields:
            node = fields[key][1]
            value = node_value(node)
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not number or (kind is int and not isinstance(value, int)) or not good(value):
                found(node, f"{prefix}{key} must be {what}, got {node.value!r}")
            else:
                out[key] = kind(value)
    return out


def scalar_name(node, found: Found) -> str | None:
    """A name as written (``no`` stays "no"); a missing or non-scalar one is a problem."""
    if not _is(node, "ScalarNode"):
        found(node, "expected a name, got a " + ("list" if _is(node, "SequenceNode") else "mapping"))
        return None
    if node.tag.endswith(":null") or not node.value.strip():
        found(node, "a name is missing here")
        return None
    return node.value.strip()


def locate(node, parts: list) -> int:
    """The line of the node at ``parts`` (keys and list indexes) below ``node``, as deep as it exists."""
    line = node.start_mark.line + 1
    for part in parts:
        if _is(node, "MappingNode"):
            node = next((v for k, v in node.value if _is(k, "ScalarNode") and k.value == str(part)), None)
        elif _is(node, "SequenceNode") and str(part).isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def names_in_template(node, known: set[str]) -> list[tuple[int, str]]:
    """(line, problem) for every placeholder of a prompt node that is not one of ``known``."""
    text, first = node.value, node.start_mark.line + 1
    block = node.style == "|"  # a literal block keeps its newlines: a placeholder's line is exact
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as exc:
        return [(first, f"prompt: {exc}; write {{{{ and }}}} for a literal brace")]
    problems, newlines = [], 0
    for literal, field, _, _ in pieces:
        newlines += literal.count("\n")
        if field is None:
            continue
        line = first + 1 + newlines if block else first
        base = re.split(r"[.\[]", field)[0]
        if not field or field.isdigit():
            problems.append((line, "prompt: a placeholder needs a name, e.g. {persona}"))
        elif base != field:
            problems.append((line, f"prompt: {{{field}}}: placeholders are plain names (no . or [ ])"))
        elif field not in known:
            problems.append((line, f"prompt: unknown placeholder {{{field}}}"))
    return problems
