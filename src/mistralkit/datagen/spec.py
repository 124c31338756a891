"""Datagen specs: the YAML file that declares dimensions, the target schema, seeds and the prompt.

>>> spec = load_spec("legal/spec.yaml")  # doctest: +SKIP

``check_spec`` reports every problem as ``FILE:LINE: what`` (lines come from the YAML nodes, the
schema file and the seed file); ``load_spec`` raises the first one. A value is a bare name (weight 1)
or ``{name, weight, describe, record}``; a value with ``record: {}`` writes nothing at its
dimension's ``path``, and a ``null`` in a record removes that part of the target, as in a JSON merge
patch (see ``targets``). Names are taken as written (``no`` stays the string "no").
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import random
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

from . import schema as json_schema
from . import targets
from .errors import DatagenError, SpecError
from .judge import JudgeSpec, read_judge
from .seeds import Seed, scan_seeds
from .specfile import Found, locate, mapping, names_in_template, node_value, read_numbers, read_yaml, scalar_name

TOP_KEYS = ("name", "target_total", "seed_file", "schema_file", "schema", "lease_minutes", "dimensions",
            "forbidden", "prompt", "system", "min_chars", "max_chars", "near_duplicate", "random_seed", "id_format",
            "min_prose", "max_data_share", "max_copied_words", "language", "max_out_of_context", "judge")
ID_FORMAT = "i{n:06d}"  # instruction ids: the instruction's number n in a Python format
SAFE_ID = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
TEMPLATE_FIELDS = ("dimensions", "target_json", "target_toon", "numbers")
EXAMPLE_FILES = ("spec.yaml", "schema.json", "seeds.jsonl")
EXAMPLES = {  # examples/NAME: what `datagen init --example NAME` writes
    "legal-en": "messages to a legal help service -> the legal matter (English)",
    "succession-fr": "énoncés de successions en droit français -> le dossier de succession (French)",
}
DEFAULT_EXAMPLE = "legal-en"


@dataclass(frozen=True)
class Value:
    """One value of a dimension; ``record`` is merged into targets (``{}``: write nothing at the path)."""

    name: str
    weight: float = 1.0
    record: dict | None = None
    describe: str = ""


@dataclass(frozen=True)
class Dimension:
    """A dimension to balance: its values, where its value goes in the target, a value it must differ from."""

    name: str
    values: tuple[Value, ...]
    path: str | None = None
    differs_from: str | None = None

    def value(self, name: str) -> Value:
        for value in self.values:
            if value.name == name:
                return value
        raise KeyError(f"{self.name} has no value {name!r}")

    def weights(self) -> dict[str, float]:
        total = sum(v.weight for v in self.values)
        return {v.name: v.weight / total for v in self.values}


@dataclass(frozen=True, kw_only=True)
class Spec:
    """A loaded, checked spec (build it with ``load_spec``)."""

    path: Path
    name: str
    dimensions: tuple[Dimension, ...]
    forbidden: tuple[dict[str, str], ...] = ()
    target_total: int = 5000
    seed_path: Path | None = None
    schema: dict
    prompt_template: str
    system_prompt: str
    lease_minutes: float = 30
    min_chars: int = 80
    max_chars: int = 6000
    near_duplicate: float = 0.8
    random_seed: int = 0
    id_format: str = ID_FORMAT
    min_prose: float = 0.6  # share of the text in sentences (gates.prose)
    max_data_share: float = 0.35  # share of tokens that are numbers, e-mails, codes
    max_copied_words: int = 12  # longest run of words a case may share with its instructions
    language: str | None = None  # en or fr: the case must read as that language
    max_out_of_context: float = 0.25  # share of target numbers allowed outside sentences (gates.in_context)
    judge: JudgeSpec | None = None  # a model that scores each case before it is accepted (judge.py)

    def instruction_id(self, n: int) -> str:
        return self.id_format.format(n=n)

    @cached_property
    def _by_name(self) -> dict[str, Dimension]:
        return {d.name: d for d in self.dimensions}

    def dimension(self, name: str) -> Dimension:
        return self._by_name[name]

    def allowed(self, assignment: dict[str, str]) -> bool:
        """Whether a (partial) assignment breaks no ``differs_from`` and matches no forbidden entry."""
        for d in self.dimensions:
            if d.differs_from and d.name in assignment and assignment[d.name] == assignment.get(d.differs_from):
                return False
        return not any(all(assignment.get(k) == v for k, v in rule.items()) for rule in self.forbidden)

    def fingerprint(self) -> str:
        """sha256 of dimensions, forbidden entries and schema: a state folder refuses a spec that changed them."""
        canonical = {"dimensions": [[d.name, d.path, d.differs_from, [[v.name, v.weight, v.record] for v in d.values]]
                                    for d in self.dimensions],
                     "forbidden": list(self.forbidden), "schema": self.schema}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def load_spec(path: str | Path) -> Spec:
    """The spec at ``path``; raises ``SpecError`` (``FILE:LINE: what``) on its first problem."""
    spec, problems = _read(Path(path))
    if problems:
        raise problems[0]
    return spec  # type: ignore[return-value]


def check_spec(path: str | Path) -> list[SpecError]:
    """Every problem of the spec, its schema and its seed file; ``[]`` when it is fine."""
    return _read(Path(path))[1]


def read_seeds(spec: Spec) -> list[Seed]:
    """The seed cases of ``spec`` (none without a seed file); raises the first bad line as ``SpecError``."""
    seeds, problems = scan_seeds(spec)
    if problems:
        raise problems[0]
    return seeds


def init_example(directory: str | Path, example: str = DEFAULT_EXAMPLE) -> Path:
    """Write an example (spec.yaml, schema.json, seeds.jsonl; one of ``EXAMPLES``) into ``directory``;
    never overwrites."""
    if example not in EXAMPLES:
        raise DatagenError(f"unknown example {example!r}; the examples are: {', '.join(EXAMPLES)}")
    directory = Path(directory)
    for name in EXAMPLE_FILES:
        if (directory / name).exists():
            raise DatagenError(f"{directory / name} already exists; nothing was written",
                               hint="choose a new or empty folder")
    if directory.exists() and not directory.is_dir():
        raise DatagenError(f"{directory} is not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    source = resources.files("mistralkit.datagen").joinpath("examples", example)
    for name in EXAMPLE_FILES:
        try:
            with open(directory / name, "xb") as handle:
                handle.write(source.joinpath(name).read_bytes())
        except FileExistsError:
            raise DatagenError(f"{directory / name} already exists", hint="choose a new or empty folder") from None
    return directory / "spec.yaml"


# --- reading -----------------------------------------------------------------------------------

def _read(path: Path) -> tuple[Spec | None, list[SpecError]]:
    found = Found(path)
    root = read_yaml(path, found)
    if root is None:
        return None, found.errors
    top = mapping(root, found, TOP_KEYS, "the spec")
    options = _options(path, top, found)
    lines: dict[tuple[str, str], object] = {}
    dimensions = _dimensions(top, found, lines)
    forbidden = _forbidden(top, dimensions, found)
    schema = _schema(path, top, found)
    for key in ("prompt", "system"):
        if key not in top:
            found(root, f"missing {key!r}", hint=f"add {key}: | with the text")
        elif not isinstance(node_value(top[key][1]), str) or not node_value(top[key][1]).strip():
            found(top[key][1], f"{key} must be a non-empty text")
    if "prompt" in top and isinstance(node_value(top["prompt"][1]), str):
        known = set(TEMPLATE_FIELDS) | {d.name for d in dimensions}
        for line, problem in names_in_template(top["prompt"][1], known):
            found(line, problem, hint=f"placeholders: {', '.join('{' + k + '}' for k in sorted(known))}")
    if schema is None or not dimensions:
        return None, found.sorted()
    texts = {key: node_value(top[key][1]) if key in top else "" for key in ("prompt", "system")}
    spec = Spec(path=path, dimensions=tuple(dimensions), forbidden=tuple(forbidden), schema=schema,
                prompt_template=str(texts["prompt"]), system_prompt=str(texts["system"]).strip(), **options)
    _against_schema(spec, lines, found)
    if not found.errors:
        _try_every_value(spec, lines, found)
    found.errors += scan_seeds(spec)[1]
    return (None if found.errors else spec), found.sorted()


def _options(path: Path, top: dict, found: Found) -> dict:
    """The scalar settings, checked; returns keyword arguments for ``Spec``."""
    out: dict = {"name": path.resolve().parent.name or path.stem}
    rules = {"target_total": (int, lambda v: v >= 1, "a whole number of cases, at least 1"),
             "lease_minutes": (float, lambda v: v > 0, "a positive number of minutes"),
             "min_chars": (int, lambda v: v >= 0, "a whole number, 0 or more"),
             "max_chars": (int, lambda v: v >= 1, "a whole number, at least 1"),
             "near_duplicate": (float, lambda v: 0 < v <= 1, "a number above 0 and at most 1"),
             "random_seed": (int, lambda v: True, "a whole number"),
             "min_prose": (float, lambda v: 0 <= v <= 1, "a share between 0 and 1"),
             "max_data_share": (float, lambda v: 0 <= v <= 1, "a share between 0 and 1"),
             "max_out_of_context": (float, lambda v: 0 <= v <= 1, "a share between 0 and 1"),
             "max_copied_words": (int, lambda v: v >= 4, "a whole number of words, at least 4")}
    out.update(read_numbers(top, rules, found))
    if "language" in top:
        value = node_value(top["language"][1])
        if value not in ("en", "fr"):
            found(top["language"][1], f"language must be en or fr, got {value!r}")
        else:
            out["language"] = value
    if "id_format" in top:
        _id_format(top["id_format"][1], out, found)
    if "judge" in top and (judge := read_judge(top["judge"][1], found)) is not None:
        out["judge"] = judge
    if "name" in top:
        if not isinstance(node_value(top["name"][1]), str) or not node_value(top["name"][1]).strip():
            found(top["name"][1], "name must be a non-empty text")
        else:
            out["name"] = node_value(top["name"][1]).strip()
    if out.get("min_chars", 80) >= out.get("max_chars", 6000):
        found(top.get("max_chars", top.get("min_chars"))[1], "min_chars must be below max_chars")
    if "seed_file" in top:
        name = node_value(top["seed_file"][1])
        if not isinstance(name, str) or not name.strip():
            found(top["seed_file"][1], "seed_file must be a file name")
        elif not (path.parent / name).is_file():
            found(top["seed_file"][1], f"seed file {path.parent / name} not found",
                  hint="the path is relative to the spec file")
        else:
            out["seed_path"] = path.parent / name
    return out


def _dimensions(top: dict, found: Found, lines: dict) -> list[Dimension]:
    if "dimensions" not in top:
        found(1, "missing 'dimensions'", hint="declare at least one dimension with its values")
        return []
    pairs = mapping(top["dimensions"][1], found, None, "dimensions")
    raw: list[tuple[str, dict]] = []
    for name, (key, node) in pairs.items():
        if not name.isidentifier() or name in TEMPLATE_FIELDS:
            found(key, f"dimension name {name!r} must be a plain identifier, "
                       f"not one of {', '.join(TEMPLATE_FIELDS)}")
            continue
        fields = mapping(node, found, ("values", "path", "differs_from"), f"dimension {name!r}")
        values = _values(name, key, fields, found, lines)
        path = node_value(fields["path"][1]) if "path" in fields else None
        if path is not None and (not isinstance(path, str) or not path.startswith("/") or path == "/"):
            found(fields["path"][1],
                  f"path must be a JSON pointer such as /matter/area, got {fields['path'][1].value!r}")
            path = None
        lines[(name, "path")] = fields.get("path", (None, key))[1]
        lines[(name, "differs_from")] = fields.get("differs_from", (None, key))[1]
        differs = scalar_name(fields["differs_from"][1], found) if "differs_from" in fields else None
        raw.append((name, {"values": tuple(values), "path": path, "differs_from": differs}))
    if pairs and not raw:
        return []
    by_name = {name: fields for name, fields in raw}
    for name, fields in raw:
        other = fields["differs_from"]
        if other is None:
            continue
        if other not in by_name or other == name:
            what = "itself" if other == name else "an unknown dimension"
            found(lines[(name, "differs_from")], f"differs_from names {what} {other!r}",
                  hint=f"dimensions: {', '.join(by_name)}")
        elif not {v.name for v in fields["values"]} & {v.name for v in by_name[other]["values"]}:
            found(lines[(name, "differs_from")],
                  f"differs_from {other!r}: the two dimensions share no value, so the rule does nothing")
    return [Dimension(name, **fields) for name, fields in raw]


def _values(dimension: str, key, fields: dict, found: Found, lines: dict) -> list[Value]:
    node = fields.get("values", (None, None))[1]
    if node is None or not isinstance(node.value, list) or not node.value or node.tag.endswith(":map"):
        found(node or key, f"dimension {dimension!r} needs a non-empty list of values")
        return []
    out, first = [], {}
    for node in fields["values"][1].value:
        if node.tag.endswith(":map"):
            item = mapping(node, found, ("name", "weight", "record", "describe"), f"a value of {dimension!r}")
            if "name" not in item:
                found(node, f"a value of {dimension!r} needs a name")
                continue
            name = scalar_name(item["name"][1], found)
        else:
            item, name = {}, scalar_name(node, found)
        if name is None:
            continue
        if name in first:
            found(node, f"value {name!r} of {dimension!r} repeated (first on line {first[name]})")
            continue
        first[name] = node.start_mark.line + 1
        lines[(dimension, name)] = node
        weight = node_value(item["weight"][1]) if "weight" in item else 1.0
        number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
        if not number or not math.isfinite(weight) or weight <= 0:
            found(item["weight"][1], f"weight of {name!r} must be a positive number, got {item['weight'][1].value!r}")
            weight = 1.0  # keep the value: later checks (seed labels) should not cascade from this one
        record = node_value(item["record"][1]) if "record" in item else None
        if "record" in item and not isinstance(record, dict):
            found(item["record"][1], f"record of {name!r} must be a mapping (a partial target record)")
            record = None
        lines[(dimension, name, "record")] = item.get("record", (None, node))[1]
        describe = node_value(item["describe"][1]) if "describe" in item else name
        if not isinstance(describe, str):
            found(item["describe"][1], f"describe of {name!r} must be a text")
            describe = name
        out.append(Value(name, float(weight), record, describe.strip() or name))
    return out


def _forbidden(top: dict, dimensions: list[Dimension], found: Found) -> list[dict[str, str]]:
    if "forbidden" not in top:
        return []
    node, out = top["forbidden"][1], []
    if not isinstance(node.value, list) or node.tag.endswith(":map"):
        found(node, "forbidden must be a list of {dimension: value} mappings")
        return []
    known = {d.name: {v.name for v in d.values} for d in dimensions}
    for entry in node.value:
        pairs = mapping(entry, found, None, "a forbidden entry")
        if not pairs:
            found(entry, "a forbidden entry must name at least one dimension: value")
            continue
        rule = {}
        for dim, (key, value_node) in pairs.items():
            value = scalar_name(value_node, found)
            if dim not in known:
                found(key, f"forbidden entry names an unknown dimension {dim!r}",
                      hint=f"dimensions: {', '.join(known)}")
            elif value is not None and value not in known[dim]:
                found(value_node, f"forbidden entry: {dim} has no value {value!r}",
                      hint=f"values: {', '.join(sorted(known[dim]))}")
            rule[dim] = value
        out.append(rule)
    return out


def _schema(path: Path, top: dict, found: Found) -> dict | None:
    """The target schema (inline ``schema:`` or ``schema_file:``), checked as Draft 2020-12."""
    if ("schema" in top) == ("schema_file" in top):
        found(top.get("schema_file", top.get("schema", (None, 1)))[1],
              "give exactly one of 'schema' (inline) and 'schema_file'")
        return None
    if "schema" in top:
        node, where, schema = top["schema"][1], found, node_value(top["schema"][1])
    else:
        name = node_value(top["schema_file"][1])
        file = path.parent / str(name)
        if not isinstance(name, str) or not file.is_file():
            found(top["schema_file"][1], f"schema file {file} not found",
                  hint="the path is relative to the spec file")
            return None
        where = Found(file)
        try:
            text = file.read_text(encoding="utf-8-sig")
            schema = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            where(getattr(exc, "lineno", 1), f"not valid JSON: {getattr(exc, 'msg', exc)}")
            found.errors += where.errors
            return None
        node = read_yaml(file, Found(file), text=text)  # JSON is YAML: its nodes give a schema error's line
    before = len(where.errors)
    jsonschema = json_schema.require_module("jsonschema")
    if not isinstance(schema, dict):
        where(node or 1, "the schema must be a JSON object")
    else:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.exceptions.SchemaError as exc:
            where(locate(node, list(exc.path)) if node is not None else 1,
                  f"not a valid Draft 2020-12 schema at /{'/'.join(map(str, exc.path))}: {exc.message}")
        else:
            if json_schema.resolve(schema, schema).get("type", "object") != "object":
                where(node or 1, "the target schema must describe an object (type: object)")
    fine = len(where.errors) == before
    if where is not found:
        found.errors += where.errors
    return schema if fine else None


def _against_schema(spec: Spec, lines: dict, found: Found) -> None:
    """Dimension paths and value records must be places and contents the schema allows."""
    for d in spec.dimensions:
        if d.path:
            place = json_schema.schema_at(spec.schema, d.path)
            if place is None:
                found(lines[(d.name, "path")], f"path {d.path}: the schema declares nothing there")
                continue
            for v in d.values:
                if targets.writes_name(v) and (problem := json_schema.value_problem(spec.schema, place, v.name)):
                    found(lines[(d.name, v.name)], f"value {v.name!r} cannot stand at {d.path}: {problem}")
        for v in d.values:
            for problem in json_schema.record_problems(spec.schema, v.record or {}):
                pointer = problem.split(":", 1)[0]
                node = lines[(d.name, v.name, "record")]
                found(locate(node, pointer.split("/")[1:]), f"record of {v.name!r}: {problem}")


def _try_every_value(spec: Spec, lines: dict, found: Found) -> None:
    """Each value must appear in some allowed assignment whose target can be sampled."""
    for d in spec.dimensions:
        for v in d.values:
            assignment = _complete(spec, {d.name: v.name})
            if assignment is None:
                found(lines[(d.name, v.name)], f"value {v.name!r} of {d.name!r} can never be issued: "
                                               "forbidden entries and differs_from rule out every combination")
                continue
            try:
                targets.sample_target(spec, assignment, random.Random(spec.random_seed))
            except DatagenError as exc:
                found(lines[(d.name, v.name)], exc.message, exc.hint)


def _complete(spec: Spec, partial: dict[str, str], budget: list[int] | None = None) -> dict[str, str] | None:
    """An allowed full assignment extending ``partial`` (depth-first, bounded), or None."""
    budget = budget if budget is not None else [10_000]
    missing = [d for d in spec.dimensions if d.name not in partial]
    if not missing:
        return partial
    for value in missing[0].values:
        budget[0] -= 1
        trial = {**partial, missing[0].name: value.name}
        if budget[0] > 0 and spec.allowed(trial) and (done := _complete(spec, trial, budget)) is not None:
            return done
    return None


def _id_format(node, out: dict, found: Found) -> None:
    """``id_format: "INS-{n:04d}"``: a Python format of the instruction number, giving distinct ids made of
    letters, digits and . _ : @ - (checked on the first numbers and a large one)."""
    value = node_value(node)
    try:
        samples = [value.format(n=n) for n in (1, 2, 10, 999_999)] if isinstance(value, str) else None
    except (KeyError, IndexError, ValueError) as exc:
        found(node, f"id_format {value!r} does not format the number n ({exc})", hint='e.g. "INS-{n:04d}"')
        return
    if samples is None or len(set(samples)) < len(samples) or not all(SAFE_ID.fullmatch(s) for s in samples):
        found(node, f"id_format must be a text with {{n}} giving distinct ids of letters, digits and . _ : @ -, "
                    f"got {value!r}", hint='e.g. "INS-{n:04d}"')
        return
    out["id_format"] = value
