"""The legal-tech team's instruction-server README (../shared/users/ministral-finetuning-readme.md), its curl
sequence replayed as written: a GET /next-instruction with no agent id, instruction ids in the spec's
format (``id_format: "INS-{n:04d}"``), and a submission under the README's agent id."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from mistralkit.datagen.errors import SpecError
from mistralkit.datagen.spec import init_example, load_spec
from test_datagen_server import Server, case_for

pytestmark = pytest.mark.slow


def curl(*args: str) -> str:
    """curl as the README writes it (-s, -H, -d), against our server."""
    done = subprocess.run(["curl", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory, mk_home):
    folder = tmp_path_factory.mktemp("legal")
    init_example(folder)
    spec = folder / "spec.yaml"
    spec.write_text(spec.read_text() + '\nid_format: "INS-{n:04d}"\n')
    running = Server(spec, folder / "state", mk_home).start()
    yield running
    running.stop()


def test_the_readme_curl_sequence_works_as_written(server):
    import json

    first = json.loads(curl("-s", f"{server.url}/next-instruction"))
    assert first["instruction_id"] == "INS-0001" and first["agent_id"] == "anonymous"
    again = json.loads(curl("-s", f"{server.url}/next-instruction"))
    assert again["instruction_id"] == "INS-0001"  # one live lease per agent, anonymous too
    text = case_for(first, 0)
    answer = json.loads(curl("-s", "-H", "Content-Type: application/json", "-d", json.dumps(
        {"instruction_id": "INS-0001", "agent_id": "agent-01", "case_text": text}), f"{server.url}/submit-case"))
    assert answer["status"] == "accepted", answer
    posted = json.loads(curl("-s", "-H", "Content-Type: application/json", "-d", '{"agent_id":"agent-01"}',
                             f"{server.url}/next-instruction"))
    assert posted["instruction_id"] == "INS-0002" and posted["agent_id"] == "agent-01"
    stolen = httpx.post(f"{server.url}/submit-case", json={"instruction_id": "INS-0002", "agent_id": "agent-02",
                                                           "case_text": case_for(posted, 1)})
    assert stolen.status_code == 403  # a named agent's lease stays its own


@pytest.mark.parametrize("value", ['"INS"', '"INS-{m}"', '"{n:02d}/x"', "3"])
def test_a_bad_id_format_is_a_spec_error_naming_its_line(tmp_path, value):
    init_example(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec.read_text() + f"\nid_format: {value}\n")
    with pytest.raises(SpecError, match=r"spec.yaml:\d+: id_format"):
        load_spec(spec)


BOILERPLATE = ("tenant:\n\n21.28,41,16624\n\n30.98@example.com\n\nThe following is the text of the message. "
               "The message must state every fact of this record (TOON notation) in natural words, never as a list "
               "of fields.")


@pytest.mark.parametrize(("text", "reason"), [
    (BOILERPLATE, "copies_instructions"),
    ("name: Jane\ncity: Lyon\nrent: 950\ndeposit: 1900\nnotice: 3 months\nemail: jane@example.com\n"
     "phone: 0612345678\nstatus: tenant", "not_prose"),
    ("We paid 950 on 12/03 and 1900 on 14/03, then 4417 and 5512 and 6613 and 7714 8815 went to jane@example.com "
     "for the rent of the flat", "mostly_data"),
    ("My landlord kept the deposit. The message must state every fact of this record (TOON notation) in natural "
     "words, and I want it back.", "copies_instructions"),
])
def test_the_gates_refuse_boilerplate_and_say_which_gate(tmp_path, text, reason):
    from mistralkit.datagen import gates, targets

    init_example(tmp_path)
    spec = load_spec(tmp_path / "spec.yaml")
    refusal = gates.check(spec, text, [], None, targets.instructions_of(spec))
    assert refusal is not None and refusal.reason == reason, refusal


def test_real_cases_pass_and_the_language_gate_reads_french(tmp_path):
    from mistralkit.datagen import gates, targets

    init_example(tmp_path)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_file.read_text() + "\nlanguage: fr\n")
    spec = load_spec(spec_file)
    french = ("Bonjour, je loue un appartement à Lyon depuis 2019 et mon propriétaire refuse de me rendre le dépôt de "
              "garantie de 1 900 euros alors que j'ai rendu les clés le 3 mars. Que puis-je faire ?")
    english = ("Hello, I have rented a flat in Lyon since 2019 and my landlord refuses to return the deposit of "
               "1,900 euros although I handed back the keys on 3 March. What can I do?")
    instructions = targets.instructions_of(spec)
    assert gates.check(spec, french, ["1900"], None, instructions) is None
    refused = gates.check(spec, english, ["1900"], None, instructions)
    assert refused is not None and refused.reason == "wrong_language"


def test_the_worker_survives_a_server_restart_with_no_case_lost_or_doubled(tmp_path, mk_home):
    """kill -9 of the server while two agents work, a restart on the same port 2 s later: the agents wait
    for it (backoff), carry on, and every case the server holds was counted once by them."""
    import json
    import sqlite3
    import threading
    import time

    from mistralkit.datagen.worker import work
    from test_datagen_server import small_spec

    server = Server(small_spec(tmp_path, 16), tmp_path / "state", mk_home).start()
    accepted = threading.Event()

    def write(instruction, attempt, cancel):
        time.sleep(0.15)
        return case_for(instruction, attempt)

    def seen(agent, result):
        if result["status"] == "accepted":
            accepted.set()

    reports = []
    runner = threading.Thread(target=lambda: reports.append(work(server.url, write, agents=2, on_result=seen,
                                                                 patience_s=60)))
    runner.start()
    try:
        assert accepted.wait(60)
        server.kill()
        time.sleep(2)
        server.start()
        runner.join(180)
        assert not runner.is_alive()
        stats = httpx.get(server.url + "/stats").json()
    finally:
        server.stop()
    report = reports[0]
    assert report.done and not report.errors and report.retries > 0, report.to_dict()
    with sqlite3.connect(tmp_path / "state" / "datagen.sqlite3") as db:
        cases = db.execute("SELECT instruction_id FROM cases").fetchall()
    assert len(cases) == len({c[0] for c in cases}) == stats["accepted"] >= 16
    assert report.accepted == stats["accepted"], json.dumps(report.to_dict())
