"""What a speculative verification costs: one ``llama_decode`` of R rows (every row with its logits) at
the same depth, against one row, with flash attention, as the batched engine calls it.

Speculative decoding pays only where R rows cost much less than R single-token steps. On the AVX2
2-core machine of stop 42 they did not: Llama 3.2 1B's real shape (Q4_K_M, 2 threads) took 1.65x for
2 rows, 2.29x for 3, 2.79x for 4, 4.0x for 6 (docs/speculative.md).

Run:   .venv/bin/python bench/verify_rows.py MODEL.gguf [MODEL.gguf ...] [--threads 2] [--rows 1 2 3 4 6]
       (a real-shape file: bench/real_shape.py llama-3.2-1b prints its path)
"""

from __future__ import annotations

import argparse
import statistics
import time


def measure(path: str, threads: int, rows_list: list[int], depth: int, reps: int) -> dict[int, float]:
    import llama_cpp

    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(path.encode(), llama_cpp.llama_model_default_params())
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = depth + 256, 512, 512
    params.n_threads = params.n_threads_batch = threads
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    ctx = llama_cpp.llama_init_from_model(model, params)
    mem = llama_cpp.llama_get_memory(ctx)
    batch = llama_cpp.llama_batch_init(512, 0, 1)

    def decode(tokens: list[int], start: int, every_row: bool) -> None:
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
            batch.logits[i] = every_row or i == len(tokens) - 1
            batch.seq_id[i][0] = 0
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit(f"llama_decode failed on {path}")

    decode([1 + (7 * i) % 1000 for i in range(depth)], 0, False)
    medians = {}
    for rows in rows_list:
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            decode([5 + j for j in range(rows)], depth, True)
            times.append(time.perf_counter() - started)
            llama_cpp.llama_memory_seq_rm(mem, 0, depth, -1)
        medians[rows] = statistics.median(times[2:])  # the first calls warm up
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return medians


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="GGUF files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 3, 4, 6])
    ap.add_argument("--depth", type=int, default=100, help="tokens already in the cache")
    ap.add_argument("--reps", type=int, default=12)
    args = ap.parse_args()
    rows_list = sorted({1, *args.rows})
    for path in args.models:
        medians = measure(path, args.threads, rows_list, args.depth, args.reps)
        one = medians[1]
        print(path.rsplit("/", 1)[-1], f"threads {args.threads}:",
              "  ".join(f"{r} rows {v * 1000:.1f} ms (x{v / one:.2f})" for r, v in medians.items()), flush=True)


if __name__ == "__main__":
    main()
