"""Training data: JSONL files whose lines are read into ``Sample``s, one shape detected per line.

Three shapes, one JSON object per line (blank lines are skipped)::

    {"prompt": "...", "response": "..."}            # also "completion"; optional "system"
    {"messages": [{"role": "system"|"user"|"assistant", "content": "...", "weight": 0|1}, ...]}
    {"text": "..."}                                   # raw text, every token trained

A conversation is an optional system message, then user and assistant turns in alternation,
ending with an assistant turn. ``weight`` (assistant turns only, default 1) set to 0 keeps the
turn as context without training on it. A file may mix the shapes (each line is read in its
own); ``describe_shapes`` says so, and ``allow_mixed=False`` refuses it. Every problem is a
``DatasetError`` whose message starts with ``FILE:LINE: FIELD:``. Nothing here ever writes over
its input: ``split`` and ``convert`` write new files through a temporary file and ``os.replace``.
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from ..formats.base import ROLES, Message
from ..text import bad_text

SHAPES = ("prompt", "messages", "text")
SHAPE_HINT = 'expected {"prompt", "response"}, {"messages": [...]} or {"text"}'


@dataclass(frozen=True)
class Sample:
    """One line of a data file: a conversation (``messages`` + per-message ``weights``) or a text."""

    messages: tuple[Message, ...] = ()
    weights: tuple[float, ...] = ()  # 1 = trained on; always 0 for system and user messages
    text: str | None = None
    shape: str = "messages"
    path: str = ""
    line: int = 0

    def error(self, message: str, field: str = "", hint: str | None = None) -> DatasetError:
        return DatasetError(message, hint, path=self.path, line=self.line, field=field)

    def to_messages(self) -> dict:
        """The ``{"messages": [...]}`` form of a conversation (weights written only where 0)."""
        if self.text is not None:
            raise self.error("a text sample has no turns to convert", "text",
                             hint="--to messages needs prompt/response or messages lines")
        out = []
        for message, weight in zip(self.messages, self.weights):
            item: dict = {"role": message["role"], "content": message["content"]}
            if message["role"] == "assistant" and weight == 0:
                item["weight"] = 0
            out.append(item)
        return {"messages": out}


# --- one line -> one Sample -------------------------------------------------------------------

def _string(obj: dict, key: str, fail, field: str | None = None) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        got = "missing" if key not in obj else f"a {type(value).__name__}"
        fail(f"must be a string, got {got}", field or key)
    return value  # type: ignore[return-value]


def _from_prompt(obj: dict, fail) -> tuple[list[Message], list[float]]:
    if "response" in obj and "completion" in obj:
        fail('has both "response" and "completion"; keep one', "completion")
    answer_key = "response" if "response" in obj else "completion"
    if answer_key not in obj:
        fail('a prompt needs a "response" (or "completion")', "response")
    prompt, answer = _string(obj, "prompt", fail), _string(obj, answer_key, fail)
    if not answer.strip():
        fail("empty assistant turn", answer_key)
    messages: list[Message] = []
    if obj.get("system") is not None:
        messages.append({"role": "system", "content": _string(obj, "system", fail)})
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return messages, [0.0] * (len(messages) - 1) + [1.0]


def _allowed_after(previous: str | None) -> tuple[str, ...]:
    if previous is None:
        return ("system", "user")
    return ("assistant",) if previous == "user" else ("user",)


def _from_messages(obj: dict, fail) -> tuple[list[Message], list[float]]:
    items = obj["messages"]
    if not isinstance(items, list) or not items:
        fail("must be a non-empty list of {role, content} objects", "messages")
    messages: list[Message] = []
    weights: list[float] = []
    previous: str | None = None
    for i, item in enumerate(items):
        field = f"messages[{i}]"
        if not isinstance(item, dict):
            fail("must be an object with role and content", field)
        role = item.get("role")
        if role not in ROLES:
            fail(f"unknown role {role!r}", f"{field}.role", f"use one of {', '.join(ROLES)}")
        allowed = _allowed_after(previous)
        if role not in allowed:
            where = "first" if previous is None else f"after a {previous} turn"
            fail(f"{role!r} cannot come {where} (expected {' or '.join(map(repr, allowed))})", f"{field}.role",
                 "a conversation is an optional system message, then user and assistant turns in turn")
        content = _string(item, "content", fail, f"{field}.content")
        weight = 0.0
        if role == "assistant":
            if not content.strip():
                fail("empty assistant turn", f"{field}.content")
            weight = item.get("weight", 1)
            if isinstance(weight, bool) or weight not in (0, 1):
                fail(f"must be 0 or 1, got {weight!r}", f"{field}.weight")
        elif "weight" in item:
            fail("only assistant turns carry a weight", f"{field}.weight")
        messages.append({"role": role, "content": content})
        weights.append(float(weight))
        previous = role
    if messages[-1]["role"] != "assistant":
        fail("the last message must be an assistant turn (nothing is learned after it)", "messages")
    return messages, weights


def json_object(raw: str, fail, hint: str | None = None) -> dict:
    """One JSONL line as a dict; anything else goes to ``fail(message, field, hint)`` (which raises)."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"invalid JSON: {exc.msg} (column {exc.colno})")
    if not isinstance(obj, dict):
        fail(f"each line must be a JSON object, got {type(obj).__name__}", hint=hint)
    if (found := bad_text(obj)) is not None:  # a "\ud800" escape decodes to a lone surrogate
        where, offset, what = found
        fail(f"not valid UTF-8 text ({what} at character {offset + 1})", where)
    return obj


def parse_line(raw: str, *, path: str = "", line: int = 0) -> Sample:
    """One JSONL line to a ``Sample``; raises ``DatasetError`` naming the file, line and field."""

    def fail(message: str, field: str = "", hint: str | None = None):
        raise DatasetError(message, hint, path=path, line=line, field=field)

    obj = json_object(raw, fail, SHAPE_HINT)
    found = [key for key in ("messages", "prompt", "text") if key in obj]
    if not found:
        fail(f"no known shape (keys: {', '.join(sorted(obj)) or 'none'})", hint=SHAPE_HINT)
    if len(found) > 1:
        fail(f"has both {found[0]!r} and {found[1]!r}; one shape per line", found[1], SHAPE_HINT)
    if found[0] == "text":
        text = _string(obj, "text", fail)
        if not text.strip():
            fail("empty text", "text")
        return Sample(text=text, shape="text", path=path, line=line)
    messages, weights = (_from_messages if found[0] == "messages" else _from_prompt)(obj, fail)
    return Sample(tuple(messages), tuple(weights), shape=found[0], path=path, line=line)


# --- files ------------------------------------------------------------------------------------

def _lines(path: Path) -> Iterator[tuple[int, str | DatasetError]]:
    """(line number, text) for every non-blank line; undecodable lines come as errors."""
    if not path.is_file():
        raise DatasetError("no such file" if not path.exists() else "not a file", path=str(path))
    with path.open("rb") as handle:
        for number, data in enumerate(handle, 1):
            try:
                text = data.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield number, DatasetError(f"not UTF-8 text (byte {exc.start + 1})", path=str(path), line=number)
                continue
            if text.strip():
                yield number, text


def scan(path: str | Path, *, allow_mixed: bool = True) -> Iterator[Sample | DatasetError]:
    """Every line of ``path`` as a Sample or the DatasetError that says why it is not one.

    ``allow_mixed=False`` (``--strict-shapes``) also refuses a line whose shape differs from the first.
    """
    path = Path(path)
    first: Sample | None = None
    for number, text in _lines(path):
        if isinstance(text, DatasetError):
            yield text
            continue
        try:
            sample = parse_line(text, path=str(path), line=number)
        except DatasetError as exc:
            yield exc
            continue
        if first is None:
            first = sample
        elif sample.shape != first.shape and not allow_mixed:
            yield sample.error(f"shape {sample.shape!r} differs from {first.shape!r} (line {first.line})",
                               hint="drop --strict-shapes, or `mistralkit data convert FILE --to messages`")
            continue
        yield sample


def check(path: str | Path, *, allow_mixed: bool = True) -> tuple[list[Sample], list[DatasetError]]:
    """All samples and all errors of a file (for ``data validate``)."""
    samples: list[Sample] = []
    errors: list[DatasetError] = []
    for item in scan(path, allow_mixed=allow_mixed):
        (errors if isinstance(item, DatasetError) else samples).append(item)  # type: ignore[arg-type]
    if not samples and not errors:
        errors.append(DatasetError("no samples (the file is empty)", path=str(path)))
    return samples, errors


def read_samples(path: str | Path, *, allow_mixed: bool = True) -> list[Sample]:
    """The samples of a file; raises the first ``DatasetError``."""
    samples, errors = check(path, allow_mixed=allow_mixed)
    if errors:
        raise errors[0]
    return samples


def shape_counts(samples: Iterable[Sample]) -> dict[str, int]:
    """Samples per shape, most common first (ties by name)."""
    counts = Counter(s.shape for s in samples)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def describe_shapes(shapes: dict[str, int]) -> str:
    """``messages 10, prompt 3 (mixed)``: what ``data validate``, ``data stats`` and ``tune`` report."""
    text = ", ".join(f"{name} {count}" for name, count in shapes.items()) or "none"
    return text + " (mixed)" if len(shapes) > 1 else text


def mixed_note(path: str | Path, shapes: dict[str, int]) -> str | None:
    """The note a run records when ``path`` mixes shapes; None when it has one."""
    if len(shapes) < 2:
        return None
    return f"{path}: shapes: {describe_shapes(shapes)}; each line is trained in its own shape"


# --- writing: split and convert ---------------------------------------------------------------

def _write_atomic(target: Path, lines: list[str]) -> None:
    from ..files import write_text_atomic

    write_text_atomic(target, "".join(line if line.endswith("\n") else line + "\n" for line in lines))


def _refuse(source: Path, targets: list[Path], force: bool) -> None:
    for target in targets:
        if target.resolve() == source.resolve():
            raise DatasetError("the output would overwrite the input", path=str(target),
                               hint="choose another output with -o/--out")
        if target.exists() and not force:
            raise DatasetError("already exists", path=str(target), hint="pass --force to replace it")


@dataclass
class SplitResult:
    train: str
    valid: str
    train_samples: int
    valid_samples: int
    seed: int


def valid_count(total: int, valid: float) -> int:
    """How many of ``total`` samples go to validation: a fraction in (0, 1) or a whole count."""
    if not math.isfinite(valid) or valid <= 0 or (valid >= 1 and valid != int(valid)):
        raise DatasetError(f"--valid {valid}: give a fraction between 0 and 1 or a whole count")
    count = int(valid) if valid >= 1 else max(1, round(total * valid))
    if count >= total:
        raise DatasetError(f"--valid {valid} leaves no training samples out of {total}",
                           hint="lower --valid or add samples")
    return count


def split(path: str | Path, *, valid: float = 0.1, seed: int = 0, out: str | Path | None = None,
          allow_mixed: bool = True, force: bool = False) -> SplitResult:
    """Split a file into train and valid files, the same way for the same seed.

    Lines are copied byte for byte in their original order. Outputs are ``OUT/train.jsonl`` and
    ``OUT/valid.jsonl`` with ``out``, else ``NAME.train.jsonl`` and ``NAME.valid.jsonl`` next to
    the input. Every line is checked first: a bad line stops the split before anything is written.
    """
    path = Path(path)
    read_samples(path, allow_mixed=allow_mixed)
    lines = [text for _, text in _lines(path)]
    chosen = set(random.Random(seed).sample(range(len(lines)), valid_count(len(lines), valid)))
    if out is not None:
        train_path, valid_path = Path(out) / "train.jsonl", Path(out) / "valid.jsonl"
    else:
        stem = path.name.removesuffix(".jsonl")
        train_path, valid_path = path.with_name(f"{stem}.train.jsonl"), path.with_name(f"{stem}.valid.jsonl")
    _refuse(path, [train_path, valid_path], force)
    _write_atomic(valid_path, [line for i, line in enumerate(lines) if i in chosen])  # type: ignore[misc]
    _write_atomic(train_path, [line for i, line in enumerate(lines) if i not in chosen])  # type: ignore[misc]
    return SplitResult(str(train_path), str(valid_path), len(lines) - len(chosen), len(chosen), seed)


CONVERSIONS = {"messages": Sample.to_messages}


def convert(path: str | Path, *, to: str = "messages", out: str | Path | None = None,
            allow_mixed: bool = True, force: bool = False,
            transform: Callable[[Sample], Sample] | None = None) -> tuple[str, int]:
    """Rewrite every line in the ``to`` shape (after ``transform``, e.g. ``layouts.strip``); ``out`` ``-``
    writes to stdout. Returns (where, count).

    Default output: ``NAME.messages.jsonl`` next to the input.
    """
    if to not in CONVERSIONS:
        raise DatasetError(f"--to {to!r}: can convert to {', '.join(CONVERSIONS)}")
    path = Path(path)
    samples = read_samples(path, allow_mixed=allow_mixed)
    lines = [json.dumps(CONVERSIONS[to](transform(s) if transform else s), ensure_ascii=False) for s in samples]
    if out == "-":
        sys.stdout.write("".join(line + "\n" for line in lines))
        return "-", len(lines)
    target = Path(out) if out else path.with_name(f"{path.name.removesuffix('.jsonl')}.{to}.jsonl")
    _refuse(path, [target], force)
    _write_atomic(target, lines)
    return str(target), len(lines)
