"""Prompt-lookup drafts for speculative decoding in the batched engine (engines/batch.py).

What a model writes often copies what it read: a corrected sentence is the sentence with a few words
changed, a summary quotes its notes, an answer from documents quotes its sources. ``NgramDrafter``
proposes, after the last ``n`` tokens of a sequence (prompt and output), the tokens that followed
their latest earlier occurrence (``n`` = 3, else 2). The batch then decodes the proposals with the
sequence's next token in one ``llama_decode`` and keeps those the sampler would have picked anyway.

The drafts are deterministic, so verification is plain sampling: the row of each position is sampled
as it would be without drafts, in order, and the drafts stop at the first one the sampler did not
pick. That is speculative sampling's acceptance for a one-hot proposal (a draft ``d`` is kept with
probability p(d); on a refusal the token drawn is distributed as p without ``d``), and the sampler's
random draws happen in the same order as without drafts, so a seeded run gives the same text.

Identity also needs each row's logits to be the same bits as one-token decoding, and llama.cpp's CPU
kernels pick their code by the number of rows in a call (docs/speculative.md): the batch drafts only
for a sequence decoding alone, at most ``MAX_ROWS`` rows a call, with flash attention, and with an
f16 cache only while the cache view stays under 512 cells.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_ROWS = 3  # rows a verifying call may hold: 1-3 give the one-row kernels' bits on the CPU backend
NGRAMS = (3, 2)  # the lengths of the tail looked up, longest first
F16_CELLS = 256  # an f16 cache's view (padded to 256 cells) must stay under 512: one-row flash attention splits it
MODES = ("off", "ngram")


class NgramDrafter:
    """Proposals for one sequence: an index of where each 2- and 3-gram of its tokens last ended."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens: list[int] = []
        self.after: dict[tuple[int, ...], int] = {}  # an n-gram -> the position just after its latest occurrence
        self.drafted = self.accepted = 0
        self.misses = 0  # drafts in a row of which nothing was kept
        self.rest = 0  # steps left without drafting (after misses)
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        """The sequence grew by ``token`` (the index learns the n-grams that end just before it)."""
        tokens = self.tokens
        tokens.append(token)
        end = len(tokens) - 1
        for n in NGRAMS:
            if end >= n:
                self.after[tuple(tokens[end - n:end])] = end

    def propose(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that followed the latest earlier occurrence of the sequence's tail."""
        if limit <= 0:
            return []
        if self.rest:
            self.rest -= 1
            return []
        tokens = self.tokens
        for n in NGRAMS:
            if len(tokens) > n:
                start = self.after.get(tuple(tokens[-n:]))
                if start is not None:
                    return tokens[start:start + limit]
        return []

    def verified(self, drafted: int, accepted: int) -> None:
        """Adapt: after a draft of which nothing was kept, rest 1, 2, 4 ... up to 16 steps."""
        self.drafted += drafted
        self.accepted += accepted
        if accepted:
            self.misses = 0
        else:
            self.rest = min(16, 2 ** self.misses)
            self.misses += 1
