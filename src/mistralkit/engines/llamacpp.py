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
from .base import Chunk, FinishReason, GenerationParams, Request, Usage
from .stops import StopMatcher

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
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def gpu_layers(device: str, requested: int | None) -> int:
    """Layers to offload: none on CPU, all when the build can offload, unless the user says."""
    import llama_cpp

    has_gpu = bool(llama_cpp.llama_supports_gpu_offload())
    if device == "cpu":
        return 0
    if device == "gpu" and not has_gpu:
        raise InvalidParameter(
            "device=gpu, but this llama-cpp-python build has no GPU support",
            hint="reinstall it with CMAKE_ARGS='-DGGML_CUDA=on', or use --device cpu",
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


def _utf8(text: str) -> bytes:
    """The bytes llama.cpp tokenizes; text with lone surrogates is refused (edges check it first)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        check(text, "prompt")
        raise


def _grammar(gbnf: str | None):
    if gbnf is None:
        return None
    from llama_cpp import LlamaGrammar

    try:
        return LlamaGrammar.from_string(gbnf, verbose=False)
    except ValueError as exc:
        raise InvalidParameter(f"the output grammar does not parse: {exc}") from exc


class LlamaCppEngine:
    """``Engine`` over one loaded GGUF. Not thread-safe: one generation at a time."""

    def __init__(self, model: LocalModel, *, n_ctx: int | None = None, threads: int | None = None,
                 n_gpu_layers: int | None = None, device: str = "auto", mmap: bool = True,
                 mlock: bool = False, kv_type: str = "f16", adapter: str | None = None) -> None:
        import llama_cpp

        if kv_type not in GGML_KV_TYPES:
            raise InvalidParameter(f"kv_type={kv_type!r}: must be one of {', '.join(GGML_KV_TYPES)}")

        route_native_logs()
        self.model = model
        self.n_ctx = context_size(model, n_ctx)
        self.threads = threads or default_threads()
        self.n_gpu_layers = gpu_layers(device, n_gpu_layers)
        self.kv_type = kv_type
        check_loadable(model.path, model.info, adapter)
        started = time.perf_counter()
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(model.path), n_ctx=self.n_ctx, n_threads=self.threads,
                n_threads_batch=self.threads, n_gpu_layers=self.n_gpu_layers, use_mmap=mmap,
                use_mlock=mlock, swa_full=True, verbose=False, type_k=GGML_KV_TYPES[kv_type],
                type_v=GGML_KV_TYPES[kv_type], flash_attn=kv_type != "f16", lora_path=adapter,
            )
        except (ValueError, RuntimeError) as exc:
            raise InvalidModelFile(
                f"llama.cpp could not load {model.path}: {exc}",
                hint="the file may be corrupt or need a newer llama.cpp; download it again",
            ) from exc
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

    def prompt_tokens(self, request: Request) -> list[int]:
        if isinstance(request, str):
            return self.format.encode([{"role": "user", "content": request}])
        if request and isinstance(request[0], int):
            return list(request)  # already tokens
        return self.format.encode(request)  # type: ignore[arg-type]

    def generate(self, request: Request, params: GenerationParams,
                 cancel: threading.Event | None = None) -> Iterator[Chunk]:
        tokens = self.prompt_tokens(request)
        if len(tokens) >= self.n_ctx:
            raise ContextOverflow(
                f"the prompt is {len(tokens)} tokens but the context window holds {self.n_ctx}",
                hint="shorten the prompt or raise --ctx",
            )
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
            repeat_penalty=params.repeat_penalty, reset=True, grammar=_grammar(params.grammar),
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher((*params.stop, *self.format.stop_strings))
        stop_ids = self.format.stop_token_ids
        usage = Usage(prompt_tokens=len(tokens), cached_tokens=min(cached, len(tokens) - 1))
        finish: FinishReason = "length"
        started = time.perf_counter()
        try:
            for token in stream:
                if not usage.ttft_s:
                    usage.ttft_s = time.perf_counter() - started
                if token in stop_ids or self._is_eog(token):
                    finish = "stop"
                    break
                usage.completion_tokens += 1
                text, hit = stops.feed(decoder.decode(self._llm.detokenize([token])))
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

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()

