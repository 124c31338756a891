"""The datagen state's SQLite file: its tables, WAL mode, timestamps and the seeds stored once."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime

from . import dispatch, exports

BUSY_TIMEOUT_S = 30.0

MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("m001_initial", """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE seeds (
            id INTEGER PRIMARY KEY, line INTEGER NOT NULL, case_text TEXT NOT NULL, record TEXT,
            dimensions TEXT NOT NULL, training TEXT
        );
        CREATE TABLE instructions (
            seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, dimensions TEXT NOT NULL, target TEXT NOT NULL,
            target_toon TEXT NOT NULL, prompt TEXT NOT NULL, created_at TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('leased', 'pooled', 'accepted')),
            agent_id TEXT, lease_expires REAL, case_id INTEGER
        );
        CREATE INDEX instructions_by_status ON instructions(status, seq);
        CREATE TABLE leases (
            id INTEGER PRIMARY KEY, instruction_id TEXT NOT NULL, agent_id TEXT NOT NULL, leased_at TEXT NOT NULL,
            expires REAL NOT NULL, ended TEXT CHECK (ended IN ('expired', 'released', 'accepted'))
        );
        CREATE INDEX leases_by_instruction ON leases(instruction_id, agent_id);
        CREATE TABLE submissions (
            id INTEGER PRIMARY KEY, instruction_id TEXT NOT NULL, agent_id TEXT NOT NULL, text_sha TEXT NOT NULL,
            case_text TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('accepted', 'rejected')),
            reason TEXT, detail TEXT, case_id INTEGER, created_at TEXT NOT NULL,
            UNIQUE (instruction_id, agent_id, text_sha)
        );
        CREATE TABLE cases (
            id INTEGER PRIMARY KEY, instruction_id TEXT NOT NULL UNIQUE, agent_id TEXT NOT NULL,
            submission_id INTEGER NOT NULL, case_text TEXT NOT NULL, created_at TEXT NOT NULL
        );
        CREATE TABLE cover (key TEXT PRIMARY KEY, n INTEGER NOT NULL)
    """),
    # The generation direction of a seed with a record (record -> text), as a JSON line; filled by
    # fill_seed_generation for the seeds stored before it.
    ("m002_seed_generation", "ALTER TABLE seeds ADD COLUMN generation TEXT"),
)


def use_wal(db: sqlite3.Connection) -> None:
    """WAL mode (kept in the file: set once). The switch needs the database alone and SQLite answers
    "locked" at once, without waiting, while another connection opens it: so try again until it takes."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_seeds(spec) -> list:
    from .spec import read_seeds as read

    return read(spec) if spec.seed_path else []


def store_seeds(db: sqlite3.Connection, spec, seeds: list) -> None:
    """Seeds into the database once, with their coverage and their training conversation."""
    for seed in seeds:
        training = seed_training(spec, seed)
        db.execute("INSERT INTO seeds (line, case_text, record, dimensions, training) VALUES (?, ?, ?, ?, ?)",
                   (seed.line, seed.text, None if seed.record is None else json.dumps(seed.record, ensure_ascii=False),
                    json.dumps(seed.dimensions, ensure_ascii=False),
                    None if training is None else json.dumps(training, ensure_ascii=False)))
        db.executemany("INSERT INTO cover (key, n) VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET n = n + 1",
                       [(dispatch.key_text(k),) for k in dispatch.keys(spec, seed.dimensions)])


def fill_seed_generation(db: sqlite3.Connection, spec) -> None:
    """Write the generation line of every seed with a record that has none yet (once per seed)."""
    from .targets import render_prompt

    rows = db.execute("SELECT id, case_text, record, dimensions FROM seeds "
                      "WHERE record IS NOT NULL AND generation IS NULL").fetchall()
    for row in rows:
        prompt = render_prompt(spec, json.loads(row["dimensions"]), json.loads(row["record"]))
        db.execute("UPDATE seeds SET generation = ? WHERE id = ?",
                   (json.dumps(exports.generation_line(prompt, row["case_text"]), ensure_ascii=False), row["id"]))


def seed_training(spec, seed) -> dict | None:
    """A seed as a training conversation: like a generated case when it has a record, else its own turns."""
    if seed.record is not None:
        return exports.training_line(spec.system_prompt, seed.text, seed.record)
    if getattr(seed.sample, "text", None) is None:
        return seed.sample.to_messages()
    return None  # a raw-text seed without a record has no answer to train on
