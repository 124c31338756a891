"""Cases per minute of ``mistralkit datagen work --agents N``: one model, N agents decoded together.

For each agent count, a fresh ``mistralkit datagen serve`` of the example spec (``datagen init``) with
a goal larger than the run, then ``mistralkit datagen work --agents N --count C --max-tokens T --json``
on the same model and threads; cases per minute = instructions handled (accepted or given back after
--tries) / the worker's own elapsed time (its report: from its first lease to its last answer, model
load excluded). Medians over --reps. Every agent count runs in the same session, one after another.

    MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/datagen_agents.py --agents 1 4 --count 8
Writes bench/results/datagen_agents.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import httpx

from report import table  # bench/report.py; a script's own folder is on sys.path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mk(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mistralkit", *args], capture_output=True, text=True, **kwargs)


def one_run(agents: int, args: argparse.Namespace) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="datagen-agents-"))
    made = mk("datagen", "init", str(folder))
    if made.returncode:
        raise SystemExit(f"datagen init failed: {made.stderr}")
    spec = folder / "spec.yaml"
    spec.write_text(re.sub(r"(?m)^target_total:.*$", "target_total: 100000", spec.read_text()))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mistralkit", "datagen", "serve", str(spec), "--state",
                               str(folder / "state"), "--port", str(port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("datagen serve did not start")
            time.sleep(0.2)
        started = time.monotonic()
        done = mk("datagen", "work", "--server", url, "--model", args.model, "--agents", str(agents), "--count",
                  str(args.count), "--tries", "1", "--max-tokens", str(args.max_tokens), "--ctx", str(args.ctx),
                  "--threads", str(args.threads), "--json", timeout=3600)
        wall = time.monotonic() - started
        if done.returncode:
            raise SystemExit(f"datagen work --agents {agents} failed: {done.stderr[-2000:]}")
        report = json.loads(done.stdout)
    finally:
        server.terminate()
        server.wait(30)
    return {"agents": agents, "handled": report["handled"], "accepted": report["accepted"],
            "worker_elapsed_s": report["elapsed_s"], "command_wall_s": wall,
            "cases_per_min": 60 * report["handled"] / report["elapsed_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m", help="model name (default: the embedded Gemma 3 270M)")
    ap.add_argument("--agents", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--count", type=int, default=8, help="instructions each run handles")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "datagen_agents.json")
    args = ap.parse_args()
    runs: dict[int, list[dict]] = {n: [] for n in args.agents}
    for rep in range(args.reps):
        for agents in args.agents:  # interleaved, so a drift of the machine falls on every count alike
            run = one_run(agents, args)
            runs[agents].append(run)
            print(f"  rep {rep + 1}, --agents {agents}: {run['cases_per_min']:.1f} cases/min "
                  f"({run['handled']} in {run['worker_elapsed_s']:.1f} s)", file=sys.stderr)
    base = median(r["cases_per_min"] for r in runs[args.agents[0]])
    rows = []
    for agents in args.agents:
        cpm = median(r["cases_per_min"] for r in runs[agents])
        rows.append([str(agents), f"{cpm:.1f}", f"{cpm / base:.2f}",
                     f"{median(r['accepted'] for r in runs[agents]):.0f}/{args.count}"])
    print(f"\nmodel {args.model} | {args.threads} threads | {args.count} instructions a run | --max-tokens "
          f"{args.max_tokens} | medians of {args.reps}\n")
    print(table(["--agents", "cases/min", f"vs --agents {args.agents[0]}", "accepted"], rows))
    result = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}, "model": args.model,
              "threads": args.threads, "count": args.count, "max_tokens": args.max_tokens, "reps": args.reps,
              "runs": {str(k): v for k, v in runs.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
