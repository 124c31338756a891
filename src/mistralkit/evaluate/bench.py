"""``mistralkit bench``: prompt processing and generation speed of a model (+ adapter), like llama-bench.

Everything goes through the ``Engine`` contract (``generate`` on a token prompt, greedy, end of
text ignored), so the numbers are what chat and serve get, on any engine that takes token
prompts. Per thread count the model is loaded afresh (load time measured), then each repetition
generates ``gen_tokens`` tokens after a prompt of ``prompt_tokens`` tokens drawn with a fixed
seed from the tokenized text of random dictionary-free words (a new draw per repetition, so no
prompt is served from the cache):

* **pp**: prompt tokens / time to the first token (the prompt's evaluation and one decode);
* **tg**: tokens after the first / the time they took (each a real decode and a greedy pick);
* **TTFT**: the time to the first token.

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


SYLLABLES = ("ka", "lo", "mi", "re", "su", "ta", "no", "vi", "pe", "da", "ru", "shi", "an", "el", "or")


def _prompt(engine, n: int, seed: int) -> list[int]:
    """``n`` tokens of seeded nonsense words, BOS first when the model wants one."""
    rng = random.Random(seed)
    words = " ".join("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(2 * n))
    tokens = engine.encode_text(words)
    while len(tokens) < n:
        tokens += tokens[1:] or tokens
    return tokens[:n]


def _one_rep(engine, prompt: list[int], gen_tokens: int, seed: int) -> tuple[float, float, float]:
    """(pp tokens/s, tg tokens/s, TTFT seconds) of one repetition."""
    from ..engines import GenerationParams, complete

    params = GenerationParams(max_tokens=gen_tokens, greedy=True, ignore_eos=True, seed=seed, repeat_penalty=1.0)
    usage = complete(engine, prompt, params).usage
    return len(prompt) / usage.ttft_s, usage.gen_tps, usage.ttft_s


def run_bench(model: LocalModel, *, threads: list[int], prompt_tokens: int = 512, gen_tokens: int = 128,
              reps: int = 3, adapter: str | None = None, seed: int = 0, on_result=None) -> list[BenchResult]:
    """Measure ``model`` at each thread count; ``on_result(result)`` runs after each one."""
    from ..engines import load_engine, require

    if prompt_tokens < 1 or gen_tokens < 1 or reps < 1 or not threads or min(threads) < 1:
        raise InvalidParameter("prompt tokens, gen tokens, reps and threads must all be >= 1")
    n_ctx = prompt_tokens + gen_tokens + 8
    results = []
    for n in threads:
        reset_peak_rss()  # per thread count, where the kernel allows it (Linux)
        started = time.perf_counter()
        engine = load_engine(model, n_ctx=n_ctx, threads=n, adapter=adapter)
        load_s = time.perf_counter() - started
        try:
            require(engine, "tokens", "mistralkit bench")
            result = BenchResult(model.name, adapter, n, prompt_tokens, gen_tokens, round(load_s, 4))
            warm = _prompt(engine, min(32, prompt_tokens), seed - 1)
            _one_rep(engine, warm, min(8, max(2, gen_tokens)), seed)  # untimed
            for rep in range(reps):
                prompt = _prompt(engine, prompt_tokens, seed + rep)
                pp, tg, ttft = _one_rep(engine, prompt, max(2, gen_tokens), seed)
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
