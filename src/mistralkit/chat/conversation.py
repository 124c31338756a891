"""Fit a conversation into the context window by dropping its oldest turns, never silently."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ContextOverflow
from ..formats.base import Message, split_system


@dataclass
class Fitted:
    messages: list[Message]
    prompt_tokens: int
    dropped_turns: int  # user/assistant exchanges left out, oldest first


def fit(messages: Sequence[Message], count: Callable[[list[Message]], int], n_ctx: int,
        max_tokens: int) -> Fitted:
    """Keep the system prompt and the newest turns so that prompt + ``max_tokens`` <= ``n_ctx``.

    Raises ``ContextOverflow`` with the sizes when even the last message alone does not fit.
    """
    system, turns = split_system(messages)
    head: list[Message] = [{"role": "system", "content": system}] if system is not None else []
    dropped = 0
    while True:
        candidate = head + turns
        n_prompt = count(candidate)
        if n_prompt + max_tokens <= n_ctx:
            return Fitted(candidate, n_prompt, dropped)
        if len(turns) <= 1:
            what = "the message and the system prompt are" if head else "the message is"
            raise ContextOverflow(
                f"{what} {n_prompt} tokens; with max_tokens {max_tokens} that needs "
                f"{n_prompt + max_tokens}, over the context window of {n_ctx}",
                hint="shorten the message, lower --max-tokens, or raise --ctx",
            )
        step = 2 if len(turns) > 2 and turns[1]["role"] == "assistant" else 1
        turns = turns[step:]
        dropped += 1
