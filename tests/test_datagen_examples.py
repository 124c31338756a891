"""The examples `datagen init --example NAME` writes: legal-en (the default) and succession-fr, a French
succession spec whose seeds pass every gate, whose targets keep to French law's shape (no spouse, no
option for a PACS partner, no life insurance where the dimension says none) and whose instructions,
served by a real server, are in French."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from mistralkit.datagen import gates, targets
from mistralkit.datagen.errors import DatagenError, SpecError
from mistralkit.datagen.spec import EXAMPLES, init_example, load_spec, read_seeds
from test_datagen_spec import SPEC, write


@pytest.fixture(scope="module")
def succession(tmp_path_factory):
    return load_spec(init_example(tmp_path_factory.mktemp("fr") / "successions", "succession-fr"))


def test_init_writes_the_chosen_example_and_names_the_choices(tmp_path, cli):
    done = cli("datagen", "init", "--example", "succession-fr", str(tmp_path / "fr"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "fr").iterdir()) == ["schema.json", "seeds.jsonl", "spec.yaml"]
    assert load_spec(tmp_path / "fr" / "spec.yaml").name == "successions-fr"
    assert load_spec(init_example(tmp_path / "default")).name == "legal-cases"  # legal-en stays the default
    unknown = cli("datagen", "init", "--example", "succession-de", str(tmp_path / "de"))
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip() == "error: unknown example 'succession-de'; the examples are: legal-en, succession-fr"
    assert not (tmp_path / "de").exists()
    shown = " ".join(cli("datagen", "init", "--help").stdout.split())
    assert all(name in shown for name in EXAMPLES)
    with pytest.raises(DatagenError, match="unknown example"):
        init_example(tmp_path / "x", "nope")


def test_the_french_example_reads_french_and_its_seeds_pass_every_gate(succession):
    assert succession.language == "fr"
    lines = [json.loads(line) for line in succession.seed_path.read_text(encoding="utf-8").splitlines()]
    assert {"prompt", "messages", "text"} <= {next(k for k in ("prompt", "messages", "text") if k in line)
                                             for line in lines}  # the three shapes the seed reader takes
    seeds = read_seeds(succession)
    assert len(seeds) == len(lines) >= 9 and all(s.record for s in seeds)
    for seed in seeds:
        numbers = targets.target_numbers(seed.record)
        assert gates.check(succession, seed.text, numbers, None, targets.instructions_of(succession)) is None, seed.line
        assert gates.common_share(seed.text, "fr") > gates.common_share(seed.text, "en")
    english = ("Mr Jean Martin died on 12 March 2023 aged 78, leaving a house worth 420,000 EUR and two children "
               "who share it. His wife chose a quarter in full ownership. What are the rights of each of them, and "
               "what tax will the children pay?")
    refused = gates.check(succession, english, ["78", "420000"], None, targets.instructions_of(succession))
    assert refused is not None and refused.reason == "wrong_language"


def test_sampled_successions_keep_to_the_dimensions(succession):
    rng, seen = random.Random(7), set()
    for _ in range(300):
        pick = {d.name: rng.choice(d.values).name for d in succession.dimensions}
        if not succession.allowed(pick):
            continue
        record = targets.sample_target(succession, pick, rng)
        seen.add(pick["regime_matrimonial"])
        spouse = record.get("conjoint_survivant")
        assert record["situation_matrimoniale"] == pick["regime_matrimonial"]
        assert (spouse is None) == (pick["regime_matrimonial"] == "sans_conjoint")
        if pick["regime_matrimonial"] == "pacs":
            assert spouse["statut"] == "partenaire_pacs" and "option" not in spouse
        assert ("assurances_vie" in record) == (pick["assurance_vie"] != "aucune")
        assert ("testament" in record) == (pick["testament"] != "aucun")
        assert len(record.get("donations", [])) == {"aucune": 0, "une": 1, "deux": 2}[pick["donations"]]
        liens = [h["lien"] for h in record["heritiers"]]
        assert not ("frere_soeur" in liens and spouse and spouse["statut"] == "epoux")  # art. 757-2
    assert len(seen) == 5


def test_a_null_in_a_value_record_removes_that_part_and_must_name_a_declared_one(tmp_path):
    def landlord(record: str) -> str:
        return SPEC.replace("      - landlord\n", f"      - {{name: landlord, record: {record}}}\n")

    spec = load_spec(write(tmp_path, landlord("{note: null}")))
    rng = random.Random(1)
    notes = {who: sum("note" in targets.sample_target(spec, {"persona": who, "topic": "rent"}, rng) for _ in range(40))
             for who in ("tenant", "landlord")}
    assert notes["landlord"] == 0 < notes["tenant"]  # sampled about half the time, removed for landlords
    with pytest.raises(SpecError, match=r"record of 'landlord': /nothing: the schema declares no such property"):
        load_spec(write(tmp_path, landlord("{nothing: null}")))


def test_a_served_instruction_is_french_and_a_french_case_for_it_is_accepted(tmp_path, mk_home):
    from test_datagen_server import Server

    spec = init_example(tmp_path, "succession-fr")
    server = Server(spec, tmp_path / "state", mk_home).start()
    try:
        job = httpx.get(server.url + "/next-instruction", params={"agent_id": "clerc"}).json()
        numbers = targets.target_numbers(job["target"])
        text = ("Bonjour, je vous écris au sujet de la succession de mon oncle, dont le dossier est ouvert chez le "
                "notaire depuis le printemps et que la famille souhaite régler sans conflit. "
                + " ".join(f"Le courrier du notaire mentionne {n} à la ligne {i + 2} de sa page de garde."
                           for i, n in enumerate(numbers)))
        answer = httpx.post(server.url + "/submit-case",
                            json={"instruction_id": job["instruction_id"], "agent_id": "clerc", "case_text": text})
    finally:
        server.stop()
    prompt = job["prompt"]
    assert prompt.startswith("Rédige en français un texte réaliste qui expose une succession en droit français.")
    assert gates.common_share(prompt, "fr") >= 0.08 > gates.common_share(prompt, "en")
    assert "Héritiers : " in prompt and job["target_toon"] in prompt
    assert answer.json()["status"] == "accepted", answer.json()
