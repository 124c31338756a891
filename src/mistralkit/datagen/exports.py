"""Export files, rebuilt from the database: deterministic (ordered by id, only timestamps the database holds).

Aggregate files (``issued_instructions.jsonl``, ``generated_cases.jsonl``, the training files of both
directions, ``summary.json``, ``summary.md``) are rewritten whole, each through a temporary file in the same folder and
``os.replace``, so a reader sees the old file or the new one, never a part. Rewriting 5,000 cases
takes a while, so a submit does not do it: it tells one background ``Exporter`` thread, which
coalesces the changes that arrive while it writes (and waits ``min_interval_s`` between rewrites).
``State.flush()`` waits for it, ``State.close()`` flushes. Files per instruction and per submission
never change once written; they are written right after their commit, and any that a crash left out
are written on the next start. Several processes on one state folder take turns through a lock file,
each rewriting from a snapshot taken inside the lock, so the newest snapshot is written last.

Training files, in the ``messages`` shape ``mistralkit tune`` reads, in two directions:

* extraction, case text -> record: ``generated_cases_train_mistral.jsonl`` (the spec's system prompt,
  the case as user turn, the record as JSON answer; ``training_line``) and
  ``full_training_cases_mistral.jsonl`` (the seeds first);
* generation, record -> case text: ``generated_cases_generation_mistral.jsonl`` (the instruction's
  prompt, which holds the record as TOON and the dimensions' wording, as user turn, the case as
  answer; ``generation_line``) and ``full_generation_cases_mistral.jsonl`` (seeds with a record
  first, their prompt rendered from their labels and record as an instruction's would be).
"""

from __future__ import annotations

import fcntl
import json
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..files import write_text_atomic
from . import dispatch

log = logging.getLogger(__name__)

AGGREGATES = ("issued_instructions.jsonl", "generated_cases.jsonl", "generated_cases_train_mistral.jsonl",
              "full_training_cases_mistral.jsonl", "generated_cases_generation_mistral.jsonl",
              "full_generation_cases_mistral.jsonl", "summary.json", "summary.md")


def _line(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=False) + "\n"


def instruction_doc(row: sqlite3.Row) -> dict:
    """An instruction as exported (no lease data: it changes with time, the export must not)."""
    return {
        "instruction_id": row["id"],
        "dimensions": json.loads(row["dimensions"]),
        "target": json.loads(row["target"]),
        "target_toon": row["target_toon"],
        "prompt": row["prompt"],
        "created_at": row["created_at"],
    }


def submission_doc(row: sqlite3.Row) -> dict:
    return {"submission_id": f"s{row['id']:06d}", "instruction_id": row["instruction_id"], "agent_id": row["agent_id"],
            "status": row["status"], "reason": row["reason"], "detail": row["detail"], "case_id": row["case_id"],
            "case_text": row["case_text"], "created_at": row["created_at"]}


def write_item(folder: Path, kind: str, ident: str, doc: dict) -> None:
    """``instructions/<id>.json`` or ``submissions/<id>.json`` (ids come from the database, never a request)."""
    write_text_atomic(folder / kind / f"{ident}.json", json.dumps(doc, ensure_ascii=False, indent=2) + "\n")


def write_missing_items(db: sqlite3.Connection, folder: Path) -> int:
    """Item files a crash left out (between commit and write); returns how many were written."""
    written = 0
    for row in db.execute("SELECT * FROM instructions ORDER BY seq"):
        if not (folder / "instructions" / f"{row['id']}.json").exists():
            write_item(folder, "instructions", row["id"], instruction_doc(row))
            written += 1
    for row in db.execute("SELECT * FROM submissions ORDER BY id"):
        doc = submission_doc(row)
        if not (folder / "submissions" / f"{doc['submission_id']}.json").exists():
            write_item(folder, "submissions", doc["submission_id"], doc)
            written += 1
    return written


def training_line(system: str, case_text: str, record: dict) -> dict:
    """One conversation of the training export: system, the case as user turn, the record as JSON answer."""
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages += [{"role": "user", "content": case_text},
                 {"role": "assistant", "content": json.dumps(record, ensure_ascii=False)}]
    return {"messages": messages}


def generation_line(prompt: str, case_text: str) -> dict:
    """One conversation of the generation direction: the writer's prompt (the record in it) -> the case."""
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": case_text}]}


def render(db: sqlite3.Connection, spec, plan: dispatch.Quotas, goal: int) -> dict[str, str]:
    """Every aggregate file's text from one read snapshot of the database."""
    db.execute("BEGIN")  # one snapshot for all files (WAL: readers never wait)
    try:
        instructions = db.execute("SELECT * FROM instructions ORDER BY seq").fetchall()
        cases = db.execute("SELECT c.*, i.dimensions, i.target, i.prompt FROM cases c JOIN instructions i "
                           "ON i.id = c.instruction_id ORDER BY c.id").fetchall()
        seeds = db.execute("SELECT * FROM seeds ORDER BY id").fetchall()
        summary = _summary(db, spec, plan, goal, seeds, cases, len(instructions))
    finally:
        db.execute("COMMIT")
    issued = [_line({**instruction_doc(r), "status": "accepted" if r["status"] == "accepted" else "open",
                     "case_id": r["case_id"]}) for r in instructions]
    generated = [_line({"case_id": c["id"], "instruction_id": c["instruction_id"], "agent_id": c["agent_id"],
                        "dimensions": json.loads(c["dimensions"]), "record": json.loads(c["target"]),
                        "case_text": c["case_text"], "accepted_at": c["created_at"]}) for c in cases]
    train = [_line(training_line(spec.system_prompt, c["case_text"], json.loads(c["target"]))) for c in cases]
    seed_train = [s["training"] + "\n" for s in seeds if s["training"]]
    written = [_line(generation_line(c["prompt"], c["case_text"])) for c in cases]
    seed_written = [s["generation"] + "\n" for s in seeds if s["generation"]]
    return {"issued_instructions.jsonl": "".join(issued), "generated_cases.jsonl": "".join(generated),
            "generated_cases_train_mistral.jsonl": "".join(train),
            "full_training_cases_mistral.jsonl": "".join(seed_train + train),
            "generated_cases_generation_mistral.jsonl": "".join(written),
            "full_generation_cases_mistral.jsonl": "".join(seed_written + written),
            "summary.json": json.dumps(summary, ensure_ascii=False, indent=2) + "\n", "summary.md": summary_md(summary)}


def _summary(db, spec, plan, goal, seeds, cases, issued) -> dict:
    """Progress over seed + accepted cases (leases are left out: they change with the clock)."""
    counts = dispatch.Counts.of(spec, [json.loads(s["dimensions"]) for s in seeds])
    for case in cases:
        counts.add(spec, json.loads(case["dimensions"]))
    rejected = dict(db.execute("SELECT reason, count(*) FROM submissions WHERE status = 'rejected' "
                               "GROUP BY reason ORDER BY reason").fetchall())
    last = db.execute("SELECT max(t) FROM (SELECT max(created_at) AS t FROM submissions "
                      "UNION ALL SELECT max(created_at) FROM instructions)").fetchone()[0]
    balance = dispatch.balance(plan, counts)
    return {"name": spec.name, "spec_fingerprint": spec.fingerprint(), "target_total": spec.target_total,
            "goal": goal, "seeds": len(seeds), "seeds_in_training": sum(1 for s in seeds if s["training"]),
            "accepted": len(cases), "done": len(cases) >= goal, "issued": issued, "rejected": rejected,
            "agents": agent_counts(db), "balance": {k: v for k, v in balance.items() if k != "per_dimension"},
            "coverage": dispatch.coverage(plan, counts, spec.target_total),
            "pairs": {k: {"covered": v["covered"], "allowed": v["allowed"]}
                      for k, v in dispatch.pair_coverage(plan, counts).items()},
            "last_change_at": last}


def agent_counts(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Per agent: instructions leased to it (each lease once), cases accepted, submissions rejected."""
    table: dict[str, Counter] = {}
    queries = (("issued", "SELECT agent_id, count(*) FROM leases GROUP BY agent_id"),
               ("accepted", "SELECT agent_id, count(*) FROM cases GROUP BY agent_id"),
               ("rejected", "SELECT agent_id, count(*) FROM submissions WHERE status = 'rejected' GROUP BY agent_id"))
    for name, sql in queries:
        for agent, n in db.execute(sql):
            table.setdefault(agent, Counter({"issued": 0, "accepted": 0, "rejected": 0}))[name] = n
    return {agent: dict(table[agent]) for agent in sorted(table)}


def summary_md(summary: dict) -> str:
    """The summary for people: progress, balance, coverage per dimension, rejections, agents."""
    b = summary["balance"]
    ratio = "n/a (a value has no case yet)" if b["worst_ratio"] is None else f"{b['worst_ratio']:.3f}"
    out = [f"# datagen: {summary['name']}", "",
           f"{summary['accepted']} of {summary['goal']} cases accepted ({summary['seeds']} seeds, "
           f"target total {summary['target_total']}); {summary['issued']} instructions issued.", "",
           f"Balance: worst max/min count/quota ratio {ratio}, total-variation distance {b['tv_distance']:.4f}, "
           f"pairs covered {b['pairs_covered']}/{b['pairs_allowed']}.", ""]
    for dim, values in summary["coverage"].items():
        out += [f"## {dim}", "", "| value | count | quota |", "|---|---:|---:|"]
        out += [f"| {v} | {c['count']} | {c['quota']:g} |" for v, c in values.items()] + [""]
    out += ["## Rejected submissions", ""] + ([f"- {r}: {n}" for r, n in summary["rejected"].items()] or ["- none"])
    out += ["", "## Agents", "", "| agent | issued | accepted | rejected |", "|---|---:|---:|---:|"]
    out += [f"| {a} | {c['issued']} | {c['accepted']} | {c['rejected']} |" for a, c in summary["agents"].items()]
    return "\n".join(out) + "\n"


def write_aggregates(folder: Path, lock_path: Path, snapshot: Callable[[], dict[str, str]]) -> None:
    """Take the snapshot and write it, holding the lock file (another process may be writing too)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for name, text in snapshot().items():
                target = folder / name
                if not target.exists() or target.read_text(encoding="utf-8") != text:
                    write_text_atomic(target, text)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Exporter:
    """One background thread that runs ``write`` after changes, coalescing those that come while it works."""

    def __init__(self, write: Callable[[], None], min_interval_s: float = 0.5) -> None:
        self._write, self._interval = write, min_interval_s
        self._cond = threading.Condition()
        self._wanted = self._done = 0
        self._urgent = self._closed = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="datagen-exporter", daemon=True)
        self._thread.start()

    def changed(self) -> None:
        with self._cond:
            self._wanted += 1
            self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every change so far is written; False on timeout."""
        with self._cond:
            target, self._urgent = self._wanted, True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._done >= target or not self._thread.is_alive(), timeout_s)

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wanted > self._done or self._closed)
                if self._wanted == self._done:
                    return
                target, self._urgent = self._wanted, False
            try:
                self._write()
                self.error = None
            except Exception as exc:  # noqa: BLE001 - a failed export is retried on the next change; the DB has it all
                self.error = exc
                log.warning("datagen exports not written: %s", exc)
            with self._cond:
                self._done = target
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._urgent or self._closed, self._interval)
