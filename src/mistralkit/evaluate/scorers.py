"""Scorers: text matches, multiple choice by log-probability, and an LLM judge.

* ``exact`` / ``contains``: after ``normalize`` (lower case, no punctuation, no English articles,
  single spaces), as SQuAD-style evaluations compare answers.
* ``regex``: ``re.search`` of the item's pattern in the raw output.
* ``choice``: each choice is scored as the assistant's answer to the item's conversation, with the
  prompt and answer tokens laid out exactly as training lays them out (``formats.layout``: the same
  chat format as inference). Its score is the sum of the log-probabilities the engine gives its
  answer tokens (the closing EOS left out), as lm-evaluation-harness scores ``acc``; the highest
  wins. No text is generated.
* ``tool_call``: the item's conversation is prompted with its tools as the server prompts a chat
  request (``turn.py``: Mistral's native layout, the fallback elsewhere, a grammar for
  ``required`` or a named function); correct when a call in the answer names the expected function
  and its arguments contain each expected argument (``call_matches``).
* ``judge``: another model reads a rubric, the question, the reference (if any) and the answer, and
  replies ``Score: N`` (1-5) and ``Reason: ...``; the item counts as correct at ``pass_mark`` or above.
  ``judge`` asks for one verdict; ``datagen``'s judge gate calls it too, with ``constrained`` (the reply
  held to that shape by a grammar, so that even a small model gives a score).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from ..formats.base import Message
from ..tune.data import Sample

ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    return " ".join(ARTICLES.sub(" ", text.lower().translate(PUNCTUATION)).split())


def exact(output: str, expected: str) -> bool:
    return normalize(output) == normalize(expected)


def contains(output: str, expected: str) -> bool:
    return normalize(expected) in normalize(output)


def regex(output: str, pattern: str) -> bool:
    return re.search(pattern, output) is not None


# --- multiple choice --------------------------------------------------------------------------

def choice_tokens(encoder, messages: Sequence[Message], choice: str) -> tuple[list[int], list[int]]:
    """(prompt tokens, answer tokens) of ``choice`` as the assistant's reply, as training encodes it."""
    from ..formats.layout import IGNORE, encode

    sample = Sample(messages=(*messages, {"role": "assistant", "content": choice}),
                    weights=(*([0.0] * len(messages)), 1.0))
    encoded = encode(sample, encoder)
    start = next(i for i, label in enumerate(encoded.labels) if label != IGNORE)
    answer = [t for t, label in zip(encoded.input_ids[start:], encoded.labels[start:]) if label != IGNORE]
    if len(answer) > 1 and answer[-1] in (encoder.eos_id, *_closers(encoder)):
        answer = answer[:-1]  # the turn's end is not part of the choice
    return encoded.input_ids[:start], answer


def _closers(encoder) -> tuple[int, ...]:
    return tuple(getattr(encoder.format, "stop_token_ids", ()) or ())


def choice_logprobs(engine, encoder, messages: Sequence[Message], choices: Sequence[str]) -> list[float]:
    """Sum of answer-token log-probabilities of each choice, from the engine (capability ``logprobs``)."""
    from ..engines import require

    require(engine, "logprobs", "multiple-choice scoring")
    out = []
    for choice in choices:
        prompt, answer = choice_tokens(encoder, messages, choice)
        out.append(math.fsum(engine.logprobs([*prompt, *answer], len(prompt))))
    return out


# --- tool calls -------------------------------------------------------------------------------

def _same(got, want) -> bool:
    if isinstance(want, str):
        return isinstance(got, str) and normalize(got) == normalize(want)
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and _same(got[k], v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_same, got, want))
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    return got == want


def call_matches(calls: Sequence[dict] | None, expected: dict) -> bool:
    """Whether one of ``calls`` (OpenAI's ``{"function": {"name", "arguments"}}``) is ``expected``:
    the same name, and arguments (a JSON object) holding every expected argument with an equal
    value (strings after ``normalize``, objects recursively, so extra arguments are allowed).

    >>> call_matches([{"function": {"name": "f", "arguments": '{"city": "Paris", "days": 3}'}}],
    ...              {"name": "f", "arguments": {"city": "paris"}})
    True
    """
    import json

    for call in calls or ():
        function = call.get("function", call)
        if function.get("name") != expected["name"]:
            continue
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            continue
        if _same(arguments, expected.get("arguments", {})):
            return True
    return False


def tool_turn(engine, item, messages: Sequence[Message]):
    """The server's prompt, grammar and parser for this item's conversation and tools (``turn.prepare``)."""
    from ..turn import functions_of, prepare

    return prepare(engine, [dict(m) for m in messages], functions_of(item.tools), item.tool_choice)


# --- the judge --------------------------------------------------------------------------------

RUBRIC = ("Score the answer from 1 (wrong or useless) to 5 (correct, complete and clear). "
          "Use the reference answer when there is one.")
SCORE = re.compile(r"score\s*[:=]?\s*([1-5])\b", re.IGNORECASE)
REASON = re.compile(r"reason\s*[:=]\s*(.+)", re.IGNORECASE | re.DOTALL)


@dataclass
class Verdict:
    score: int | None  # 1-5, None when the judge's reply had no score
    reason: str
    raw: str


def judge_prompt(rubric: str, question: str, answer: str, reference: str | None) -> str:
    parts = [rubric.strip(), "", f"Question: {question}"]
    if reference:
        parts.append(f"Reference answer: {reference}")
    parts += [f"Answer to score: {answer}", "",
              "Reply with two lines, exactly:", "Score: <1-5>", "Reason: <one sentence>"]
    return "\n".join(parts)


VERDICT_GRAMMAR = 'root ::= "Score: " [1-5] "\\nReason: " [^\\n]+'


def judge(engine, rubric: str, question: str, answer: str, reference: str | None = None, *, max_tokens: int = 96,
          seed: int | None = 0, constrained: bool = False, cancel=None) -> Verdict:
    """The verdict of the model behind ``engine`` (greedy) on ``answer``; with ``constrained`` and an engine
    that takes grammars, its reply can only be ``Score: N`` and a reason line."""
    from ..engines import GenerationParams, complete

    grammar = VERDICT_GRAMMAR if constrained and engine.capabilities.grammar else None
    prompt = judge_prompt(rubric, question, answer, reference)
    reply = complete(engine, [{"role": "user", "content": prompt}],
                     GenerationParams(max_tokens=max_tokens, greedy=True, seed=seed, grammar=grammar), cancel)
    return parse_verdict(reply.text)


def parse_verdict(reply: str) -> Verdict:
    found = SCORE.search(reply)
    reason = REASON.search(reply)
    text = reason.group(1).strip().splitlines()[0] if reason else reply.strip()[:300]
    if found is None:
        return Verdict(None, f"the judge gave no score: {text}", reply)
    return Verdict(int(found.group(1)), text, reply)
