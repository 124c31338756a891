"""Target records: sampled from the spec's JSON Schema, shaped by the chosen dimension values, shown as TOON.

A target is sparse: no ``null``, no empty object or list, required properties always, optional ones
about half the time, only the properties, types and enum values the schema declares. Free strings
come from the schema's ``examples`` when it has them (so they read like real data), numbers are
round-looking (``1250``, ``84.5``, ``14``). Then, for each chosen dimension value, its ``record`` is
deep-merged in (objects key by key; a list in the record fixes the list's length and its items merge
index by index with the sampled ones; a ``null`` removes what was sampled there, as in a JSON merge
patch, e.g. ``{life_insurance: null}`` for a value "none") and its name is written at the dimension's
``path``. A value whose ``record`` is ``{}`` (an explicit empty mapping, e.g. a secondary topic
``none``) writes nothing and removes whatever was sampled at that path. The result is validated with
``Draft202012Validator`` and the format checker before it is returned.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random

from .errors import DatagenError
from .schema import MAX_DEPTH, first_error, require_module, resolve

TRIES = 50
WORDS = ("note", "payment", "request", "notice", "reference", "detail", "contract", "invoice", "claim")


class _Retry(Exception):
    """This attempt cannot give a valid value (a required part came out empty)."""


# --- sampling ---------------------------------------------------------------------------------

def _round_number(x: float, rng: random.Random) -> int | float:
    """A round-looking number near ``x``: 1250 or 1200 (2-3 significant figures), 84.5, 312.75."""
    if x >= 10 and rng.random() < 0.55:
        x = round(x, rng.choice((1, 2)) - int(math.floor(math.log10(x))))
    elif rng.random() < 0.6:
        x = round(x * 2) / 2
    else:
        x = round(x, 2)
    return int(x) if float(x).is_integer() else x


def _number(schema: dict, rng: random.Random, integer: bool) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum", 1))
    high = schema.get("maximum", schema.get("exclusiveMaximum", max(low, 0) + (100 if integer else 5000)))
    step = schema.get("multipleOf")
    for _ in range(20):
        if integer:
            value = rng.randint(math.ceil(low), math.floor(high))
            if high - low >= 20 and rng.random() < 0.5:
                value = int(round(value / 5) * 5) or value
        else:
            start = max(low, 1.0) if high > 1 else low
            value = _round_number(math.exp(rng.uniform(math.log(start), math.log(high))) if start > 0
                                  else rng.uniform(low, high), rng)
        if step:
            value = round(round(value / step) * step, 10)
            value = int(value) if integer or float(value).is_integer() else value
        inside = low <= value <= high
        inside &= value > schema["exclusiveMinimum"] if "exclusiveMinimum" in schema else True
        inside &= value < schema["exclusiveMaximum"] if "exclusiveMaximum" in schema else True
        if inside:
            return value
    raise _Retry


def _string(schema: dict, rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt in ("date", "date-time"):
        day = dt.date(2021, 1, 1) + dt.timedelta(days=rng.randrange(5 * 365))
        if fmt == "date":
            return day.isoformat()
        return f"{day.isoformat()}T{rng.randrange(8, 19):02d}:{rng.choice((0, 15, 30, 45)):02d}:00Z"
    if fmt == "email":
        return f"{rng.choice(('anna', 'tom', 'lea', 'omar', 'jane', 'paul'))}.{rng.randrange(10, 99)}@example.com"
    if fmt in ("uri", "iri", "uri-reference"):
        return f"https://example.com/{rng.choice(WORDS)}/{rng.randrange(100, 999)}"
    low, high = schema.get("minLength", 1), schema.get("maxLength", 60)
    text = rng.choice(WORDS)
    while len(text) < low:
        text += " " + rng.choice(WORDS)
    return text[:high].rstrip() if len(text[:high].rstrip()) >= low else text[:high]


def _object(root: dict, schema: dict, rng: random.Random, depth: int, at: str, needed: set[str]) -> dict | None:
    properties, required = schema.get("properties", {}), set(schema.get("required", ()))
    out: dict = {}
    for name, sub in properties.items():
        pointer = f"{at}/{name}"
        if name in required or pointer in needed or rng.random() < 0.5:
            value = _sample(root, sub, rng, depth + 1, pointer, needed)
            if value is None and (name in required or pointer in needed):
                raise _Retry
            if value is not None:
                out[name] = value
    if not out and properties:
        name = rng.choice(sorted(properties))
        value = _sample(root, properties[name], rng, depth + 1, f"{at}/{name}", needed)
        if value is not None:
            out[name] = value
    return out or None


def _array(root: dict, schema: dict, rng: random.Random, depth: int, at: str, needed: set[str]) -> list | None:
    low = max(1, schema.get("minItems", 0))
    high = max(low, min(schema.get("maxItems", low + 2), low + 2))
    items, out = schema.get("items", {}), []
    for i in range(rng.randint(low, high) * (3 if schema.get("uniqueItems") else 1)):
        value = _sample(root, items, rng, depth + 1, f"{at}/{i}", needed)
        if value is not None and not (schema.get("uniqueItems") and value in out):
            out.append(value)
        if len(out) >= high:
            break
    if len(out) < low:
        raise _Retry
    return out


def _sample(root: dict, schema, rng: random.Random, depth: int, at: str, needed: set[str]):
    """A value for ``schema``, or None when it can only be null/empty (the caller leaves it out)."""
    schema = resolve(root, schema)
    if depth > MAX_DEPTH:
        return None
    for key in ("oneOf", "anyOf"):
        if schema.get(key):
            base = {k: v for k, v in schema.items() if k not in ("oneOf", "anyOf")}
            return _sample(root, {**base, **resolve(root, rng.choice(schema[key]))}, rng, depth + 1, at, needed)
    if schema.get("allOf"):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            merged = deep_merge(merged, resolve(root, part))
        return _sample(root, merged, rng, depth + 1, at, needed)
    if "const" in schema:
        return schema["const"]
    choices = [v for v in schema.get("enum", schema.get("examples", ())) if v is not None]
    if choices:
        return rng.choice(choices)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice([k for k in kind if k != "null"] or ["null"])
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        return _object(root, schema, rng, depth, at, needed)
    if kind == "array":
        return _array(root, schema, rng, depth, at, needed)
    if kind in ("integer", "number"):
        return _number(schema, rng, kind == "integer")
    if kind == "boolean":
        return rng.random() < 0.5
    return None if kind == "null" else _string(schema, rng)


# --- shaping by the dimensions ----------------------------------------------------------------

def deep_merge(base, extra):
    """``extra`` over ``base``: objects key by key; a list in ``extra`` fixes the length, items merge by index."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for key, value in extra.items():
            out[key] = deep_merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(extra, list):
        return [deep_merge(base[i], item) if i < len(base) else item for i, item in enumerate(extra)]
    return extra


def merge_patch(base, record):
    """A value's ``record`` over a target: ``deep_merge``, where a ``None`` removes its key (as in a JSON
    merge patch) instead of being written."""
    if isinstance(record, dict):
        out = dict(base) if isinstance(base, dict) else {}
        for key, value in record.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge_patch(out.get(key), value)
        return out
    if isinstance(record, list):
        old = base if isinstance(base, list) else []
        return [merge_patch(old[i] if i < len(old) else None, item) for i, item in enumerate(record)]
    return record


def _parts(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]


def write_at(record: dict, pointer: str, value) -> None:
    """Set ``value`` at JSON pointer ``pointer``, creating objects (lists before digit parts) on the way."""
    parts, node = _parts(pointer), record
    for i, part in enumerate(parts):
        key = int(part) if isinstance(node, list) else part
        if isinstance(node, list):
            while len(node) <= key:
                node.append({})
        if i == len(parts) - 1:
            node[key] = value
            return
        child = node[key] if isinstance(node, list) or key in node else None
        if not isinstance(child, (dict, list)):
            child = [] if parts[i + 1].isdigit() else {}
            node[key] = child
        node = child


def remove_at(record: dict, pointer: str) -> None:
    """Delete what lies at ``pointer`` and every container left empty by it."""
    parts, trail, node = _parts(pointer), [], record
    for part in parts[:-1]:
        key = int(part) if isinstance(node, list) else part
        if (isinstance(node, list) and key >= len(node)) or (isinstance(node, dict) and key not in node):
            return
        trail.append((node, key))
        node = node[key]
    last = parts[-1]
    if isinstance(node, dict):
        node.pop(last, None)
    elif isinstance(node, list) and int(last) < len(node):
        node.pop(int(last))
    while trail and not node:
        parent, key = trail.pop()
        parent.pop(key)
        node = parent


def writes_name(value) -> bool:
    """False for a value whose ``record`` is ``{}``: it writes nothing at its dimension's path."""
    return not (isinstance(value.record, dict) and not value.record)


def sample_target(spec, dimensions: dict[str, str], rng: random.Random) -> dict:
    """A valid sparse target record for these dimension values (deterministic for a given ``rng``)."""
    chosen = []
    for name, value_name in dimensions.items():
        try:
            dimension = spec.dimension(name)
            chosen.append((dimension, dimension.value(value_name)))
        except KeyError:
            raise DatagenError(f"unknown dimension value {name}={value_name!r}",
                               hint="use the dimensions and values the spec declares") from None
    needed = {d.path for d, v in chosen if d.path and writes_name(v)}
    for _, value in chosen:
        needed |= _record_pointers(value.record or {}, "")
    needed |= {p[:i] for p in list(needed) for i in range(1, len(p)) if p[i] == "/"}
    problem = "nothing sampled"
    for _ in range(TRIES):
        try:
            record = _sample(spec.schema, spec.schema, rng, 0, "", needed)
        except _Retry:
            continue
        record = record if isinstance(record, dict) else {}
        for _, value in chosen:
            if value.record:
                record = merge_patch(record, json.loads(json.dumps(value.record)))
        for dimension, value in chosen:
            if dimension.path:
                if writes_name(value):
                    write_at(record, dimension.path, value.name)
                else:
                    remove_at(record, dimension.path)
        problem = first_error(spec.schema, record) or ("it came out empty" if not record else "")
        if not problem:
            return record
    raise DatagenError(f"cannot sample a valid target for {dimensions} in {TRIES} tries: {problem}",
                       hint="check the schema (required parts, patterns without examples) and the values' records")


def _record_pointers(record: dict, at: str) -> set[str]:
    out = set()
    for key, value in record.items():
        if value is None:  # removed, not needed
            continue
        out.add(f"{at}/{key}")
        if isinstance(value, dict):
            out |= _record_pointers(value, f"{at}/{key}")
    return out


# --- showing a target -------------------------------------------------------------------------

def to_toon(record) -> str:
    """``record`` as TOON (Token-Oriented Object Notation); refused if decoding does not give it back."""
    toon = require_module("toon_format")
    text = toon.encode(record)
    try:
        back = toon.decode(text)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the text cannot be trusted
        raise DatagenError(f"the TOON encoding of a target does not decode: {exc}") from exc
    if back != record:
        raise DatagenError("the TOON encoding of a target does not decode to the same record",
                           hint="avoid keys or strings the encoder cannot round-trip; report it with the record")
    return text


def target_numbers(record) -> list[str]:
    """Every number in ``record`` (bools excluded), written as the TOON target shows it, once each, in order."""
    toon = require_module("toon_format")
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            text = toon.encode(node)
            if text not in found:
                found.append(text)

    walk(record)
    return found


def render_prompt(spec, dimensions: dict[str, str], record: dict) -> str:
    """The writer's prompt: ``spec.prompt_template`` filled with the dimension texts and the target."""
    values = {name: spec.dimension(name).value(value) for name, value in dimensions.items()}
    fields = {name: value.describe or value.name for name, value in values.items()}
    fields.update(
        dimensions="\n".join(f"- {name}: {text}" for name, text in fields.items()),
        target_json=json.dumps(record, ensure_ascii=False, indent=2),
        target_toon=to_toon(record),
        numbers=", ".join(target_numbers(record)) or "(none)",
    )
    for dimension in spec.dimensions:
        fields.setdefault(dimension.name, "any")
    return spec.prompt_template.format(**fields)


def instructions_of(spec) -> str:
    """The fixed words of what a writer is told (the prompt template's literal text and the system prompt),
    each piece on its own line: what a case must not echo (gates.copied_run)."""
    import string

    literal = [text for text, _, _, _ in string.Formatter().parse(spec.prompt_template) if text]
    return "\n".join([*literal, spec.system_prompt or ""])
