"""Serve throughput: ``mistralkit serve --parallel P`` against llama.cpp's ``llama-server -np P``.

Starts ``python -m mistralkit serve`` (a subprocess, --threads, --ctx, --parallel) on the embedded
model (or --model), and llama.cpp's own server on the same GGUF and threads (``-m GGUF -t N -tb N
-c CTX*P -np P``: every slot gets a CTX-token window, as mistralkit's do). For each workload and
each concurrency level, that many clients each send one ``/v1/completions`` request at the same
moment. Two workloads (issue 15 found llama-server behaves very differently under them):

- ``counting``: streamed, greedy, repeat_penalty 1, ``ignore_eos``, a 40-number counting prompt per
  client (each starts at its own number, so no request reuses another's prompt cache);
- ``short``: not streamed, a short prompt (8-14 tokens), temperature 0.8, top-k 40, top-p 0.95,
  min-p 0.05, repeat penalty 1.1, a seed per client, ``ignore_eos``.

Per level and rep: aggregate tokens/s = all completion tokens (from ``usage``) / wall time from the
first request sent to the last one finished; TTFT (first text event; streamed workload only) and
latency per request, p50 and p95 over all requests of all reps; the server process's CPU time per
completion token, and for mistralkit its main thread's (the event loop: HTTP, SSE, JSON; llama.cpp
decodes on other threads). Medians over --reps (one untimed warm-up request first). The two servers run
one after the other, never at once.

llama-server: ``--llama-server PATH``, or the binary ``bench/build_llama_server.sh`` built and
cached (found automatically); without one, the reference column is mistralkit with one client.

Run:   bash bench/build_llama_server.sh   # once, ~11 min on 2 cores
       MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/serve_throughput.py --threads 2
Writes bench/results/serve_throughput.json (per-request numbers, medians, machine, versions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from statistics import median

import httpx

from report import table  # bench/report.py; a script's own folder is on sys.path
from mistralkit import __version__
from mistralkit.engines.llama_native import default_threads
from mistralkit.models import resolve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running(command: list[str], port: int, what: str, timeout: float = 120):
    """Start a server, wait until its /health answers 200, yield its base URL and pid, stop it."""
    log = tempfile.NamedTemporaryFile("w+", prefix="serve-throughput-", suffix=".log", delete=False)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{what} exited early; its log: {log.name}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not answer /health in {timeout:.0f} s; its log: {log.name}")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def counting_prompt(start: int, lines: int) -> str:
    return "Count upward, one number per line:\n" + "".join(f"{i}\n" for i in range(start, start + lines))


SHORT_PROMPTS = [
    "Once upon a time, in a village by the sea,", "The three most important inventions of the last century are",
    "Here is a recipe for a simple tomato soup:", "Dear diary, today I finally decided to",
    "The history of the bicycle begins in", "A good way to learn a new language is",
    "In the year 2150, the city of Paris", "The rules of chess are simple:",
]


def request_body(workload: str, model: str, i: int, offset: int, args: argparse.Namespace) -> dict:
    """Client ``i``'s request in ``workload`` (``offset`` keeps prompts new from rep to rep)."""
    if workload == "counting":
        return {"model": model, "prompt": counting_prompt(offset + 1000 * i, args.prompt_lines),
                "max_tokens": args.new_tokens, "temperature": 0, "repeat_penalty": 1.0, "ignore_eos": True,
                "stream": True, "stream_options": {"include_usage": True}}
    return {"model": model, "prompt": SHORT_PROMPTS[i % len(SHORT_PROMPTS)], "max_tokens": args.new_tokens,
            "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1,
            "seed": offset + i, "ignore_eos": True, "stream": False}


def one_request(url: str, body: dict, go: threading.Barrier) -> dict:
    with httpx.Client(timeout=600) as client:
        go.wait()
        sent, first, usage, events = time.perf_counter(), None, None, 0
        if not body["stream"]:
            response = client.post(f"{url}/v1/completions", json=body)
            response.raise_for_status()
            end = time.perf_counter()
            return {"sent": sent, "end": end, "ttft_s": None, "latency_s": end - sent,
                    "completion_tokens": response.json()["usage"]["completion_tokens"]}
        with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line.removeprefix("data: "))
                usage = event.get("usage") or usage
                if event.get("choices") and event["choices"][0].get("text"):
                    first = first or time.perf_counter()
                    events += 1
        end = time.perf_counter()
    # llama-server sends one event per token; its usage is the authority when it sends one
    tokens = usage["completion_tokens"] if usage else events
    return {"sent": sent, "end": end, "ttft_s": (first or end) - sent, "latency_s": end - sent,
            "completion_tokens": tokens}


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system, seconds) of process ``pid`` and of its main thread (mistralkit's
    event loop: the HTTP side; llama.cpp decodes on other threads)."""
    tick = os.sysconf("SC_CLK_TCK")

    def read(path: str) -> float:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15 of stat)

    return read(f"/proc/{pid}/stat"), read(f"/proc/{pid}/task/{pid}/stat")


def load_level(url: str, model: str, workload: str, clients: int, args: argparse.Namespace, offset: int,
               pid: int) -> dict:
    """``clients`` requests at once; aggregate tokens/s over the wall time they took together, and the
    server's CPU time over the level."""
    cpu_before = cpu_seconds(pid)
    go = threading.Barrier(clients)
    results: list[dict] = [{}] * clients

    def client(i: int) -> None:
        results[i] = one_request(url, request_body(workload, model, i, offset, args), go)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu_after = cpu_seconds(pid)
    wall = max(r["end"] for r in results) - min(r["sent"] for r in results)
    tokens = sum(r["completion_tokens"] for r in results)
    return {"clients": clients, "wall_s": wall, "completion_tokens": tokens, "tps": tokens / wall,
            "cpu_s": cpu_after[0] - cpu_before[0], "main_thread_cpu_s": cpu_after[1] - cpu_before[1],
            "requests": [{k: r[k] for k in ("ttft_s", "latency_s", "completion_tokens")} for r in results]}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def measure(url: str, pid: int, model: str, args: argparse.Namespace) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for workload in args.workloads:
        load_level(url, model, workload, 1, args, offset=7, pid=pid)  # warm-up, untimed
        out[workload] = {}
        for clients in args.clients:
            reps = [load_level(url, model, workload, clients, args, offset=100_000 * (rep + 1) + 10 * clients,
                               pid=pid) for rep in range(args.reps)]
            requests = [r for rep in reps for r in rep["requests"]]
            ttfts = [r["ttft_s"] for r in requests if r["ttft_s"] is not None]
            latencies = [r["latency_s"] for r in requests]
            out[workload][clients] = {
                "reps": reps, "tps": median(r["tps"] for r in reps), "tps_runs": [r["tps"] for r in reps],
                "ttft_p50_s": median(ttfts) if ttfts else None, "ttft_p95_s": percentile(ttfts, 95) if ttfts else None,
                "latency_p50_s": median(latencies), "latency_p95_s": percentile(latencies, 95),
                "completion_tokens_p50": median(r["completion_tokens"] for r in requests),
                "cpu_ms_per_token": median(1e3 * r["cpu_s"] / r["completion_tokens"] for r in reps),
                "main_thread_cpu_ms_per_token": median(1e3 * r["main_thread_cpu_s"] / r["completion_tokens"]
                                                       for r in reps)}
            print(f"  {workload}, {clients} client(s): {out[workload][clients]['tps']:.1f} tok/s", file=sys.stderr)
    return out


def find_llama_server(given: Path | None) -> Path | None:
    """``--llama-server``, else the binary ``bench/build_llama_server.sh`` cached for this llama-cpp-python."""
    if given is not None:
        return given
    import llama_cpp

    cached = Path.home() / ".cache" / "mistralkit" / f"llama.cpp-{llama_cpp.__version__}" / "bin" / "llama-server"
    return cached if cached.exists() else None


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/serve_throughput.py"
               " --threads 2 --reps 3 --llama-server ~/llama.cpp/build/bin/llama-server")
    ap.add_argument(
        "--model",
        default="gemma-3-270m",
        help="model name or path (default: the embedded Gemma 3 270M, as the figures in the README)",
    )
    ap.add_argument("--threads", type=int, default=default_threads(),
                    help="CPU threads for both servers (default: all cores)")
    ap.add_argument("--ctx", type=int, default=4096, help="context tokens per client")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8], help="concurrency levels")
    ap.add_argument("--parallel", type=int, default=4, help="slots of both servers (serve --parallel, -np)")
    ap.add_argument("--workloads", nargs="+", default=["counting", "short"], choices=["counting", "short"])
    ap.add_argument("--new-tokens", type=int, default=128, help="max_tokens of every request")
    ap.add_argument("--prompt-lines", type=int, default=40, help="numbers in each counting prompt")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per level (default 3)")
    ap.add_argument("--llama-server", type=Path, metavar="PATH",
                    help="llama.cpp's llama-server (default: bench/build_llama_server.sh's cached build, if any)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve_throughput.json")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    model = resolve(args.model)
    port = free_port()
    mk_command = [
        sys.executable,
        "-m",
        "mistralkit",
        "serve",
        "--port",
        str(port),
        "--model",
        str(model.path) if Path(args.model).exists() else model.name,
        "--threads",
        str(args.threads),
        "--ctx",
        str(args.ctx),
        "--queue-size",
        str(max(args.clients) + 1),
        "--parallel",
        str(args.parallel),
        "--log-level",
        "warning",
    ]
    print(f"mistralkit serve ({model.name}, {args.threads} threads, --parallel {args.parallel})", file=sys.stderr)
    with running(mk_command, port, "mistralkit serve") as (url, pid):
        mk = measure(url, pid, Path(args.model).stem if Path(args.model).exists() else model.name, args)

    ref, ref_name, ref_version = None, "mistralkit, 1 client", __version__
    args.llama_server = find_llama_server(args.llama_server)
    if args.llama_server:
        slots, port = args.parallel, free_port()
        command = [str(args.llama_server), "-m", str(model.path), "-t", str(args.threads), "-tb", str(args.threads),
                   "-c", str(args.ctx * slots), "-np", str(slots), "-fa", "on",  # as mistralkit runs several slots
                   "--port", str(port), "--host", "127.0.0.1"]
        probe = subprocess.run([str(args.llama_server), "--version"], capture_output=True, text=True, timeout=30)
        ref_version = (probe.stdout + probe.stderr).strip()
        print(f"llama-server ({args.llama_server})", file=sys.stderr)
        with running(command, port, "llama-server") as (url, pid):
            ref = measure(url, pid, model.name, args)
        ref_name = "llama-server"

    def reference(workload: str, clients: int) -> dict:
        return ref[workload][clients] if ref else mk[workload][min(args.clients)]

    print(f"\nmodel {model.path.name} | threads {args.threads} | {args.new_tokens} new tokens per request"
          f" | slots {args.parallel} | reps {args.reps} (medians) | reference: {ref_name}\n")
    ms = lambda seconds: "-" if seconds is None else f"{seconds * 1e3:.0f}"  # noqa: E731
    for workload in args.workloads:
        rows = []
        for clients in args.clients:
            m, r = mk[workload][clients], reference(workload, clients)
            rows.append(
                [
                    str(clients),
                    f"{m['tps']:.1f}",
                    f"{r['tps']:.1f}",
                    f"{m['tps'] / r['tps']:.2f}",
                    f"{ms(m['ttft_p50_s'])} / {ms(m['ttft_p95_s'])}",
                    f"{ms(r['ttft_p50_s'])} / {ms(r['ttft_p95_s'])}",
                    f"{m['latency_p50_s']:.2f} / {m['latency_p95_s']:.2f}",
                    f"{r['latency_p50_s']:.2f} / {r['latency_p95_s']:.2f}",
                    f"{m['cpu_ms_per_token']:.1f} ({m['main_thread_cpu_ms_per_token']:.1f})",
                    f"{r['cpu_ms_per_token']:.1f}",
                ]
            )
        print(f"workload: {workload}")
        print(table(["clients", "mistralkit tok/s", f"{ref_name} tok/s", "ratio", "mk TTFT p50/p95 (ms)",
                     "ref TTFT p50/p95 (ms)", "mk latency p50/p95 (s)", "ref latency p50/p95 (s)",
                     "mk CPU ms/token (loop)", "ref CPU ms/token"], rows))
        one, four = mk[workload].get(1), mk[workload].get(4)
        if one and four and one["ttft_p50_s"]:
            print(f"mistralkit TTFT p50 at 4 clients / 1 client: {four['ttft_p50_s'] / one['ttft_p50_s']:.2f}"
                  " (target <= 2)")
        print()

    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(), "python": sys.version.split()[0]},
        "mistralkit_version": __version__, "reference": ref_name, "reference_version": ref_version,
        "model_path": str(model.path), "threads": args.threads, "ctx": args.ctx, "reps": args.reps,
        "new_tokens": args.new_tokens, "prompt_lines": args.prompt_lines, "clients": args.clients,
        "parallel": args.parallel, "workloads": args.workloads, "llama_server_path": str(args.llama_server or ""),
        "method": "/v1/completions, clients released together by a barrier, ignore_eos; counting: streamed"
                  " greedy; short: not streamed, temperature 0.8; aggregate tok/s = completion tokens /"
                  " (last end - first send); medians over reps, p50/p95 over all requests",
        "mistralkit": mk, "llama_server": ref,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
