import sqlite3

import pytest

from mistralkit.chat.export import to_json, to_markdown
from mistralkit.chat.history import Store, StoredMessage
from mistralkit.chat.history_db import MIGRATIONS
from mistralkit.errors import SessionNotFound


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "history.db")
    yield s
    s.close()


def test_schema_wal_and_migrations(store, tmp_path):
    assert store.migrations() == [name for name, _ in MIGRATIONS]
    mode = sqlite3.connect(tmp_path / "history.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    Store(tmp_path / "history.db").close()  # reopening applies nothing twice
    assert store.migrations() == ["m001_initial"]


def test_turns_roundtrip_and_export(store):
    session = store.create_session("gemma-3-270m", "Be brief.", {"temperature": 0.2})
    store.add_messages(session.id, [StoredMessage("user", "Hi", tokens=3),
                                    StoredMessage("assistant", "Hello!", tokens=2, timings={"ttft_s": 0.1})])
    store.add_messages(session.id, [StoredMessage("user", "Tell", tokens=3),
                                    StoredMessage("assistant", "Once upon", tokens=2, partial=True)])
    loaded = store.get_session(session.id[:5])
    assert loaded.message_count == 4 and loaded.params == {"temperature": 0.2}
    msgs = store.messages(session.id)
    assert [m.role for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[1].timings == {"ttft_s": 0.1} and msgs[3].partial and not msgs[1].partial
    assert '"content": "Once upon"' in to_json(store, session.id)
    md = to_markdown(store, session.id)
    assert "## System" in md and "## Assistant (stopped)" in md


def test_a_failed_turn_writes_nothing(store):
    session = store.create_session("m")
    with pytest.raises(Exception):
        store.add_messages(session.id, [StoredMessage("user", "ok"), StoredMessage("robot", "bad")])
    assert store.messages(session.id) == []


def test_unknown_ambiguous_and_delete(store):
    a = store.create_session("m")
    with pytest.raises(SessionNotFound, match="no session"):
        store.get_session("zzzz")
    store.add_messages(a.id, [StoredMessage("user", "x")])
    assert store.delete_session(a.id).id == a.id
    with pytest.raises(SessionNotFound):
        store.get_session(a.id)
    assert store._db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0  # cascaded
