"""The datagen state: SQLite (``DIR/datagen.sqlite3``, WAL) is the source of truth, exports follow it.

Every read-then-write runs in ``BEGIN IMMEDIATE`` (a deferred transaction that later wants to write
fails with "database is locked" whatever the busy timeout, once another connection wrote first), with
a 30 s busy timeout and one connection per thread, so the HTTP server's thread pool and other
processes on the same folder take turns. Coverage counters (seed + accepted + leased, per value and
per pair) live in the ``cover`` table and move in the same transaction as the lease that moves them.

>>> state = State(load_spec("legal/spec.yaml"), Path("legal/state"))      # doctest: +SKIP
>>> job = state.next_instruction("agent-1")                                 # doctest: +SKIP
>>> state.submit(job["instruction_id"], "agent-1", "Hello, my landlord ...")  # doctest: +SKIP
{'instruction_id': 'i000001', 'status': 'accepted', 'reason': None, 'detail': None, 'case_id': 1}
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import StorageError
from . import dispatch, exports, gates, targets
from .state_db import BUSY_TIMEOUT_S, MIGRATIONS, fill_seed_generation, iso, read_seeds, store_seeds, use_wal
from .errors import Conflict, DatagenError, LeaseExpired, NotFound, TooLarge, WrongAgent
from .judge import Judge

DB_NAME = "datagen.sqlite3"

def _guarded(method):
    """sqlite3 errors (a damaged file, a full disk, a lock held past the timeout) become StorageError."""

    @functools.wraps(method)
    def guarded(self: State, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise StorageError(f"datagen state {self.db_path}: {exc}",
                               hint="check the disk and that no other program holds the database") from exc

    return guarded

ANONYMOUS = "anonymous"  # the agent of a request that names none (GET /next-instruction, as READMEs show it)


class State:
    """Instructions, leases, submissions and accepted cases of one spec, in one folder."""

    def __init__(self, spec, directory: Path, *, clock=time.time, export_interval_s: float = 0.5) -> None:
        self.spec, self.directory, self.clock = spec, Path(directory), clock
        self.directory.mkdir(parents=True, exist_ok=True)
        self.db_path = self.directory / DB_NAME
        self.exports_dir = self.directory / "exports"
        self.plan = dispatch.Quotas.of(spec)
        self.lease_s = float(spec.lease_minutes) * 60
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._index = gates.NearDuplicates()
        self._indexed = 0  # highest case id in the near-duplicate index
        self._closed = False
        self.judge = Judge(spec.judge) if spec.judge is not None else None  # loads its model: slow, once
        try:
            self._open()
        except BaseException:
            if self.judge is not None:
                self.judge.close()
            raise
        self._exporter = exports.Exporter(self._write_aggregates, export_interval_s)

    # --- connections and transactions --------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            use_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a killed process loses nothing committed
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @contextmanager
    def _write(self):
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @_guarded
    def _open(self) -> None:
        db = self._db()
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        for name, sql in MIGRATIONS:
            with self._write() as db:
                if not db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                    for statement in filter(str.strip, sql.split(";")):
                        db.execute(statement)
                    db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, iso(self.clock())))
        self._adopt_spec()
        with self._write() as db:
            fill_seed_generation(db, self.spec)
        self.seeds = db.execute("SELECT count(*) FROM seeds").fetchone()[0]
        self.goal = max(0, self.spec.target_total - self.seeds)
        with self._write() as db:
            self._expire(db, self.clock())
        for row in db.execute("SELECT line, case_text FROM seeds"):
            self._index.add(f"seed line {row['line']}", row["case_text"])
        self._sync_index(db)
        exports.write_missing_items(db, self.exports_dir)
        self._write_aggregates()

    def _adopt_spec(self) -> None:
        """First open: record the spec's fingerprint and load its seeds; later opens: refuse another spec."""
        meta = dict(self._db().execute("SELECT key, value FROM meta").fetchall())
        seeds = None if meta else read_seeds(self.spec)
        with self._write() as db:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                store_seeds(db, self.spec, seeds or [])
                db.executemany("INSERT INTO meta VALUES (?, ?)", [("fingerprint", self.spec.fingerprint()),
                                                                 ("spec_path", str(self.spec.path))])
        if meta and meta["fingerprint"] != self.spec.fingerprint():
            raise DatagenError(
                f"{self.db_path} holds the state of another spec: {meta['spec_path']} (fingerprint "
                f"{meta['fingerprint'][:12]}) made it, not {self.spec.path} ({self.spec.fingerprint()[:12]})",
                hint="give this spec its own state folder (--state DIR), or serve the spec that made it")

    def close(self) -> None:
        """Write the exports that are still pending, then close every connection."""
        if self._closed:
            return
        self._closed = True
        self._exporter.close()
        if self.judge is not None:
            self.judge.close()
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until the aggregate exports show every change made so far."""
        if not self._exporter.flush(timeout_s):
            raise StorageError(f"datagen exports in {self.exports_dir} are still being written")

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- coverage and leases -----------------------------------------------------------------
    def _bump(self, db: sqlite3.Connection, dimensions: dict[str, str], delta: int) -> None:
        db.executemany("INSERT INTO cover (key, n) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET n = n + excluded.n",
                       [(dispatch.key_text(k), delta) for k in dispatch.keys(self.spec, dimensions)])

    def _counts(self, db: sqlite3.Connection) -> dispatch.Counts:
        counts = dispatch.Counts()
        for key, n in db.execute("SELECT key, n FROM cover WHERE n != 0"):
            counts.cells[dispatch.key_of(key)] = n
        return counts

    def _expire(self, db: sqlite3.Connection, now: float) -> None:
        """Leases past their time go back to the pool (same instruction id, no longer counted)."""
        rows = db.execute("SELECT id, dimensions FROM instructions WHERE status = 'leased' AND lease_expires <= ?",
                          (now,)).fetchall()
        for row in rows:
            db.execute("UPDATE instructions SET status = 'pooled', agent_id = NULL, lease_expires = NULL WHERE id = ?",
                       (row["id"],))
            db.execute("UPDATE leases SET ended = 'expired' WHERE instruction_id = ? AND ended IS NULL", (row["id"],))
            self._bump(db, json.loads(row["dimensions"]), -1)

    def _lease(self, db: sqlite3.Connection, ident: str, agent_id: str, now: float, dimensions: dict) -> None:
        db.execute("UPDATE instructions SET status = 'leased', agent_id = ?, lease_expires = ? WHERE id = ?",
                   (agent_id, now + self.lease_s, ident))
        db.execute("INSERT INTO leases (instruction_id, agent_id, leased_at, expires) VALUES (?, ?, ?, ?)",
                   (ident, agent_id, iso(now), now + self.lease_s))
        self._bump(db, dimensions, +1)

    # --- the agents' calls -------------------------------------------------------------------
    @_guarded
    def next_instruction(self, agent_id: str) -> dict:
        """The agent's live instruction, else an expired one again, else a new one; ``{"done": True}`` at the goal."""
        created = None
        with self._write() as db:
            now = self.clock()
            self._expire(db, now)
            if db.execute("SELECT count(*) FROM cases").fetchone()[0] >= self.goal:
                return {"done": True}
            row = db.execute("SELECT * FROM instructions WHERE status = 'leased' AND agent_id = ?",
                             (agent_id,)).fetchone()
            if row is None:
                row = db.execute("SELECT * FROM instructions WHERE status = 'pooled' ORDER BY seq LIMIT 1").fetchone()
                if row is None:
                    row = created = self._create(db, now)
                self._lease(db, row["id"], agent_id, now, json.loads(row["dimensions"]))
                row = db.execute("SELECT * FROM instructions WHERE id = ?", (row["id"],)).fetchone()
        if created is not None:
            exports.write_item(self.exports_dir, "instructions", row["id"], exports.instruction_doc(row))
        self._exporter.changed()
        return self._instruction(row, now)

    def _create(self, db: sqlite3.Connection, now: float) -> sqlite3.Row:
        """A new instruction: dimensions by the dispatcher, a target from the schema, both seeded by its number."""
        seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM instructions").fetchone()[0]
        rng = random.Random(f"{self.spec.random_seed}/{seq}")  # a restart continues the same sequence
        dimensions = dispatch.choose(self.plan, self._counts(db), rng)
        target = targets.sample_target(self.spec, dimensions, rng)
        ident = self.spec.instruction_id(seq)
        db.execute("INSERT INTO instructions (seq, id, dimensions, target, target_toon, prompt, created_at, status) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, 'pooled')",
                   (seq, ident, json.dumps(dimensions, ensure_ascii=False), json.dumps(target, ensure_ascii=False),
                    targets.to_toon(target), targets.render_prompt(self.spec, dimensions, target), iso(now)))
        return db.execute("SELECT * FROM instructions WHERE id = ?", (ident,)).fetchone()

    def _instruction(self, row: sqlite3.Row, now: float) -> dict:
        return {
            "instruction_id": row["id"],
            "agent_id": row["agent_id"],
            "dimensions": json.loads(row["dimensions"]),
            "target": json.loads(row["target"]),
            "target_toon": row["target_toon"],
            "prompt": row["prompt"],
            "lease_expires_at": iso(row["lease_expires"]),
            "lease_seconds": max(0, int(row["lease_expires"] - now)),
        }

    @_guarded
    def submit(self, instruction_id: str, agent_id: str, case_text: str,
               cancel: threading.Event | None = None) -> dict:
        """Judge a case by the gates and store the outcome; the same submission again gets the stored result.
        ``cancel`` (the client left) stops the judge's verdict: nothing is stored."""
        self._check_size(case_text)
        sha = hashlib.sha256(case_text.encode("utf-8")).hexdigest()
        sub = self._decide(instruction_id, agent_id, case_text, sha)
        if sub is None:  # the cheap gates passed: the judge model decides, outside any transaction
            prompt = self._db().execute("SELECT prompt FROM instructions WHERE id = ?", (instruction_id,)).fetchone()
            verdict = self.judge.verdict(prompt[0], case_text, cancel)
            sub = self._decide(instruction_id, agent_id, case_text, sha, verdict)
        if isinstance(sub, dict):
            return sub
        exports.write_item(self.exports_dir, "submissions", f"s{sub['id']:06d}", exports.submission_doc(sub))
        self._exporter.changed()
        return _result(sub)

    def _decide(self, ident: str, agent_id: str, case_text: str, sha: str, verdict=None) -> sqlite3.Row | dict | None:
        """Store the outcome of the gates and of the judge's ``verdict``: the new submission row, the stored
        result of a repeat, or None when the gates passed and the judge has not been asked yet. With a
        verdict the gates run again on what the database holds now (a near-duplicate accepted meanwhile)."""
        with self._write() as db:
            row = self._held(db, ident, agent_id, sha)
            if isinstance(row, dict):
                return row
            refusal, note = self._gates(db, row, case_text), None
            if refusal is None and self.judge is not None:
                if verdict is None:
                    return None
                note = self.judge.detail(verdict)
                if not self.judge.passes(verdict):
                    refusal, note = gates.Refusal("judge", note), None
            return self._record(db, row, agent_id, case_text, sha, refusal, self.clock(), note)

    def _gates(self, db: sqlite3.Connection, row: sqlite3.Row, case_text: str) -> gates.Refusal | None:
        self._sync_index(db)
        return gates.check(self.spec, case_text, targets.target_numbers(json.loads(row["target"])), self._index,
                           targets.instructions_of(self.spec))

    def _check_size(self, case_text: str) -> None:
        if not isinstance(case_text, str) or not case_text.strip():
            raise DatagenError("case_text is empty", hint="send the written case in case_text")
        if len(case_text) > self.spec.max_chars:
            raise TooLarge(f"case_text has {len(case_text)} characters; this spec allows at most {self.spec.max_chars}",
                           hint="shorten the case")

    def _held(self, db: sqlite3.Connection, ident: str, agent_id: str, sha: str) -> sqlite3.Row | dict:
        """The instruction row when ``agent_id`` holds its live lease; the stored result of a repeat; else raises."""
        row = db.execute("SELECT * FROM instructions WHERE id = ?", (ident,)).fetchone()
        if row is None:
            raise NotFound(f"no instruction {ident!r}", hint="ask /next-instruction for one")
        stored = db.execute("SELECT * FROM submissions WHERE instruction_id = ? AND agent_id = ? AND text_sha = ?",
                            (ident, agent_id, sha)).fetchone()
        if stored is not None:
            return _result(stored)
        if row["status"] == "leased" and row["agent_id"] == ANONYMOUS and agent_id != ANONYMOUS:
            # Asked for without an agent id: the first agent that answers it takes the lease over.
            db.execute("UPDATE instructions SET agent_id = ? WHERE id = ?", (agent_id, ident))
            db.execute("UPDATE leases SET agent_id = ? WHERE instruction_id = ? AND ended IS NULL", (agent_id, ident))
        if not db.execute("SELECT 1 FROM leases WHERE instruction_id = ? AND agent_id = ? LIMIT 1",
                          (ident, agent_id)).fetchone():
            raise WrongAgent(f"instruction {ident} is not leased to {agent_id!r}",
                             hint="submit with the agent_id that asked for it")
        if row["status"] == "accepted":
            raise Conflict(f"instruction {ident} is already answered (case {row['case_id']}) with another text",
                           hint="ask /next-instruction for a new one")
        self._expire(db, self.clock())
        row = db.execute("SELECT * FROM instructions WHERE id = ?", (ident,)).fetchone()
        if row["status"] != "leased" or row["agent_id"] != agent_id:
            raise LeaseExpired(f"the lease of {agent_id!r} on instruction {ident} expired",
                               hint="ask /next-instruction again: you get it back if it is still free")
        return row

    def _record(self, db, row, agent_id, case_text, sha, refusal, now, note=None) -> sqlite3.Row:
        """Store a submission (``note``: the judge's verdict on an accepted one) and, when accepted, its case."""
        stamp = iso(now)
        status = "rejected" if refusal else "accepted"
        cur = db.execute(
            "INSERT INTO submissions (instruction_id, agent_id, text_sha, case_text, status, reason, detail, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row["id"],
                agent_id,
                sha,
                case_text,
                status,
                refusal and refusal.reason,
                refusal.detail if refusal else note,
                stamp,
            ),
        )
        sub_id = cur.lastrowid
        if refusal is None:
            case_id = db.execute("INSERT INTO cases (instruction_id, agent_id, submission_id, case_text, created_at) "
                                 "VALUES (?, ?, ?, ?, ?)", (row["id"], agent_id, sub_id, case_text, stamp)).lastrowid
            db.execute("UPDATE submissions SET case_id = ? WHERE id = ?", (case_id, sub_id))
            db.execute("UPDATE instructions SET status = 'accepted', case_id = ?, lease_expires = NULL WHERE id = ?",
                       (case_id, row["id"]))
            db.execute("UPDATE leases SET ended = 'accepted' WHERE instruction_id = ? AND ended IS NULL", (row["id"],))
        return db.execute("SELECT * FROM submissions WHERE id = ?", (sub_id,)).fetchone()

    def _sync_index(self, db: sqlite3.Connection) -> None:
        """Add the cases accepted since the last look (by any process) to the near-duplicate index."""
        for row in db.execute("SELECT id, case_text FROM cases WHERE id > ? ORDER BY id", (self._indexed,)):
            self._index.add(f"case {row['id']}", row["case_text"])
            self._indexed = row["id"]

    @_guarded
    def release(self, instruction_id: str, agent_id: str) -> dict:
        """The agent gives its lease back: the instruction goes to the next agent (same id)."""
        with self._write() as db:
            self._expire(db, self.clock())
            row = db.execute("SELECT * FROM instructions WHERE id = ?", (instruction_id,)).fetchone()
            if row is None:
                raise NotFound(f"no instruction {instruction_id!r}", hint="ask /next-instruction for one")
            if row["status"] != "leased" or row["agent_id"] != agent_id:
                if not db.execute("SELECT 1 FROM leases WHERE instruction_id = ? AND agent_id = ? LIMIT 1",
                                  (instruction_id, agent_id)).fetchone():
                    raise WrongAgent(f"instruction {instruction_id} is not leased to {agent_id!r}")
                return {"instruction_id": instruction_id, "released": False, "status": row["status"]}
            db.execute("UPDATE instructions SET status = 'pooled', agent_id = NULL, lease_expires = NULL WHERE id = ?",
                       (instruction_id,))
            db.execute(
                "UPDATE leases SET ended = 'released' WHERE instruction_id = ? AND ended IS NULL", (instruction_id,)
            )
            self._bump(db, json.loads(row["dimensions"]), -1)
        self._exporter.changed()
        return {"instruction_id": instruction_id, "released": True, "status": "pooled"}

    @_guarded
    def stats(self) -> dict:
        """Progress, outcomes, per-agent counts, coverage (seed + accepted + leased) and the balance figures."""
        with self._write() as db:  # a write: stale leases are expired first, so "leased" means live
            self._expire(db, self.clock())
            counts = self._counts(db)
            by_status = dict(db.execute("SELECT status, count(*) FROM instructions GROUP BY status").fetchall())
            rejected = dict(db.execute("SELECT reason, count(*) FROM submissions WHERE status = 'rejected' "
                                       "GROUP BY reason ORDER BY reason").fetchall())
            agents = exports.agent_counts(db)
        accepted = by_status.get("accepted", 0)
        return {"name": self.spec.name, "goal": self.goal, "target_total": self.spec.target_total, "seeds": self.seeds,
                "accepted": accepted, "done": accepted >= self.goal, "leased": by_status.get("leased", 0),
                "pooled": by_status.get("pooled", 0), "issued": sum(by_status.values()),
                "rejected": rejected, "agents": agents,
                "coverage": dispatch.coverage(self.plan, counts, self.spec.target_total),
                "pairs": dispatch.pair_coverage(self.plan, counts), "balance": dispatch.balance(self.plan, counts)}

    # --- exports -----------------------------------------------------------------------------
    def _write_aggregates(self) -> None:
        exports.write_aggregates(self.exports_dir, self.directory / ".exports.lock",
                                 lambda: exports.render(self._db(), self.spec, self.plan, self.goal))


def _result(sub: sqlite3.Row) -> dict:
    return {"instruction_id": sub["instruction_id"], "status": sub["status"], "reason": sub["reason"],
            "detail": sub["detail"], "case_id": sub["case_id"]}
