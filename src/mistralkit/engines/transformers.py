"""The transformers engine: HF model folders and ``mistralkit tune`` run folders (base + adapter).

Prompts are the tokens every engine sends (``hf_vocab``: mistral-common for Mistral tokenizers,
the folder's template otherwise). Generation is a token loop in the calling thread over the
model's KV cache, so Ctrl-C and ``cancel`` stop it within a token and no thread is left behind;
sampling follows llama.cpp (``hf_sample``). The KV cache of the last generation is kept: a prompt
that starts with what it held (turn N of a chat after turn N-1) crops it to the shared prefix and
evaluates only the rest, as llama.cpp's slots do. Log-probabilities come from one forward pass per
chunk of positions, log-softmaxed in float64. A PEFT adapter attaches on top (``--adapter`` or
the run's own); ``--quant 4|8`` loads a CUDA model through bitsandbytes.

Grammars are not supported by this engine (no JSON mode, no JSON schema): ``check_grammar``
refuses them with ``Unsupported``, as the capability flag says, instead of ignoring them.

    engine = TransformersEngine(resolve("models/tiny-mistral"), device="cpu", adapter="runs/smoke")
"""

from __future__ import annotations

import gc
import inspect
import logging
import threading
import time
from collections.abc import Iterator, Sequence

from ..errors import Cancelled, ContextOverflow, InvalidModelFile, InvalidParameter
from ..formats.base import Message
from ..models.memory import context_size
from ..models.store import LocalModel
from .base import (
    Capabilities,
    Chunk,
    EngineBase,
    check_fits,
    FinishReason,
    GenerationParams,
    Request,
    TokenLogprob,
    Usage,
    require,
    row_logprobs,
)
from .hf_load import (
    adapter_folder,
    attach_adapter,
    context_limit,
    load_weights,
    pick_device,
    pick_dtype,
    quantization,
    read_config,
    require_torch,
)
from .batch import common_prefix
from .hf_run import RUN_FORMAT, run_parts
from .hf_sample import TorchSampler
from .hf_vocab import IncrementalDecoder, chat_format, mistral_version_of, open_vocab
from .stops import StopMatcher

log = logging.getLogger(__name__)

LOGPROB_CHUNK = 512  # positions per forward pass when scoring; bounds the logits held at once
FORMATS = ("hf", RUN_FORMAT, "gguf")


class TransformersEngine(EngineBase):
    """``Engine`` over one transformers model (plus adapter). Not thread-safe: one generation at a time."""

    kind = "transformers"
    capabilities = Capabilities(tokens=True, logprobs=True, grammar=False, adapters=True, local=True)

    def __init__(self, model: LocalModel, *, n_ctx: int | None = None, threads: int | None = None,
                 device: str = "auto", quant: int | None = None, adapter: str | None = None) -> None:
        torch = require_torch()
        if model.format not in FORMATS:
            raise InvalidModelFile(
                f"{model.name} is a {model.format} model, which the transformers engine does not run",
                hint="give it an HF model folder (config.json + *.safetensors) or a tune run folder",
            )
        self.model, self.name = model, model.name
        source, adapter_dir, version = model, None, None
        if model.format == RUN_FORMAT:
            if adapter:
                raise InvalidParameter(f"{model.name} is a tune run: it brings its own adapter",
                                       hint="drop --adapter, or pass the run's base with --model and "
                                            "the adapter folder with --adapter")
            parts = run_parts(model)
            source, adapter_dir, version = parts.base, parts.adapter, parts.tokenizer
        elif adapter:
            adapter_dir = adapter_folder(adapter)
        self.device = pick_device(device)
        dtype = pick_dtype(self.device)
        quant_config = quantization(quant, self.device, dtype)
        config = read_config(source)
        self.n_ctx = context_size(model.name, context_limit(source, config), n_ctx)
        if threads and self.device == "cpu":
            torch.set_num_threads(threads)
        version = version or mistral_version_of(source)
        self._net = None
        self._kept: tuple[list[int], object] | None = None  # the last generation's tokens and KV cache
        self._vocab = open_vocab(source, version)
        started = time.perf_counter()
        try:
            net = load_weights(source, config, self.device, dtype, quant_config)
            if adapter_dir is not None:
                net = attach_adapter(net, adapter_dir, adapter or model.name, source, config,
                                     same_name=model.format != RUN_FORMAT)
        except BaseException:
            self._vocab.close()
            raise
        self._net = net
        self.load_s = time.perf_counter() - started
        self.vocab_size = self.n_vocab = int(net.get_input_embeddings().num_embeddings)
        if self._vocab.size > self.vocab_size:
            raise InvalidModelFile(f"{source.name}: its tokenizer has {self._vocab.size} tokens but the model "
                                   f"only {self.vocab_size}", hint="the tokenizer files belong to another model")
        self.bos_id, self.eos_id, self.add_bos = self._vocab.bos_id, self._vocab.eos_id, self._vocab.add_bos
        self.format = chat_format(source, self._vocab, version)
        self._stop_ids = frozenset(self.format.stop_token_ids) | self._eos_ids()
        base = net.get_base_model() if hasattr(net, "get_base_model") else net
        forward = inspect.signature(base.forward).parameters
        self._cache_kw = "cache" if "cache" in forward else "past_key_values"  # renamed in transformers 5
        self._keep_kw = "logits_to_keep" in forward
        log.info("loaded %s in %.2fs (%s, %s, ctx %d, format %s%s)", source.path, self.load_s, self.device,
                 str(dtype).removeprefix("torch."), self.n_ctx, self.format.name,
                 f", adapter {adapter_dir}" if adapter_dir else "")

    def _eos_ids(self) -> frozenset[int]:
        """End-of-text tokens: the tokenizer's and the model's generation_config (which may list several)."""
        found = {self.eos_id} if self.eos_id is not None else set()
        config = getattr(self._net, "generation_config", None)
        eos = getattr(config, "eos_token_id", None) if config is not None else None
        found.update([eos] if isinstance(eos, int) else list(eos or []))
        return frozenset(found)

    # Tokenizer protocol (formats, tune's loss masks).
    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return self._vocab.tokenize(text, special=special)

    def token_text(self, token_id: int) -> str:
        return self._vocab.token_text(token_id)

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        return self._vocab.decode(self._checked_ids(tokens), special=special)

    def encode_text(self, text: str) -> list[int]:
        """Raw text (a completion prompt, no chat format) to tokens, with BOS when the model wants it."""
        tokens = self._vocab.tokenize(text, special=False)
        return [self.bos_id, *tokens] if self.add_bos and self.bos_id is not None else tokens

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.format.encode(messages))

    def prompt_tokens(self, request: Request) -> list[int]:
        if isinstance(request, str):
            return self.format.encode([{"role": "user", "content": request}])
        if request and isinstance(request[0], int):
            return self._checked_ids(request)  # type: ignore[arg-type]
        return self.format.encode(request)  # type: ignore[arg-type]

    def _checked_ids(self, tokens: Sequence[int]) -> list[int]:
        """Token ids as ints, refused when outside the vocabulary (the embedding would fail deep inside)."""
        ids = [int(t) for t in tokens]
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InvalidParameter(f"token id {bad} is outside the vocabulary (0 to {self.vocab_size - 1})")
        return ids

    def check_grammar(self, gbnf: str) -> None:
        require(self, "grammar")  # type: ignore[arg-type]

    # --- forward passes --------------------------------------------------------------------

    def _forward(self, tokens: Sequence[int], cache, keep: int = 1):
        """(logits of the last ``keep`` positions, the cache after ``tokens``)."""
        import torch

        if self._net is None:
            raise InvalidParameter(f"the engine of {self.name} is closed", hint="load the model again")
        with torch.inference_mode():
            ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
            kwargs = {self._cache_kw: cache, "use_cache": True}
            if self._keep_kw:
                kwargs["logits_to_keep"] = keep
            out = self._net(input_ids=ids, **kwargs)
            cache = getattr(out, "cache", None)
            return out.logits[0, -keep:], cache if cache is not None else getattr(out, "past_key_values", None)

    def logprobs(self, tokens: Sequence[int], start: int) -> list[float]:
        """log P(tokens[i] | tokens[:i]) for i >= start: float64 log-softmax of the model's logits."""
        return [value for value, _ in self._scored(tokens, start, 0, None)]

    def score(self, tokens: Sequence[int], start: int, *, top: int = 0,
              cancel: threading.Event | None = None) -> list[TokenLogprob]:
        """``logprobs`` with each token's text and the ``top`` best tokens at its place."""
        piece = lambda t: self._vocab.token_text(t).encode("utf-8")
        return [TokenLogprob(piece(token), value, tuple((piece(t), v) for t, v in best))
                for token, (value, best) in zip(list(tokens)[start:], self._scored(tokens, start, top, cancel),
                                                strict=True)]

    def _scored(self, tokens: Sequence[int], start: int, top: int,
                cancel: threading.Event | None) -> list[tuple[float, list[tuple[int, float]]]]:
        import torch

        tokens = self._checked_ids(tokens)
        if not 1 <= start < len(tokens):
            raise InvalidParameter(f"logprobs: start {start} must be in 1..{len(tokens) - 1}")
        if len(tokens) > self.n_ctx:
            raise ContextOverflow(f"{len(tokens)} tokens to score but the context window holds {self.n_ctx}",
                                  hint="shorten the text or raise --ctx")
        inputs, out, cache = tokens[:-1], [], None
        for first in range(0, len(inputs), LOGPROB_CHUNK):
            if cancel is not None and cancel.is_set():
                raise Cancelled("the scoring stopped: its caller left")
            chunk = inputs[first:first + LOGPROB_CHUNK]
            wanted = first + len(chunk) - max(first, start - 1)  # rows at positions >= start - 1
            logits, cache = self._forward(chunk, cache, keep=max(wanted, 1) if self._keep_kw else 0)
            if wanted <= 0:
                continue
            rows = logits[-wanted:].to(torch.float64).log_softmax(-1)
            targets = torch.tensor(tokens[first + len(chunk) - wanted + 1: first + len(chunk) + 1],
                                   device=rows.device)
            values = rows.gather(1, targets[:, None])[:, 0].tolist()
            if top:
                best = rows.topk(top, dim=-1)
                tops = [list(zip(ids, scores, strict=True))
                        for ids, scores in zip(best.indices.tolist(), best.values.tolist(), strict=True)]
            else:
                tops = [[] for _ in values]
            out.extend(zip(values, tops, strict=True))
        return out

    # --- generation ------------------------------------------------------------------------

    def generate(self, request: Request, params: GenerationParams,
                 cancel: threading.Event | None = None) -> Iterator[Chunk]:
        if params.grammar is not None:
            self.check_grammar(params.grammar)
        tokens = self.prompt_tokens(request)
        check_fits(tokens, self.n_ctx)
        return self._stream(tokens, params, cancel)

    def _stream(self, tokens: list[int], params: GenerationParams,
                cancel: threading.Event | None) -> Iterator[Chunk]:
        budget = min(params.max_tokens, self.n_ctx - len(tokens))
        sampler = TorchSampler(params)
        decoder = IncrementalDecoder(self._vocab)
        stops = StopMatcher((*params.stop, *self.format.stop_strings))
        usage = Usage(prompt_tokens=len(tokens))
        finish: FinishReason = "length"
        generated: list[int] = []
        unsent: list[int] = []  # tokens whose text is held back (a partial character or stop string)
        pending: list[TokenLogprob] = []  # their log-probabilities, when asked
        hit = False
        started = time.perf_counter()
        usage.cached_tokens, cache = self._reuse(tokens)
        logits, cache = self._forward(tokens[usage.cached_tokens:], cache)
        held = list(tokens)  # the tokens whose keys and values the cache holds
        while True:
            token = sampler.pick(logits[-1], generated)
            if not usage.ttft_s:
                usage.ttft_s = time.perf_counter() - started
            if not params.ignore_eos and token in self._stop_ids:
                finish = "stop"
                if params.top_logprobs is not None and params.logprob_of_end:
                    pending.append(self._token_logprob(logits[-1], token, params.top_logprobs))
                break
            if params.top_logprobs is not None:  # the raw distribution (pick worked on a copy)
                pending.append(self._token_logprob(logits[-1], token, params.top_logprobs))
            generated.append(token)
            unsent.append(token)
            usage.completion_tokens += 1
            text, hit = stops.feed(decoder.feed(token))
            if text:
                yield Chunk(text, tuple(unsent), logprobs=tuple(pending))
                unsent, pending = [], []
            if hit:
                finish = "stop"
                pending = []  # the stop string's tokens
                break
            if usage.completion_tokens >= budget:
                break
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
            logits, cache = self._forward([token], cache)
            held.append(token)
        self._kept = (held, cache) if cache is not None else None
        del logits
        usage.total_s = time.perf_counter() - started
        tail = ""
        if not hit:  # after a stop string the rest is dropped; else what the decoder held is due now
            tail, hit = stops.feed(decoder.flush())
            tail += "" if hit else stops.flush()
            finish = "stop" if hit else finish
        yield Chunk(tail, tuple(unsent), finish, usage, tuple(pending))

    def _reuse(self, tokens: list[int]) -> tuple[int, object]:
        """(prompt tokens the kept cache already holds, that cache cropped to them) or (0, None).
        The kept cache is taken either way: a generation updates it in place."""
        kept, self._kept = self._kept, None
        if kept is None:
            return 0, None
        held, cache = kept
        shared = min(common_prefix(held, tokens), len(tokens) - 1)  # one token left to give the logits
        if shared <= 0 or getattr(cache, "get_seq_length", lambda: -1)() != len(held):
            return 0, None
        try:
            cache.crop(shared - len(held))  # transformers 5: a negative count of positions to drop
        except (RuntimeError, ValueError, TypeError, NotImplementedError, AttributeError) as exc:
            log.debug("no prefix reuse for %s: %s", self.name, exc)  # e.g. a sliding window past its size
            return 0, None
        return shared, cache

    def _token_logprob(self, logits, token: int, n_top: int) -> TokenLogprob:
        import torch

        logprob, top = row_logprobs(logits.detach().to("cpu", torch.float64).numpy(), token, n_top)
        piece = lambda t: self._vocab.token_text(t).encode("utf-8")  # noqa: E731
        return TokenLogprob(piece(token), logprob, tuple((piece(t), v) for t, v in top))

    def close(self) -> None:
        self._kept = None
        net, self._net = getattr(self, "_net", None), None
        vocab = getattr(self, "_vocab", None)
        if vocab is not None:
            vocab.close()
        if net is None:
            return
        del net
        gc.collect()
        import torch

        if self.device == "cuda":
            torch.cuda.empty_cache()
        elif self.device == "mps":
            torch.mps.empty_cache()
