"""The interactive ``mistralkit chat`` REPL, driven through a real pseudo-terminal with pexpect.

Every test spawns ``python -m mistralkit chat`` with the embedded 270M model and a private
MISTRALKIT_HOME (one per module, so the model is assembled once), talks to it the way a person at a
terminal would (Enter, Ctrl-C, Ctrl-D), and then checks the SQLite history directly. Assertions are
about structure and markers only (prompts, stats lines, command replies, rows), never model text.

The fixtures are self-contained (prefixed ``repl_``) and do not depend on ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import pexpect

pytestmark = pytest.mark.slow

PROMPT = ">>> "
CONTINUATION = "... "
# "[12 tokens · 45.1 tok/s · first token 0.08 s · prompt 20 (0 cached)]"
STATS = re.compile(r"\[\d+ tokens · \d+\.\d tok/s · first token \d+\.\d\d s · prompt \d+ \(\d+ cached\)\]")
STOPPED = "^C (stopped)"
SAVED = re.compile(r"Session saved: ([0-9a-f]{12})")
LONG_PROMPT = "Write a very long story about a dragon."
# Some streamed words after the echoed prompt line: generation is under way.
STREAMING = re.compile(r"\w{3,}")


# Fixtures and helpers ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def repl_home(tmp_path_factory) -> Path:
    """One MISTRALKIT_HOME per module: the 253 MB model is assembled there by the first run."""
    return tmp_path_factory.mktemp("repl_home")


@pytest.fixture(scope="module")
def repl_env(repl_home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRALKIT_", "LLM_"))}
    # TERM=dumb keeps readline from writing terminal escape sequences into the transcript.
    env.update({"MISTRALKIT_HOME": str(repl_home), "TERM": "dumb", "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture(scope="module")
def repl_spawn(repl_env):
    """Start ``mistralkit chat ARGS`` on a pty; every child is cleaned up at module end."""
    children: list = []

    def spawn(*args: str):
        command = " ".join([sys.executable, "-m", "mistralkit", "chat", *args])
        child = pexpect.spawn(command, env=repl_env, encoding="utf-8", timeout=60, dimensions=(24, 250))
        children.append(child)
        child.expect_exact(PROMPT)
        return child

    yield spawn
    for child in children:
        if child.isalive():
            child.terminate(force=True)


@pytest.fixture(scope="module")
def repl_db(repl_home):
    """Read the history database the way an outside tool would: a fresh sqlite3 connection."""
    path = repl_home / "data" / "history.db"

    def query(sql: str, params: tuple = ()) -> list[tuple]:
        db = sqlite3.connect(path)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    query.path = path  # type: ignore[attr-defined]
    return query


def repl_messages(query, session_id: str) -> list[tuple[str, str, int]]:
    return query("SELECT role, content, partial FROM messages WHERE session_id = ? ORDER BY id", (session_id,))


def repl_say(child, text: str) -> str:
    """Send one line, wait for its stats line and the next prompt; return the answer's output."""
    child.sendline(text)
    child.expect(STATS)
    answer = child.before
    child.expect_exact(PROMPT)
    return answer


def repl_command(child, line: str) -> str:
    """Send a slash command and return what it printed before the next prompt."""
    child.sendline(line)
    child.expect_exact(PROMPT)
    return child.before


def repl_quit(child, how: str = "eof") -> str:
    """Leave with Ctrl-D (``eof``) or ``/quit``; return the saved session id; exit status must be 0."""
    if how == "eof":
        child.sendeof()
    else:
        child.sendline(how)
    child.expect(SAVED)
    session_id = child.match.group(1)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus, child.before)
    assert "Traceback" not in child.before
    return session_id


def repl_start_long_answer(child) -> None:
    """Ask for a long story and return as soon as some of it has been streamed."""
    child.sendline(LONG_PROMPT)
    child.expect_exact(LONG_PROMPT + "\r\n")  # the terminal's echo of the line we typed
    child.expect(STREAMING)


def repl_two_turn_chat(spawn) -> dict:
    child = spawn("--greedy", "--max-tokens", "16")
    assert "Type /help" in child.before
    questions = ["What is the capital of France?", "And what is the capital of Italy?"]
    answers = [repl_say(child, q) for q in questions]
    history = repl_command(child, "/history")
    session_id = repl_quit(child, "eof")
    return {"session_id": session_id, "questions": questions, "answers": answers, "history": history}


@pytest.fixture(scope="module")
def repl_two_turns(repl_spawn) -> dict:
    """A finished two-turn chat (shared by the chat test and the resume test)."""
    return repl_two_turn_chat(repl_spawn)


# Tests ------------------------------------------------------------------------------------------

def test_two_turn_chat_is_saved(repl_two_turns, repl_db):
    chat = repl_two_turns
    for answer in chat["answers"]:
        assert answer.strip(), "an answer was streamed before its stats line"
    history = chat["history"]
    for question in chat["questions"]:
        assert f"[user] {question}" in history
    assert history.count("[assistant]") == 2
    assert history.index(chat["questions"][0]) < history.index(chat["questions"][1])

    rows = repl_messages(repl_db, chat["session_id"])
    assert [role for role, _, _ in rows] == ["user", "assistant", "user", "assistant"]
    assert [content for role, content, _ in rows if role == "user"] == chat["questions"]
    assert all(content.strip() for role, content, _ in rows if role == "assistant")
    assert [partial for _, _, partial in rows] == [0, 0, 0, 0]


def test_ctrl_c_stops_the_answer_and_keeps_the_session(repl_spawn, repl_db):
    child = repl_spawn("--greedy", "--max-tokens", "2000", "--ctx", "4096", "--repeat-penalty", "1.0")
    repl_start_long_answer(child)
    child.sendintr()
    child.expect_exact(STOPPED)
    child.expect(STATS)
    child.expect_exact(PROMPT)
    assert child.isalive(), "Ctrl-C during an answer must not end the REPL"

    assert "Set max_tokens = 12" in repl_command(child, "/set max_tokens 12")
    assert repl_say(child, "Say hello.").strip()
    session_id = repl_quit(child, "/quit")

    rows = repl_messages(repl_db, session_id)
    assert [role for role, _, _ in rows] == ["user", "assistant", "user", "assistant"]
    assert rows[0][1] == LONG_PROMPT
    assert rows[1][2] == 1, "the stopped answer is saved with partial = 1"
    assert rows[1][1].strip(), "the text streamed before Ctrl-C is kept"
    assert rows[3][2] == 0


def test_slash_commands_and_multiline_input(repl_spawn, repl_db):
    child = repl_spawn("--greedy", "--max-tokens", "8")

    assert "Set temperature = 0.5" in repl_command(child, "/set temperature 0.5")
    out = repl_command(child, "/set temperature -1")
    assert "error:" in out and "temperature" in out
    assert "Traceback" not in out
    assert child.isalive()
    assert "temperature = 0.5" in repl_command(child, "/set"), "a rejected value leaves the old one"
    assert "usage: /set" in repl_command(child, "/set nonsense 1")

    assert "Streaming off." in repl_command(child, "/stream")
    assert "System prompt set." in repl_command(child, "/system You are terse.")
    assert "You are terse." in repl_command(child, "/system")
    assert "unknown command" in repl_command(child, "/foo")
    help_text = repl_command(child, "/help")
    for name in ("/quit", "/history", "/set", "/sessions"):
        assert name in help_text

    child.sendintr()  # Ctrl-C at an empty prompt
    child.expect_exact("(Use /quit or Ctrl-D to leave.)")
    child.expect_exact(PROMPT)
    assert child.isalive()

    # A """ block is one message: one answer, one stats line.
    child.sendline('"""')
    child.expect_exact(CONTINUATION)
    child.sendline("Say hi")
    child.expect_exact(CONTINUATION)
    child.sendline("in one word.")
    child.expect_exact(CONTINUATION)
    child.sendline('"""')
    child.expect(STATS)
    assert PROMPT not in child.before, "no prompt (and so no other answer) before the block's stats line"
    child.expect_exact(PROMPT)
    # A trailing backslash continues the line.
    child.sendline("Say\\")
    child.expect_exact(CONTINUATION)
    child.sendline("hello.")
    child.expect(STATS)
    assert PROMPT not in child.before
    child.expect_exact(PROMPT)

    sessions = repl_command(child, "/sessions")
    assert re.search(r"\*\s+[0-9a-f]{12}\s", sessions), "the current session is marked"
    session_id = repl_quit(child, "/exit")

    rows = repl_messages(repl_db, session_id)
    assert [(role, content) for role, content, _ in rows if role == "user"] == [
        ("user", "Say hi\nin one word."), ("user", "Say\nhello.")]
    assert len(rows) == 4
    system_prompt, params = repl_db("SELECT system_prompt, params FROM sessions WHERE id = ?", (session_id,))[0]
    assert system_prompt == "You are terse."
    assert json.loads(params)["temperature"] == 0.5


def test_resume_session_by_prefix(repl_two_turns, repl_spawn):
    session_id = repl_two_turns["session_id"]
    child = repl_spawn("--session-id", session_id[:6], "--greedy", "--max-tokens", "8")
    assert f"Resumed session {session_id} (4 messages)" in child.before
    history = repl_command(child, "/history")
    for question in repl_two_turns["questions"]:
        assert f"[user] {question}" in history
    assert history.count("[assistant]") == 2
    assert repl_quit(child, "/quit") == session_id


def test_kill_9_mid_answer_keeps_committed_turns(repl_spawn, repl_db, repl_env):
    child = repl_spawn("--greedy", "--max-tokens", "16", "--ctx", "4096", "--repeat-penalty", "1.0")
    questions = ["What is the capital of France?", "And what is the capital of Spain?"]
    for question in questions:
        repl_say(child, question)
    saved = repl_command(child, "/save before the crash")
    session_id = re.search(r"Saved as session ([0-9a-f]{12})", saved).group(1)
    assert "Set max_tokens = 2000" in repl_command(child, "/set max_tokens 2000")

    repl_start_long_answer(child)
    os.kill(child.pid, signal.SIGKILL)
    child.expect(pexpect.EOF)
    child.close()
    assert child.signalstatus == signal.SIGKILL

    assert repl_db("PRAGMA integrity_check") == [("ok",)]
    rows = repl_messages(repl_db, session_id)
    assert [role for role, _, _ in rows] == ["user", "assistant", "user", "assistant"]
    assert [content for role, content, _ in rows if role == "user"] == questions
    assert all(content.strip() for role, content, _ in rows if role == "assistant")
    assert LONG_PROMPT not in [content for _, content, _ in rows], "the killed turn was never committed"

    listed = subprocess.run([sys.executable, "-m", "mistralkit", "sessions", "list"],
                            capture_output=True, text=True, env=repl_env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    as_json = subprocess.run([sys.executable, "-m", "mistralkit", "sessions", "list", "--json"],
                             capture_output=True, text=True, env=repl_env, timeout=60)
    assert as_json.returncode == 0, as_json.stderr
    by_id = {s["id"]: s for s in json.loads(as_json.stdout)}
    assert by_id[session_id]["message_count"] == 4
    assert by_id[session_id]["title"] == "before the crash"


def test_resume_honours_flags_typed_on_the_command_line(repl_two_turns, repl_spawn):
    session_id = repl_two_turns["session_id"]  # saved with --greedy --max-tokens 16
    child = repl_spawn("--session-id", session_id, "--max-tokens", "2")
    assert "max_tokens = 2" in repl_command(child, "/set")
    repl_quit(child, "/quit")
