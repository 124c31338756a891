"""The judge gate: before a case is accepted, a model scores it against a rubric (``judge:`` in the spec).

.. code-block:: yaml

    judge:
      model: ministral-3b      # anything mistralkit resolves (a name, a .gguf path, a remote); default:
                               # the embedded default model
      rubric: |                # what a 5 and a 1 are (default: RUBRIC)
        ...
      min_score: 3             # 0-5: the judge scores 1-5; a reply without a score counts 0; 0 accepts all
      max_tokens: 64           # the verdict's length
      timeout_s: 60            # the longest a submission waits for the judge, queue included (<= 300)
      ctx: 4096                # the judge's context window: rubric, instruction and case must fit

The verdict is ``evaluate.scorers.judge``, the one ``mistralkit eval --judge`` uses, asked greedily
with the instruction's prompt as the question and the case as the answer; where the engine takes
grammars its reply is held to ``Score: N`` and a reason line. The model is loaded once, when the
state opens, and runs one verdict at a time. A verdict that does not come within ``timeout_s`` is
cancelled and the submission answered 503 (``JudgeBusy``): nothing is stored, the same text may be
sent again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..errors import ContextOverflow, MistralkitError
from .errors import DatagenError
from .specfile import Found, mapping, node_value, read_numbers

RUBRIC = ("Score the case from 1 to 5. 5: a realistic message of the kind asked for, in natural words, that "
          "states every fact of the record and adds none that contradicts it. 3: realistic but a fact is "
          "missing or vague. 1: not a message (fields, lists of values, the instructions repeated) or "
          "facts that contradict the record.")
KEYS = ("model", "rubric", "min_score", "max_tokens", "timeout_s", "ctx")


class JudgeBusy(DatagenError):
    """The judge gave no verdict in time; nothing was stored, the submission may be sent again."""

    status = 503


class JudgeFailed(DatagenError):
    """The judge cannot score this submission as the spec sets it up (its context window is too small)."""

    status = 500


@dataclass(frozen=True)
class JudgeSpec:
    """How the judge gate is set up (``judge:`` in the spec)."""

    model: str | None = None  # None: the embedded default model
    rubric: str = RUBRIC
    min_score: int = 3
    max_tokens: int = 64
    timeout_s: float = 60.0
    ctx: int = 4096


def read_judge(node, found: Found) -> JudgeSpec | None:
    """The ``judge:`` mapping, checked (the model must resolve here and now); None after a problem."""
    before = len(found.errors)
    fields = mapping(node, found, KEYS, "judge")
    if not fields and len(found.errors) == before:
        found(node, "judge must be a mapping with at least min_score", hint="keys: " + ", ".join(KEYS))
    out: dict = {}
    numbers = {"min_score": (int, lambda v: 0 <= v <= 5, "a whole number from 0 to 5 (the judge scores 1-5)"),
               "max_tokens": (int, lambda v: 8 <= v <= 1024, "a whole number of tokens from 8 to 1024"),
               "timeout_s": (float, lambda v: 0 < v <= 300, "a number of seconds above 0 and at most 300"),
               "ctx": (int, lambda v: 512 <= v <= 131072, "a whole number of tokens from 512 to 131072")}
    out.update(read_numbers(fields, numbers, found, "judge."))
    for key in ("model", "rubric"):
        if key in fields:
            value = node_value(fields[key][1])
            if not isinstance(value, str) or not value.strip():
                found(fields[key][1], f"judge.{key} must be a non-empty text")
            else:
                out[key] = value.strip()
    if "model" in out or "model" not in fields:
        problem = model_problem(out.get("model"))
        if problem is not None:
            found(fields["model"][1] if "model" in fields else node, f"judge.model: {problem.message}", problem.hint)
    return JudgeSpec(**out) if len(found.errors) == before else None


def model_problem(ref: str | None) -> MistralkitError | None:
    """Why ``ref`` does not name a model mistralkit can load here (nothing is pulled), or None."""
    from ..models import resolve
    from ..models.remotes import lookup

    try:
        if ref is None or lookup(ref) is None:
            resolve(ref)
    except MistralkitError as exc:
        return exc
    return None


class Judge:
    """The judge model, loaded once; ``verdict`` is bounded in tokens and in time."""

    def __init__(self, spec: JudgeSpec) -> None:
        from .. import api

        from ..models.store import default_ref

        self.spec = spec
        settings = {"model": spec.model or default_ref(), "ctx": spec.ctx, "greedy": True}
        self.loaded = api.load(api.load_settings(settings).settings)
        self._turn = threading.Lock()  # one verdict at a time: the engine is loaded with one sequence

    def verdict(self, question: str, case_text: str, cancel: threading.Event | None = None):
        """The judge's ``scorers.Verdict`` on ``case_text``; ``JudgeBusy`` when it takes over ``timeout_s`` or
        ``cancel`` is set (the client left), waiting for its turn included."""
        from ..evaluate import scorers

        started = time.monotonic()
        cancel = cancel if cancel is not None else threading.Event()
        while not self._turn.acquire(timeout=0.1):
            if cancel.is_set() or time.monotonic() - started >= self.spec.timeout_s:
                raise self._busy("other submissions are being judged")
        timer = threading.Timer(max(0.0, self.spec.timeout_s - (time.monotonic() - started)), cancel.set)
        timer.start()
        try:
            found = scorers.judge(self.loaded.engine, self.spec.rubric, question, case_text,
                                  max_tokens=self.spec.max_tokens, constrained=True, cancel=cancel)
        except ContextOverflow as exc:
            raise JudgeFailed(f"the judge cannot read this case: {exc.message}",
                              hint="raise judge.ctx in the spec (or lower max_chars)") from exc
        finally:
            timer.cancel()
            self._turn.release()
        if cancel.is_set():
            raise self._busy("the verdict was cancelled")
        return found

    def passes(self, verdict) -> bool:
        return (verdict.score or 0) >= self.spec.min_score

    def detail(self, verdict) -> str:
        """What the submission records: the judge, its score against the minimum, its reason."""
        shown = "no score" if verdict.score is None else f"score {verdict.score}/5"
        return f"{self.name} gave {shown} (minimum {self.spec.min_score}): {verdict.reason}"

    @property
    def name(self) -> str:
        return f"the judge ({self.loaded.model.name})"

    def _busy(self, why: str) -> JudgeBusy:
        return JudgeBusy(f"{self.name} gave no verdict within {self.spec.timeout_s:g} s ({why}); nothing was stored",
                         hint="send the same submission again in a moment")

    def close(self) -> None:
        self.loaded.close()
