"""Seed cases: lines of the seed file in any mistralkit data shape, with optional labels and record.

A line is ``{"prompt", "response"}``, ``{"messages": [...]}`` or ``{"text"}`` (read by
``mistralkit.tune.data.parse_line``), plus optional ``"dimensions": {dimension: value}`` (labels where
known) and ``"record"``. The case text is the first user turn (or the text); the record is the first
assistant turn when it parses as a JSON object, else ``"record"``. Records must match the schema.
Labels are not checked against ``forbidden``/``differs_from``: seeds are data that already exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import DatasetError
from . import schema as json_schema
from .errors import SpecError


@dataclass(frozen=True)
class Seed:
    """A seed case: its text, its record (if known), its dimension labels, its line in the seed file."""

    text: str
    record: dict | None
    dimensions: dict[str, str]
    line: int
    sample: object  # mistralkit.tune.data.Sample


def scan_seeds(spec) -> tuple[list[Seed], list[SpecError]]:
    """The good seed lines of ``spec`` and a ``SpecError`` (FILE:LINE) for every bad one."""
    if spec.seed_path is None:
        return [], []
    from ..tune.data import parse_line

    seeds, problems, where = [], [], str(spec.seed_path)
    with open(spec.seed_path, "rb") as handle:
        for number, data in enumerate(handle, 1):
            try:
                raw = data.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                problems.append(SpecError(f"not UTF-8 text (byte {exc.start + 1})", path=where, line=number))
                continue
            if not raw.strip():
                continue
            try:
                sample = parse_line(raw, path=where, line=number)
            except DatasetError as exc:
                reason = f"{exc.field}: {exc.reason}" if exc.field else exc.reason
                problems.append(SpecError(reason, exc.hint, path=where, line=number))
                continue
            seed, wrong = _seed(spec, json.loads(raw), sample, number)
            problems += [SpecError(what, path=where, line=number) for what in wrong]
            if not wrong:
                seeds.append(seed)
    return seeds, problems


def _seed(spec, obj: dict, sample, number: int) -> tuple[Seed, list[str]]:
    wrong: list[str] = []
    if sample.text is not None:
        text, answer = sample.text, None
    else:
        text = next(m["content"] for m in sample.messages if m["role"] == "user")
        answer = next(m["content"] for m in sample.messages if m["role"] == "assistant")
    record = None
    if answer is not None:
        try:
            record = json.loads(answer)
        except json.JSONDecodeError:
            record = None
        record = record if isinstance(record, dict) else None
    if record is None and "record" in obj:
        record = obj["record"]
        if not isinstance(record, dict):
            wrong.append("record must be a JSON object")
            record = None
    if record is not None and (problem := json_schema.first_error(spec.schema, record)):
        wrong.append(f"record does not match the schema {problem}")
    labels = obj.get("dimensions", {})
    if not isinstance(labels, dict):
        wrong.append('"dimensions" must be an object {dimension: value}')
        labels = {}
    for dim, value in labels.items():
        known = [d.name for d in spec.dimensions]
        if dim not in known:
            wrong.append(f"dimensions: unknown dimension {dim!r} (known: {', '.join(known)})")
        elif not isinstance(value, str) or value not in {v.name for v in spec.dimension(dim).values}:
            wrong.append(f"dimensions.{dim}: unknown value {value!r}")
    return Seed(text, record, dict(labels), number, sample), wrong

