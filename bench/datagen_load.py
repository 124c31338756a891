"""Load and balance of the datagen instruction server.

1. Load: a real `mistralkit datagen serve` process on 127.0.0.1, with 1, 4, 16 and 64 concurrent agents
   (threads with their own HTTP connection), each looping next-instruction → submit-case for a bounded
   number of rounds. Prints requests/s and p50/p95 latency of both routes, and counts what must be 0:
   instructions handed to two agents, accepted submissions missing from the export, "database is locked".
2. Balance: fills a 5,000-case goal through the library with a simulated agent and measures, from the
   accepted cases' own dimensions (not the server's figures): worst max/min of count/quota per
   dimension, total-variation distance to the target weights, share of allowed pairs covered; the same
   figures for random choice by the weights (disallowed combinations drawn again), as the reference.

    .venv/bin/python bench/datagen_load.py                  # full run (~2-4 min on 2 cores)
    .venv/bin/python bench/datagen_load.py --rounds 20 --total 1000 --agents 1,4
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_datagen_server import Server, case_for  # noqa: E402  (one definition of a real server and a valid case)

from mistralkit.datagen.spec import init_example, load_spec, read_seeds  # noqa: E402
from mistralkit.datagen.state import State  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def spec_with_total(folder: Path, total: int) -> Path:
    spec = init_example(folder)
    spec.write_text(re.sub(r"(?m)^target_total:.*$", f"target_total: {total}", spec.read_text()))
    return spec


def load_level(agents: int, rounds: int, home: Path) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"dg-load-{agents}-"))
    spec = spec_with_total(folder, 100_000)
    state = folder / "state"
    server = Server(spec, state, home).start()
    times: dict[str, list[float]] = {"next": [], "submit": []}
    holders: dict[str, set[str]] = {}
    accepted: list[str] = []
    locked = errors = 0
    lock = threading.Lock()

    def agent(name: str) -> None:
        nonlocal locked, errors
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for _ in range(rounds):
                t0 = time.perf_counter()
                got = client.post("/next-instruction", json={"agent_id": name})
                t1 = time.perf_counter()
                body = got.json()
                if got.status_code != 200:
                    with lock:
                        errors += 1
                        locked += "locked" in got.text
                    continue
                sent = client.post("/submit-case", json={"instruction_id": body["instruction_id"], "agent_id": name,
                                                         "case_text": case_for(body, 0)})
                t2 = time.perf_counter()
                with lock:
                    times["next"].append(t1 - t0)
                    times["submit"].append(t2 - t1)
                    holders.setdefault(body["instruction_id"], set()).add(name)
                    if sent.status_code != 200:
                        errors += 1
                        locked += "locked" in sent.text
                    elif sent.json()["status"] == "accepted":
                        accepted.append(body["instruction_id"])

    threads = [threading.Thread(target=agent, args=(f"a{i}",)) for i in range(agents)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    time.sleep(1.0)  # let the exporter write the last change
    server.stop()
    exported = {json.loads(line)["instruction_id"]
                for line in (state / "exports" / "generated_cases.jsonl").read_text().splitlines() if line}
    requests = len(times["next"]) + len(times["submit"])
    return {"agents": agents, "requests": requests, "requests_per_s": round(requests / wall, 1),
            "next_p50_ms": round(1000 * statistics.median(times["next"]), 1),
            "next_p95_ms": round(1000 * pct(times["next"], 0.95), 1),
            "submit_p50_ms": round(1000 * statistics.median(times["submit"]), 1),
            "submit_p95_ms": round(1000 * pct(times["submit"], 0.95), 1),
            "issued_twice": sum(1 for names in holders.values() if len(names) > 1),
            "lost": len(set(accepted) - exported), "database_locked": locked, "errors": errors}


def figures(spec, assignments: list[dict[str, str]]) -> dict:
    """Balance of a set of assignments, measured from the assignments themselves."""
    worst, tv = 1.0, 0.0
    for dim in spec.dimensions:
        counts = Counter(a[dim.name] for a in assignments if dim.name in a)
        weights = dim.weights()
        total = sum(counts.values())
        ratios = [counts[v] / (weights[v] * total) for v in weights if weights[v] > 0]
        worst = max(worst, max(ratios) / min(ratios) if min(ratios) > 0 else float("inf"))
        tv = max(tv, 0.5 * sum(abs(counts[v] / total - weights[v]) for v in weights))
    allowed = seen = 0
    for a, b in itertools.combinations(spec.dimensions, 2):
        pairs = {(x.name, y.name) for x in a.values for y in b.values if spec.allowed({a.name: x.name, b.name: y.name})}
        got = {(s[a.name], s[b.name]) for s in assignments if a.name in s and b.name in s}
        allowed += len(pairs)
        seen += len(pairs & got)
    return {"worst_ratio": round(worst, 3), "tv_distance": round(tv, 4), "pairs_covered": round(seen / allowed, 4)}


def weighted_random(spec, n: int, seed: int = 0) -> list[dict[str, str]]:
    """The reference: each dimension drawn by its weights, disallowed combinations drawn again."""
    rng, out = random.Random(seed), []
    while len(out) < n:
        pick = {d.name: rng.choices([v.name for v in d.values], [v.weight for v in d.values])[0]
                for d in spec.dimensions}
        if spec.allowed(pick):
            out.append(pick)
    return out


def balance(total: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="dg-balance-"))
    spec = load_spec(spec_with_total(folder, total))
    state = State(spec, folder / "state")
    started = time.perf_counter()
    filled: list[dict[str, str]] = []
    while True:
        got = state.next_instruction("sim")
        if got.get("done"):
            break
        result = state.submit(got["instruction_id"], "sim", case_for(got, 0))
        if result["status"] == "accepted":
            filled.append(got["dimensions"])
    fill_s = time.perf_counter() - started
    state.close()
    labelled = [s.dimensions for s in read_seeds(spec) if len(s.dimensions) == len(spec.dimensions)]
    everything = labelled + filled
    return {"total": total, "accepted": len(filled), "fill_s": round(fill_s, 1),
            "greedy": figures(spec, everything), "random": figures(spec, weighted_random(spec, len(everything)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1,4,16,64", help="concurrency levels, comma-separated")
    parser.add_argument(
        "--rounds", type=int, default=0, help="next+submit rounds per agent (default: 400 requests per level)"
    )
    parser.add_argument("--total", type=int, default=5000, help="target total of the balance fill")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "datagen_load.json")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dg-home-"))
    levels = []
    for agents in [int(a) for a in args.agents.split(",")]:
        rounds = args.rounds or max(3, 200 // agents)
        levels.append(load_level(agents, rounds, home))
        print(json.dumps(levels[-1]), file=sys.stderr)
    fill = balance(args.total)
    print("\nload (loopback; real server process)")
    print(f"{'agents':>6} {'req':>6} {'req/s':>7} {'next p50':>9} {'p95':>7} {'submit p50':>11} {'p95':>7} "
          f"{'twice':>6} {'lost':>5} {'locked':>7} {'errors':>7}")
    for r in levels:
        print(
            f"{r['agents']:>6} {r['requests']:>6} {r['requests_per_s']:>7} "
            f"{r['next_p50_ms']:>8}ms {r['next_p95_ms']:>5}ms "
            f"{r['submit_p50_ms']:>10}ms {r['submit_p95_ms']:>5}ms {r['issued_twice']:>6} {r['lost']:>5} "
            f"{r['database_locked']:>7} {r['errors']:>7}"
        )
    print(f"\nbalance after filling {fill['total']} (seed + {fill['accepted']} accepted, {fill['fill_s']} s)")
    print(f"{'choice':<16} {'worst max/min':>14} {'TV distance':>12} {'pairs covered':>14}")
    for name in ("greedy", "random"):
        f = fill[name]
        print(f"{name:<16} {f['worst_ratio']:>14} {f['tv_distance']:>12} {100 * f['pairs_covered']:>13.1f}%")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load": levels, "balance": fill}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
