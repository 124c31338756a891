"""The datagen state, dispatcher, gates and exports through the library: real SQLite in tmp_path, real
threads and a real SIGKILLed process; the shipped legal example spec throughout."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from mistralkit.datagen import dispatch, gates
from mistralkit.datagen.errors import Conflict, DatagenError, LeaseExpired, NotFound, TooLarge, WrongAgent
from mistralkit.datagen.spec import init_example, load_spec, read_seeds
from mistralkit.datagen.state import State
from mistralkit.datagen.targets import target_numbers
from mistralkit.tune.data import check

WORDS = ("tenant landlord deposit notice contract salary invoice neighbour letter court delay repair "
         "payment employer hours receipt agreement lawyer family claim refund meeting office heating "
         "water damage keys broken insurance overtime dismissal warning message yesterday weekend").split()


@pytest.fixture(scope="module")
def legal(tmp_path_factory):
    return load_spec(init_example(tmp_path_factory.mktemp("spec")))


def spec_with(spec, **changes):
    return dataclasses.replace(spec, **changes)


def in_sentences(numbers: list[str]) -> str:
    """Each number in a sentence of its own (the values-in-context gate wants words around them)."""
    return " ".join(f"The letter mentions {n} in its second paragraph." for n in numbers)


def case_for(job: dict, salt: int = 0) -> str:
    """A text that passes the gates: 60 random words (unlike any other case), every target number in a sentence."""
    rng = random.Random(f"{job['instruction_id']}-{salt}")
    return " ".join(rng.choice(WORDS) for _ in range(60)) + ". " + in_sentences(target_numbers(job["target"]))


class Clock:
    """An injectable clock (seconds since the epoch) that tests move by hand."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def exports_of(directory: Path) -> dict[str, bytes]:
    folder = directory / "exports"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_same_agent_gets_its_instruction_back_and_others_get_new_ones(legal, tmp_path):
    with State(legal, tmp_path, clock=Clock()) as state:
        first = state.next_instruction("alice")
        assert state.next_instruction("alice") == first
        other = state.next_instruction("bob")
        assert other["instruction_id"] != first["instruction_id"]
        assert first["instruction_id"] == "i000001" and first["lease_seconds"] == 30 * 60
        assert first["lease_expires_at"].endswith("Z") and first["target_toon"] and "{" not in first["prompt"][:5]
        assert legal.allowed(first["dimensions"]) and set(first["dimensions"]) == {d.name for d in legal.dimensions}
        assert state.stats()["leased"] == 2


def test_an_expired_lease_goes_back_to_the_pool_and_the_old_agent_gets_lease_expired(legal, tmp_path):
    clock = Clock()
    with State(legal, tmp_path, clock=clock) as state:
        job = state.next_instruction("alice")
        clock.now += 30 * 60 + 1
        assert state.stats()["leased"] == 0 and state.stats()["pooled"] == 1
        again = state.next_instruction("bob")
        assert again["instruction_id"] == job["instruction_id"] and again["target"] == job["target"]
        with pytest.raises(LeaseExpired) as late:
            state.submit(job["instruction_id"], "alice", case_for(job))
        assert late.value.status == 410
        assert state.submit(job["instruction_id"], "bob", case_for(job))["status"] == "accepted"


def test_a_lapsed_lease_nobody_took_is_still_expired_for_its_agent(legal, tmp_path):
    clock = Clock()
    with State(legal, tmp_path, clock=clock) as state:
        job = state.next_instruction("alice")
        clock.now += 30 * 60 + 1
        with pytest.raises(LeaseExpired):
            state.submit(job["instruction_id"], "alice", case_for(job))
        assert state.next_instruction("alice")["instruction_id"] == job["instruction_id"]  # free again: hers


def test_the_same_submission_twice_returns_the_stored_result(legal, tmp_path):
    with State(legal, tmp_path) as state:
        job = state.next_instruction("alice")
        first = state.submit(job["instruction_id"], "alice", case_for(job))
        assert first["status"] == "accepted" and first["case_id"] == 1
        assert state.submit(job["instruction_id"], "alice", case_for(job)) == first
        short = state.next_instruction("alice")
        refused = state.submit(short["instruction_id"], "alice", "too short")
        assert refused["status"] == "rejected" and refused["reason"] == "too_short"
        assert state.submit(short["instruction_id"], "alice", "too short") == refused
        stats = state.stats()
        assert stats["accepted"] == 1 and stats["rejected"] == {"too_short": 1}
        assert stats["agents"]["alice"] == {"issued": 2, "accepted": 1, "rejected": 1}


def test_another_text_for_an_answered_instruction_is_a_conflict(legal, tmp_path):
    with State(legal, tmp_path) as state:
        job = state.next_instruction("alice")
        state.submit(job["instruction_id"], "alice", case_for(job))
        with pytest.raises(Conflict) as conflict:
            state.submit(job["instruction_id"], "alice", case_for(job, salt=1))
        assert conflict.value.status == 409


def test_unknown_ids_and_wrong_agents_are_refused(legal, tmp_path):
    with State(legal, tmp_path) as state:
        job = state.next_instruction("alice")
        with pytest.raises(WrongAgent) as wrong:
            state.submit(job["instruction_id"], "mallory", case_for(job))
        assert wrong.value.status == 403
        with pytest.raises(NotFound) as missing:
            state.submit("i999999", "alice", case_for(job))
        assert missing.value.status == 404
        assert state.submit(job["instruction_id"], "alice", case_for(job))["status"] == "accepted"


def test_empty_and_oversized_texts_are_refused_before_the_gates(legal, tmp_path):
    with State(legal, tmp_path) as state:
        job = state.next_instruction("alice")
        for blank in ("", "   \n\t"):
            with pytest.raises(DatagenError) as empty:
                state.submit(job["instruction_id"], "alice", blank)
            assert empty.value.status == 400
        with pytest.raises(TooLarge) as large:
            state.submit(job["instruction_id"], "alice", "x" * (legal.max_chars + 1))
        assert large.value.status == 413
        assert state.stats()["rejected"] == {} and state.stats()["leased"] == 1


def test_the_numbers_gate_wants_every_target_number_in_a_usual_rendering(legal, tmp_path):
    assert gates.missing_numbers("a deposit of 1 250 EUR and 84,5 m2", ["1250", "84.5"]) == []
    assert gates.missing_numbers("1,250 and 84.50 and 1\u202f250", ["1250", "84.5", "1.25"]) == []
    assert gates.missing_numbers("2024 12 people paid 125", ["1250", "12", "2024"]) == ["1250"]
    assert gates.missing_numbers("the sum of 12", ["14"]) == ["14"]
    with State(legal, tmp_path) as state:
        while not target_numbers((job := state.next_instruction("alice"))["target"]):
            state.release(job["instruction_id"], "alice")  # one with numbers (nearly every target has some)
        words = " ".join(random.Random(1).choice(WORDS) for _ in range(60))
        refused = state.submit(job["instruction_id"], "alice", words)
        assert refused["status"] == "rejected" and refused["reason"] == "numbers_missing"
        assert target_numbers(job["target"])[0] in refused["detail"]
        assert state.next_instruction("alice")["instruction_id"] == job["instruction_id"]  # the lease stays
        assert state.submit(job["instruction_id"], "alice", case_for(job))["status"] == "accepted"


def test_near_duplicates_of_accepted_cases_and_seeds_are_refused(legal, tmp_path):
    with State(legal, tmp_path) as state:
        first = state.next_instruction("alice")
        text = case_for(first)
        assert state.submit(first["instruction_id"], "alice", text)["status"] == "accepted"
        bob = next(f"bob-{i}" for i in range(50)  # one whose numbers fit a short sentence
                   if len(target_numbers(state.next_instruction(f"bob-{i}")["target"])) <= 2)
        second = state.next_instruction(bob)
        numbers = f"It says {' and '.join(target_numbers(second['target']))}."
        refused = state.submit(second["instruction_id"], bob, f"{text} {numbers}")
        assert refused["reason"] == "near_duplicate" and "case 1" in refused["detail"]
        seed = max((s.text for s in read_seeds(legal)), key=len)
        assert state.submit(second["instruction_id"], bob, f"{seed} {numbers}")["reason"] == "near_duplicate"
        assert state.submit(second["instruction_id"], bob, case_for(second))["status"] == "accepted"


def test_a_state_folder_refuses_another_spec(legal, tmp_path):
    State(legal, tmp_path).close()
    other = spec_with(legal, forbidden=())
    with pytest.raises(DatagenError) as refused:
        State(other, tmp_path)
    assert str(tmp_path / "datagen.sqlite3") in refused.value.message and str(legal.path) in refused.value.message


def test_the_goal_counts_seeds_and_ends_with_done(legal, tmp_path):
    seeds = len(read_seeds(legal))
    with State(spec_with(legal, target_total=seeds + 2), tmp_path) as state:
        for agent in ("alice", "bob"):
            job = state.next_instruction(agent)
            state.submit(job["instruction_id"], agent, case_for(job))
        assert state.next_instruction("carol") == {"done": True}
        stats = state.stats()
        assert stats["goal"] == 2 and stats["done"] and stats["seeds"] == seeds


def test_the_training_exports_pass_data_validate_unchanged(legal, tmp_path):
    with State(legal, tmp_path) as state:
        for i in range(5):
            job = state.next_instruction(f"agent-{i}")
            state.submit(job["instruction_id"], f"agent-{i}", case_for(job))
        state.flush()
    folder = tmp_path / "exports"
    generated, errors = check(folder / "generated_cases_train_mistral.jsonl")
    assert errors == [] and len(generated) == 5
    full, errors = check(folder / "full_training_cases_mistral.jsonl")
    assert errors == [] and len(full) == 5 + len(read_seeds(legal))
    first = json.loads((folder / "generated_cases_train_mistral.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert json.loads(first["messages"][2]["content"]) == json.loads((folder / "generated_cases.jsonl")
                                                                     .read_text().splitlines()[0])["record"]
    assert len(list((folder / "instructions").glob("i*.json"))) == 5
    assert len(list((folder / "submissions").glob("s*.json"))) == 5
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["accepted"] == 5 and "5 of" in (folder / "summary.md").read_text()


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_both_training_directions_are_exported_extraction_and_generation(legal, tmp_path):
    """Case -> record (extraction) and record -> case (generation), each alone and with the seeds first."""
    from mistralkit.datagen.targets import render_prompt

    with State(legal, tmp_path) as state:
        jobs = [state.next_instruction(f"agent-{i}") for i in range(3)]
        assert state.submit(jobs[0]["instruction_id"], "agent-0", "far too short")["status"] == "rejected"
        texts = {job["instruction_id"]: case_for(job) for job in jobs}
        for i, job in enumerate(jobs):
            answer = state.submit(job["instruction_id"], f"agent-{i}", texts[job["instruction_id"]])
            assert answer["status"] == "accepted"
        state.flush()
    folder = tmp_path / "exports"
    generated = lines_of(folder / "generated_cases.jsonl")
    extraction = lines_of(folder / "generated_cases_train_mistral.jsonl")
    generation = lines_of(folder / "generated_cases_generation_mistral.jsonl")
    assert len(generated) == len(extraction) == len(generation) == 3  # the rejected text is in neither
    prompts = {job["instruction_id"]: job["prompt"] for job in jobs}
    for case, back, forth in zip(generated, extraction, generation):
        assert [m["content"] for m in back["messages"][1:]] == \
            [texts[case["instruction_id"]], json.dumps(case["record"], ensure_ascii=False)]
        assert forth == {"messages": [{"role": "user", "content": prompts[case["instruction_id"]]},
                                      {"role": "assistant", "content": texts[case["instruction_id"]]}]}
    seeds = [s for s in read_seeds(legal) if s.record]
    full = lines_of(folder / "full_generation_cases_mistral.jsonl")
    assert full[len(seeds):] == generation and len(full) == len(seeds) + 3
    first = full[0]["messages"]
    assert first == [{"role": "user", "content": render_prompt(legal, seeds[0].dimensions, seeds[0].record)},
                     {"role": "assistant", "content": seeds[0].text}]
    for name in ("generated_cases_generation_mistral.jsonl", "full_generation_cases_mistral.jsonl"):
        assert check(folder / name)[1] == []  # mistralkit tune takes it as it is


def test_a_state_from_before_the_generation_export_gets_its_seed_lines(legal, tmp_path):
    import sqlite3

    with State(legal, tmp_path):
        pass
    with sqlite3.connect(tmp_path / "datagen.sqlite3") as db:  # as the state was before m002
        db.execute("ALTER TABLE seeds DROP COLUMN generation")
        db.execute("DELETE FROM _migrations WHERE name = 'm002_seed_generation'")
    (tmp_path / "exports" / "full_generation_cases_mistral.jsonl").unlink()
    with State(legal, tmp_path):
        pass
    full = lines_of(tmp_path / "exports" / "full_generation_cases_mistral.jsonl")
    assert [line["messages"][1]["content"] for line in full] == [s.text for s in read_seeds(legal) if s.record]


def test_sixteen_threads_with_their_own_state_objects_lose_nothing_and_share_nothing(legal, tmp_path):
    spec = spec_with(legal, target_total=len(read_seeds(legal)) + 1000)  # each agent stops after 10
    held: dict[str, str] = {}
    accepted: list[tuple[str, str]] = []
    failures: list[BaseException] = []
    lock, start = threading.Lock(), threading.Barrier(16)

    def agent(name: str) -> None:
        try:
            with State(spec, tmp_path) as state:
                start.wait(timeout=120)  # all 16 open first, then race
                for _ in range(10):
                    job = state.next_instruction(name)
                    with lock:
                        assert held.setdefault(job["instruction_id"], name) == name, "leased twice at once"
                    result = state.submit(job["instruction_id"], name, case_for(job))
                    assert result["status"] == "accepted", result
                    with lock:
                        del held[job["instruction_id"]]
                        accepted.append((job["instruction_id"], name))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
            start.abort()  # the others stop waiting for this one

    threads = [threading.Thread(target=agent, args=(f"agent-{i}",)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with State(spec, tmp_path) as state:
        stats = state.stats()
    cases = [json.loads(line) for line in (tmp_path / "exports" / "generated_cases.jsonl").read_text().splitlines()]
    assert {(c["instruction_id"], c["agent_id"]) for c in cases} == set(accepted)
    assert len(accepted) == stats["accepted"] == 160 and len({i for i, _ in accepted}) == len(accepted)
    assert {a: c["accepted"] for a, c in stats["agents"].items()} == \
        {a: sum(1 for _, b in accepted if b == a) for _, a in accepted}
    assert len(stats["agents"]) == 16 and stats["leased"] == 0


CHILD = textwrap.dedent("""
    import sys, random
    from pathlib import Path
    from mistralkit.datagen.spec import load_spec
    from mistralkit.datagen.state import State
    from mistralkit.datagen.targets import target_numbers
    words = sys.argv[3].split()
    state = State(load_spec(sys.argv[1]), Path(sys.argv[2]), export_interval_s=0.02)
    for i in range(100000):
        job = state.next_instruction(f"agent-{i % 3}")
        rng = random.Random(job["instruction_id"])
        text = " ".join(rng.choice(words) for _ in range(60)) + ". " + " ".join(
            f"The letter mentions {n} in its second paragraph." for n in target_numbers(job["target"]))
        result = state.submit(job["instruction_id"], job["agent_id"], text)
        print(result["status"], job["instruction_id"], flush=True)
""")


def test_a_process_killed_mid_run_keeps_every_accepted_case_and_rebuilds_the_same_exports(legal, tmp_path):
    state_dir = tmp_path / "state"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(legal.path), str(state_dir), " ".join(WORDS)],
                             stdout=subprocess.PIPE, text=True)
    accepted = []
    for line in child.stdout:
        if line.startswith("accepted"):
            accepted.append(line.split()[1])
        if len(accepted) >= 40:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    before = exports_of(state_dir)
    with State(legal, state_dir):
        pass
    after = exports_of(state_dir)
    lines = after["generated_cases.jsonl"].decode().splitlines()
    stored = {json.loads(line)["instruction_id"] for line in lines}
    assert set(accepted) <= stored
    old_lines = before.get("generated_cases.jsonl", b"").decode().splitlines()
    assert lines[:len(old_lines)] == old_lines  # the cases exported before the kill, byte for byte
    assert all(
        after[name] == data for name, data in before.items() if name.startswith(("instructions/", "submissions/"))
    )
    assert len([n for n in after if n.startswith("submissions/")]) >= len(accepted)
    with State(legal, state_dir):
        pass
    assert exports_of(state_dir) == after  # a rebuild from the same database gives the same files


def fill(spec, choose) -> dispatch.Counts:
    seeds = read_seeds(spec)
    counts = dispatch.Counts.of(spec, [s.dimensions for s in seeds])
    for i in range(spec.target_total - len(seeds)):
        counts.add(spec, choose(counts, i))
    return counts


def test_a_5000_fill_is_balanced_per_value_and_covers_every_allowed_pair(legal):
    plan = dispatch.Quotas.of(legal)
    greedy = dispatch.balance(plan, fill(legal, lambda c, i: dispatch.choose(plan, c, random.Random(f"0/{i}"))))
    assert greedy["worst_ratio"] <= 1.05 and greedy["tv_distance"] <= 0.01
    assert greedy["pairs_covered"] == greedy["pairs_allowed"] > 500
    rng = random.Random(0)

    def weighted_random(counts, i):
        while True:
            pick = {d.name: rng.choices(list(d.weights()), list(d.weights().values()))[0] for d in legal.dimensions}
            if legal.allowed(pick):
                return pick

    chance = dispatch.balance(plan, fill(legal, weighted_random))
    assert chance["worst_ratio"] > 1.15  # what the dispatcher is measured against


def test_choices_are_deterministic_and_the_cover_table_matches_the_cases(legal, tmp_path):
    runs = []
    for folder in (tmp_path / "a", tmp_path / "b"):
        with State(legal, folder) as state:
            jobs = [state.next_instruction(f"agent-{i}") for i in range(6)]
            for job in jobs[:4]:
                state.submit(job["instruction_id"], job["agent_id"], case_for(job))
            counts = state._counts(state._db())
            runs.append([(j["dimensions"], j["target"]) for j in jobs])
        live = [s.dimensions for s in read_seeds(legal)] + [j["dimensions"] for j in jobs]
        assert counts.cells == +dispatch.Counts.of(legal, live).cells
    assert runs[0] == runs[1]
