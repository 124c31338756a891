"""The speed planner: prefill and decode tokens/s, and the seconds an answer takes, for a model that need
not be downloaded (its shapes come from the GGUF header or the catalog).

The cost of a token on a CPU, as llama.cpp computes it:

- **prefill** is bound by arithmetic: each prompt token multiplies every weight of the layers once
  (2 FLOPs a weight) and attends to the tokens before it;
- **decode** is bound by memory: each new token reads every weight of the layers and the output
  matrix once, and the KV cache so far.

So two numbers describe a machine: the FLOPs a second llama.cpp reaches on quantized weights, and the
bytes a second it reads while decoding. ``calibrate`` measures both with llama.cpp itself on a small
Q4_K_M llama with random weights and the matrix sizes of a 1-7B model (``CALIBRATION``: four layers
of 2048 x 8192, built once into the cache folder, ~15 s), the median of three prefills of 128 tokens
and decodes of 48 (~5 s), and caches the rates per thread count, llama.cpp version and CPU in the state folder
(``--recalibrate`` measures again; a damaged cache is measured again). The embedded models are too
small to calibrate on: their per-token overheads would be read as a slow machine (predictions 40%
low at 1B). When nothing can be measured, ``ESTIMATE`` stands in, and says so.

>>> speed = predict(cost_of_7b_shape, Calibration(2, 40e9, 12e9, "measured"))  # doctest: +SKIP
>>> round(speed.decode_tps, 1)  # doctest: +SKIP
2.9
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from statistics import median

from .. import paths
from ..errors import InvalidParameter
from ..files import write_text_atomic
from . import synthetic
from .memory import ModelShape
from .synthetic import Shape

log = logging.getLogger(__name__)

PROMPT_TOKENS = 100  # a question with a little context
ANSWER_TOKENS = 200  # a paragraph
CALIBRATION_PROMPT, CALIBRATION_DECODE, CALIBRATION_RUNS = 128, 48, 3
# Used when nothing can be measured: about what the calibration found on this project's 2-core build
# machine (bench/real_shape_speed.py); the output says "estimate" beside every figure made from it.
ESTIMATE_FLOPS_PER_THREAD, ESTIMATE_BYTES_PER_S, ESTIMATE_LAYER_S = 100e9, 20e9, 0.2e-3


@dataclass(frozen=True)
class Calibration:
    threads: int
    flops_per_s: float  # llama.cpp's prefill arithmetic on quantized weights
    bytes_per_s: float  # llama.cpp's decode reads
    source: str  # "measured" or "estimate"
    measured_at: float = 0.0
    machine: str = ""
    layer_s: float = 0.0  # a decoded token's fixed cost per layer (the graph's ops, thread syncs)


@dataclass(frozen=True)
class Speed:
    prefill_tps: float
    decode_tps: float  # at the depth halfway through the answer
    answer_s: float  # prefill of the prompt + decode of the answer
    prompt_tokens: int
    answer_tokens: int
    source: str  # the calibration's
    threads: int = 0

    def line(self) -> str:
        mark = " (estimate: no calibration could run)" if self.source == "estimate" else ""
        return (f"prefill ~{self.prefill_tps:,.0f} tok/s, decode ~{self.decode_tps:,.1f} tok/s: "
                f"~{self.answer_s:,.1f} s for {self.answer_tokens} tokens after a {self.prompt_tokens}-token "
                f"prompt{mark}")


@dataclass(frozen=True)
class Cost:
    """Per-token work of a model: FLOPs of a prompt token, bytes a decoded token reads."""

    layer_params: float
    output_params: float  # the output projection (the token embedding when tied)
    weight_bytes_per_param: float
    kv_bytes_per_token: float  # all layers, K and V, f16
    attention_flops_per_depth: float  # a token's attention FLOPs per token before it


def cost(shape: ModelShape, tied: bool | None = None) -> Cost:
    q = shape.heads * shape.key_length
    kv = shape.kv_heads * shape.key_length
    per_layer = shape.embedding * (q + 2 * kv) + q * shape.embedding + 3 * shape.embedding * shape.feed_forward
    layer_params = float(shape.layers * per_layer)
    output = float(shape.vocab * shape.embedding)
    tied = shape.tied if tied is None else tied
    total = layer_params + output * (1 if tied else 2)
    return Cost(layer_params=layer_params, output_params=output,
                weight_bytes_per_param=shape.weights / total if shape.weights else 4.85 / 8,
                kv_bytes_per_token=2.0 * shape.layers * kv * 2,
                attention_flops_per_depth=4.0 * shape.layers * q)


def prefill_flops(c: Cost, depth: float) -> float:
    return 2 * c.layer_params + c.attention_flops_per_depth * depth


def decode_bytes(c: Cost, depth: float) -> float:
    return (c.layer_params + c.output_params) * c.weight_bytes_per_param + c.kv_bytes_per_token * depth


def predict(shape: ModelShape, calibration: Calibration, prompt_tokens: int = PROMPT_TOKENS,
            answer_tokens: int = ANSWER_TOKENS) -> Speed:
    """Predicted speed of ``shape`` on the calibrated machine."""
    for name, value in (("prompt tokens", prompt_tokens), ("answer tokens", answer_tokens)):
        if not isinstance(value, int) or value < 1:
            raise InvalidParameter(f"{name} must be a whole number >= 1, not {value!r}")
    c = cost(shape)
    prefill_tps = calibration.flops_per_s / prefill_flops(c, prompt_tokens / 2)
    decode_tps = 1 / (decode_bytes(c, prompt_tokens + answer_tokens / 2) / calibration.bytes_per_s
                      + shape.layers * calibration.layer_s)
    return Speed(prefill_tps, decode_tps, prompt_tokens / prefill_tps + answer_tokens / decode_tps,
                 prompt_tokens, answer_tokens, calibration.source, calibration.threads)


def speed_of(shape: ModelShape, threads: int | None = None, prompt_tokens: int = PROMPT_TOKENS,
             answer_tokens: int = ANSWER_TOKENS, recalibrate: bool = False) -> Speed:
    """``predict`` on this machine's calibration for ``threads`` (default: the physical cores)."""
    from ..engines.llama_native import default_threads

    for name, value in (("--prompt-tokens", prompt_tokens), ("--answer-tokens", answer_tokens)):
        if value < 1:
            raise InvalidParameter(f"{name} {value}: must be at least 1")
    threads = threads or default_threads()
    if threads < 1:
        raise InvalidParameter(f"--threads {threads}: must be at least 1")
    return predict(shape, calibrate(threads, force=recalibrate), prompt_tokens, answer_tokens)


# --- calibration -----------------------------------------------------------------------------------

def machine_key(threads: int) -> str:
    import llama_cpp

    return (f"v2|{platform.processor() or platform.machine()}|{os.cpu_count()}|llama.cpp {llama_cpp.__version__}|"
            f"{threads}")


def _cache_file():
    return paths.state_dir() / "speed-calibration.json"


def calibrate(threads: int, force: bool = False) -> Calibration:
    """This machine's rates for ``threads`` llama.cpp threads: cached, else measured (a few seconds),
    else the documented estimate."""
    key = machine_key(threads)
    cache = _cache_file()
    stored: dict = {}
    try:
        stored = json.loads(cache.read_text(encoding="utf-8"))
        found = Calibration(**stored[key]) if not force and key in stored else None
        if found is not None and found.flops_per_s > 0 and found.bytes_per_s > 0:
            return found
    except FileNotFoundError:
        pass
    except (ValueError, TypeError, KeyError, OSError) as exc:  # damaged: measured again, then rewritten
        log.warning("speed calibration %s is unreadable (%s): measuring again", cache, exc)
        stored = {}
    try:
        result = measure(threads)
    except Exception as exc:  # noqa: BLE001 - any failure falls back to the estimate, said in the output
        log.warning("speed calibration failed (%s): using the documented estimate", exc)
        return estimate(threads)
    stored = stored if isinstance(stored, dict) else {}
    stored[key] = asdict(result)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache, json.dumps(stored, indent=1))
    except OSError as exc:
        log.warning("cannot keep the speed calibration in %s (%s)", cache, exc)
    return result


def estimate(threads: int) -> Calibration:
    return Calibration(threads, ESTIMATE_FLOPS_PER_THREAD * threads, ESTIMATE_BYTES_PER_S, "estimate",
                       layer_s=ESTIMATE_LAYER_S)


CALIBRATION = Shape(layers=4, embedding=2048, ffn=8192, heads=16, kv_heads=4, head_dim=128, vocab=32000,
                    context=4096, rope_theta=1e6, tied=False)
# Many thin layers: a decoded token's time is almost all per-layer overhead (weights of a few MB).
OVERHEAD = Shape(layers=24, embedding=128, ffn=256, heads=2, kv_heads=2, head_dim=64, vocab=1024, context=1024,
                 rope_theta=1e4, tied=True)


def measure(threads: int) -> Calibration:
    """Prefill and decode of the calibration models with llama.cpp, turned into FLOPs/s, bytes/s and
    the fixed cost of a layer per decoded token."""
    (prefill_tps, decode_tps), main = _run(CALIBRATION, threads)
    (_, thin_tps), thin = _run(OVERHEAD, threads)
    c, t = cost(main), cost(thin)
    n = CALIBRATION_PROMPT
    depth = n + CALIBRATION_DECODE / 2
    # Two unknowns, two runs: 1/tps = bytes / bandwidth + layers * layer_s for each model.
    a1, a2 = decode_bytes(c, depth), decode_bytes(t, depth)
    layer_s = max(0.0, (1 / thin_tps - a2 * (1 / decode_tps) / a1) / (thin.layers - a2 * main.layers / a1))
    bytes_per_s = a1 / max(1 / decode_tps - main.layers * layer_s, 0.25 / decode_tps)
    return Calibration(threads, prefill_tps * prefill_flops(c, n / 2), bytes_per_s, "measured", time.time(),
                       machine_key(threads), layer_s)


def _run(shape: Shape, threads: int) -> tuple[tuple[float, float], ModelShape]:
    """(median prefill tok/s, median decode tok/s) of a synthetic model of ``shape``, and its shapes."""
    from ..engines import GenerationParams, complete, load_engine
    from .store import resolve

    name = f"calibration-{shape.layers}x{shape.embedding}x{shape.ffn}"  # a new shape is a new file
    path = synthetic.build(name, shape, paths.cache_dir() / "calibration", quiet=True)
    model = resolve(str(path))
    engine = load_engine(model, n_ctx=1024, threads=threads)
    try:
        prompt = [1 + (7919 * i) % (shape.vocab - 1) for i in range(CALIBRATION_PROMPT)]
        params = GenerationParams(max_tokens=CALIBRATION_DECODE, greedy=True, ignore_eos=True)
        complete(engine, prompt, params)  # pages the weights in
        prefills, decodes = [], []
        for _ in range(CALIBRATION_RUNS):  # the median: a burst of a fast clock is not the machine's pace
            engine.reset_cache()
            done = complete(engine, prompt, params)
            prefills.append(done.usage.prompt_tps)
            decodes.append(done.usage.gen_tps)
    finally:
        engine.close()
    return (median(prefills), median(decodes)), ModelShape.from_model(model)
