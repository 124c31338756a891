"""The datagen instruction server as agents see it: a real `mistralkit datagen serve` process on 127.0.0.1,
real HTTP, real SQLite; killed with SIGKILL and restarted; filled by the local worker with the embedded
model; and its training export taken by `data validate` and `tune` as it is."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mistralkit.datagen.spec import init_example, load_spec
from mistralkit.datagen.targets import target_numbers

WORDS = ("tenant landlord deposit notice contract salary invoice neighbour letter court delay repair "
         "payment employer hours receipt agreement lawyer family claim refund meeting office heating "
         "water damage keys broken insurance overtime dismissal warning message yesterday weekend").split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def case_for(instruction: dict, salt: int) -> str:
    """A case text that passes the cheap gates: enough words, unlike any other, every target number in a sentence."""
    rng = random.Random(f"{instruction['instruction_id']}-{salt}")
    words = " ".join(rng.choice(WORDS) for _ in range(60))
    return f"{words}. " + " ".join(f"The letter mentions {n} in its second paragraph."
                                   for n in target_numbers(instruction["target"]))


class Server:
    """`mistralkit datagen serve` in its own process (SIGKILL-able), on a free port."""

    def __init__(self, spec: Path, state: Path, home: Path, *extra: str) -> None:
        self.spec, self.state, self.home, self.extra = spec, state, home, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Server":
        env = {k: v for k, v in os.environ.items() if not k.startswith("MISTRALKIT_")}
        env["MISTRALKIT_HOME"] = str(self.home)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mistralkit", "datagen", "serve", str(self.spec), "--state", str(self.state),
             "--port", str(self.port), *self.extra], env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"datagen serve exited: {self.process.stderr.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("datagen serve did not answer within 60 s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def small_spec(folder: Path, total_over_seeds: int) -> Path:
    spec = init_example(folder)
    seeds = sum(1 for line in (folder / "seeds.jsonl").read_text().splitlines() if line.strip())
    text = spec.read_text()
    spec.write_text(re.sub(r"(?m)^target_total:.*$", f"target_total: {seeds + total_over_seeds}", text))
    assert load_spec(spec).target_total == seeds + total_over_seeds
    return spec


@pytest.fixture(scope="module")
def served(tmp_path_factory, mk_home):
    folder = tmp_path_factory.mktemp("datagen")
    spec = small_spec(folder, 40)
    server = Server(spec, folder / "state", mk_home).start()
    yield server
    server.stop()


def post(server: Server, route: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(server.url + route, json=body, timeout=30, **kwargs)


def test_an_agent_gets_its_instruction_back_until_it_submits(served):
    first = post(served, "/next-instruction", {"agent_id": "alice"}).json()
    again = httpx.get(served.url + "/next-instruction", params={"agent_id": "alice"}).json()
    other = post(served, "/next-instruction", {"agent_id": "bob"}).json()
    assert again["instruction_id"] == first["instruction_id"]
    assert other["instruction_id"] != first["instruction_id"]
    assert set(first) >= {"dimensions", "target", "target_toon", "prompt", "lease_expires_at"}
    from toon_format import decode

    assert decode(first["target_toon"]) == first["target"]
    done = post(served, "/submit-case", {"instruction_id": first["instruction_id"], "agent_id": "alice",
                                         "case_text": case_for(first, 0)})
    assert done.status_code == 200 and done.json()["status"] == "accepted", done.text
    assert post(served, "/next-instruction", {"agent_id": "alice"}).json()["instruction_id"] != first["instruction_id"]


def test_submissions_are_idempotent_and_conflicts_are_refused(served):
    instruction = post(served, "/next-instruction", {"agent_id": "carol"}).json()
    body = {"instruction_id": instruction["instruction_id"], "agent_id": "carol", "case_text": case_for(instruction, 1)}
    first, again = post(served, "/submit-case", body), post(served, "/submit-case", body)
    assert first.json() == again.json() and first.json()["status"] == "accepted"
    other_text = post(served, "/submit-case", {**body, "case_text": case_for(instruction, 2)})
    assert other_text.status_code == 409, other_text.text
    assert other_text.json()["error"]["type"] == "conflict_error"


def test_bad_submissions_get_a_4xx_with_a_reason(served):
    instruction = post(served, "/next-instruction", {"agent_id": "dave"}).json()
    ident = instruction["instruction_id"]
    wrong_agent = post(
        served, "/submit-case", {"instruction_id": ident, "agent_id": "eve", "case_text": case_for(instruction, 0)}
    )
    empty = post(served, "/submit-case", {"instruction_id": ident, "agent_id": "dave", "case_text": "   "})
    huge = post(served, "/submit-case", {"instruction_id": ident, "agent_id": "dave", "case_text": "mot " * 5000})
    unknown = post(served, "/submit-case", {"instruction_id": "i999999", "agent_id": "dave", "case_text": "x" * 100})
    path_like = post(
        served, "/submit-case", {"instruction_id": "../../etc/passwd", "agent_id": "dave", "case_text": "x" * 100}
    )
    bad_agent = post(served, "/next-instruction", {"agent_id": "a b/c"})
    surrogate = httpx.post(served.url + "/submit-case", timeout=30, headers={"Content-Type": "application/json"},
                           content=json.dumps({"instruction_id": ident, "agent_id": "dave",
                                               "case_text": "x" * 100 + "\ud800"}, ensure_ascii=True))
    assert surrogate.status_code == 400 and surrogate.json()["error"]["code"] == "invalid_text", surrogate.text
    assert "case_text" in surrogate.json()["error"]["message"]
    assert (wrong_agent.status_code, empty.status_code, huge.status_code) == (403, 400, 413)
    assert unknown.status_code == 404 and path_like.status_code == 404
    assert bad_agent.status_code == 400 and "agent_id" in bad_agent.text
    for response in (wrong_agent, empty, huge, unknown):
        assert response.json()["error"]["message"]
    missing_numbers = post(served, "/submit-case", {"instruction_id": ident, "agent_id": "dave",
                                                     "case_text": " ".join(WORDS) * 2})
    if target_numbers(instruction["target"]):
        assert missing_numbers.json() == {**missing_numbers.json(), "status": "rejected"}
        assert "number" in missing_numbers.json()["reason"]
    assert post(served, "/next-instruction", {"agent_id": "dave"}).json()["instruction_id"] == ident  # lease kept


def test_host_header_and_body_limits_guard_the_server(served):
    rebinding = httpx.get(served.url + "/stats", headers={"Host": "evil.example:8765"})
    assert rebinding.status_code == 403 and "Host" in rebinding.json()["error"]["message"]
    too_big = httpx.post(served.url + "/submit-case", content=b"{" + b" " * (2 << 20) + b"}",
                         headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413


def accept_one(server: Server, agent: str, salt: int) -> None:
    """An agent takes an instruction and has a case for it accepted."""
    instruction = post(server, "/next-instruction", {"agent_id": agent}).json()
    done = post(server, "/submit-case", {"instruction_id": instruction["instruction_id"], "agent_id": agent,
                                         "case_text": case_for(instruction, salt)})
    assert done.json()["status"] == "accepted", done.text


def test_stats_and_dashboard_show_progress_coverage_and_agents(served):
    before = httpx.get(served.url + "/stats").json()["accepted"]
    for salt, agent in enumerate(("dora", "erin"), start=100):
        accept_one(served, agent, salt)
    stats = httpx.get(served.url + "/stats").json()
    assert stats["accepted"] == before + 2 and stats["goal"] == 40
    assert stats["agents"]["dora"]["accepted"] == stats["agents"]["erin"]["accepted"] == 1
    page = httpx.get(served.url + "/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count("<svg") > len(stats["coverage"]) and "dora" in page.text and "erin" in page.text
    assert "http://" not in page.text.replace(served.url, "") and "<script" not in page.text  # nothing fetched


@pytest.mark.parametrize("width", [1280, 420])
def test_the_dashboard_fits_the_window_and_draws_each_count(served, browser, width):
    """In Chromium: no chart runs out of its card or the window, and each coverage bar's filled
    share of its track, as drawn, is that value's count over its quota in /stats."""
    coverage = httpx.get(served.url + "/stats").json()["coverage"]
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(served.url + "/dashboard")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    drawn = page.evaluate("""Array.from(document.querySelectorAll('.card')).map(card => ({
        overflows: card.scrollWidth > card.clientWidth,
        bars: Array.from(card.querySelectorAll('svg[aria-label]')).map(svg => {
            const [track, fill] = Array.from(svg.querySelectorAll('rect')).map(r => r.getBoundingClientRect());
            return {share: fill.width / track.width,
                    inside: svg.getBoundingClientRect().right <= card.getBoundingClientRect().right};
        })}))""")
    assert not [card for card in drawn if card["overflows"]]
    bars = [bar for card in drawn for bar in card["bars"]]
    expected = [min(1.0, cell["count"] / cell["quota"]) for values in coverage.values() for cell in values.values()]
    assert len(bars) == len(expected) and all(bar["inside"] for bar in bars)
    assert [round(bar["share"], 2) for bar in bars] == [round(share, 2) for share in expected]
    assert any(share > 0 for share in expected)
    clipped = page.evaluate("""Array.from(document.querySelectorAll('svg text')).filter(text => {
        const box = text.getBoundingClientRect(), frame = text.closest('svg').getBoundingClientRect();
        return box.left < frame.left - 1 || box.right > frame.right + 1 || box.top < frame.top - 1
            || box.bottom > frame.bottom + 1; }).map(text => text.textContent)""")
    assert clipped == []  # every label, the heatmaps' slanted column names too, is inside its chart


def test_a_token_is_required_when_set_and_off_loopback(tmp_path, mk_home, cli):
    spec = small_spec(tmp_path, 10)
    refused = cli("datagen", "serve", str(spec), "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode != 0 and "token" in refused.stderr and "Traceback" not in refused.stderr
    server = Server(spec, tmp_path / "state", mk_home, "--token", "s3cret-token").start()
    try:
        assert httpx.get(server.url + "/stats").status_code == 401
        assert httpx.get(server.url + "/stats", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert httpx.get(server.url + "/dashboard", params={"token": "s3cret-token"}).status_code == 200
        assert httpx.get(server.url + "/dashboard", params={"token": "wrong-token!"}).status_code == 401
        assert httpx.get(server.url + "/health").status_code == 200
    finally:
        server.stop()


def exports(state: Path) -> dict[str, bytes]:
    folder = state / "exports"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def wait_exports_settled(state: Path, timeout_s: float = 20) -> dict[str, bytes]:
    before, deadline = exports(state), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = exports(state)
        if now == before:
            return now
        before = now
    return before


def test_sigkill_mid_run_loses_no_accepted_case_and_exports_rebuild_identically(tmp_path, mk_home):
    spec = small_spec(tmp_path, 400)
    state = tmp_path / "state"
    server = Server(spec, state, mk_home).start()
    accepted: list[tuple[str, str]] = []
    lock, stop = threading.Lock(), threading.Event()

    def agent(name: str) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                try:
                    got = client.post("/next-instruction", json={"agent_id": name}).json()
                    text = case_for(got, 0)
                    result = client.post("/submit-case", json={"instruction_id": got["instruction_id"],
                                                               "agent_id": name, "case_text": text}).json()
                except (httpx.HTTPError, ValueError, KeyError):
                    return  # the server is gone
                if result.get("status") == "accepted":
                    with lock:
                        accepted.append((got["instruction_id"], text))

    threads = [threading.Thread(target=agent, args=(f"agent-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    while len(accepted) < 25:
        time.sleep(0.05)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join()

    server.start()
    first = wait_exports_settled(state)
    cases = [json.loads(line) for line in first["generated_cases.jsonl"].decode().splitlines()]
    stored = {(c["instruction_id"], c["case_text"]) for c in cases}
    assert set(accepted) <= stored, f"lost: {set(accepted) - stored}"
    stats = httpx.get(server.url + "/stats").json()
    assert stats["accepted"] == len(cases)
    server.kill()
    server.start()
    second = wait_exports_settled(state)
    server.stop()
    assert second == first


def test_the_worker_fills_instructions_with_the_embedded_model_and_the_export_is_training_data(tmp_path, mk_home, cli):
    spec = small_spec(tmp_path, 3)
    state = tmp_path / "state"
    server = Server(spec, state, mk_home).start()
    try:
        done = cli("datagen", "work", "--server", server.url, "--agents", "2", "--count", "2", "--tries", "1",
                   "--max-tokens", "48", "--ctx", "1024", "--json", timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads(done.stdout)
        stats = httpx.get(server.url + "/stats").json()
    finally:
        server.stop()
    assert report["handled"] == 2
    assert stats["accepted"] == report["accepted"]
    assert sum(stats["rejected"].values()) == sum(report["rejected"].values()) - report["rejected"].get("empty", 0)
    assert sum(a["issued"] for a in stats["agents"].values()) >= 2
    training = state / "exports" / "full_training_cases_mistral.jsonl"
    # `data validate` reads it with tune's own loader and chat format (a tune run on such a file: the
    # README's `tune ... legal/state/exports/...` line in test_documented_commands).
    valid = cli("data", "validate", str(training), "--json")
    assert valid.returncode == 0, valid.stderr
    assert json.loads(valid.stdout)["files"][0]["samples"] >= 1, valid.stdout


@pytest.mark.parametrize("agents", [1, 3])
def test_the_agents_cases_are_decoded_together(mk_home, agents):
    """`datagen work --agents N` loads the model with N sequences: N agents' cases are in llama.cpp's
    batch at the same time (seen in the batcher's busy slots), not one after another as before."""
    from mistralkit.api import load
    from mistralkit.datagen.worker import engine_writer
    from mistralkit.settings import load as load_settings

    loaded = load(load_settings(cli={"model": "gemma-3-270m", "ctx": 512, "threads": 2}).settings, parallel=agents)
    try:
        write = engine_writer(loaded, max_tokens=12)  # long enough to overlap, short enough to be cheap
        busy, stop = [0], threading.Event()

        def watch() -> None:
            while not stop.is_set():
                busy[0] = max(busy[0], loaded.engine.batcher.busy_slots)
                time.sleep(0.002)

        watcher = threading.Thread(target=watch)
        writers = [threading.Thread(target=write, args=({"prompt": f"Write a short note number {i}."}, 1,
                                                        threading.Event())) for i in range(3)]
        watcher.start()
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(timeout=120)
        stop.set()
        watcher.join()
    finally:
        loaded.close()
    assert busy[0] == agents


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_the_worker_and_gives_its_leases_back(tmp_path, mk_home, stop):
    spec = small_spec(tmp_path, 20)
    server = Server(spec, tmp_path / "state", mk_home).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISTRALKIT_")}
    env["MISTRALKIT_HOME"] = str(mk_home)
    worker = subprocess.Popen([sys.executable, "-m", "mistralkit", "datagen", "work", "--server", server.url,
                               "--agents", "2", "--max-tokens", "400", "--ctx", "1024", "--json"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while httpx.get(server.url + "/stats").json()["leased"] < 2:
            assert time.monotonic() < deadline and worker.poll() is None, worker.stderr.read() if worker.poll() else ""
            time.sleep(0.2)
        worker.send_signal(stop)
        out, err = worker.communicate(timeout=60)
        stats = httpx.get(server.url + "/stats").json()
    finally:
        if worker.poll() is None:
            worker.kill()
        server.stop()
    assert worker.returncode == 130, err[-2000:]
    assert json.loads(out)["interrupted"] is True and "Traceback" not in err, err
    assert stats["leased"] == 0 and stats["pooled"] >= 2  # both leases back in the pool for someone else


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, cli):
    no_server = cli("datagen", "work", "--server", f"http://127.0.0.1:{free_port()}", "--count", "1")
    missing = cli("datagen", "serve", str(tmp_path / "nope.yaml"))
    folder = tmp_path / "spec"
    init_example(folder)
    again = cli("datagen", "init", str(folder))
    for done, words in ((no_server, "no datagen server"), (missing, "no such file"), (again, "already exists")):
        assert done.returncode == 1 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "nope.yaml").exists()


def test_worker_agents_stop_when_the_goal_is_met(tmp_path, mk_home):
    """Four agents with a writer of valid cases (the bench's simulated agent) fill a goal of 12."""
    from mistralkit.datagen.worker import work

    server = Server(small_spec(tmp_path, 12), tmp_path / "state", mk_home).start()
    try:
        report = work(server.url, lambda instruction, attempt, cancel: case_for(instruction, attempt), agents=4)
        stats = httpx.get(server.url + "/stats").json()
    finally:
        server.stop()
    assert report.done and not report.errors and report.accepted == stats["accepted"] >= 12
    assert stats["done"] and len(stats["agents"]) >= 2
