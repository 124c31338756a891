"""Next-token choice for the transformers engine, in llama.cpp's order and meaning.

The logit bias comes first; the repeat penalty (llama.cpp's: positive logits divided, negative ones
multiplied) and OpenAI's frequency and presence penalties cover the
last ``PENALTY_LAST_N`` generated tokens, greedy decoding included, as llama-cpp-python's
sampler does. Then top-k (0: off), top-p, min-p (relative to the most likely token), and the
temperature last, on what is left. Sampling runs on the CPU with a ``torch.Generator`` seeded
per request, so a seed gives the same text on every device.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from .base import GenerationParams

PENALTY_LAST_N = 64  # llama-cpp-python's last_n_tokens_size


class TorchSampler:
    def __init__(self, params: GenerationParams) -> None:
        import torch

        self.params = params
        self.seed = params.seed if params.seed is not None else secrets.randbits(63)
        self._generator = torch.Generator().manual_seed(self.seed)

    def pick(self, logits, generated: Sequence[int]) -> int:
        """The next token from the last position's logits (a 1-D tensor on any device)."""
        import torch

        p = self.params
        logits = logits.detach().to("cpu", torch.float32, copy=True)
        for token, bias in p.logit_bias:
            if not 0 <= token < logits.numel():
                from ..errors import InvalidParameter

                raise InvalidParameter(f"logit_bias: token {token} is not in the vocabulary (0..{logits.numel() - 1})")
            logits[token] += bias
        if p.repeat_penalty != 1.0 and generated:
            seen = torch.tensor(sorted(set(generated[-PENALTY_LAST_N:])))
            values = logits[seen]
            logits[seen] = torch.where(values > 0, values / p.repeat_penalty, values * p.repeat_penalty)
        if (p.frequency_penalty or p.presence_penalty) and generated:  # OpenAI's, over the same window
            recent = torch.tensor(generated[-PENALTY_LAST_N:])
            ids, counts = recent.unique(return_counts=True)
            logits[ids] -= counts.float() * p.frequency_penalty + p.presence_penalty
        if p.is_greedy:
            return int(logits.argmax())
        if 0 < p.top_k < logits.numel():
            values, ids = logits.topk(p.top_k)
        else:
            values, ids = logits.sort(descending=True)
        probs = values.softmax(-1)
        keep = values.numel()
        if p.top_p < 1.0:  # the fewest tokens whose probabilities add up to top_p
            keep = min(keep, int((probs.cumsum(0) < p.top_p).sum()) + 1)
        if p.min_p > 0.0:
            keep = min(keep, max(1, int((probs >= p.min_p * probs[0]).sum())))
        final = (values[:keep] / p.temperature).softmax(-1)
        choice = torch.multinomial(final, 1, generator=self._generator)
        return int(ids[choice])
