"""datagen's gates on what a case says: the target's values written in sentences (not dumped in a list, a
line of their own or ``label: value``), and the judge model (the real embedded model, a real SQLite state,
a real server for the 503 of a judge that takes too long)."""

from __future__ import annotations

import json

import httpx
import pytest

from mistralkit.datagen import gates, targets
from mistralkit.datagen.errors import SpecError
from mistralkit.datagen.spec import check_spec, init_example, load_spec, read_seeds
from mistralkit.datagen.state import State
from test_datagen_spec import SPEC, line_of, write

ISSUE = ("tenant:\n\n21.28,41,16624\n\n30.98@example.com\n\nThe following is the text of the message. "
         "The message must state every fact of this record (TOON notation) in natural words, never as a list "
         "of fields.")
PROSE = ("Hello, I moved out of the flat I rented in Lyon at the end of March and handed the keys back to the "
         "agency the same day. My landlord still has not returned my deposit and does not answer my calls or "
         "my letters, although the flat was clean and nothing was broken. What can I do to get it back?")


@pytest.fixture(scope="module")
def legal(tmp_path_factory):
    return load_spec(init_example(tmp_path_factory.mktemp("legal")))


def refusal(spec, text: str, numbers: list[str]):
    return gates.check(spec, text, numbers, None, targets.instructions_of(spec))


def test_the_issue_boilerplate_has_none_of_its_numbers_in_context(legal):
    assert gates.out_of_context(ISSUE, ["21.28", "41", "16624"]) == ["21.28", "41", "16624"]
    assert refusal(legal, ISSUE, ["21.28", "41", "16624"]) is not None
    without_echo = ISSUE.split("The following")[0] + PROSE  # the prose gates alone would let this through
    assert gates.prose(legal, without_echo, targets.instructions_of(legal)) is None
    refused = refusal(legal, without_echo, ["21.28", "41", "16624"])
    assert refused.reason == "out_of_context" and "21.28, 41, 16624 are not written in a sentence" in refused.detail


@pytest.mark.parametrize("tail", [
    "\n1250, 14",                                   # a list of numbers on a line of its own
    "\n1250\n14",                                   # each on a line of its own
    "\nDeposit: 1250 EUR. Deadline: 14 days.",     # label: value
    " Figures: 1250, 14.",                          # a list inside the paragraph
    "\nAmount | 1250 | EUR\nDays | 14 | due",       # a table
])
def test_values_dumped_next_to_prose_are_refused_and_named(legal, tail):
    text = PROSE + tail
    assert gates.prose(legal, text, targets.instructions_of(legal)) is None  # only the new gate sees it
    refused = refusal(legal, text, ["1250", "14"])
    assert refused is not None and refused.reason == "out_of_context", refused
    assert refused.detail.startswith("1250, 14 are not written in a sentence")


REAL = [
    ("Hello, I moved out on 31 March and my landlord still has my deposit of 1 250 EUR. He promised to pay it back "
     "within 14 days, but nothing came.", ["1250", "14"]),
    ("landlord wont fix the heating since 10 dec. rent is 950 GBP. he says nxt month, i have a baby, pls help",
     ["950"]),
    ("Dear Sir or Madam,\n\nMy employer owes me 3,400 GBP of wages for May and June. I resigned on 15 July and "
     "he answered that I would get 1,700 GBP, half of it, within 30 days.\n\nYours faithfully,\nA. Martin",
     ["3400", "1700", "30"]),
    ("Bonjour, mon père est décédé le 3 mars 2024 en laissant un appartement estimé à 250 000 € et un compte "
     "courant de 12 500 €. Nous sommes deux enfants et il avait souscrit une assurance-vie de 80 000 € à "
     "notre profit.", ["250000", "12500", "80000"]),
]


@pytest.mark.parametrize(("text", "numbers"), REAL)
def test_real_cases_keep_their_numbers_in_sentences(legal, text, numbers):
    assert gates.out_of_context(text, numbers) == []
    assert refusal(legal, text, numbers) is None


def test_every_seed_of_the_example_passes_every_gate(legal):
    seeds = [s for s in read_seeds(legal) if s.record]
    assert len(seeds) >= 10
    for seed in seeds:
        assert refusal(legal, seed.text, targets.target_numbers(seed.record)) is None, seed.line


def test_the_share_of_stray_values_is_the_spec_s_and_checked(tmp_path, legal):
    signature = PROSE + " I paid 1250 EUR in June, 300 EUR in July and 45 EUR in August.\n\nRef. 2024117"
    assert refusal(legal, signature, ["1250", "300", "45", "2024117"]) is None  # 1 of 4 at the default 0.25
    refused = refusal(legal, signature + "\n14", ["1250", "300", "45", "2024117", "14"])
    assert refused.reason == "out_of_context" and refused.detail.startswith("2024117, 14 are not")
    spec = init_example(tmp_path)
    spec.write_text(spec.read_text() + "\nmax_out_of_context: 1\n")
    assert refusal(load_spec(spec), PROSE + "\n1250, 14", ["1250", "14"]) is None
    spec.write_text(spec.read_text().replace("max_out_of_context: 1", "max_out_of_context: 1.5"))
    with pytest.raises(SpecError, match=r"spec.yaml:\d+: max_out_of_context must be a share between 0 and 1"):
        load_spec(spec)


# --- the judge ----------------------------------------------------------------------------------

JUDGE = "judge:\n  min_score: {min_score}\n  max_tokens: 24\n  timeout_s: {timeout}\n  ctx: 1024\n"
CASE = ("I rent a small flat in Lyon and my landlord says that I still owe him {n} for the last two months, "
        "which I do not believe at all.")


@pytest.mark.parametrize(("judge", "where", "field"), [
    ("judge:\n  model: no-such-model\n  min_score: 3\n", "model:", "judge.model: unknown model 'no-such-model'"),
    ("judge:\n  min_score: 6\n", "min_score", "judge.min_score must be a whole number from 0 to 5"),
    ("judge:\n  min_score: high\n", "min_score", "judge.min_score must be a whole number from 0 to 5"),
    ("judge:\n  min_score: 3\n  timeout_s: 0\n", "timeout_s", "judge.timeout_s must be a number of seconds"),
    ("judge:\n  min_score: 3\n  temperature: 1\n", "temperature", "judge: unknown key 'temperature'"),
    ("judge: yes\n", "judge:", "judge must be a mapping"),
])
def test_a_bad_judge_is_one_line_at_spec_load_naming_the_field(tmp_path, judge, where, field):
    spec = write(tmp_path, SPEC + judge)
    problems = [p.message for p in check_spec(spec)]
    line = line_of(SPEC + judge, where)
    assert problems == [problems[0]] and problems[0].startswith(f"{spec}:{line}: {field}"), problems
    assert "\n" not in problems[0]


def test_the_cli_names_the_bad_judge_model_in_one_line(tmp_path, cli):
    spec = write(tmp_path, SPEC + "judge:\n  model: no-such-model\n  min_score: 3\n")
    done = cli("datagen", "serve", str(spec), "--port", "1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[0].startswith(f"error: {spec}:") and "judge.model" in done.stderr.splitlines()[0]


def submit_one(spec_path, state_dir) -> dict:
    with State(load_spec(spec_path), state_dir) as state:
        job = state.next_instruction("alice")
        return state.submit(job["instruction_id"], "alice", CASE.format(n=targets.target_numbers(job["target"])[0]))


def test_the_judge_scores_each_case_a_minimum_of_0_accepts_and_an_unreachable_one_rejects(tmp_path, mk_home):
    """The embedded default model judges (greedy: the same verdict twice); it scores this case below 5."""
    (tmp_path / "lenient").mkdir()
    (tmp_path / "strict").mkdir()
    lenient = write(tmp_path / "lenient", SPEC + JUDGE.format(min_score=0, timeout=300))
    accepted = submit_one(lenient, tmp_path / "lenient" / "state")
    assert accepted["status"] == "accepted", accepted
    assert accepted["detail"].startswith("the judge (smollm2-135m-instruct") and "(minimum 0)" in accepted["detail"]
    score = int(accepted["detail"].split("gave score ")[1][0])
    assert 1 <= score < 5  # the tiny model is no admirer: 5 is out of its reach here
    strict = write(tmp_path / "strict", SPEC + JUDGE.format(min_score=5, timeout=300))
    rejected = submit_one(strict, tmp_path / "strict" / "state")
    assert rejected["status"] == "rejected" and rejected["reason"] == "judge", rejected
    assert rejected["detail"] == accepted["detail"].replace("(minimum 0)", "(minimum 5)")
    stored = json.loads((tmp_path / "strict" / "state" / "exports" / "submissions" / "s000001.json").read_text())
    assert stored["reason"] == "judge" and stored["detail"] == rejected["detail"]


def test_a_verdict_whose_client_left_stores_nothing_and_the_same_case_is_judged_again(tmp_path, mk_home):
    """The server passes the request's cancel event (set when the client leaves): the verdict stops there."""
    import threading

    from mistralkit.datagen.judge import JudgeBusy

    spec = write(tmp_path, SPEC + JUDGE.format(min_score=0, timeout=300))
    with State(load_spec(spec), tmp_path / "state") as state:
        job = state.next_instruction("alice")
        text = CASE.format(n=targets.target_numbers(job["target"])[0])
        gone = threading.Event()
        gone.set()
        with pytest.raises(JudgeBusy, match="cancelled"):
            state.submit(job["instruction_id"], "alice", text, gone)
        assert not list((tmp_path / "state" / "exports" / "submissions").glob("*.json"))
        again = state.submit(job["instruction_id"], "alice", text)
    assert again["status"] == "accepted", again


def test_a_judge_that_takes_too_long_answers_503_and_stores_nothing(tmp_path, mk_home):
    from test_datagen_server import Server

    spec = write(tmp_path, SPEC + JUDGE.format(min_score=0, timeout=0.01))
    server = Server(spec, tmp_path / "state", mk_home).start()
    try:
        job = httpx.post(server.url + "/next-instruction", json={"agent_id": "alice"}).json()
        body = {"instruction_id": job["instruction_id"], "agent_id": "alice",
                "case_text": CASE.format(n=targets.target_numbers(job["target"])[0])}
        answers = [httpx.post(server.url + "/submit-case", json=body, timeout=60) for _ in range(2)]
        stats = httpx.get(server.url + "/stats").json()
    finally:
        server.stop()
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert "gave no verdict within 0.01 s" in answer.json()["error"]["message"]
    assert stats["accepted"] == 0 and stats["rejected"] == {} and stats["leased"] == 1
    assert not list((tmp_path / "state" / "exports" / "submissions").glob("*.json"))
