"""The RAM planner: how much memory a GGUF model needs on a CPU before it is loaded.

A plan adds up what the process really touches (peak RSS), part by part:

- **weights**: the whole GGUF file, memory-mapped and read in at load.
- **repacked**: llama.cpp on AVX2/NEON CPUs copies Q4_0/Q4_K/IQ4_NL matrices into a faster layout
  in anonymous memory. The file pages behind them stay mapped but clean: they count in peak RSS
  and the kernel drops them under pressure, so ``total`` leaves them out, ``peak_rss`` keeps them.
- **kv_cache**: layers x cells x (key + value length) x KV heads x bytes per element (f16 = 2,
  q8_0 = 34/32, q4_0 = 18/32). The engine keeps full-size sliding-window caches (``swa_full``),
  so every layer holds ``n_ctx`` cells, rounded up to 256 as llama.cpp does.
- **compute**: the part of llama.cpp's compute buffer a full micro-batch (512 tokens) at a full
  context really writes: activations, the attention masks and, without flash attention (one slot
  with an f16 cache), the attention scores; plus the last token's logits. Flash attention is on
  for a quantized cache and for several slots (``flash_attention``), whose plans drop the scores.
- **overhead**: Python with mistralkit and llama.cpp loaded, llama.cpp's vocabulary tables, and
  mistral-common's tokenizer for Mistral models.

Constants were measured with ``bench/memory_plan.py`` on the bundled Gemma 3 270M and checked on
a random llama-architecture GGUF with 32 heads and grouped KV heads (``--synthetic-llama``); the
formula uses only shapes from the GGUF header (or the catalog), so it carries over to other models.

>>> from mistralkit.models import catalog
>>> shape = ModelShape.from_catalog(*catalog.lookup("mistral-7b-instruct-v0.3"))
>>> round(plan(shape, 4096).kv_cache / MIB)
512
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import InsufficientMemory, InvalidParameter
from ..settings import KV_TYPES
from .catalog import CatalogEntry
from .gguf_info import GGUFInfo, tensor_nbytes

MIB = 1 << 20
GIB = 1 << 30
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # bytes per element
CELL_PAD = 256  # llama.cpp rounds the cache size and the attended cells up to this
UBATCH = 512  # the engine's micro-batch (llama-cpp-python's n_ubatch default)

# Calibrated on the bundled model (bench/memory_plan.py); see the module docstring.
RUNTIME = 72 * MIB  # python + mistralkit + numpy + llama.cpp libraries, before any model
PER_VOCAB_TOKEN = 200  # llama.cpp's token tables and llama-cpp-python's candidates array
PER_MERGE = 120  # a BPE merge in llama.cpp's rank map (estimate: no BPE model measured here)
MISTRAL_TOKENIZER = {"tekken": 106 * MIB, "tekken-v7": 106 * MIB}  # mistral-common in memory; the others ~10 MiB
# Without flash attention: the f32 KQ scores (1), plus the f16 copy of them (0.5) that ggml's CPU
# matmul makes for KQ.V in its work buffer. Measured: 1.48 (32 heads), 1.6 (Gemma, 4 heads).
SCORE_COPIES = 1.5

# GGML type ids that llama.cpp's CPU backend repacks (x86 AVX2 or ARM NEON builds).
REPACKED_TYPES = {2: "q4_0", 12: "q4_k", 20: "iq4_nl"}
# Share of a catalog file's bytes in those types, for files not downloaded yet.
REPACK_SHARE = {"q4_0": 0.93, "iq4_nl": 0.93, "q4_k_s": 0.9, "q4_k_m": 0.77, "q3_k_m": 0.39,
                "q3_k_l": 0.35}
# Gemma-style interleaving: one full-attention layer every N layers, the rest use the window.
SWA_PERIOD = {"gemma2": 2, "gemma3": 6, "cohere2": 4}


def cpu_repacks() -> bool:
    """Whether llama.cpp's CPU backend will repack 4-bit matrices on this machine."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return any(line.startswith("flags") and " avx2" in line for line in handle)
    except OSError:
        return False


@dataclass(frozen=True)
class ModelShape:
    """The numbers a plan needs, from a GGUF header or a catalog entry."""

    title: str
    layers: int
    heads: int
    kv_heads: int
    key_length: int
    value_length: int
    embedding: int
    feed_forward: int
    vocab: int
    context_length: int
    weights: int  # bytes of the GGUF file
    repacked: int = 0  # bytes llama.cpp copies into its repacked layout
    sliding_window: int = 0
    swa_layers: int = 0
    merges: int = 0
    mistral_tokenizer: str | None = None
    source: str = "gguf"  # or "catalog"
    tied: bool = False  # the output projection is the token embedding (no output.weight)

    @classmethod
    def from_gguf(cls, info: GGUFInfo, title: str | None = None,
                  mistral_tokenizer: str | None = None) -> ModelShape:
        arch = info.architecture
        get = lambda key, default=None: info.get(f"{arch}.{key}", default)  # noqa: E731
        layers, embedding = int(get("block_count", 0)), int(get("embedding_length", 0))
        heads = _per_layer_max(get("attention.head_count", 1))
        kv_heads = _per_layer_max(get("attention.head_count_kv", heads))
        head_dim = embedding // max(heads, 1)
        window = int(get("attention.sliding_window", 0) or 0)
        period = SWA_PERIOD.get(arch, 0)
        repacked = sum(tensor_nbytes(t) for t in info.tensors
                       if t.ggml_type in REPACKED_TYPES and len(t.shape) == 2
                       and not t.name.startswith("token_embd")) if cpu_repacks() else 0
        return cls(
            title=title or info.name or info.path.stem, layers=layers, heads=heads,
            kv_heads=kv_heads, key_length=int(get("attention.key_length", head_dim)),
            value_length=int(get("attention.value_length", head_dim)), embedding=embedding,
            feed_forward=_per_layer_max(get("feed_forward_length", 4 * embedding)),
            vocab=info.vocab_size or int(get("vocab_size", 0)),
            context_length=info.context_length or 0, weights=info.file_size, repacked=repacked,
            sliding_window=window, swa_layers=layers - layers // period if window and period else 0,
            merges=info.array_lengths.get("tokenizer.ggml.merges", 0),
            mistral_tokenizer=mistral_tokenizer, tied=not any(t.name == "output.weight" for t in info.tensors),
        )

    @classmethod
    def from_model(cls, model) -> ModelShape:
        """From a ``store.LocalModel`` holding a GGUF file."""
        title = None
        if model.entry and model.quant:
            title = f"{model.entry.title} {model.quant.upper()}"
        return cls.from_gguf(model.info, title, model.mistral_tokenizer)

    @classmethod
    def from_catalog(cls, entry: CatalogEntry, quant: str) -> ModelShape:
        if entry.arch is None:
            raise InvalidParameter(f"the catalog has no shapes for {entry.name}",
                                   hint=f"pull it (`mistralkit models pull {entry.ref(quant)}`) "
                                        "and plan from the file")
        a = entry.arch
        shape = cls(
            title=entry.title, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads,
            key_length=a.head_dim, value_length=a.head_dim, embedding=a.embedding,
            feed_forward=int(3.5 * a.embedding),  # the catalog has no FFN width: Mistral's ratio
            vocab=a.vocab, context_length=entry.context_length, weights=0,
            sliding_window=a.sliding_window, swa_layers=a.swa_layers,
            mistral_tokenizer=entry.mistral_tokenizer, source="catalog",
        )
        return with_quant(shape, entry, quant)


def _per_layer_max(value: Any) -> int:
    """GGUF stores some per-layer values as arrays; plans use the largest (the safe side)."""
    return int(max(value)) if isinstance(value, list) else int(value)


def with_quant(shape: ModelShape, entry: CatalogEntry, quant: str) -> ModelShape:
    """``shape`` with the weights of ``entry``'s ``quant`` file (its size from the catalog)."""
    size = entry.files[quant].size
    repacked = int(REPACK_SHARE.get(quant, 0.0) * size) if cpu_repacks() else 0
    return replace(shape, title=f"{entry.title} {quant.upper()}", weights=size, repacked=repacked)


@dataclass(frozen=True)
class Plan:
    """Predicted memory, in bytes, of a model loaded with ``n_ctx`` and a ``kv_type`` cache, for
    ``parallel`` sequences at once (each with the whole ``n_ctx``: the engine's KV cache holds
    ``parallel x n_ctx`` cells)."""

    n_ctx: int
    kv_type: str
    flash_attn: bool
    weights: int
    repacked: int
    kv_cache: int
    compute: int
    overhead: int
    parallel: int = 1

    @property
    def total(self) -> int:
        """What must stay in RAM (the kernel may drop the file pages behind repacked weights)."""
        return self.weights + self.kv_cache + self.compute + self.overhead

    @property
    def peak_rss(self) -> int:
        """What ``ps``/``top`` will show at the peak on a machine with memory to spare."""
        return self.total + self.repacked

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total, "peak_rss": self.peak_rss}


def _pad(n: int) -> int:
    return -(-n // CELL_PAD) * CELL_PAD


def kv_cache_bytes(shape: ModelShape, n_ctx: int, kv_type: str = "f16",
                   swa_full: bool = True) -> int:
    cells = _pad(n_ctx)
    swa_cells = cells if swa_full else min(cells, _pad(shape.sliding_window + UBATCH))
    per_cell = shape.kv_heads * (shape.key_length + shape.value_length) * KV_BYTES[kv_type]
    full_layers = shape.layers - shape.swa_layers
    return int(per_cell * (full_layers * cells + shape.swa_layers * swa_cells))


def flash_attention(kv_type: str, parallel: int, speculative: bool = False) -> bool:
    """Whether the engine's context runs flash attention (the plan counts its layout).

    A quantized V cache needs it (llama.cpp refuses one without). Several sequences need it too:
    they share one unified cache, and ggml's CPU flash-attention kernel skips the cells a query's
    mask hides (the other sequences'), where the plain path multiplies every query by every cell
    (`bench/serve_throughput.py`, 4 clients, counting: 0.86x llama-server without, 1.00-1.02x
    with). For one sequence it saves nothing and was slower on short prompts at depth
    (docs/batching.md), and llama-cpp-python's ``Llama``, which eval is checked against, runs
    without it. Speculative decoding needs it: a verifying call of 2-3 rows computes each row's
    attention with the same bits as one-row decoding only through it (docs/speculative.md).
    """
    return kv_type != "f16" or parallel > 1 or speculative


def compute_bytes(shape: ModelShape, n_ctx: int, flash_attn: bool, used: int | None = None,
                  outputs: int = 1) -> int:
    """Compute memory written at the peak: a full micro-batch once ``used`` cells are filled;
    ``outputs`` logits rows a step (one per sequence decoded together)."""
    used = min(used or n_ctx, n_ctx)
    tokens, cells = min(UBATCH, used), min(_pad(n_ctx), _pad(used))
    # f32 activations alive at once: residual stream and norms, FFN gate/up/product, q/k/v.
    per_token = (4 * shape.embedding + 3 * shape.feed_forward
                 + (shape.heads + 2 * shape.kv_heads) * shape.key_length)
    # Per (token, cell): a mask per attention kind (f16 with flash attention, else f32) and,
    # without flash attention, the score matrices of every head.
    masks = 2 if 0 < shape.swa_layers < shape.layers else 1
    per_score = masks * 2 if flash_attn else masks * 4 + SCORE_COPIES * shape.heads * 4
    logits = (outputs + 1) * shape.vocab * 4  # the output buffer and the rows in the graph
    return int(tokens * per_token * 4 + tokens * cells * per_score + logits)


def overhead_bytes(shape: ModelShape) -> int:
    tokenizer = 0
    if shape.mistral_tokenizer:
        tokenizer = MISTRAL_TOKENIZER.get(shape.mistral_tokenizer, 10 * MIB)
    return RUNTIME + shape.vocab * PER_VOCAB_TOKEN + shape.merges * PER_MERGE + tokenizer


def plan(shape: ModelShape, n_ctx: int, kv_type: str = "f16", used: int | None = None, parallel: int = 1) -> Plan:
    """Peak memory of ``shape`` at ``n_ctx`` once ``used`` cells are filled (default: all of them),
    with ``parallel`` sequences (``--parallel``), each of up to ``n_ctx`` tokens.

    >>> from mistralkit.models import catalog
    >>> p = plan(ModelShape.from_catalog(*catalog.lookup("gemma-3-270m")), 2048, "q8_0")
    >>> p.kv_cache == 18 * 2048 * 512 * 34 // 32
    True
    """
    if kv_type not in KV_BYTES:
        raise InvalidParameter(f"KV cache type {kv_type!r}: must be one of {', '.join(KV_TYPES)}")
    if n_ctx < 1:
        raise InvalidParameter(f"context size {n_ctx}: must be at least 1 token", hint="pass --ctx 512 or more")
    if parallel < 1:
        raise InvalidParameter(f"parallel {parallel}: must be at least 1")
    flash_attn = flash_attention(kv_type, parallel)
    cells = n_ctx * parallel  # one unified cache for all the sequences
    return Plan(n_ctx=n_ctx, kv_type=kv_type, flash_attn=flash_attn, weights=shape.weights,
                repacked=shape.repacked, kv_cache=kv_cache_bytes(shape, cells, kv_type),
                compute=compute_bytes(shape, cells, flash_attn, used, outputs=parallel),
                overhead=overhead_bytes(shape), parallel=parallel)


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"4G"``, ``"3.5GB"``, ``"512M"``, ``"4GiB"`` -> bytes. Units are binary, as RAM is sold.

    >>> parse_size("4G") == 4 * GIB, parse_size("512M"), parse_size("1000")
    (True, 536870912, 1000)
    """
    match = _SIZE.fullmatch(str(text))
    if not match:
        raise InvalidParameter(f"cannot read the size {text!r}",
                               hint="write it like 4G, 3.5GB or 512M")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def format_size(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def available_memory() -> int:
    """Bytes a new process can use now: the OS's available memory, or less under a cgroup limit."""
    import psutil

    available = psutil.virtual_memory().available
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="utf-8") as handle:
            limit = handle.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="utf-8") as handle:
            current = int(handle.read())
        if limit != "max":
            available = min(available, int(limit) - current)
    except (OSError, ValueError):
        pass
    return max(available, 0)


def _own_rss() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm", encoding="utf-8") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


DEFAULT_CTX = 4096  # the context window when none is asked for (the model's own when smaller)


def default_context(context_length: int | None) -> int:
    return min(DEFAULT_CTX, context_length or DEFAULT_CTX)


def context_size(name: str, limit: int | None, requested: int | None) -> int:
    """The window to load ``name`` with: ``requested`` checked against the model's context length
    ``limit``, else the default. Every engine, the server and the planner use this one rule."""
    if requested is None:
        return default_context(limit)
    if requested < 1:
        raise InvalidParameter(f"--ctx {requested}: must be >= 1", hint="use --ctx 4096, for example")
    if limit and requested > limit:
        raise InvalidParameter(f"--ctx {requested} is larger than {name}'s context length ({limit} tokens)",
                               hint=f"use --ctx {limit} or less")
    return requested


def check_before_load(model, n_ctx: int | None, kv_type: str = "f16",
                      strict: bool = False, parallel: int = 1) -> str | None:
    """A warning when ``model`` (a LocalModel) would not fit in available memory, else None.

    With ``strict`` it raises ``InsufficientMemory`` instead of warning. Only ``Plan.total``
    counts: the file pages behind repacked weights can be dropped by the kernel.
    """
    if model.format != "gguf" or model.info is None:
        return None
    shape = ModelShape.from_model(model)
    n_ctx = n_ctx or default_context(shape.context_length)
    needed = plan(shape, n_ctx, kv_type, parallel=parallel)
    # This process already holds the runtime part of the overhead.
    missing = needed.total - min(_own_rss(), RUNTIME) - available_memory()
    if missing <= 0:
        return None
    message = (f"{shape.title} needs ~{format_size(needed.total)} at {n_ctx} context "
               f"({kv_type} KV cache), {format_size(missing)} more than the memory available now")
    hint = (f"try --kv-type q8_0 or a smaller --ctx; `mistralkit models fit {model.name}` "
            "lists what fits")
    if strict:
        raise InsufficientMemory(message, hint=hint)
    return f"{message}; {hint} (--strict-memory refuses instead of warning)"

