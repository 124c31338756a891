"""The llama.cpp engine (llama-cpp-python): GGUF inference on CPU, or GPU when the build has it.

Prompt tokens from the model's ChatFormat go to the context's ``Batcher`` (``engines/batch.py``):
several sequences decoded together, each slot keeping the KV cache of what it last held, so turn 10
of a chat evaluates only its new part. ``swa_full`` keeps the whole cache of sliding-window layers
(Gemma 3), without which llama.cpp cannot roll such a cache back to a shared prefix. A quantized
KV cache (``kv_type`` q8_0 or q4_0) or more than one slot turns flash attention on
(``models.memory.flash_attention`` says why).
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence

from .. import formats
from ..errors import Cancelled, ContextOverflow, InvalidModelFile, InvalidParameter
from ..formats.base import Message
from ..models.memory import context_size, flash_attention
from ..models.store import LocalModel
from ..text import check
from .llama_native import default_threads, gpu_layers, load_model
from .speculate import MODES as SPECULATIVE_MODES
from .base import (ROWS_PER_STEP, Capabilities, Chunk, EngineBase, FinishReason, GenerationParams, Request,
                   TokenLogprob, Usage, check_fits, check_ids)
from .stops import JsonEnd, StopMatcher

log = logging.getLogger(__name__)

# Placeholders of images/audio that some GGUFs type as user-defined (so llama.cpp renders them as text).
MEDIA_PLACEHOLDER = re.compile(
    rb"^(<(start|end)_of_(image|audio)>|\[multimodal\]|<image_soft_token>|<audio_soft_token>)$"
)
# KV cache element type -> GGML type id (llama_cpp.GGML_TYPE_F16, _Q8_0, _Q4_0).
GGML_KV_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}


DEFAULT_BATCH = 512  # tokens per llama_decode step (prompt chunks + one per generating sequence)


def _utf8(text: str) -> bytes:
    """The bytes llama.cpp tokenizes; text with lone surrogates is refused (edges check it first)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        check(text, "prompt")
        raise


class LlamaCppEngine(EngineBase):
    """``Engine`` over one loaded GGUF, with ``parallel`` sequences decoded together (``batch.Batcher``).

    ``generate`` may be called from several threads at once: each call is a sequence in the batch.
    The context holds ``parallel x n_ctx`` KV cells, so every sequence gets the whole window.
    ``all_logits`` lets one step score up to ``n_batch`` positions (perplexity) instead of 64 rows;
    it costs ``n_batch`` x vocabulary floats of output buffer.
    """

    kind = "llama.cpp"
    capabilities = Capabilities(tokens=True, logprobs=True, grammar=True, adapters=True)

    def __init__(self, model: LocalModel, *, n_ctx: int | None = None, threads: int | None = None,
                 n_gpu_layers: int | None = None, device: str = "auto", mmap: bool = True,
                 mlock: bool = False, kv_type: str = "f16", adapter: str | None = None,
                 n_batch: int | None = None, all_logits: bool = False, parallel: int = 1,
                 speculative: str = "off") -> None:
        import llama_cpp

        from .batch import Batcher

        if kv_type not in GGML_KV_TYPES:
            raise InvalidParameter(f"kv_type={kv_type!r}: must be one of {', '.join(GGML_KV_TYPES)}")
        if parallel < 1:
            raise InvalidParameter(f"parallel={parallel}: must be >= 1")
        if speculative not in SPECULATIVE_MODES:
            raise InvalidParameter(f"speculative={speculative!r}: must be one of {', '.join(SPECULATIVE_MODES)}")
        self.speculative = speculative
        self.model = model
        self.name = model.name
        self.n_ctx = context_size(model.name, model.info.context_length, n_ctx)
        self.threads = threads or default_threads()
        self.n_gpu_layers = gpu_layers(device, n_gpu_layers)
        self.kv_type = kv_type
        self.parallel = parallel
        self._lora = None
        started = time.perf_counter()
        self._model = load_model(model, n_gpu_layers=self.n_gpu_layers, mmap=mmap, mlock=mlock, adapter=adapter)
        try:
            self._ctx = self._context(n_batch or min(DEFAULT_BATCH, self.n_ctx), kv_type)
            if adapter:
                self._attach(adapter)
        except BaseException:
            self.close()
            raise
        self.load_s = time.perf_counter() - started
        vocab = self._model.vocab
        self._is_eog = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        bos, eos = self._model.token_bos(), self._model.token_eos()
        self.bos_id = bos if bos >= 0 else None
        self.eos_id = eos if eos >= 0 else None
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.n_vocab = self._model.n_vocab()
        self._pieces: dict[int, bytes] = {}
        self.format = formats.select(model, self)
        self.batcher = Batcher(llama_cpp, self._ctx.ctx, vocab, n_slots=parallel, n_batch=self.n_batch,
                               n_ctx_seq=self.n_ctx, rows_per_step=self.n_batch if all_logits else ROWS_PER_STEP,
                               name=model.name, kv_f16=kv_type == "f16")
        # Drafts keep the output identical only with flash attention and a cache cut at any position.
        self.can_speculate = self.batcher.can_share and flash_attention(kv_type, parallel, speculative == "ngram")
        log.info("loaded %s in %.2fs (ctx %d x %d sequences, kv %s, threads %d, gpu layers %d, format %s)",
                 model.path, self.load_s, self.n_ctx, parallel, kv_type, self.threads, self.n_gpu_layers,
                 self.format.name)

    def _context(self, n_batch: int, kv_type: str):
        import llama_cpp
        from llama_cpp._internals import LlamaContext

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx * self.parallel
        params.n_batch = params.n_ubatch = self.n_batch = n_batch
        params.n_seq_max = self.parallel
        params.kv_unified = True  # one pool of cells: mixed prompt + decode steps stay one ubatch
        params.swa_full = True  # sliding-window layers keep every position, so a slot can roll back
        params.n_threads = params.n_threads_batch = self.threads
        params.type_k = params.type_v = GGML_KV_TYPES[kv_type]
        flash = flash_attention(kv_type, self.parallel, self.speculative == "ngram")
        params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash
                                  else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)  # why: memory.flash_attention
        params.no_perf = False  # llama.cpp counts evaluated prompt tokens (tests read it)
        try:
            return LlamaContext(model=self._model, params=params, verbose=False)
        except ValueError as exc:
            raise InvalidModelFile(
                f"llama.cpp could not make a context of {self.n_ctx} x {self.parallel} tokens for {self.model.path}",
                hint="lower --ctx or --parallel") from exc

    def _attach(self, adapter: str) -> None:
        import llama_cpp

        self._lora = llama_cpp.llama_adapter_lora_init(self._model.model, adapter.encode("utf-8"))
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._lora)
        scales = (ctypes.c_float * 1)(1.0)
        if not self._lora or llama_cpp.llama_set_adapters_lora(self._ctx.ctx, adapters, 1, scales):
            raise InvalidModelFile(f"llama.cpp could not load {self.model.path} with the adapter {adapter}",
                                   hint="check that the adapter was exported for this base model")

    # Tokenizer protocol, used by formats that render text.
    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return self._model.tokenize(_utf8(text), add_bos=False, special=special)

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        """Token ids back to text (control tokens left out; ``special``: written as their text)."""
        return self._model.detokenize(check_ids(tokens, self.n_vocab, "tokens"), special=special).decode(
            "utf-8", errors="replace")

    def token_text(self, token_id: int) -> str:
        return self._model.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    def _piece(self, token: int) -> bytes:
        """The text a generated token adds: nothing for control tokens (llama.cpp's rendering) and for
        media placeholders a GGUF marks as user-defined (Gemma 3's ``<start_of_image>``), which
        unlike user-defined text tokens (Gemma's ``<table>``) are markers, not text."""
        piece = self._pieces.get(token)
        if piece is None:
            import llama_cpp

            piece = self._model.detokenize([token])
            user_defined = (
                llama_cpp.llama_vocab_get_attr(self._model.vocab, token) & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
            )
            if user_defined and MEDIA_PLACEHOLDER.match(piece):
                piece = b""
            self._pieces[token] = piece
        return piece

    def check_grammar(self, gbnf: str) -> None:
        """Refuse GBNF that llama.cpp cannot compile (it would crash while sampling, not raise)."""
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self._model.vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            raise InvalidParameter("the requested output format cannot be turned into a grammar llama.cpp accepts",
                                   hint="simplify the JSON schema (e.g. no empty enum)")
        llama_cpp.llama_sampler_free(sampler)

    def encode_text(self, text: str) -> list[int]:
        """Raw text (a completion prompt, no chat format) to tokens, with BOS when the model wants it."""
        return self._model.tokenize(_utf8(text), add_bos=self.add_bos, special=False)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.format.encode(messages))

    def logprobs(self, tokens: Sequence[int], start: int) -> list[float]:
        """log P(tokens[i] | tokens[:i]) for i >= start: a scoring sequence in the batch, rows read per step."""
        return [value for value, _ in self._scored(tokens, start, 0, None)]

    def score(self, tokens: Sequence[int], start: int, *, top: int = 0,
              cancel: threading.Event | None = None) -> list[TokenLogprob]:
        """``logprobs`` (the same sequence in the batch) with each token's text and the ``top`` best at its place."""
        scored = self._scored(tokens, start, top, cancel)
        return [TokenLogprob(self._piece(token), value, tuple((self._piece(t), v) for t, v in best))
                for token, (value, best) in zip(list(tokens)[start:], scored, strict=True)]

    def _scored(self, tokens: Sequence[int], start: int, top: int,
                cancel: threading.Event | None) -> list[tuple[float, list[tuple[int, float]]]]:
        from .batch import End, Seq

        tokens = check_ids(tokens, self.n_vocab, "tokens")
        if not 1 <= start < len(tokens):
            raise InvalidParameter(f"logprobs: start {start} must be in 1..{len(tokens) - 1}")
        if len(tokens) > self.n_ctx:
            raise ContextOverflow(f"{len(tokens)} tokens to score but the context window holds {self.n_ctx}",
                                  hint="shorten the text or raise --ctx")
        seq = Seq(tokens, score_from=start, top=top, cancel=cancel)
        self.batcher.submit(seq)
        out: list[tuple[float, list[tuple[int, float]]]] = []
        for item in self.batcher.items(seq):
            if isinstance(item, End):
                if item.reason == "cancelled":
                    raise Cancelled("the scoring stopped: its caller left")
            else:
                out.extend(item)
        return out

    def prompt_tokens(self, request: Request) -> list[int]:
        if isinstance(request, str):
            return self.format.encode([{"role": "user", "content": request}])
        if request and isinstance(request[0], int):
            return check_ids(request, self.n_vocab)  # type: ignore[arg-type]
        return self.format.encode(request)  # type: ignore[arg-type]

    def generate(self, request: Request, params: GenerationParams,
                 cancel: threading.Event | None = None) -> Iterator[Chunk]:
        tokens = self.prompt_tokens(request)
        check_fits(tokens, self.n_ctx)
        return self._stream(tokens, params, cancel)

    def _stream(self, tokens: list[int], params: GenerationParams,
                cancel: threading.Event | None) -> Iterator[Chunk]:
        import llama_cpp

        from .batch import End, Seq
        from .sampling import Sampler

        if params.grammar is not None:
            self.check_grammar(params.grammar)
        budget = min(params.max_tokens, self.n_ctx - len(tokens))
        sampler = Sampler(llama_cpp, self._model.vocab, self.n_vocab, params)
        seq = Seq(tokens, sampler, max_tokens=budget, stop_ids=frozenset(self.format.stop_token_ids),
                  ignore_eos=params.ignore_eos, cancel=cancel, drafter=self._drafter(tokens, params))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher((*params.stop, *self.format.stop_strings))
        json_end = JsonEnd() if params.json_end else None
        usage = Usage(prompt_tokens=len(tokens))
        unsent: list[int] = []  # tokens whose text is held back (a control token, a partial character, a stop)
        pending: list[TokenLogprob] = []  # their log-probabilities, when asked
        finish: FinishReason = "length"
        started = time.perf_counter()
        self.batcher.submit(seq)
        items = self.batcher.items(seq)
        try:
            for item in items:
                if not usage.ttft_s:
                    usage.ttft_s = time.perf_counter() - started
                if isinstance(item, End):
                    finish = item.reason  # type: ignore[assignment]
                    if params.logprob_of_end and item.logprobs is not None:
                        logprob, top = item.logprobs
                        pending.append(TokenLogprob(self._piece(item.token), logprob,
                                                    tuple((self._piece(t), v) for t, v in top)))
                    break
                if isinstance(item, tuple):  # (token, its log-probabilities): asked for
                    item, (logprob, top) = item
                    pending.append(TokenLogprob(self._piece(item), logprob,
                                                tuple((self._piece(t), v) for t, v in top)))
                usage.completion_tokens += 1
                piece = decoder.decode(self._piece(item))
                closed = False
                if json_end is not None:
                    piece, closed = json_end.feed(piece)
                text, hit = stops.feed(piece)
                if closed and not hit:
                    text, hit = text + stops.flush(), True
                unsent.append(item)
                if text:
                    yield Chunk(text, tuple(unsent), logprobs=tuple(pending))
                    pending.clear()
                    unsent.clear()
                if hit:
                    finish = "stop"
                    pending.clear()  # the stop string's tokens
                    break
        finally:
            items.close()  # frees the sequence's slot at the loop's next step
        usage.cached_tokens = seq.cached
        if seq.drafter is not None:
            usage.drafted_tokens, usage.accepted_tokens = seq.drafter.drafted, seq.drafter.accepted
        usage.total_s = time.perf_counter() - started
        # After a stop string, flush() is empty: the matcher already dropped the stop and what followed.
        yield Chunk(
            stops.flush() + decoder.decode(b"", final=True), tuple(unsent), finish, usage, logprobs=tuple(pending)
        )

    def _drafter(self, tokens: list[int], params: GenerationParams):
        """Prompt-lookup drafts for this request, when speculation is asked (the request's choice, else the
        engine's) and this context keeps the output identical with it (else it is off and counted)."""
        from .speculate import NgramDrafter

        mode = params.speculative or self.speculative
        if mode == "off":
            return None
        if not self.can_speculate:
            reason = "recurrent" if not self.batcher.can_share else "no_flash_attention"
            self.batcher.stats.unspeculated[reason] = self.batcher.stats.unspeculated.get(reason, 0) + 1
            return None
        return NgramDrafter(tokens)

    def evaluated_tokens(self) -> int:
        """Prompt tokens llama.cpp itself has evaluated in this engine's context (its perf counter)."""
        return self.batcher.perf()[0]

    def reset_cache(self) -> None:
        self.batcher.reset()  # the next prompt is evaluated from position 0

    def slot_stats(self) -> dict:
        b, st = self.batcher, self.batcher.stats
        return {
            "slots": len(b.slots),
            "busy": b.busy_slots,
            "steps": st.steps,
            "prompt_tokens": st.prompt_tokens,
            "generated_tokens": st.generated_tokens,
            "prefill_s": st.prefill_s,
            "decode_s": st.decode_s + st.sample_s,
            "drafted_tokens": st.drafted,
            "accepted_tokens": st.accepted,
            "unspeculated": dict(st.unspeculated),
        }

    def close(self) -> None:
        import llama_cpp

        batcher = getattr(self, "batcher", None)
        if batcher is not None:
            batcher.close()
            self.batcher = None
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx is not None:
            ctx.close()
        lora, self._lora = getattr(self, "_lora", None), None
        if lora:
            llama_cpp.llama_adapter_lora_free(lora)
        model, self._model = getattr(self, "_model", None), None
        if model is not None:
            model.close()
