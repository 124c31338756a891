"""``mistralkit bench``: prompt processing and generation speed of a GGUF (+ adapter), like llama-bench.

Per thread count the model is loaded afresh (load time measured), then for each repetition:

* **pp**: a prompt of ``prompt_tokens`` token ids (drawn from the vocabulary with a fixed seed, no
  special tokens, as llama-bench does) is evaluated in one call on an empty cache;
* **tg**: ``gen_tokens`` tokens are decoded one at a time after a one-token prompt (each step is a
  real decode of the model; the token fed is the argmax of the previous step, EOS included);
* **TTFT**: the pp time of the prompt plus the first decode step after it.

Reported per thread count: mean ± sd of pp and tg tokens/s over the repetitions (one untimed
warm-up first), median TTFT, load time, and peak RSS (reset before each thread count on Linux).

    results = run_bench(resolve(None), threads=[1, 2], prompt_tokens=512, gen_tokens=128, reps=3)
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass, field

from ..errors import InvalidParameter
from ..measure import peak_rss, pyplot, reset_peak_rss
from ..models import LocalModel
from .scorers import last_logits


@dataclass
class BenchResult:
    model: str
    adapter: str | None
    threads: int
    prompt_tokens: int
    gen_tokens: int
    load_s: float
    pp_tps: list[float] = field(default_factory=list)
    tg_tps: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    peak_rss: int = 0

    def summary(self) -> dict:
        def mean_sd(values: list[float]) -> dict[str, float]:
            return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}

        return {**asdict(self), "pp": mean_sd(self.pp_tps), "tg": mean_sd(self.tg_tps),
                "ttft_median_s": statistics.median(self.ttft_s)}


def _prompt(llm, n: int, seed: int) -> list[int]:
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    specials = {llm.token_bos(), llm.token_eos()}
    rng = random.Random(seed)
    out: list[int] = []
    while len(out) < n:
        token = rng.randrange(llm.n_vocab())
        if token not in specials and not llama_cpp.llama_vocab_is_control(vocab, token):
            out.append(token)
    return out


def _one_rep(llm, prompt: list[int], gen_tokens: int) -> tuple[float, float, float]:
    """(pp tokens/s, tg tokens/s, TTFT seconds) of one repetition."""
    import numpy as np

    llm.reset()  # the next eval drops the cache from position 0
    started = time.perf_counter()
    llm.eval(prompt)
    pp_s = time.perf_counter() - started
    first = time.perf_counter()
    llm.eval([int(np.argmax(last_logits(llm)))])
    ttft = pp_s + time.perf_counter() - first
    llm.reset()
    llm.eval(prompt[:1])
    started = time.perf_counter()
    for _ in range(gen_tokens):
        llm.eval([int(np.argmax(last_logits(llm)))])
    tg_s = time.perf_counter() - started
    return len(prompt) / pp_s, gen_tokens / tg_s, ttft


def run_bench(model: LocalModel, *, threads: list[int], prompt_tokens: int = 512, gen_tokens: int = 128,
              reps: int = 3, adapter: str | None = None, seed: int = 0, on_result=None) -> list[BenchResult]:
    """Measure ``model`` at each thread count; ``on_result(result)`` runs after each one."""
    from ..engines import load_engine

    if prompt_tokens < 1 or gen_tokens < 1 or reps < 1 or not threads or min(threads) < 1:
        raise InvalidParameter("prompt tokens, gen tokens, reps and threads must all be >= 1")
    n_ctx = prompt_tokens + gen_tokens + 8
    results = []
    for n in threads:
        reset_peak_rss()  # per thread count, where the kernel allows it (Linux)
        engine = load_engine(model, n_ctx=n_ctx, threads=n, adapter=adapter)
        try:
            llm = engine._llm  # type: ignore[attr-defined]  # raw llama.cpp calls, as llama-bench times them
            prompt = _prompt(llm, prompt_tokens, seed)
            result = BenchResult(model.name, adapter, n, prompt_tokens, gen_tokens, round(engine.load_s, 4))
            _one_rep(llm, prompt[: min(32, prompt_tokens)], min(8, gen_tokens))  # warm-up, untimed
            for _ in range(reps):
                pp, tg, ttft = _one_rep(llm, prompt, gen_tokens)
                result.pp_tps.append(pp)
                result.tg_tps.append(tg)
                result.ttft_s.append(ttft)
            result.peak_rss = peak_rss()
        finally:
            engine.close()
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def plot(results: list[BenchResult], target) -> str | None:
    """A bar chart of pp and tg tokens/s per thread count; returns why not when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return "matplotlib is not installed: no PNG (pip install matplotlib)"
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    labels = [f"{r.threads} thr" for r in results]
    for ax, key, title in ((axes[0], "pp", "prompt processing"), (axes[1], "tg", "generation")):
        stats = [r.summary()[key] for r in results]
        ax.bar(labels, [s["mean"] for s in stats], yerr=[s["sd"] for s in stats], capsize=4)
        ax.set_title(f"{title} (tokens/s)")
    fig.suptitle(results[0].model + (f" + {results[0].adapter}" if results[0].adapter else ""))
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return None
