"""The history database under stress: a busy lock never loses a turn, damage is one clear error,
and the API matches session ids exactly.

"Busy" is real: another process (``python -c``) or a second sqlite3 connection holds
``BEGIN IMMEDIATE`` on the same file. "Damaged" is real: a database with many pages whose pages
after the first three are overwritten with garbage. The REPL is driven through pexpect and the
server runs as ``mistralkit serve``, both with the embedded model and ``MISTRALKIT_HISTORY_WAIT``
small.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conftest import run_cli
from mistralkit.chat.history import Saved, Store, StoredMessage, history_wait
from mistralkit.errors import HistoryBusy, InvalidParameter, SessionNotFound, StorageError

WAIT = "0.5"
DAMAGED = re.compile(r"the history database \S+ is damaged: .*move it aside \(mistralkit never deletes it\)", re.S)
HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


class Lock:
    """Another process holding the database's write lock until ``release()``."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            assert self.proc.wait(timeout=10) == 0


@contextmanager
def locked(path: Path):
    lock = Lock(path)
    try:
        yield lock
    finally:
        lock.release()


def query(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the database as an outside tool would (WAL readers are not blocked by a writer)."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def turn(text: str) -> list[StoredMessage]:
    return [StoredMessage("user", text, tokens=3), StoredMessage("assistant", f"re: {text}", tokens=4)]


def journal_lines(store: Store) -> list[dict]:
    path = store.journal.path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "history.db"


# Busy: retried, then journalled, read back, replayed --------------------------------------------

def test_busy_turn_is_journalled_seen_by_reads_and_landed_by_the_next_write(db):
    store = Store(db, wait=0.3)
    session = store.create_session("m")
    store.add_messages(session.id, turn("one"))
    with locked(db):
        assert store.add_messages(session.id, turn("two")) is Saved.PENDING
        assert store.last_write is Saved.PENDING
        assert [e["op"] for e in journal_lines(store)] == ["add_messages"]
        assert query(db, "SELECT count(*) FROM messages") == [(2,)], "nothing reached the database yet"
        assert [m.content for m in store.messages(session.id)] == ["one", "re: one", "two", "re: two"]
        assert store.get_session(session.id).message_count == 4
        assert store.list_sessions()[0].message_count == 4
    assert store.add_messages(session.id, turn("three")) is Saved.SAVED
    assert query(db, "SELECT content FROM messages ORDER BY id") == [
        ("one",), ("re: one",), ("two",), ("re: two",), ("three",), ("re: three",)]
    assert store.journal.path.read_text() == "", "replayed and truncated (never deleted)"
    store.close()


def test_session_created_while_busy_lands_when_the_next_store_opens(db):
    store = Store(db, wait=0.2)
    with locked(db):
        session = store.create_session("m", "Be brief.", {"temperature": 0.2})
        assert store.last_write is Saved.PENDING
        titled = store.update_session(session.id, title="while busy")
        assert titled.title == "while busy" and titled.params == {"temperature": 0.2}
        assert store.add_messages(session.id, turn("hi")) is Saved.PENDING
        assert store.get_session(session.id[:6]).id == session.id
        assert [s.id for s in store.list_sessions()] == [session.id]
        assert query(db, "SELECT count(*) FROM sessions") == [(0,)]
        assert [e["op"] for e in journal_lines(store)] == ["create_session", "update_session", "add_messages"]
    Store(db, wait=0.2).close()  # opening lands what is pending
    assert query(db, "SELECT id, title, system_prompt FROM sessions") == [(session.id, "while busy", "Be brief.")]
    assert query(db, "SELECT role, content FROM messages") == [("user", "hi"), ("assistant", "re: hi")]
    assert journal_lines(store) == []
    store.close()


def test_a_lock_released_within_the_wait_is_retried_not_journalled(db):
    store = Store(db, wait=10)
    session = store.create_session("m")
    lock = Lock(db)
    threading.Timer(0.4, lock.release).start()
    assert store.add_messages(session.id, turn("after the wait")) is Saved.SAVED
    assert query(db, "SELECT count(*) FROM messages") == [(2,)]
    assert not store.journal
    store.close()


def test_replay_is_idempotent_when_a_crash_left_the_journal_behind(db):
    store = Store(db, wait=0.1)
    session = store.create_session("m")
    with locked(db):
        store.add_messages(session.id, turn("once"))
        store.update_session(session.id, title="t")
    left_behind = store.journal.path.read_text()
    store.add_messages(session.id, turn("next"))  # lands the journal, then truncates it
    store.journal.path.write_text(left_behind)  # as if the process died between commit and truncation
    with locked(db):
        assert [m.content for m in store.messages(session.id)].count("once") == 1
        assert store.get_session(session.id).message_count == 4
    Store(db, wait=0.1).close()
    assert query(db, "SELECT content FROM messages ORDER BY id") == [("once",), ("re: once",), ("next",),
                                                                     ("re: next",)]
    assert query(db, "SELECT count(*) FROM sessions") == [(1,)]
    assert not store.journal
    store.close()


def test_concurrent_writers_and_an_intermittent_lock_lose_nothing(db):
    Store(db).close()
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    stop = threading.Event()
    errors: list[BaseException] = []

    def hog() -> None:  # another program taking the write lock in bursts
        while not stop.is_set():
            holder.execute("BEGIN IMMEDIATE")
            time.sleep(0.15)
            holder.execute("ROLLBACK")
            time.sleep(0.02)

    def writer(n: int) -> None:
        try:
            store = Store(db, wait=0.05)
            session = store.create_session(f"writer-{n}")
            for i in range(8):
                store.add_messages(session.id, turn(f"{n}-{i}"))
            store.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    hogging = threading.Thread(target=hog)
    hogging.start()
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=60)
    stop.set()
    hogging.join()
    holder.close()
    assert errors == []
    store = Store(db)
    store.close()
    users = [content for (content,) in query(db, "SELECT content FROM messages WHERE role = 'user'")]
    assert sorted(users) == sorted(f"{n}-{i}" for n in range(4) for i in range(8)), "every turn exactly once"
    for n in range(4):  # and in order within each session
        assert [u for u in users if u.startswith(f"{n}-")] == [f"{n}-{i}" for i in range(8)]
    assert query(db, "SELECT count(*) FROM sessions") == [(4,)]
    assert not store.journal


def test_a_replay_waits_for_an_append_in_progress(db):
    """The journal's flock: a replay truncating the file while a line is appended would lose it."""
    store = Store(db, wait=0.1)
    session = store.create_session("m")
    with locked(db):
        store.add_messages(session.id, turn("kept"))
    finished = threading.Event()

    def direct_write() -> None:
        other = Store(db, wait=0.1)
        other.add_messages(session.id, turn("direct"))
        other.close()
        finished.set()

    with open(store.journal.path) as journal:
        fcntl.flock(journal, fcntl.LOCK_EX)  # as an appender in the middle of its line
        writing = threading.Thread(target=direct_write)
        writing.start()
        assert not finished.wait(0.5), "the replay must wait for the journal's lock"
        assert query(db, "SELECT count(*) FROM messages") == [(0,)]
    writing.join(timeout=30)
    assert finished.is_set()
    assert [c for (c,) in query(db, "SELECT content FROM messages WHERE role = 'user' ORDER BY id")] == [
        "kept",
        "direct",
    ]
    assert not store.journal
    store.close()


def test_delete_while_busy_is_history_busy_and_deletes_nothing(db):
    store = Store(db, wait=0.2)
    session = store.create_session("m")
    with locked(db), pytest.raises(HistoryBusy) as caught:
        store.delete_session(session.id)
    assert caught.value.status == 503 and caught.value.retry_after >= 1
    assert "busy" in caught.value.message
    assert query(db, "SELECT id FROM sessions") == [(session.id,)]
    assert not store.journal, "a delete is refused, not journalled"
    store.close()


def test_a_pending_write_that_cannot_apply_is_set_aside(db):
    store = Store(db, wait=0.1)
    with locked(db):
        assert store.add_messages("no-such-session", turn("orphan")) is Saved.PENDING
    session = store.create_session("m")  # lands the journal: the orphan fails its foreign key
    assert query(db, "SELECT count(*) FROM messages") == [(0,)]
    assert not store.journal
    rejected = [json.loads(line) for line in store.journal.rejected.read_text().splitlines()]
    assert [r["entry"]["data"]["session_id"] for r in rejected] == ["no-such-session"]
    assert store.get_session(session.id).id == session.id
    store.close()


def test_wait_budget_from_the_environment(monkeypatch, db):
    monkeypatch.setenv("MISTRALKIT_HISTORY_WAIT", "0.25")
    assert Store(db).wait == 0.25
    assert history_wait({}) == 10.0
    for bad in ("soon", "-1", "nan", "inf"):
        with pytest.raises(InvalidParameter, match="MISTRALKIT_HISTORY_WAIT"):
            history_wait({"MISTRALKIT_HISTORY_WAIT": bad})


def test_exact_ids_for_the_api_prefixes_for_people(db):
    store = Store(db)
    session = store.create_session("m")
    assert store.get_session(session.id[:4]).id == session.id
    assert store.get_session(session.id, exact=True).id == session.id
    with pytest.raises(SessionNotFound):
        store.get_session(session.id[:4], exact=True)
    with pytest.raises(SessionNotFound):
        store.delete_session(session.id[:1], exact=True)
    assert query(db, "SELECT id FROM sessions") == [(session.id,)]
    store.close()


# Damage: one StorageError at the boundary -------------------------------------------------------

def damaged_history(path: Path) -> list[str]:
    """A history with many pages, then every page after the third overwritten with garbage."""
    store = Store(path)
    ids = []
    for i in range(40):
        session = store.create_session("m", "S" * 300, title=f"chat {i}")
        store.add_messages(session.id, [StoredMessage("user", "x" * 400), StoredMessage("assistant", "y" * 600)] * 5)
        ids.append(session.id)
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 20 * page
    garbage = random.Random(7)
    data[3 * page:] = bytes(garbage.randrange(256) for _ in range(len(data) - 3 * page))
    path.write_bytes(bytes(data))
    return ids


def test_damage_past_the_first_pages_is_one_storage_error_for_every_method(db):
    ids = damaged_history(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    store = Store(db, wait=0.1)
    calls = {
        "list_sessions": lambda: store.list_sessions(),
        "get_session": lambda: store.get_session(ids[3]),
        "messages": lambda: store.messages(ids[3]),
        "add_messages": lambda: store.add_messages(ids[3], turn("more")),
        "create_session": lambda: store.create_session("m"),
        "update_session": lambda: store.update_session(ids[3], title="x"),
        "delete_session": lambda: store.delete_session(ids[3]),
    }
    for name, call in calls.items():
        with pytest.raises(StorageError) as caught:
            call()
        assert DAMAGED.search(str(caught.value)), (name, str(caught.value))
        assert not isinstance(caught.value, HistoryBusy)
    store.close()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before, "the damaged file is left as it was"


def test_damaged_history_in_the_cli_is_a_one_line_error(tmp_path):
    home = tmp_path / "home"
    ids = damaged_history(home / "data" / "history.db")
    for args in (("sessions", "list"), ("sessions", "show", ids[0][:6]), ("sessions", "rm", ids[1]),
                 ("chat", "--session-id", ids[2], "--prompt", "hi")):
        done = run_cli(*args, home=home)
        assert done.returncode == 1, (args, done.stderr)
        assert "Traceback" not in done.stderr
        first, *rest = done.stderr.strip().splitlines()
        assert first.startswith("error: the history database") and "is damaged" in first, (args, done.stderr)
        assert rest == ["hint: move it aside (mistralkit never deletes it) and start again"], (args, done.stderr)


# The server and the REPL, end to end -------------------------------------------------------------

@pytest.fixture(scope="module")
def robust_home(model, mk_home, tmp_path_factory) -> Path:
    """A private home (its own history) that shares the session's assembled models."""
    home = tmp_path_factory.mktemp("robust_home")
    (home / "data").mkdir()
    (home / "data" / "models").symlink_to(mk_home / "data" / "models")
    return home


@pytest.fixture(scope="module")
def history_server(model, robust_home, tmp_path_factory):
    from test_server_api import Serve

    serve = Serve(robust_home, tmp_path_factory.mktemp("serve") / "robust.log", "--threads", "1",
                  env={"MISTRALKIT_HISTORY_WAIT": WAIT})
    yield serve
    serve.stop()


def post_chat(server, session_id: str, **extra) -> httpx.Response:
    body = {"model": "gemma-3-270m:q4_k_m", "messages": [{"role": "user", "content": "Tell me about dragons."}],
            "max_tokens": 8, "temperature": 0, "session_id": session_id, **extra}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    return error


@pytest.mark.slow
def test_server_busy_history_is_503_before_generation_and_a_late_turn_is_kept(history_server, robust_home):
    db = robust_home / "data" / "history.db"
    made = post_chat(history_server, "new")
    assert made.status_code == 200, made.text
    session = made.json()["session_id"]

    with locked(db):
        for ref in ("new", session):
            refused = post_chat(history_server, ref)
            assert_openai_error(refused, 503, "history_busy")
            assert refused.headers["retry-after"].isdigit() and int(refused.headers["retry-after"]) >= 1
        deleted = httpx.delete(f"{history_server.url}/v1/sessions/{session}", timeout=30)
        assert_openai_error(deleted, 503, "history_busy")
        assert deleted.headers["retry-after"].isdigit()
    assert query(db, "SELECT id FROM sessions") == [(session,)], "no session was made, none deleted"
    assert query(db, "SELECT count(*) FROM messages") == [(2,)], "no refused turn was saved"

    # The lock comes after generation started: the answer is streamed and its turn kept, then saved.
    body = {"model": "gemma-3-270m:q4_k_m", "messages": [{"role": "user", "content": "Write a long story."}],
            "max_tokens": 64, "temperature": 0, "stream": True, "session_id": session}
    holder = sqlite3.connect(db, isolation_level=None)
    text = ""
    with httpx.stream("POST", f"{history_server.url}/v1/chat/completions", json=body, timeout=120) as streamed:
        assert streamed.status_code == 200
        for line in streamed.iter_lines():
            if not line.startswith("data: {"):
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content", "")
            if delta and not holder.in_transaction:
                holder.execute("BEGIN IMMEDIATE")
            text += delta
    assert holder.in_transaction, "the lock was taken while the answer streamed"
    journal = db.with_name("history.pending.jsonl")
    kept = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [(e["op"], e["data"]["session_id"]) for e in kept] == [("add_messages", session)]
    assert kept[0]["data"]["messages"][-1]["content"] == text
    holder.execute("ROLLBACK")
    holder.close()

    shown = httpx.get(f"{history_server.url}/v1/sessions/{session}", timeout=30)  # a read lands it
    assert shown.status_code == 200
    assert [m["role"] for m in shown.json()["messages"]] == ["user", "assistant"] * 2
    assert shown.json()["messages"][-1]["content"] == text
    assert query(db, "SELECT count(*) FROM messages") == [(4,)]
    assert journal.read_text() == ""


@pytest.mark.slow
def test_server_session_ids_must_match_exactly(history_server, robust_home):
    made = post_chat(history_server, "new")
    session = made.json()["session_id"]
    prefix = session[:1]
    assert_openai_error(httpx.get(f"{history_server.url}/v1/sessions/{prefix}", timeout=30), 404,
                        "session_not_found")
    assert_openai_error(httpx.delete(f"{history_server.url}/v1/sessions/{prefix}", timeout=30), 404,
                        "session_not_found")
    assert_openai_error(post_chat(history_server, session[:6]), 404, "session_not_found")
    assert httpx.get(f"{history_server.url}/v1/sessions/{session}", timeout=30).status_code == 200
    deleted = httpx.delete(f"{history_server.url}/v1/sessions/{session}", timeout=30)
    assert deleted.status_code == 200 and deleted.json() == {"id": session, "deleted": True}


@pytest.mark.slow
def test_server_damaged_history_is_a_json_503(history_server, robust_home, tmp_path):
    db = robust_home / "data" / "history.db"
    spare = tmp_path / "history.db"
    ids = damaged_history(spare)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    os.replace(spare, db)
    url = history_server.url
    try:
        for response in (httpx.get(f"{url}/v1/sessions", timeout=30),
                         httpx.get(f"{url}/v1/sessions/{ids[0]}", timeout=30),
                         httpx.delete(f"{url}/v1/sessions/{ids[0]}", timeout=30), post_chat(history_server, "new"),
                         post_chat(history_server, ids[0])):
            error = assert_openai_error(response, 503, "history_unavailable")
            assert "is damaged" in error["message"] and "move it aside" in error["message"]
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        assert "Traceback" not in history_server.output()
    finally:  # the REPL tests below start from a fresh history
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)


PROMPT = ">>> "
STATS = re.compile(r"\[\d+ tokens · [^\]]+\]")
KEPT = "(history database busy: this turn is kept in "


@pytest.fixture
def spawn_chat(model, robust_home):
    import pexpect
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRALKIT_", "LLM_"))}
    env.update({"MISTRALKIT_HOME": str(robust_home), "MISTRALKIT_HISTORY_WAIT": WAIT, "TERM": "dumb",
                "PYTHONUNBUFFERED": "1"})
    children = []

    def spawn():
        child = pexpect.spawn(f"{sys.executable} -m mistralkit chat --greedy --max-tokens 8", env=env,
                              encoding="utf-8", timeout=60, dimensions=(24, 400))
        children.append(child)
        child.expect_exact(PROMPT)
        return child

    yield spawn
    for child in children:
        if child.isalive():
            child.terminate(force=True)


def say(child, text: str) -> str:
    """One turn: what was printed from the stats line to the next prompt."""
    child.sendline(text)
    child.expect(STATS)
    child.expect_exact(PROMPT)
    return child.before


def leave(child) -> str:
    import pexpect

    child.sendeof()
    child.expect(r"Session saved: ([0-9a-f]{12})")
    session = child.match.group(1)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in child.before
    return session


@pytest.mark.slow
def test_repl_keeps_a_busy_turn_and_saves_it_on_the_next_turn_and_at_exit(spawn_chat, robust_home):
    db = robust_home / "data" / "history.db"
    journal = db.with_name("history.pending.jsonl")
    child = spawn_chat()
    assert KEPT not in say(child, "First question?")
    with locked(db):
        after = say(child, "Second question?")
        assert KEPT in after and str(journal) in after
        assert child.isalive()
    assert KEPT not in say(child, "Third question?")
    with locked(db) as lock:
        assert KEPT in say(child, "Fourth question?")
        lock.release()
        session = leave(child)  # closing the store lands the fourth turn
    users = [c for (c,) in query(db, "SELECT content FROM messages WHERE session_id = ? AND role = 'user' "
                                     "ORDER BY id", (session,))]
    assert users == ["First question?", "Second question?", "Third question?", "Fourth question?"]
    assert journal.read_text() == ""


@pytest.mark.slow
def test_repl_first_turn_while_busy_creates_the_session_later(spawn_chat, robust_home):
    db = robust_home / "data" / "history.db"
    child = spawn_chat()
    with locked(db):
        after = say(child, "Hello while busy?")
        assert after.count("history database busy") == 1, after
        assert KEPT in after
    session = leave(child)
    assert query(db, "SELECT title FROM sessions WHERE id = ?", (session,)) == [("Hello while busy?",)]
    assert [r for (r,) in query(db, "SELECT role FROM messages WHERE session_id = ? ORDER BY id", (session,))] == [
        "user", "assistant"]
