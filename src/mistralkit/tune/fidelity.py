"""Does a merged, quantized export still carry its adapter? Measured, not assumed.

After ``export --merged`` the exported GGUF is compared, position by position, with the reference
(base + adapter) on held-out samples of the run: its eval split (``--valid``) when it has one, else
the last training samples. At each answer position (the tokens training scored) llama.cpp gives
every model's full next-token distribution; two numbers are averaged over the positions:

* top-1 agreement: the exported model's most likely token is the reference's;
* KL(reference || exported), in nats.

The same two numbers for the plain base say how far the adapter moves the model. The share of that
move the export keeps is ``retained = 1 - KL(ref || exported) / KL(ref || base)``: 1 is the
reference itself, 0 is no closer to it than the base. Below ``WASHED_OUT`` the export is said to
have lost the adapter, with what keeps it (a finer quant, or the separate GGUF adapter).

The reference is the f16 merge that ``export`` quantizes (``merge.write_merged_f16``): the base's
tensors with ``alpha / rank * B @ A`` added, rounded to f16 once. It costs no extra file and is the
same for GGUF and HF bases; tests/test_export_fidelity.py measures it against llama.cpp's base +
GGUF adapter (top-1 agreement 100%, KL ~1e-4 nats on the embedded Gemma, where the base alone is
at 3.5). Why not llama.cpp's base + GGUF adapter itself: an HF base has no GGUF to apply it to.
The base is the base GGUF; for an HF base, the f16 merge with the adapter applied at scale -1.

Costs stay bounded: at most ``SAMPLES`` samples, ``SCORED`` answer positions each, ``WINDOW``
tokens of context. The reference's log-probabilities at the scored positions are kept in memory
(positions x vocabulary x 4 bytes: 256 MiB at most for Gemma's 262k tokens, 32 MiB for Mistral
7B) while each other model is evaluated once, one model loaded at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import MistralkitError
from ..models import LocalModel

SAMPLES = 8  # held-out samples at most
SCORED = 32  # answer positions per sample at most
WINDOW = 512  # tokens per sample at most (a longer one is cut; one with no answer token left is skipped)
WASHED_OUT = 0.5  # retained below this: the export lost the adapter
UNCHANGED = 1e-4  # KL(ref || base) below this (nats): the adapter does not move the model on these samples
# --quant -> the finer quant that keeps more of a weak adapter
FINER = {"q4_k_m": "q5_k_m", "q5_k_m": "q8_0", "q8_0": "f16"}


@dataclass
class Fidelity:
    """How the exported model compares with base + adapter on held-out samples."""

    quant: str
    data: str  # where the samples came from, in words
    samples: int
    positions: int
    agreement: float  # top-1 agreement, exported vs reference
    kl: float  # mean KL(reference || exported), nats
    base_agreement: float  # the same for the base alone
    base_kl: float
    retained: float | None  # 1 - kl / base_kl; None when the adapter does not move the model
    verdict: str  # kept | washed-out | unchanged
    seconds: float
    reference: str = "f16 merge (base + adapter)"

    def to_dict(self) -> dict:
        return asdict(self)

    def sentence(self) -> str:
        """The figures in plain words."""
        figures = (f"top-1 agreement with base+adapter {self.agreement:.1%} (base alone: {self.base_agreement:.1%}), "
                   f"KL {self.kl:.3g} (base: {self.base_kl:.3g})")
        where = f"on {plural(self.positions, 'answer token')} of {plural(self.samples, 'sample')} from {self.data}"
        if self.verdict == "unchanged":
            return f"the adapter barely changes the model on these samples: {figures}, {where}"
        head = "kept the adapter" if self.verdict == "kept" else "LOST the adapter"
        return f"{head} ({max(self.retained or 0.0, 0.0):.0%} of its shift): {figures}, {where}"

    def warning(self) -> str | None:
        """What to do when the quantization washed the adapter out; None otherwise."""
        if self.verdict != "washed-out":
            return None
        finer = FINER.get(self.quant)
        keep = [f"export with a finer quant (--quant {finer}{', or f16' if finer != 'f16' else ''})"] if finer else []
        keep.append("keep the adapter separate: `mistralkit export RUN --gguf-adapter`, then `--adapter NAME`")
        return (f"{self.quant} quantization washed the adapter out: the export keeps "
                f"{max(self.retained or 0.0, 0.0):.0%} of the adapter's shift (under {WASHED_OUT:.0%}) and answers "
                f"much like the base (KL to base + adapter {self.kl:.3g}, base alone {self.base_kl:.3g}). "
                f"To keep it: {'; or '.join(keep)}.")


def verdict(kl: float, base_kl: float) -> tuple[float | None, str]:
    """(retained, verdict) from the two mean KLs."""
    if base_kl < UNCHANGED:
        return None, "unchanged"
    retained = 1 - kl / base_kl
    return retained, ("kept" if retained >= WASHED_OUT else "washed-out")


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# --- held-out samples ------------------------------------------------------------------------------

@dataclass
class HeldOut:
    """Token sequences to evaluate and, per sequence, the rows whose next-token distribution is compared."""

    sequences: list[list[int]]
    rows: list[list[int]]  # row i predicts token i + 1
    data: str


def held_out_samples(run: Path, limit: int = SAMPLES):
    """(samples, where from) of a run: its eval split's first ``limit``, else its training data's last
    ``limit``; (None, why) when the run records no data that is still readable."""
    from ..models.runs import summary
    from .data import read_samples

    data = (summary(run) or {}).get("data")
    if not isinstance(data, dict):
        return None, f"{run} records no training data (not a `mistralkit tune` run)"
    for split, pick, words in (("valid", slice(None, limit), "the eval split"),
                               ("train", slice(-limit, None), "the last training samples")):
        path = (data.get(split) or {}).get("path")
        if path and Path(path).is_file():
            return read_samples(path)[pick], f"{words} ({Path(path).name})"
    path = (data.get("train") or {}).get("path")
    where = "" if path is None or Path(path).is_absolute() else ": run export from the folder tune ran in"
    return None, f"the data the run was trained on ({path}) is not found{where}"


def encode_held_out(samples, data: str, base: LocalModel, tokenizer: str | None, hyper: dict) -> HeldOut | None:
    """The samples as training encoded them (same chat format, layout stripping, trained positions)."""
    from ..formats.layout import IGNORE, encode, open_encoder
    from .layouts import strip

    if hyper.get("strip_layout"):
        samples = [strip(sample) for sample in samples]
    sequences, rows = [], []
    with open_encoder(None if tokenizer else str(base.path), tokenizer) as encoder:
        for sample in samples:
            encoded = encode(sample, encoder, train_on_inputs=bool(hyper.get("train_on_inputs")))
            ids, labels = encoded.input_ids[:WINDOW], encoded.labels[:WINDOW]
            scored = [i - 1 for i in range(1, len(ids)) if labels[i] != IGNORE][:SCORED]
            if scored:
                sequences.append(ids[: scored[-1] + 1])
                rows.append(scored)
    return HeldOut(sequences, rows, data) if sequences else None


# --- llama.cpp's distributions -----------------------------------------------------------------------

def _log_softmax(rows):
    import numpy as np

    rows = np.asarray(rows, dtype=np.float64)
    rows = rows - rows.max(axis=1, keepdims=True)
    return rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))


def log_probs(path: Path, held: HeldOut, *, adapter: Path | None = None, scale: float = 1.0,
              threads: int | None = None, step: Callable[[int], None] | None = None) -> Iterator:
    """Per sequence, llama.cpp's next-token log-probabilities (float64, rows x vocabulary) at its scored rows.

    Each sequence is one ``llama_decode`` on an empty cache that asks for logits at the scored rows
    only: the output layer (262k rows for Gemma) runs where it is read, and memory holds those rows only.
    """
    import ctypes

    import llama_cpp
    import numpy as np
    from llama_cpp._internals import LlamaContext

    from ..errors import InvalidModelFile
    from ..engines.llama_native import default_threads, gpu_layers, load_model
    from ..models.store import resolve

    window = max(map(len, held.sequences))
    model = load_model(resolve(str(path)), n_gpu_layers=gpu_layers("auto", None), mmap=True, mlock=False,
                       adapter=str(adapter) if adapter else None)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = window
    params.n_threads = params.n_threads_batch = threads or default_threads()
    ctx, lora, batch = None, None, None
    try:
        ctx = LlamaContext(model=model, params=params, verbose=False)
        if adapter:
            lora = llama_cpp.llama_adapter_lora_init(model.model, str(adapter).encode("utf-8"))
            if not lora or llama_cpp.llama_set_adapters_lora(
                    ctx.ctx, (llama_cpp.llama_adapter_lora_p_ctypes * 1)(lora), 1, (ctypes.c_float * 1)(scale)):
                raise InvalidModelFile(f"llama.cpp could not apply the adapter {adapter} to {path}")
        batch = llama_cpp.llama_batch_init(window, 0, 1)
        n_vocab = model.n_vocab()
        for done, (tokens, rows) in enumerate(zip(held.sequences, held.rows), 1):
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx.ctx), True)
            wanted = set(rows)
            batch.n_tokens = len(tokens)
            for i, token in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, i in wanted
                batch.seq_id[i][0] = 0
            if llama_cpp.llama_decode(ctx.ctx, batch) != 0:
                raise InvalidModelFile(f"llama.cpp could not evaluate {len(tokens)} tokens with {path}")
            block = _log_softmax(np.stack([np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.ctx, row),
                                                                 shape=(n_vocab,)) for row in rows]))
            if step is not None:
                step(done)
            yield block
    finally:
        if batch is not None:
            llama_cpp.llama_batch_free(batch)
        if ctx is not None:
            ctx.close()
        if lora:
            llama_cpp.llama_adapter_lora_free(lora)
        model.close()


def compare(reference: list, other: Iterator) -> tuple[float, float, int]:
    """(top-1 agreement, mean KL(reference || other), positions) of aligned log-prob blocks."""
    import numpy as np

    agree = kl = 0.0
    count = 0
    for kept, lp in zip(reference, other, strict=True):
        ref = kept.astype(np.float64)
        agree += float((ref.argmax(axis=1) == lp.argmax(axis=1)).sum())
        kl += float((np.exp(ref) * (ref - lp)).sum())
        count += len(ref)
    return agree / count, max(kl / count, 0.0), count


def check_export(reference: Path, exported: Path, base: tuple[Path, Path | None, float], held: HeldOut,
                 quant: str, *, threads: int | None = None,
                 say: Callable[[str], None] = lambda text: None) -> Fidelity:
    """Compare ``exported`` and the base (path, adapter, scale) with ``reference`` on ``held``.

    The reference is evaluated first and its blocks kept (float32); each other model then streams.
    """
    import numpy as np

    started = time.perf_counter()
    n = len(held.sequences)

    def step(what: str) -> Callable[[int], None]:
        return lambda done: say(f"{what}: sample {done}/{n}") if done in (1, n) or done % 4 == 0 else None

    say(f"checking the export on {plural(n, 'held-out sample')} from {held.data}: "
        "the reference (f16 merge), the export and the base, one at a time")
    kept = [block.astype(np.float32)
            for block in log_probs(reference, held, threads=threads, step=step("reference (base + adapter)"))]
    agreement, kl, positions = compare(kept, log_probs(exported, held, threads=threads, step=step(f"export ({quant})")))
    base_path, adapter, scale = base
    base_agreement, base_kl, _ = compare(kept, log_probs(base_path, held, adapter=adapter, scale=scale,
                                                         threads=threads, step=step("base alone")))
    retained, word = verdict(kl, base_kl)
    return Fidelity(quant=quant, data=held.data, samples=n, positions=positions, agreement=agreement, kl=kl,
                    base_agreement=base_agreement, base_kl=base_kl, retained=retained, verdict=word,
                    seconds=round(time.perf_counter() - started, 2))


class NotChecked(MistralkitError):
    """The export could not be checked (no held-out data); the reason is the message."""


def prove(source: Path, base: LocalModel, reference: Path, exported: Path, quant: str, tokenizer: str | None,
          *, threads: int | None = None, say: Callable[[str], None] = lambda text: None) -> Fidelity:
    """``check_export`` on the held-out samples of the run ``source``, encoded as training encoded them."""
    from ..models.runs import summary
    from ..models.store import resolve
    from .arch import default_tokenizer
    from .export import export_gguf_adapter

    samples, data = held_out_samples(Path(source))
    if samples is None:
        raise NotChecked(data)
    hyper = (summary(Path(source)) or {}).get("hyperparameters") or {}
    held = encode_held_out(samples, data, base, tokenizer or default_tokenizer(base), hyper)
    if held is None:
        raise NotChecked(f"no sample of {data} has an answer token within {WINDOW} tokens")
    if base.format == "gguf":
        return check_export(reference, exported, (base.path, None, 1.0), held, quant, threads=threads, say=say)
    # An HF base has no GGUF: the f16 merge minus the adapter (applied at scale -1) is the base.
    negated = reference.with_name(f"{reference.name}.adapter.tmp")
    try:
        export_gguf_adapter(Path(source), resolve(str(reference)), negated, "f32")
        return check_export(reference, exported, (reference, negated, -1.0), held, quant, threads=threads, say=say)
    finally:
        negated.unlink(missing_ok=True)
