"""Spike for issue 15: N generations at once on one llama.cpp context, against xllamacpp and today's engine.

Three engines, each in a process of its own, so one's threads and caches do not slow the next:

- ``proto``: ``BatchedLlama`` below, continuous batching written on llama-cpp-python's low-level API
  (one context with ``n_seq_max`` sequences, one ``llama_decode`` per step for every running sequence
  plus prompt chunks of the waiting ones, a sampler chain per sequence, ``llama_memory_seq_rm`` to
  free a sequence). ``proto:kv_unified`` and ``proto:swa_small`` flip one context parameter.
- ``xllamacpp``: llama.cpp's own server in-process (``xllamacpp.Server``, ``n_parallel`` slots), fed
  token prompts through ``handle_completions`` with streaming; needs ``--xllamacpp-python``, a Python
  that has xllamacpp (not a mistralkit dependency).
- ``current``: ``LlamaCppEngine`` taken one generation at a time, so N clients run one after the
  other (what ``mistralkit serve`` did before issue 15; the engine batches since, see engines/batch.py).

Every client generates ``--new-tokens`` tokens (``ignore_eos``) from a short prompt of its own at
temperature 0.8 (top-k 40, top-p 0.95, min-p 0.05, repeat penalty 1.1, a seed per client). Per run:
aggregate tokens/s = all tokens / wall time from the first submit to the last token; tokens per CPU
second of the engine's process (less sensitive than wall time to other work on the machine); TTFT
and decode rate per client. Rounds interleave the engines (the machine is shared); medians shown.
Load time and one warm-up generation are outside the timing.

Run:   .venv/bin/python bench/spike_batched.py --xllamacpp-python /tmp/spike/bin/python
       .venv/bin/python bench/spike_batched.py --check      # batched greedy == one sequence alone?
       .venv/bin/python bench/spike_batched.py --profile    # llama_decode vs sampling time per step
Writes bench/results/spike_batched.json.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

PROMPTS = [
    "Once upon a time, in a village by the sea,",
    "The three most important inventions of the last century are",
    "Here is a recipe for a simple tomato soup:",
    "Dear diary, today I finally decided to",
    "The history of the bicycle begins in",
    "A good way to learn a new language is",
    "In the year 2150, the city of Paris",
    "The rules of chess are simple:",
]
SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1}


@dataclass
class Sequence:
    """One generation inside ``BatchedLlama``: its slot (seq id), sampler, and where its tokens go."""

    prompt: list[int]
    max_tokens: int
    sampler: ctypes.c_void_p
    out: queue.Queue
    slot: int = -1
    n_past: int = 0  # tokens of this sequence already in the KV cache
    next_token: int | None = None  # sampled, not yet decoded
    generated: int = 0
    ignore_eos: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)


class BatchedLlama:
    """Continuous batching over one llama.cpp context: a loop thread, ``n_seq`` sequences at a time.

    ``generate`` (any thread) yields token ids; the loop decodes one token of every running sequence
    plus prompt chunks of new ones in a single ``llama_decode``.
    """

    def __init__(self, path: str, *, n_ctx: int = 4096, n_seq: int = 4, threads: int = 2, n_batch: int = 512,
                 kv_unified: bool = False, swa_full: bool = True) -> None:
        import llama_cpp as L

        self.L = L
        L.llama_backend_init()
        mparams = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(path.encode(), mparams)
        if not self.model:
            raise RuntimeError(f"cannot load {path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        cparams = L.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx, n_batch, n_batch
        cparams.n_seq_max = n_seq  # without kv_unified each sequence gets n_ctx / n_seq cells
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.kv_unified = kv_unified
        cparams.swa_full = swa_full  # full SWA cache: needed to roll a sequence back (prefix reuse)
        self.ctx = L.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError("cannot create the context")
        self.mem = L.llama_get_memory(self.ctx)
        self.n_batch = n_batch
        self.n_ctx_seq = L.llama_n_ctx_seq(self.ctx)
        self.batch = L.llama_batch_init(n_batch, 0, 1)  # room for n_batch tokens, 1 seq id each
        self.free_slots = list(range(n_seq))
        self.waiting: queue.Queue[Sequence] = queue.Queue()
        self.running: list[Sequence] = []
        self.wake = threading.Event()
        self.stopped = False
        self.steps = 0
        self.step_times: list[tuple[int, float, float]] = []  # (rows sampled, decode s, sampling s)
        self.loop = threading.Thread(target=self._loop, name="batched-llama", daemon=True)
        self.loop.start()

    # -- client side -------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        data = text.encode()
        buf = (self.L.llama_token * (len(data) + 8))()
        n = self.L.llama_tokenize(self.vocab, data, len(data), buf, len(buf), add_bos, False)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def sampler(self, *, temperature: float, top_k: int, top_p: float, min_p: float, repeat_penalty: float,
                seed: int, grammar: str | None = None) -> ctypes.c_void_p:
        """The chain llama.cpp's common sampler uses, in the same order: penalties, top-k, top-p, min-p, temp, dist."""
        L = self.L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if grammar is not None:
            # Applied to the whole vocabulary every token (262k for Gemma 3): llama.cpp's common
            # sampler samples first and checks the grammar only on rejection, which is much cheaper.
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root"))
        if repeat_penalty != 1.0:  # it scans the whole vocabulary: 2-3 ms a token here
            # 0.3.36's binding (and the llama.cpp it bundles) still takes n_vocab first: 5 arguments, not 4.
            n_vocab = L.llama_vocab_n_tokens(self.vocab)
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_penalties(n_vocab, 64, repeat_penalty, 0.0, 0.0))
        if temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            return chain
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(top_k))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(top_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(min_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(temperature))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))
        return chain

    def generate(self, prompt: list[int], max_tokens: int, *, ignore_eos: bool = False, seed: int = 0,
                 cancel: threading.Event | None = None, **sampling):
        """Yield the generated token ids; closing the generator (or setting ``cancel``) frees the sequence."""
        if len(prompt) + max_tokens > self.n_ctx_seq:
            raise ValueError(f"{len(prompt)} + {max_tokens} tokens do not fit a sequence's {self.n_ctx_seq} cells")
        seq = Sequence(list(prompt), max_tokens, self.sampler(seed=seed, **(SAMPLING | sampling)), queue.Queue(),
                       ignore_eos=ignore_eos, cancel=cancel or threading.Event())
        self.waiting.put(seq)
        self.wake.set()
        try:
            while (token := seq.out.get()) is not None:
                yield token
        finally:
            seq.cancel.set()  # the loop drops it at its next step
            self.wake.set()

    def close(self) -> None:
        self.stopped = True
        self.wake.set()
        self.loop.join()
        L = self.L
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)

    # -- loop side ---------------------------------------------------------------------------
    def _admit(self) -> None:
        while self.free_slots and not self.waiting.empty():
            seq = self.waiting.get()
            seq.slot = self.free_slots.pop()
            self.running.append(seq)

    def _finish(self, seq: Sequence) -> None:
        self.L.llama_memory_seq_rm(self.mem, seq.slot, -1, -1)  # all of its cells, every position
        self.L.llama_sampler_free(seq.sampler)
        self.running.remove(seq)
        self.free_slots.append(seq.slot)
        seq.out.put(None)

    def _add(self, token: int, pos: int, slot: int, logits: bool) -> int:
        b, i = self.batch, self.batch.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
        b.seq_id[i][0] = slot
        b.n_tokens = i + 1
        return i

    def _step(self) -> None:
        """One llama_decode: a token of every decoding sequence first, then prompt chunks (chunked prefill)."""
        L = self.L
        for seq in [s for s in self.running if s.cancel.is_set()]:
            self._finish(seq)
        self.batch.n_tokens = 0
        outputs: list[tuple[int, Sequence]] = []  # (index in the batch, sequence) of the rows to sample
        for seq in self.running:
            if seq.next_token is not None:
                outputs.append((self._add(seq.next_token, seq.n_past, seq.slot, True), seq))
                seq.n_past += 1
                seq.next_token = None
        for seq in self.running:
            left = len(seq.prompt) - seq.n_past
            room = self.n_batch - self.batch.n_tokens
            if seq.generated or left <= 0 or room <= 0:
                continue
            chunk = seq.prompt[seq.n_past: seq.n_past + min(left, room)]
            for j, token in enumerate(chunk):
                last = seq.n_past + j == len(seq.prompt) - 1
                index = self._add(token, seq.n_past + j, seq.slot, last)
                if last:
                    outputs.append((index, seq))
            seq.n_past += len(chunk)
        if not self.batch.n_tokens:
            return
        started = time.perf_counter()
        if L.llama_decode(self.ctx, self.batch) != 0:  # 1: no KV room; < 0: error
            raise RuntimeError("llama_decode failed")
        decoded = time.perf_counter()
        self.steps += 1
        self._sample(outputs)
        self.step_times.append((len(outputs), decoded - started, time.perf_counter() - decoded))

    def _sample(self, outputs: list[tuple[int, Sequence]]) -> None:
        L = self.L
        for index, seq in outputs:
            # idx is the token's index in the batch (its logits flag set), not the n-th output row.
            token = L.llama_sampler_sample(seq.sampler, self.ctx, index)  # also accepts the token
            if not seq.ignore_eos and L.llama_vocab_is_eog(self.vocab, token):
                self._finish(seq)
                continue
            seq.generated += 1
            seq.out.put(token)
            if seq.generated >= seq.max_tokens:
                self._finish(seq)
            else:
                seq.next_token = token

    def _loop(self) -> None:
        while not self.stopped:
            self._admit()
            if not self.running:
                self.wake.wait(0.05)
                self.wake.clear()
                continue
            self._step()


# -- runners: each returns per-client records ---------------------------------------------------

def client_record(t0: float, first: float | None, end: float, tokens: int) -> dict:
    ttft = (first - t0) if first else 0.0
    span = end - (first or end)
    return {"ttft_s": round(ttft, 4), "total_s": round(end - t0, 4), "tokens": tokens,
            "decode_tps": round((tokens - 1) / span, 2) if tokens > 1 and span > 0 else 0.0}


def concurrently(clients: int, work) -> tuple[float, list[dict]]:
    """Start ``clients`` threads running ``work(i, t0)`` together; wall time and their records."""
    records: list[dict] = [{}] * clients  # and, last, the run's CPU time and the machine's load
    barrier = threading.Barrier(clients + 1)
    start = [0.0]

    def run(i: int) -> None:
        barrier.wait()
        records[i] = work(i, start[0])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    cpu = time.process_time()  # every thread of this process: the engine's own ones included
    start[0] = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start[0]
    records.append({"cpu_s": round(time.process_time() - cpu, 3), "load_avg_1m": os.getloadavg()[0]})
    return wall, records


def run_proto(args, variant: str) -> dict:
    options = {"kv_unified": variant == "kv_unified", "swa_full": variant != "swa_small"}
    started = time.perf_counter()
    engine = BatchedLlama(args.model, n_ctx=args.ctx, n_seq=args.slots, threads=args.threads, **options)
    load_s = time.perf_counter() - started
    prompts = [engine.tokenize(p) for p in PROMPTS]
    list(engine.generate(engine.tokenize("Hello"), 8, ignore_eos=True))  # warm-up

    def work(i: int, t0: float) -> dict:
        first, n = None, 0
        for token in engine.generate(prompts[i], args.new_tokens, ignore_eos=True, seed=100 + i):
            engine.piece(token)  # what a server would do with it
            first = first or time.perf_counter()
            n += 1
        return client_record(t0, first, time.perf_counter(), n)

    out = {}
    for clients in args.clients:
        steps = engine.steps
        wall, records = concurrently(clients, work)
        out[str(clients)] = {
            "wall_s": wall,
            "clients": records[:-1],
            **records[-1],
            "decode_calls": engine.steps - steps,
        }
    engine.close()
    return {"load_s": load_s, "runs": out, **options}


def run_xllamacpp(args) -> dict:
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.ctx  # split into n_parallel slots of n_ctx / n_parallel (kv_unified off)
    params.n_parallel = args.slots
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = args.threads
    params.verbosity = 0
    params.api_keys = [os.urandom(16).hex()]  # it also listens on 127.0.0.1; nobody else gets in
    started = time.perf_counter()
    server = xlc.Server(params)
    load_s = time.perf_counter() - started
    tokenized = []
    for p in PROMPTS:  # tokens the same way the others see them: BOS + text
        body = server.handle_completions({"prompt": p, "max_tokens": 1, "n_probs": 1, "return_tokens": True})
        tokenized.append(body["usage"]["prompt_tokens"])
    server.handle_completions({"prompt": "Hello", "max_tokens": 8, "ignore_eos": True})  # warm-up

    def work(i: int, t0: float) -> dict:
        state = {"first": None, "n": 0}

        def on_chunk(chunk: dict) -> bool:
            if "error" in chunk:
                raise RuntimeError(chunk)
            if chunk["choices"][0].get("text"):
                state["first"] = state["first"] or time.perf_counter()
            if "usage" in chunk:
                state["n"] = chunk["usage"]["completion_tokens"]
            return False  # True would cancel the request

        request = {"prompt": PROMPTS[i], "max_tokens": args.new_tokens, "ignore_eos": True, "stream": True,
                   "seed": 100 + i, "cache_prompt": False, **SAMPLING}
        server.handle_completions(request, on_chunk)
        return client_record(t0, state["first"], time.perf_counter(), state["n"])

    out = {}
    for clients in args.clients:
        wall, records = concurrently(clients, work)
        out[str(clients)] = {"wall_s": wall, "clients": records[:-1], **records[-1]}
    server = None  # the last reference: the server stops
    return {"load_s": load_s, "runs": out, "prompt_tokens": tokenized, "version": xlc.__version__}


def run_current(args) -> dict:
    from mistralkit.engines.base import GenerationParams
    from mistralkit.engines.llamacpp import LlamaCppEngine
    from mistralkit.models import resolve

    engine = LlamaCppEngine(resolve(args.model), n_ctx=args.ctx, threads=args.threads, device="cpu")
    prompts = [engine.encode_text(p) for p in PROMPTS]
    for _ in engine.generate(engine.encode_text("Hello"), GenerationParams(max_tokens=8, ignore_eos=True)):
        pass
    lock = threading.Lock()  # one generation at a time, as the server's pool did before issue 15

    def work(i: int, t0: float) -> dict:
        params = GenerationParams(max_tokens=args.new_tokens, ignore_eos=True, seed=100 + i, **SAMPLING)
        first, n = None, 0
        with lock:
            for chunk in engine.generate(prompts[i], params):
                if chunk.token_ids:
                    first = first or time.perf_counter()
                if chunk.usage:
                    n = chunk.usage.completion_tokens
        return client_record(t0, first, time.perf_counter(), n)

    out = {}
    for clients in args.clients:
        wall, records = concurrently(clients, work)
        out[str(clients)] = {"wall_s": wall, "clients": records[:-1], **records[-1]}
    engine.close()
    return {"load_s": engine.load_s, "runs": out}


def run_check(args) -> dict:
    """Greedy, no penalty: does each sequence of a 4-way batch produce what it produces alone?"""
    engine = BatchedLlama(args.model, n_ctx=args.ctx, n_seq=args.slots, threads=args.threads)
    prompts = [engine.tokenize(p) for p in PROMPTS[:args.slots]]
    greedy = {"temperature": 0.0, "repeat_penalty": 1.0}
    alone = [list(engine.generate(p, 48, ignore_eos=True, **greedy)) for p in prompts]
    _, together = concurrently(len(prompts), lambda i, t0: list(engine.generate(prompts[i], 48, ignore_eos=True,
                                                                                   **greedy)))
    together = together[:-1]
    engine.close()
    same = [next((k for k, (a, b) in enumerate(zip(x, y)) if a != b), len(x)) for x, y in zip(alone, together)]
    return {"identical_prefix_tokens": same, "of": 48}


def run_profile(args) -> dict:
    """Where a decode step's time goes: llama_decode vs sampling, for 1 and 4 sequences, with and without penalties."""
    engine = BatchedLlama(args.model, n_ctx=args.ctx, n_seq=args.slots, threads=args.threads)
    prompts = [engine.tokenize(p) for p in PROMPTS]
    out = {}
    for penalty in (1.1, 1.0):
        for clients in (1, args.slots):
            engine.step_times.clear()
            concurrently(clients, lambda i, t0: list(engine.generate(prompts[i], 64, ignore_eos=True, seed=i,
                                                                     repeat_penalty=penalty)))
            full = [(d, s) for n, d, s in engine.step_times if n == clients]
            out[f"{clients} seq, repeat_penalty {penalty}"] = {
                "steps": len(full), "decode_ms": round(1000 * median(d for d, _ in full), 1),
                "sampling_ms": round(1000 * median(s for _, s in full), 1), "load_avg_1m": os.getloadavg()[0]}
    engine.close()
    return out


RUNNERS = {"proto": lambda a: run_proto(a, ""), "proto:kv_unified": lambda a: run_proto(a, "kv_unified"),
           "proto:swa_small": lambda a: run_proto(a, "swa_small"), "xllamacpp": run_xllamacpp,
           "current": run_current, "check": run_check, "profile": run_profile}


# -- driver ---------------------------------------------------------------------------------

def child(args) -> None:
    print(json.dumps(RUNNERS[args.child](args)))


def spawn(args, engine: str) -> dict:
    python = args.xllamacpp_python if engine == "xllamacpp" else sys.executable
    command = [python, __file__, "--child", engine, "--model", args.model, "--ctx", str(args.ctx),
               "--threads", str(args.threads), "--slots", str(args.slots), "--new-tokens", str(args.new_tokens),
               "--clients", *map(str, args.clients)]
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode:
        raise SystemExit(f"{engine} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(rounds: list[dict], engines: list[str], clients: list[int]) -> list[dict]:
    rows = []
    for engine in engines:
        for n in clients:
            runs = [r[engine]["runs"][str(n)] for r in rounds if engine in r]
            agg = [sum(c["tokens"] for c in run["clients"]) / run["wall_s"] for run in runs]
            ttft = [median(c["ttft_s"] for c in run["clients"]) for run in runs]
            decode = [median(c["decode_tps"] for c in run["clients"]) for run in runs]
            per_cpu = [sum(c["tokens"] for c in run["clients"]) / run["cpu_s"] for run in runs]
            rows.append(
                {
                    "engine": engine,
                    "clients": n,
                    "aggregate_tps": round(median(agg), 1),
                    "aggregate_tps_runs": [round(a, 1) for a in agg],
                    "tokens_per_cpu_s": round(median(per_cpu), 1),
                    "load_avg_1m": [run["load_avg_1m"] for run in runs],
                    "ttft_p50_ms": round(1000 * median(ttft), 1),
                    "per_client_decode_tps": round(median(decode), 1),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a GGUF path (default: the embedded model)")
    parser.add_argument("--engines", default="proto,xllamacpp,current")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4, help="sequences per context (n_seq_max / n_parallel)")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--xllamacpp-python", help="a Python with xllamacpp installed (the xllamacpp engine)")
    parser.add_argument("--check", action="store_true", help="only compare batched and lone greedy output")
    parser.add_argument(
        "--profile", action="store_true", help="only time llama_decode vs sampling per step (adds to --out)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "spike_batched.json"))
    args = parser.parse_args()
    if args.model is None:
        from mistralkit.models import resolve

        args.model = str(resolve().path)
    if args.child:
        return child(args)
    if args.check or args.profile:
        found = spawn(args, "check" if args.check else "profile")
        print(json.dumps(found, indent=1))
        if args.profile and Path(args.out).is_file():  # kept next to the benchmark it explains
            result = json.loads(Path(args.out).read_text())
            result.setdefault("profiles", []).append(found)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return
    engines = [e for e in args.engines.split(",") if e != "xllamacpp" or args.xllamacpp_python]
    rounds = []
    for r in range(args.rounds):
        order = engines[r % len(engines):] + engines[:r % len(engines)]  # rotate who goes first
        rounds.append({engine: spawn(args, engine) for engine in order})
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    rows = summarize(rounds, engines, args.clients)
    from report import table  # bench/report.py

    print(table(["engine", "clients", "aggregate tok/s", "runs", "tok/CPU-s", "TTFT p50 ms", "decode tok/s per client"],
                [[r["engine"], r["clients"], r["aggregate_tps"], " ".join(map(str, r["aggregate_tps_runs"])),
                  r["tokens_per_cpu_s"], r["ttft_p50_ms"], r["per_client_decode_tps"]] for r in rows]))
    result = {"summary": rows, "rounds": rounds,
              "setup": {"new_tokens": args.new_tokens, "threads": args.threads, "slots": args.slots,
                        "ctx": args.ctx, "sampling": SAMPLING, "model": Path(args.model).name},
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "load_avg_at_end": os.getloadavg()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
