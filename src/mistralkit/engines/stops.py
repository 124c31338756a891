"""Streaming stop-string matching: text that might start a stop string is held back until it is
clear whether it does, so a stop string never reaches the user, even split across tokens."""

from __future__ import annotations

from collections.abc import Iterable


class StopMatcher:
    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add ``text``; return (text safe to show now, whether a stop string was hit)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = self._partial_suffix()
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out

    def _partial_suffix(self) -> int:
        """Length of the longest tail of ``pending`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(stop[:k]):
                    best = k
                    break
        return best


class JsonEnd:
    """Where a streamed JSON object or array closes: llama.cpp's JSON grammars allow whitespace after
    the last brace, which a model can emit until its token limit, so the answer ends at the brace.

    >>> end = JsonEnd(); end.feed('{"a": "}"'), end.feed(', "b": [1]}\\n  ')
    (('{"a": "}"', False), (', "b": [1]}', True))
    """

    def __init__(self) -> None:
        self.depth = 0
        self.started = self.in_string = self.escaped = self.scalar = False

    def feed(self, text: str) -> tuple[str, bool]:
        """(the part of ``text`` up to the closing bracket, whether the value closed there)."""
        if self.scalar:
            return text, False
        for i, char in enumerate(text):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                if not self.started:
                    self.scalar = True  # a bare string value: no bracket to wait for
                    return text, False
                self.in_string = True
            elif char in "{[":
                self.started = True
                self.depth += 1
            elif char in "}]" and self.started:
                self.depth -= 1
                if self.depth == 0:
                    return text[: i + 1], True
            elif not self.started and not char.isspace():
                self.scalar = True
                return text, False
        return text, False
