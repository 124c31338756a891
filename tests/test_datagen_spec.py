"""datagen specs, seeds and targets: the shipped legal example, FILE:LINE errors, sampled targets, TOON."""

from __future__ import annotations

import json
import random

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from toon_format import decode

from mistralkit.datagen.errors import DatagenError, SpecError
from mistralkit.datagen.spec import check_spec, init_example, load_spec, read_seeds
from mistralkit.datagen.targets import render_prompt, sample_target, target_numbers, to_toon

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["area", "amount"],
    "properties": {
        "who": {"enum": ["tenant", "landlord"]},
        "area": {"$ref": "#/$defs/area"},
        "second": {"$ref": "#/$defs/area"},
        "amount": {"type": "number", "minimum": 1, "maximum": 5000},
        "note": {"type": "string", "examples": ["late", "unpaid"]},
    },
    "$defs": {"area": {"enum": ["rent", "work"]}},
}

SPEC = """\
name: mini
target_total: 100
schema_file: schema.json
seed_file: seeds.jsonl
dimensions:
  persona:
    path: /who
    values:
      - {name: tenant, weight: 2}
      - landlord
  topic:
    path: /area
    values: [rent, work]
  second:
    path: /second
    differs_from: topic
    values:
      - {name: none, record: {}}
      - rent
      - work
forbidden:
  - {persona: landlord, topic: work}
prompt: |
  Write as {persona} about {topic} and {second}.
  {target_toon}
  Numbers: {numbers}
system: Extract as JSON.
"""

SEEDS = [
    {"prompt": "I pay 700 in rent and it is late.", "response": json.dumps({"area": "rent", "amount": 700}),
     "dimensions": {"persona": "tenant", "topic": "rent"}},
    {"messages": [{"role": "user", "content": "My boss owes me 1200."},
                  {"role": "assistant", "content": "not json"}],
     "record": {"area": "work", "amount": 1200}, "dimensions": {"topic": "work", "second": "none"}},
    {"text": "A tenant wrote about 50 of damage.", "record": {"area": "rent", "amount": 50}},
]


def line_of(text: str, fragment: str) -> int:
    """The 1-based line of the first line of ``text`` that contains ``fragment``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def write(tmp_path, spec: str = SPEC, schema: dict | str = SCHEMA, seeds: list | None = None):
    (tmp_path / "spec.yaml").write_text(spec)
    (tmp_path / "schema.json").write_text(schema if isinstance(schema, str) else json.dumps(schema, indent=2))
    lines = [json.dumps(s) if isinstance(s, dict) else s for s in (SEEDS if seeds is None else seeds)]
    (tmp_path / "seeds.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "spec.yaml"


def messages(path) -> list[str]:
    return [problem.message for problem in check_spec(path)]


@pytest.fixture(scope="module")
def legal(tmp_path_factory):
    return load_spec(init_example(tmp_path_factory.mktemp("legal") / "legal"))


def test_init_example_loads_and_refuses_to_overwrite(tmp_path):
    spec_path = init_example(tmp_path / "legal")
    assert sorted(p.name for p in spec_path.parent.iterdir()) == ["schema.json", "seeds.jsonl", "spec.yaml"]
    spec = load_spec(spec_path)
    assert [d.name for d in spec.dimensions] == ["persona", "narrative_voice", "message_form", "noise",
                                                  "numeric_density", "complexity", "main_topic", "secondary_topic"]
    assert spec.dimension("secondary_topic").differs_from == "main_topic"
    assert spec.target_total == 5000 and spec.system_prompt.startswith("Extract the legal matter as JSON")
    assert abs(sum(spec.dimension("persona").weights().values()) - 1) < 1e-9
    assert spec.dimension("persona").weights()["tenant"] == 2 / 8
    seeds = read_seeds(spec)
    assert 12 <= len(seeds) <= 20 and {s.sample.shape for s in seeds} == {"prompt", "messages", "text"}
    assert all(s.record is not None for s in seeds) and sum(bool(s.dimensions) for s in seeds) == len(seeds)
    before = spec_path.read_bytes()
    (tmp_path / "legal" / "seeds.jsonl").unlink()
    with pytest.raises(DatagenError, match="spec.yaml already exists"):
        init_example(tmp_path / "legal")
    assert spec_path.read_bytes() == before and not (tmp_path / "legal" / "seeds.jsonl").exists()


def test_mini_spec_loads_with_rules(tmp_path):
    spec = load_spec(write(tmp_path))
    assert spec.allowed({"persona": "tenant", "topic": "work", "second": "rent"})
    assert not spec.allowed({"persona": "landlord", "topic": "work"})
    assert not spec.allowed({"topic": "rent", "second": "rent"})
    assert spec.allowed({"persona": "landlord"})
    assert spec.seed_path == tmp_path / "seeds.jsonl" and spec.dimension("second").value("none").record == {}
    with pytest.raises(KeyError):
        spec.dimension("topic").value("family")
    (tmp_path / "other").mkdir()
    changed = load_spec(write(tmp_path / "other", SPEC.replace("weight: 2}", "weight: 3}")))
    assert changed.fingerprint() != spec.fingerprint()
    assert load_spec(tmp_path / "spec.yaml").fingerprint() == spec.fingerprint()


BROKEN = [
    ("unknown key", lambda s: s.replace("target_total: 100", "target_totl: 100"), "target_totl",
     "unknown key 'target_totl'"),
    ("bad weight", lambda s: s.replace("weight: 2}", "weight: -1}"), "weight: -1",
     "weight of 'tenant' must be a positive number"),
    ("text weight", lambda s: s.replace("weight: 2}", "weight: heavy}"), "weight: heavy",
     "must be a positive number, got 'heavy'"),
    ("differs_from unknown", lambda s: s.replace("differs_from: topic", "differs_from: topik"), "differs_from",
     "differs_from names an unknown dimension 'topik'"),
    ("differs_from disjoint", lambda s: s.replace("differs_from: topic", "differs_from: persona"), "differs_from",
     "share no value"),
    ("forbidden dimension", lambda s: s.replace("{persona: landlord, topic: work}", "{mood: landlord}"), "mood",
     "unknown dimension 'mood'"),
    ("forbidden value", lambda s: s.replace("{persona: landlord, topic: work}", "{persona: judge}"), "judge",
     "persona has no value 'judge'"),
    ("repeated value", lambda s: s.replace("values: [rent, work]", "values: [rent, work,\n      rent]"),
     "      rent]",
     "value 'rent' of 'topic' repeated"),
    ("placeholder", lambda s: s.replace("  {target_toon}", "  {target_toon} {mood}"), "{mood}",
     "unknown placeholder {mood}"),
    ("schema file missing", lambda s: s.replace("schema_file: schema.json", "schema_file: nope.json"), "nope.json",
     "schema file"),
    ("path undeclared", lambda s: s.replace("path: /who", "path: /whom"), "/whom",
     "path /whom: the schema declares nothing there"),
    ("value refused by schema", lambda s: s.replace("      - landlord", "      - judge"), "- judge",
     "value 'judge' cannot stand at /who"),
    ("record undeclared", lambda s: s.replace("{name: tenant, weight: 2}", "{name: tenant, record: {colour: red}}"),
     "colour", "/colour: the schema declares no such property"),
    ("record value refused", lambda s: s.replace("{name: tenant, weight: 2}", "{name: tenant, record: {note: 5}}"),
     "note: 5", "record of 'tenant': /note: 5 is not of type 'string'"),
    ("duplicate key", lambda s: s.replace("name: mini", "name: mini\nname: again"), "name: again",
     "key 'name' repeated"),
]


@pytest.mark.parametrize("mutate,marker,what", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_spec_names_file_and_line(tmp_path, mutate, marker, what):
    text = mutate(SPEC)
    assert text != SPEC
    path = write(tmp_path, text)
    found = messages(path)
    expected = f"{path}:{line_of(text, marker)}: "
    assert any(m.startswith(expected) and what in m for m in found), found
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert raised.value.message == found[0]


def test_record_items_are_checked_against_the_schema(tmp_path):
    path = init_example(tmp_path / "legal")
    text = path.read_text().replace("[{role: tenant}, {role: landlord}]", "[{role: tenant}, {role: judge}]")
    path.write_text(text)
    found = messages(path)
    assert len(found) == 1 and found[0].startswith(f"{path}:{line_of(text, 'role: judge')}: record of 'tenancy': "
                                                   "/parties/1/role: 'judge' is not one of"), found


def test_placeholder_line_inside_a_block(tmp_path):
    text = SPEC.replace("  Numbers: {numbers}", "  Numbers: {numbers}\n\n  and {nonsense} here")
    path = write(tmp_path, text)
    assert messages(path) == [f"{path}:{line_of(text, '{nonsense}')}: prompt: unknown placeholder {{nonsense}}"]


def test_invalid_schema_points_into_the_schema_file(tmp_path):
    schema = json.dumps({**SCHEMA, "properties": {**SCHEMA["properties"], "amount": {"type": "money"}}}, indent=2)
    path = write(tmp_path, schema=schema)
    found = messages(path)
    assert len(found) == 1, found
    line = line_of(schema, '"money"')
    assert found[0].startswith(f"{tmp_path / 'schema.json'}:{line}: ")
    assert "not a valid Draft 2020-12 schema at /properties/amount/type" in found[0]
    path = write(tmp_path, schema="{\n  \"type\": \"object\",\n}\n")
    assert messages(path)[0].startswith(f"{tmp_path / 'schema.json'}:3: not valid JSON")


def test_bad_seed_lines_name_the_seed_file(tmp_path):
    seeds = [SEEDS[0], "{not json", {"text": "x", "dimensions": {"mood": "sad"}},
             {"text": "y", "dimensions": {"topic": "family"}},
             {"prompt": "z", "response": json.dumps({"area": "rent", "amount": 0})},
             {"prompt": "q", "completion": "a", "response": "b"}]
    path = write(tmp_path, seeds=seeds)
    where = tmp_path / "seeds.jsonl"
    found = messages(path)
    assert found[0].startswith(f"{where}:2: invalid JSON")
    assert found[1] == f"{where}:3: dimensions: unknown dimension 'mood' (known: persona, topic, second)"
    assert found[2] == f"{where}:4: dimensions.topic: unknown value 'family'"
    assert found[3].startswith(f"{where}:5: record does not match the schema at /amount: 0 is less than")
    assert found[4].startswith(f"{where}:6: completion: has both")
    assert len(found) == 5


def test_check_spec_collects_every_problem_in_line_order(tmp_path):
    text = (SPEC.replace("target_total: 100", "target_total: -3").replace("path: /who", "path: who")
            .replace("{persona: landlord, topic: work}", "{persona: judge}").replace("{numbers}", "{amount}"))
    path = write(tmp_path, text)
    found = messages(path)
    lines = [int(m.split(":")[1]) for m in found]
    assert lines == sorted(lines) and len(found) == 4, found
    for marker in ("target_total: -3", "path: who", "judge", "{amount}"):
        assert any(m.startswith(f"{path}:{line_of(text, marker)}: ") for m in found), (marker, found)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert raised.value.line == line_of(text, "target_total") and raised.value.path == str(path)


def test_missing_spec_and_bad_yaml(tmp_path):
    assert messages(tmp_path / "none.yaml") == [f"{tmp_path / 'none.yaml'}: no such file"]
    path = write(tmp_path, SPEC.replace("name: mini", "name: [mini"))
    assert messages(path)[0].startswith(f"{path}:") and "not valid YAML" in messages(path)[0]


def test_seeds_with_labels_and_records(tmp_path):
    seeds = read_seeds(load_spec(write(tmp_path)))
    assert [s.line for s in seeds] == [1, 2, 3]
    assert seeds[0].text == "I pay 700 in rent and it is late." and seeds[0].record == {"area": "rent", "amount": 700}
    assert seeds[0].dimensions == {"persona": "tenant", "topic": "rent"}
    assert seeds[1].text == "My boss owes me 1200." and seeds[1].record == {"area": "work", "amount": 1200}
    assert seeds[2].sample.shape == "text" and seeds[2].record["amount"] == 50 and seeds[2].dimensions == {}


def empties(node, where="") -> list[str]:
    """Pointers of every None, {} or [] inside ``node``."""
    if node is None or node == {} or node == []:
        return [where or "/"]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in empties(v, f"{where}/{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in empties(v, f"{where}/{i}")]
    return []


def random_assignment(spec, rng) -> dict[str, str]:
    while True:
        assignment = {d.name: rng.choices([v.name for v in d.values], [v.weight for v in d.values])[0]
                      for d in spec.dimensions}
        if spec.allowed(assignment):
            return assignment


def test_sampled_targets_are_valid_sparse_and_carry_the_dimensions(legal):
    validator = Draft202012Validator(legal.schema, format_checker=FormatChecker())
    rng, seen_secondary, roles = random.Random(7), set(), {}
    for _ in range(200):
        assignment = random_assignment(legal, rng)
        record = sample_target(legal, assignment, rng)
        assert not list(validator.iter_errors(record))
        assert empties(record) == []
        assert record["matter"]["area"] == assignment["main_topic"]
        assert record["reporter"] == assignment["persona"]
        if assignment["secondary_topic"] == "none":
            assert "secondary_area" not in record["matter"]
        else:
            assert record["matter"]["secondary_area"] == assignment["secondary_topic"] != assignment["main_topic"]
            seen_secondary.add(assignment["secondary_topic"])
        assert record["matter"]["actionable"] is (assignment["complexity"] != "hard_negative")
        roles[assignment["main_topic"]] = [p["role"] for p in record["parties"]]
        assert all(isinstance(n, str) and n for n in target_numbers(record))
    assert roles["tenancy"] == ["tenant", "landlord"] and roles["employment"] == ["employee", "employer"]
    assert len(seen_secondary) == 6


def test_sampling_is_deterministic_and_numbers_look_real(legal):
    assignment = random_assignment(legal, random.Random(3))
    first = [sample_target(legal, assignment, random.Random(11)) for _ in range(2)]
    assert first[0] == first[1]
    values = [a["value"] for _ in range(60)
              for a in sample_target(legal, assignment, random.Random(_)).get("amounts", ())]
    assert values and all(0 < v <= 20000 and round(v, 2) == v for v in values)
    assert any(isinstance(v, float) for v in values) and any(isinstance(v, int) for v in values)


def test_unknown_dimension_value_is_refused(legal):
    with pytest.raises(DatagenError, match="persona='judge'"):
        sample_target(legal, {"persona": "judge"}, random.Random(0))


def test_toon_round_trip_and_prompt_numbers(legal):
    rng = random.Random(5)
    for _ in range(50):
        assignment = random_assignment(legal, rng)
        record = sample_target(legal, assignment, rng)
        text = to_toon(record)
        assert decode(text) == record
        prompt = render_prompt(legal, assignment, record)
        assert text in prompt and legal.dimension("persona").value(assignment["persona"]).describe in prompt
        for number in target_numbers(record):
            assert number in text and number in prompt
    mixed = {"a": 1250, "b": [84.5, {"c": 14, "d": True}], "e": "7", "f": 1250}
    assert target_numbers(mixed) == ["1250", "84.5", "14"]
    with pytest.raises(DatagenError, match="TOON"):
        to_toon({"amount": float("nan")})
