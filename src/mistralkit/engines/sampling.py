"""Sampling for one sequence of the batched llama.cpp engine (engines/batch.py), from its
``GenerationParams``: logit bias and penalties on the step's logits row, greedy as an argmax, the rest
a llama.cpp sampler chain; a grammar asked about the picked token first.
"""

from __future__ import annotations

import ctypes
from collections import deque

from ..errors import InvalidParameter
from .base import GenerationParams

PENALTY_WINDOW = 64  # last tokens the repeat penalty looks at (llama-cpp-python's default)


class Sampler:
    """Sampling for one sequence, built from ``GenerationParams``.

    Logit bias and the repeat/frequency/presence penalties are applied in place to the sequence's
    logits row (they touch a few dozen entries; llama.cpp's own samplers walk the whole vocabulary,
    262k entries for Gemma 3, about a millisecond a token). Then greedy is a numpy argmax; the rest
    (top-k, top-p, min-p, temperature, seeded dist) a llama.cpp sampler chain, in the order
    llama-cpp-python's ``Llama`` uses.

    A grammar is checked after the pick, as llama.cpp's own server does: its sampler is asked about
    the one token picked; only if it refuses that token is it applied to the whole vocabulary and
    the token sampled again from what it allows (a second chain, grammar first). Most tokens of a
    JSON answer pass the check, and matching 262k token texts against the grammar is the costly
    part. Greedy gives the same token either way; sampling draws from the allowed tokens.
    """

    def __init__(self, L, vocab, n_vocab: int, params: GenerationParams) -> None:
        import numpy as np

        self.L, self.np, self.n_vocab = L, np, n_vocab
        for token, _ in params.logit_bias or ():
            if not 0 <= token < n_vocab:
                raise InvalidParameter(f"logit_bias: token {token} is not in the vocabulary (0..{n_vocab - 1})")
        self.bias = dict(params.logit_bias or ())
        self.penalised = params.repeat_penalty != 1.0 or bool(params.frequency_penalty or params.presence_penalty)
        self.repeat, self.frequency, self.presence = (
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        )
        self.window: deque[int] = deque(maxlen=PENALTY_WINDOW)  # the last sampled tokens (not the prompt's)
        self.top_logprobs = params.top_logprobs  # None: not asked
        self.last: tuple[float, list[tuple[int, float]]] | None = None  # the last token's, when asked
        self.argmax = params.is_greedy
        self.chain = self.check = self.constrained = None  # llama.cpp samplers, freed by free()
        try:
            if not self.argmax:
                self.chain = self._chain(params, None)
            if params.grammar is not None:
                self.check = self._grammar(vocab, params.grammar)
                self.constrained = self._chain(params, self._grammar(vocab, params.grammar))
                self.one = (L.llama_token_data * 1)()  # the picked token, as the check is shown it
                self.picked = L.llama_token_data_array(self.one, 1, -1, False)
        except BaseException:
            self.free()
            raise

    def _grammar(self, vocab, gbnf: str):
        grammar = self.L.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not grammar:
            raise InvalidParameter("the output grammar does not parse")
        return grammar

    def _chain(self, params: GenerationParams, grammar):
        """A sampler chain: ``grammar`` (when given, which the chain then owns), then the pick."""
        L = self.L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if grammar is not None:
            L.llama_sampler_chain_add(chain, grammar)
        if params.is_greedy:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            return chain
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(params.top_k))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(params.top_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(params.min_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(params.temperature))
        seed = params.seed if params.seed is not None else L.LLAMA_DEFAULT_SEED  # default: random
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))
        return chain

    def sample(self, ctx, index: int) -> int:
        """Sample from the logits of batch position ``index`` (which this may change in place)."""
        row = raw = None
        if self.top_logprobs is not None:  # the model's own distribution, before this changes the row
            row = self.np.ctypeslib.as_array(self.L.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
            raw = row.astype(self.np.float64)
        if self.bias or (self.penalised and self.window):
            if row is None:
                row = self.np.ctypeslib.as_array(self.L.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
            self._adjust(row)
        if self.argmax:
            if row is None:
                row = self.np.ctypeslib.as_array(self.L.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
            token = int(row.argmax())  # the first of equal maxima, as llama.cpp's greedy sampler
        else:
            token = int(self.L.llama_sampler_sample(self.chain, ctx, index))  # the chain accepts it too
        if self.check is not None:
            if self._allowed(token):
                self.L.llama_sampler_accept(self.constrained, token)
            else:  # the grammar over every token, then the pick among those it allows
                token = int(self.L.llama_sampler_sample(self.constrained, ctx, index))
            self.L.llama_sampler_accept(self.check, token)
        self.window.append(token)
        if raw is not None:
            from .base import row_logprobs

            self.last = row_logprobs(raw, token, self.top_logprobs)  # type: ignore[arg-type]
        return token

    def _adjust(self, row) -> None:
        """llama.cpp's logit-bias and penalties samplers, on the few tokens they change."""
        for token, bias in self.bias.items():
            row[token] += bias
        if not self.penalised:
            return
        counts: dict[int, int] = {}
        for token in self.window:
            counts[token] = counts.get(token, 0) + 1
        for token, count in counts.items():
            logit = float(row[token])
            logit = logit / self.repeat if logit > 0 else logit * self.repeat
            row[token] = logit - count * self.frequency - self.presence

    def _allowed(self, token: int) -> bool:
        """Whether the grammar, in its state now, lets ``token`` come next."""
        self.one[0].id, self.one[0].logit, self.one[0].p = token, 0.0, 0.0
        self.picked.selected, self.picked.sorted = -1, False
        self.L.llama_sampler_apply(self.check, ctypes.byref(self.picked))
        return self.one[0].logit != float("-inf")

    def free(self) -> None:
        for name in ("chain", "check", "constrained"):
            sampler = getattr(self, name, None)
            if sampler is not None:
                self.L.llama_sampler_free(sampler)
                setattr(self, name, None)
