"""The llama.cpp engine (llama-cpp-python): GGUF inference on CPU, or GPU when the build has it.

Prompt tokens from the model's ChatFormat go straight to ``Llama.generate``, which keeps the KV
cache of the previous call and evaluates only the part of the new prompt that differs, so turn 10
of a chat costs about what turn 1 costs. ``swa_full`` keeps the whole cache of sliding-window
layers (Gemma 3), without which llama.cpp cannot roll such a cache back to a shared prefix.
A quantized KV cache (``kv_type`` q8_0 or q4_0) turns flash attention on: llama.cpp refuses a
quantized V cache without it.
"""

from __future__ import annotations

import codecs
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence

from .. import formats
from ..errors import ContextOverflow, InvalidModelFile, InvalidParameter
from ..formats.base import Message
from ..models.checks import check_loadable
from ..models.store import LocalModel
from ..text import check
from .base import Capabilities, Chunk, EngineBase, FinishReason, GenerationParams, Request, Usage, check_fits
from .stops import JsonEnd, StopMatcher

log = logging.getLogger(__name__)

DEFAULT_CTX = 4096
# KV cache element type -> GGML type id (llama_cpp.GGML_TYPE_F16, _Q8_0, _Q4_0).
GGML_KV_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}


# ggml_log_level: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 = continues the previous message.
_LLAMA_LOG_LEVELS = {0: logging.CRITICAL, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_native_log = logging.getLogger("llama.cpp")
_log_callback = None  # kept referenced: llama.cpp holds a raw pointer to it


def route_native_logs() -> None:
    """Send llama.cpp's own messages to Python logging (file, and console at --log-level)."""
    global _log_callback
    import ctypes

    import llama_cpp

    if _log_callback is not None:
        return
    last = [logging.DEBUG]

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level != 5:  # 5 continues the previous message
            last[0] = _LLAMA_LOG_LEVELS.get(level, logging.DEBUG)
        message = text.decode("utf-8", errors="replace").rstrip()
        if message:
            _native_log.log(last[0], message)

    _log_callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def default_threads() -> int:
    """Physical cores this process may use: llama.cpp's advice for decode (a second hyperthread on a
    core adds memory traffic, not speed)."""
    import psutil

    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        allowed = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or allowed
    logical = psutil.cpu_count(logical=True) or allowed
    # An affinity mask narrower than the machine: assume it keeps the same share of physical cores.
    return max(1, min(allowed, round(allowed * physical / logical)))


def gpu_layers(device: str, requested: int | None) -> int:
    """Layers to offload: none on CPU, all when the build can offload, unless the user says."""
    import llama_cpp

    has_gpu = bool(llama_cpp.llama_supports_gpu_offload())
    if device == "cpu":
        return 0
    if device in ("gpu", "cuda", "mps") and not has_gpu:
        backend = "-DGGML_METAL=on" if device == "mps" else "-DGGML_CUDA=on"
        raise InvalidParameter(
            f"device={device}, but this llama-cpp-python build has no GPU support",
            hint=f"reinstall it with CMAKE_ARGS='{backend}', or use --device cpu",
        )
    if requested is not None:
        return requested
    return -1 if has_gpu else 0


def context_size(model: LocalModel, requested: int | None) -> int:
    limit = model.info.context_length
    if requested is None:
        return min(DEFAULT_CTX, limit or DEFAULT_CTX)
    if limit and requested > limit:
        raise InvalidParameter(
            f"--ctx {requested} is larger than {model.name}'s context length ({limit} tokens)",
            hint=f"use --ctx {limit} or less",
        )
    return requested


ROWS_PER_STEP = 64  # logits rows turned to float64 at a time (a row is vocabulary-sized)


def log_softmax_rows(rows, targets: Sequence[int]) -> list[float]:
    """log_softmax(rows[i])[targets[i]] for each row, in float64, stable (max subtracted)."""
    import numpy as np

    out: list[float] = []
    for first in range(0, len(targets), ROWS_PER_STEP):
        block = np.asarray(rows[first:first + ROWS_PER_STEP], dtype=np.float64)
        picked = np.asarray(targets[first:first + ROWS_PER_STEP])
        peak = block.max(axis=1, keepdims=True)
        lse = peak[:, 0] + np.log(np.exp(block - peak).sum(axis=1))
        out.extend((block[np.arange(len(picked)), picked] - lse).tolist())
    return out


def _utf8(text: str) -> bytes:
    """The bytes llama.cpp tokenizes; text with lone surrogates is refused (edges check it first)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        check(text, "prompt")
        raise


def _bias(logit_bias: Sequence[tuple[int, float]], n_vocab: int):
    """A logits processor adding ``logit_bias`` (token id -> bias) before sampling; None without one."""
    if not logit_bias:
        return None
    import numpy as np
    from llama_cpp import LogitsProcessorList

    for token, _ in logit_bias:
        if not 0 <= token < n_vocab:
            raise InvalidParameter(f"logit_bias: token {token} is not in the vocabulary (0..{n_vocab - 1})")
    ids = np.array([t for t, _ in logit_bias])
    values = np.array([b for _, b in logit_bias], dtype=np.float32)

    def add(_input_ids, scores):
        scores[ids] += values
        return scores

    return LogitsProcessorList([add])


def _grammar(gbnf: str | None):
    if gbnf is None:
        return None
    from llama_cpp import LlamaGrammar

    try:
        return LlamaGrammar.from_string(gbnf, verbose=False)
    except ValueError as exc:
        raise InvalidParameter(f"the output grammar does not parse: {exc}") from exc


def open_llama(model: LocalModel, *, n_ctx: int, threads: int | None = None, adapter: str | None = None,
               purpose: str = "", **options):
    """The one place a ``llama_cpp.Llama`` is made: file checks, native logs, and errors for people.

    ``options`` go to ``Llama`` as they are (``embedding=True``, ``logits_all=True``, ``n_batch``...).
    """
    import llama_cpp

    check_loadable(model.path, model.info, adapter)
    route_native_logs()
    threads = threads or default_threads()
    try:
        return llama_cpp.Llama(model_path=str(model.path), n_ctx=n_ctx, n_threads=threads,
                               n_threads_batch=threads, verbose=False, lora_path=adapter, **options)
    except (ValueError, RuntimeError) as exc:
        raise InvalidModelFile(
            f"llama.cpp could not load {model.path}{purpose}" + (f" with the adapter {adapter}" if adapter else "")
            + f": {exc}",
            hint=("check that the adapter was exported for this base model" if adapter
                  else "the file may be corrupt or need a newer llama.cpp; download it again"),
        ) from exc


class LlamaCppEngine(EngineBase):
    """``Engine`` over one loaded GGUF. Not thread-safe: one generation at a time.

    ``all_logits`` keeps every position's logits (perplexity scores a whole window in one pass;
    it costs n_ctx x vocabulary floats, so chat engines leave it off).
    """

    kind = "llama.cpp"
    capabilities = Capabilities(tokens=True, logprobs=True, grammar=True, adapters=True)

    def __init__(self, model: LocalModel, *, n_ctx: int | None = None, threads: int | None = None,
                 n_gpu_layers: int | None = None, device: str = "auto", mmap: bool = True,
                 mlock: bool = False, kv_type: str = "f16", adapter: str | None = None,
                 n_batch: int | None = None, all_logits: bool = False) -> None:
        import llama_cpp

        if kv_type not in GGML_KV_TYPES:
            raise InvalidParameter(f"kv_type={kv_type!r}: must be one of {', '.join(GGML_KV_TYPES)}")

        self.model = model
        self.name = model.name
        self.n_ctx = context_size(model, n_ctx)
        self.threads = threads or default_threads()
        self.n_gpu_layers = gpu_layers(device, n_gpu_layers)
        self.kv_type = kv_type
        self.all_logits = all_logits
        started = time.perf_counter()
        self._llm = open_llama(
            model, n_ctx=self.n_ctx, threads=self.threads, adapter=adapter, n_gpu_layers=self.n_gpu_layers,
            use_mmap=mmap, use_mlock=mlock, swa_full=True, type_k=GGML_KV_TYPES[kv_type],
            type_v=GGML_KV_TYPES[kv_type], flash_attn=kv_type != "f16", logits_all=all_logits,
            **({"n_batch": n_batch} if n_batch else {}),
        )
        self.load_s = time.perf_counter() - started
        vocab = self._llm._model.vocab
        self._is_eog = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        bos, eos = self._llm.token_bos(), self._llm.token_eos()
        self.bos_id = bos if bos >= 0 else None
        self.eos_id = eos if eos >= 0 else None
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.format = formats.select(model, self)
        log.info("loaded %s in %.2fs (ctx %d, kv %s, threads %d, gpu layers %d, format %s)", model.path,
                 self.load_s, self.n_ctx, kv_type, self.threads, self.n_gpu_layers, self.format.name)

    # Tokenizer protocol, used by formats that render text.
    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return self._llm.tokenize(_utf8(text), add_bos=False, special=special)

    def token_text(self, token_id: int) -> str:
        return self._llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    def check_grammar(self, gbnf: str) -> None:
        """Refuse GBNF that llama.cpp cannot compile (it would crash while sampling, not raise)."""
        import llama_cpp

        vocab = self._llm._model.vocab
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            raise InvalidParameter("the requested output format cannot be turned into a grammar llama.cpp accepts",
                                   hint="simplify the JSON schema (e.g. no empty enum)")
        llama_cpp.llama_sampler_free(sampler)

    def encode_text(self, text: str) -> list[int]:
        """Raw text (a completion prompt, no chat format) to tokens, with BOS when the model wants it."""
        return self._llm.tokenize(_utf8(text), add_bos=self.add_bos, special=False)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.format.encode(messages))

    def logprobs(self, tokens: Sequence[int], start: int) -> list[float]:
        """log P(tokens[i] | tokens[:i]) for i >= start, on a fresh cache (the next chat re-evaluates).

        With ``all_logits`` one pass gives every row; otherwise the prefix is evaluated once and
        the rest token by token, reading the last row each time.
        """
        import numpy as np

        tokens = list(tokens)
        if not 1 <= start < len(tokens):
            raise InvalidParameter(f"logprobs: start {start} must be in 1..{len(tokens) - 1}")
        if len(tokens) > self.n_ctx:
            raise ContextOverflow(f"{len(tokens)} tokens to score but the context window holds {self.n_ctx}",
                                  hint="shorten the text or raise --ctx")
        llm = self._llm
        llm.reset()  # the next eval starts the KV cache from position 0
        if self.all_logits:
            llm.eval(tokens[:-1])
            return log_softmax_rows(llm.scores[start - 1: len(tokens) - 1], tokens[start:])
        llm.eval(tokens[:start])
        out = []
        for i in range(start, len(tokens)):
            row = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
            out.extend(log_softmax_rows(row[None, :], [tokens[i]]))
            if i + 1 < len(tokens):
                llm.eval([tokens[i]])
        return out

    def prompt_tokens(self, request: Request) -> list[int]:
        if isinstance(request, str):
            return self.format.encode([{"role": "user", "content": request}])
        if request and isinstance(request[0], int):
            return list(request)  # already tokens
        return self.format.encode(request)  # type: ignore[arg-type]

    def generate(self, request: Request, params: GenerationParams,
                 cancel: threading.Event | None = None) -> Iterator[Chunk]:
        tokens = self.prompt_tokens(request)
        check_fits(tokens, self.n_ctx)
        return self._stream(tokens, params, cancel)

    def _stream(self, tokens: list[int], params: GenerationParams,
                cancel: threading.Event | None) -> Iterator[Chunk]:
        import llama_cpp

        if params.grammar is not None:
            self.check_grammar(params.grammar)
        budget = min(params.max_tokens, self.n_ctx - len(tokens))
        cached = self._llm.longest_token_prefix(self._llm._input_ids, tokens)
        self._llm.set_seed(params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        stream = self._llm.generate(
            tokens, top_k=params.top_k, top_p=params.top_p, min_p=params.min_p,
            temp=0.0 if params.is_greedy else params.temperature,
            repeat_penalty=params.repeat_penalty, frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty, reset=True, grammar=_grammar(params.grammar),
            logits_processor=_bias(params.logit_bias, self._llm.n_vocab()),
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher((*params.stop, *self.format.stop_strings))
        stop_ids = self.format.stop_token_ids
        json_end = JsonEnd() if params.json_end else None
        usage = Usage(prompt_tokens=len(tokens), cached_tokens=min(cached, len(tokens) - 1))
        finish: FinishReason = "length"
        started = time.perf_counter()
        try:
            for token in stream:
                if not usage.ttft_s:
                    usage.ttft_s = time.perf_counter() - started
                if not params.ignore_eos and (token in stop_ids or self._is_eog(token)):
                    finish = "stop"
                    break
                usage.completion_tokens += 1
                piece = decoder.decode(self._llm.detokenize([token]))
                closed = False
                if json_end is not None:
                    piece, closed = json_end.feed(piece)
                text, hit = stops.feed(piece)
                if closed and not hit:
                    text, hit = text + stops.flush(), True
                if text:
                    yield Chunk(text, (token,))
                if hit:
                    finish = "stop"
                    break
                if usage.completion_tokens >= budget:
                    break
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
        finally:
            stream.close()
        usage.total_s = time.perf_counter() - started
        # After a stop string, flush() is empty: the matcher already dropped the stop and what followed.
        yield Chunk(stops.flush() + decoder.decode(b"", final=True), (), finish, usage)

    def reset_cache(self) -> None:
        self._llm.reset()  # n_tokens = 0: the next prompt is evaluated from position 0

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()

