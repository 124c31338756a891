"""The Engine contract shared by every backend (llama.cpp, transformers, remote APIs).

An engine streams ``Chunk`` objects; the last one carries ``finish_reason`` and ``usage``.
Blocking calls are built on the stream (``complete``). What an engine can do beyond streaming
a chat is a flag in ``capabilities``; callers check it with ``require`` first, so a missing
capability is a one-line error (a 400 in the server), never a crash inside the engine.
Engines that lack a capability inherit ``EngineBase``'s methods, which refuse the same way.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

from ..defaults import SAMPLING_DEFAULTS
from ..errors import BadParameter, ContextOverflow, InvalidParameter, Unsupported
from ..formats.base import ChatFormat, Message
from .speculate import MODES as SPECULATIVE_MODES

FinishReason = Literal["stop", "length", "cancelled"]


SAMPLING_RULES: tuple[tuple[str, Callable[[float], bool], str], ...] = (
    ("max_tokens", lambda v: v >= 1, "must be >= 1"),
    ("temperature", lambda v: v >= 0, "must be >= 0"),
    ("top_p", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("top_k", lambda v: v >= 0, "must be >= 0"),
    ("min_p", lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    ("repeat_penalty", lambda v: v > 0, "must be > 0"),
    ("frequency_penalty", lambda v: -2 <= v <= 2, "must be in [-2, 2]"),
    ("presence_penalty", lambda v: -2 <= v <= 2, "must be in [-2, 2]"),
)


MAX_TOP_LOGPROBS = 20  # alternatives per token, as OpenAI allows
RANDOM_SEED = -1  # --seed -1: a new random seed each time (as llama.cpp's -s -1)
MAX_SEED = 2**32 - 2  # llama.cpp's seed is 32 bits, and 2**32 - 1 already means "random"


def check_sampling(values: object) -> None:
    """Validate the sampling fields of ``values`` (GenerationParams or Settings)."""
    for name, ok, rule in SAMPLING_RULES:
        value = getattr(values, name, None)
        if value is None:  # a field this object does not have (Settings has no OpenAI penalties)
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidParameter(f"{name}={value!r}: must be a finite number", hint=f"fix the {name} setting")
        if not ok(value):
            raise InvalidParameter(f"{name}={value!r}: {rule}", hint=f"fix the {name} setting")


def check_seed(seed: int | None) -> int | None:
    """The seed to use: None (random) for None or -1, else 0 … 2**32 - 2."""
    if seed is None or seed == RANDOM_SEED:
        return None
    if not 0 <= seed <= MAX_SEED:
        raise InvalidParameter(f"seed={seed}: must be between 0 and {MAX_SEED}, or -1 for a random seed",
                               hint="fix the seed setting")
    return seed


@dataclass(frozen=True)
class GenerationParams:
    """Sampling and stopping controls. ``greedy`` (or temperature 0) always takes the top token."""

    max_tokens: int = 512
    temperature: float = SAMPLING_DEFAULTS["temperature"]
    top_p: float = SAMPLING_DEFAULTS["top_p"]
    top_k: int = SAMPLING_DEFAULTS["top_k"]
    min_p: float = SAMPLING_DEFAULTS["min_p"]
    repeat_penalty: float = SAMPLING_DEFAULTS["repeat_penalty"]
    frequency_penalty: float = 0.0  # OpenAI's: minus this x how often a token came already
    presence_penalty: float = 0.0  # OpenAI's: minus this once a token came at all
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit); -100 bans it
    seed: int | None = None
    stop: tuple[str, ...] = ()
    greedy: bool = False
    grammar: str | None = None  # GBNF text constraining the output (e.g. JSON)
    ignore_eos: bool = False  # generate max_tokens tokens even past end-of-text (benchmarks)
    json_end: bool = False  # stop when the JSON object or array the output opened closes (JSON mode)
    top_logprobs: int | None = None  # report each token's log-probability and this many alternatives (0-20)
    # With top_logprobs: report the end-of-generation token that ended the answer too (no text of its own),
    # as the legacy completions API lists it (lm-eval's echo scoring counts on one token after the prompt).
    logprob_of_end: bool = False
    # Tools for an engine that calls them natively (capability ``tools``: a remote API), in
    # ``formats.tools``' shape ({"name", "description", "parameters"}); ``tool_choice`` is "auto",
    # "none", "required" or a function's name. Local engines get tools in the prompt instead.
    tools: tuple[dict, ...] = ()
    tool_choice: str = "auto"
    # Speculative decoding for this request ("off" or "ngram"); None: the engine's (``--speculative``).
    speculative: str | None = None

    def __post_init__(self) -> None:
        check_sampling(self)
        if self.speculative is not None and self.speculative not in SPECULATIVE_MODES:
            raise InvalidParameter(f"speculative={self.speculative!r}: must be {' or '.join(SPECULATIVE_MODES)}")
        object.__setattr__(self, "seed", check_seed(self.seed))
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        if self.top_logprobs is not None and not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidParameter(f"top_logprobs={self.top_logprobs}: must be in 0..{MAX_TOP_LOGPROBS}")
        if isinstance(self.tools, list):
            object.__setattr__(self, "tools", tuple(self.tools))
        if isinstance(self.logit_bias, dict):
            object.__setattr__(self, "logit_bias", tuple((int(k), float(v)) for k, v in self.logit_bias.items()))

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Usage:
    """Token counts and timings of one generation (seconds; rates in tokens/s)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0
    drafted_tokens: int = 0  # speculative decoding: tokens proposed and verified
    accepted_tokens: int = 0  # of those, the ones kept

    @property
    def prompt_tps(self) -> float:
        """Prompt tokens actually evaluated (not reused from the KV cache) per second."""
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / self.ttft_s if self.ttft_s > 0 else 0.0

    @property
    def gen_tps(self) -> float:
        """Generation rate after the first token."""
        span = self.total_s - self.ttft_s
        return (self.completion_tokens - 1) / span if self.completion_tokens > 1 and span > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "prompt_tps": round(self.prompt_tps, 2), "gen_tps": round(self.gen_tps, 2)}


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability under the model (its raw distribution, before penalties,
    bias, grammar or truncation), with the ``top`` most likely tokens at that step, best first."""

    token: bytes  # the token's text (part of a UTF-8 character, possibly)
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()


ROWS_PER_STEP = 64  # logits rows a scoring job asks for in one decode step (a row is vocabulary-sized)


def log_softmax_rows(rows, targets: Sequence[int]) -> list[float]:
    """log_softmax(rows[i])[targets[i]] for each row, stable (max subtracted): the exponentials in float32
    (a row is vocabulary-sized: 262,144 values for Gemma, and float64 doubles the time), summed in float64."""
    return [value for value, _ in score_rows(rows, targets, 0)]


def score_rows(rows, targets: Sequence[int], n_top: int) -> list[tuple[float, list[tuple[int, float]]]]:
    """(log_softmax(rows[i])[targets[i]], the ``n_top`` best (id, log-probability) of that row, best first)
    for each row, all read against the same normalizer: a target that is the row's best has exactly the
    value its alternative shows (lm-eval's ``is_greedy`` compares them with ``==``). ``rows``: arrays or
    views of llama.cpp's logits, read one at a time through one scratch row (no vocabulary-sized
    temporaries a row: at 262,144 logits those cost more than the arithmetic)."""
    import numpy as np

    out: list[tuple[float, list[tuple[int, float]]]] = []
    scratch = None
    for row, target in zip(rows, targets, strict=True):
        row = np.asarray(row, dtype=np.float32)
        if scratch is None or scratch.shape != row.shape:
            scratch = np.empty_like(row)
        peak = row.max()
        np.subtract(row, peak, out=scratch)
        np.exp(scratch, out=scratch)
        lse = np.float64(peak) + np.log(scratch.sum(dtype=np.float64))
        top: list[tuple[int, float]] = []
        if n_top:
            best = np.argpartition(row, -n_top)[-n_top:]
            scores = row[best].astype(np.float64) - lse
            top = [(int(best[j]), float(scores[j])) for j in np.argsort(-scores, kind="stable")]
        out.append((float(np.float64(row[target]) - lse), top))
    return out


def row_logprobs(row, token: int, n_top: int) -> tuple[float, list[tuple[int, float]]]:
    """(log-softmax of ``row`` at ``token``, the ``n_top`` best (id, log-probability), best first);
    ``row`` is one position's logits as a numpy array, computed in float64."""
    import numpy as np

    row = np.asarray(row, dtype=np.float64)
    peak = row.max()
    lse = peak + np.log(np.exp(row - peak).sum())
    top: list[tuple[int, float]] = []
    if n_top:
        best = np.argpartition(row, -n_top)[-n_top:]
        best = best[np.argsort(-row[best], kind="stable")]
        top = [(int(i), float(row[i] - lse)) for i in best]
    return float(row[token] - lse), top


@dataclass
class Chunk:
    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # when asked (``top_logprobs`` set): the tokens of this text
    tool_calls: tuple[dict, ...] = ()  # the last chunk of an engine with native tools: {"id", "name", "arguments"}

    def then(self, later: Chunk) -> Chunk:
        """This chunk and the one after it as one (a reader that fell behind takes them together)."""
        return Chunk(self.text + later.text, self.token_ids + later.token_ids,
                     later.finish_reason or self.finish_reason, later.usage or self.usage,
                     self.logprobs + later.logprobs, self.tool_calls + later.tool_calls)


@dataclass
class Completion:
    text: str
    finish_reason: FinishReason
    usage: Usage
    token_ids: list[int] = field(default_factory=list)


Request = Sequence[Message] | str | Sequence[int]


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do beyond streaming a chat. Callers check with ``require`` first."""

    tokens: bool = False  # tokenize; exact token counts; token prompts and raw-text completions
    logprobs: bool = False  # log-probabilities of given tokens (multiple choice, perplexity)
    grammar: bool = False  # GBNF-constrained output (JSON mode, JSON schema)
    adapters: bool = False  # a LoRA adapter applied on top of the model
    tools: bool = False  # takes tools and answers with calls itself (GenerationParams.tools; a remote API)
    local: bool = True  # the text stays on this machine


CAPABILITY_TEXT = {
    "tokens": "tokenization (token prompts, raw-text completions)",
    "logprobs": "token log-probabilities (multiple-choice scoring, perplexity)",
    "grammar": "constrained output (JSON mode, JSON schema, grammars)",
    "adapters": "LoRA adapters",
}


def check_ids(tokens: Sequence[int], n_vocab: int, field: str = "prompt") -> list[int]:
    """``tokens`` when each is a token id of a vocabulary of ``n_vocab`` (llama.cpp would read past its
    tables, not raise); ``field`` names where they came from in the error."""
    for i, token in enumerate(tokens):
        if not 0 <= token < n_vocab:
            raise BadParameter(f"{field}[{i}]: token id {token} is outside the vocabulary (0 to {n_vocab - 1})",
                               field, hint="send token ids of this model (POST /tokenize gives them)")
    return list(tokens)


def check_fits(tokens: Sequence[int], n_ctx: int, hint: str = "shorten the prompt or raise --ctx") -> None:
    """Refuse a prompt that leaves no room in the context window for even one generated token (the
    engines' rule, and the server's before it queues anything)."""
    if len(tokens) >= n_ctx:
        raise ContextOverflow(f"the prompt is {len(tokens)} tokens but this model's context window is {n_ctx} tokens",
                              hint=hint)


def require(engine: Engine, capability: str, needed_for: str | None = None) -> None:
    """Raise ``Unsupported`` when ``engine`` lacks ``capability`` (a ``Capabilities`` field name)."""
    if getattr(engine.capabilities, capability):
        return
    purpose = f", which {needed_for} needs" if needed_for else ""
    raise Unsupported(f"{engine.name} runs on the {engine.kind} engine, which has no "
                      f"{CAPABILITY_TEXT[capability]}{purpose}",
                      hint="use a GGUF model (llama.cpp engine) for this, or drop the option")


class Engine(Protocol):
    """A loaded model that turns a conversation (or a raw token prompt) into a stream of chunks.

    ``generate``, ``count_tokens`` and ``close`` are always there; the other methods work when the
    matching ``capabilities`` flag is set (``require`` checks it) and refuse otherwise.
    """

    name: str  # the model as users named it
    kind: str  # the engine: "llama.cpp", "transformers", "openai", "anthropic"
    n_ctx: int  # context window in tokens
    parallel: int  # generations it runs at once: so many ``generate`` calls may run from threads together
    capabilities: Capabilities
    # capability ``tokens``: the vocabulary and the chat layout over it (None / False without it)
    format: ChatFormat | None  # builds prompts (tools, chat templates); formats/
    bos_id: int | None
    eos_id: int | None
    add_bos: bool  # the model wants its BOS first
    n_vocab: int  # token ids are 0 .. n_vocab - 1

    def generate(self, request: Request, params: GenerationParams,
                 cancel: threading.Event | None = None) -> Iterator[Chunk]: ...

    def count_tokens(self, messages: Sequence[Message]) -> int: ...

    def prompt_tokens(self, request: Request) -> list[int]:
        """The tokens ``generate`` would feed the model for ``request`` (capability ``tokens``)."""
        ...

    def encode_text(self, text: str) -> list[int]:
        """Raw text (no chat format) to tokens, BOS included when the model wants it (``tokens``)."""
        ...

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Text to tokens without a BOS; ``special``: control-token texts become their ids (``tokens``)."""
        ...

    def token_text(self, token_id: int) -> str:
        """A token's text, control tokens included (``tokens``)."""
        ...

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        """Token ids back to text, control tokens left out (``special``: written as their text) (``tokens``)."""
        ...

    def check_grammar(self, gbnf: str) -> None:
        """Refuse a grammar the engine cannot compile, before any generation (``grammar``)."""
        ...

    def logprobs(self, tokens: Sequence[int], start: int) -> list[float]:
        """log P(tokens[i] | tokens[:i]) for each i >= start (``logprobs``); ``start`` >= 1."""
        ...

    def score(self, tokens: Sequence[int], start: int, *, top: int = 0,
              cancel: threading.Event | None = None) -> list[TokenLogprob]:
        """``logprobs`` with each token's text and the ``top`` most likely tokens at its place (``logprobs``):
        the same values. Raises ``Cancelled`` when ``cancel`` is set before the end."""
        ...

    def reset_cache(self) -> None:
        """Forget cached prompt state, so the next prompt is evaluated from scratch (benchmarks)."""
        ...

    def slot_stats(self) -> dict | None:
        """For an engine that batches (``parallel`` sequences): ``slots``, ``busy`` and its counters since
        load (``steps``, ``prompt_tokens``, ``generated_tokens``, ``prefill_s``, ``decode_s``); else None."""
        ...

    def close(self) -> None: ...


class EngineBase:
    """Refusals for every optional method, so that an engine defines only what it can do."""

    name: str = "model"
    kind: str = "engine"
    parallel: int = 1
    capabilities = Capabilities()
    format: ChatFormat | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    add_bos: bool = False
    n_vocab: int = 0

    def prompt_tokens(self, request: Request) -> list[int]:
        require(self, "tokens")  # type: ignore[arg-type]
        raise NotImplementedError

    def encode_text(self, text: str) -> list[int]:
        require(self, "tokens")  # type: ignore[arg-type]
        raise NotImplementedError

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        require(self, "tokens")  # type: ignore[arg-type]
        raise NotImplementedError

    def token_text(self, token_id: int) -> str:
        require(self, "tokens")  # type: ignore[arg-type]
        raise NotImplementedError

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        require(self, "tokens")  # type: ignore[arg-type]
        raise NotImplementedError

    def check_grammar(self, gbnf: str) -> None:
        require(self, "grammar")  # type: ignore[arg-type]

    def logprobs(self, tokens: Sequence[int], start: int) -> list[float]:
        require(self, "logprobs")  # type: ignore[arg-type]
        raise NotImplementedError

    def score(self, tokens: Sequence[int], start: int, *, top: int = 0,
              cancel: threading.Event | None = None) -> list[TokenLogprob]:
        require(self, "logprobs")  # type: ignore[arg-type]
        raise NotImplementedError

    def reset_cache(self) -> None:
        """Nothing cached here (engines that keep a KV cache between calls override this)."""

    def slot_stats(self) -> dict | None:
        return None  # no batcher

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]


def complete(engine: Engine, request: Request, params: GenerationParams,
             cancel: threading.Event | None = None,
             on_text: Callable[[str], None] | None = None) -> Completion:
    """Run a generation to the end and return the whole text, passing each piece to ``on_text``."""
    parts: list[str] = []
    ids: list[int] = []
    last = Chunk("")
    for chunk in engine.generate(request, params, cancel):
        if on_text is not None and chunk.text:
            on_text(chunk.text)
        parts.append(chunk.text)
        ids.extend(chunk.token_ids)
        last = chunk
    assert last.finish_reason is not None and last.usage is not None, "engines end with a usage chunk"
    return Completion("".join(parts), last.finish_reason, last.usage, ids)
