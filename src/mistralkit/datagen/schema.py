"""The spec's JSON Schema: validation (Draft 2020-12, formats checked) and walking it (``$ref``,
properties, items), for targets, seeds and the spec's own checks."""

from __future__ import annotations

import json
from functools import lru_cache

from ..errors import MissingDependency
from .errors import DatagenError

MAX_DEPTH = 12
EXTRA = "pip install 'mistralkit[datagen]'"


def require_module(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise MissingDependency(f"mistralkit datagen needs the {module.split('.')[0]} package", hint=EXTRA) from exc


@lru_cache(maxsize=32)
def _validator_for(schema_json: str):
    jsonschema = require_module("jsonschema")
    return jsonschema.Draft202012Validator(json.loads(schema_json), format_checker=jsonschema.FormatChecker())


def validator(schema: dict):
    """A Draft 2020-12 validator with the format checker on (cached per schema)."""
    return _validator_for(json.dumps(schema, sort_keys=True))


def _best_error(schema: dict, instance):
    jsonschema = require_module("jsonschema")
    return jsonschema.exceptions.best_match(validator(schema).iter_errors(instance))


def first_error(schema: dict, instance) -> str | None:
    """The most relevant validation error as ``at /pointer: message``, or None when ``instance`` is valid."""
    error = _best_error(schema, instance)
    if error is None:
        return None
    return f"at /{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"


# --- walking the schema -----------------------------------------------------------------------

def resolve(root: dict, schema) -> dict:
    """``schema`` with local ``$ref`` chains followed (``#/$defs/...``, ``#/definitions/...``)."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < MAX_DEPTH:
        ref = schema["$ref"]
        if not ref.startswith("#"):
            raise DatagenError(f"$ref {ref!r}: only references inside the schema (#/...) are followed")
        target = root
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise DatagenError(f"$ref {ref!r} points at nothing in the schema")
            target = target[part]
        schema, seen = target, seen + 1
    return schema if isinstance(schema, dict) else {}


def _branches(root: dict, schema: dict) -> list[dict]:
    schema = resolve(root, schema)
    out = [schema]
    for key in ("allOf", "anyOf", "oneOf"):
        for branch in schema.get(key, ()):
            out += _branches(root, branch)
    return out


def child_schema(root: dict, schema: dict, key: str) -> dict | None:
    """The subschema for property (or, for a digit string, list item) ``key``; None if not declared."""
    for branch in _branches(root, schema):
        if key in branch.get("properties", {}):
            return branch["properties"][key]
        if key.isdigit() and isinstance(branch.get("items"), dict):
            return branch["items"]
    return None


def schema_at(root: dict, pointer: str) -> dict | None:
    """The subschema at JSON pointer ``pointer`` (properties and array items only), None if undeclared."""
    schema: dict | None = root
    for part in filter(None, pointer.split("/")):
        schema = child_schema(root, schema, part.replace("~1", "/").replace("~0", "~"))
        if schema is None:
            return None
    return schema


def value_problem(root: dict, schema: dict, value) -> str | None:
    """Why ``value`` cannot stand where ``schema`` applies (checked against the whole document's $defs)."""
    standalone = {**resolve(root, schema)}
    for key in ("$defs", "definitions"):
        if key in root:
            standalone.setdefault(key, root[key])
    error = _best_error(standalone, value)
    return None if error is None else error.message


def record_problems(root: dict, record: dict, where: str = "") -> list[str]:
    """Every place where a partial ``record`` leaves the schema: undeclared keys or values it refuses."""
    problems = []
    schema = schema_at(root, where) if where else root
    for key, value in record.items():
        pointer = f"{where}/{key}"
        child = child_schema(root, schema, str(key)) if schema is not None else None
        if child is None:
            problems.append(f"{pointer}: the schema declares no such property")
        elif value is None:  # a removal (merge patch): only the key must be declared
            continue
        elif isinstance(value, dict) and value:
            problems += record_problems(root, value, pointer)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                problems += record_problems(root, item, f"{pointer}/{i}")
        elif (problem := value_problem(root, child, value)) is not None:
            problems.append(f"{pointer}: {problem}")
    return problems
