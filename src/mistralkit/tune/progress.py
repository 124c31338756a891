"""What a training run says while it works: what it is loading, then a line (or a bar) per step.

On a terminal the steps are a rich bar; in a pipe or a log file (where a bar shows nothing until the
end) each of the first ten steps is a line on stderr, then every twentieth of the run, and the last::

    tune: step 1/40  loss 2.3012  310 tok/s  eta 52s
"""

from __future__ import annotations

import sys
from typing import Any

PLAIN_FIRST = 10  # steps always printed in plain mode: the first minutes are never silent


def say(text: str, enabled: bool = True) -> None:
    """One ``tune: ...`` line on stderr, at once."""
    if enabled:
        print(f"tune: {text}", file=sys.stderr, flush=True)


class Progress:
    """A rich progress bar with loss, tokens/s and ETA on a terminal, plain lines elsewhere; silent
    when disabled."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self._bar: Any = None
        self._plain = False
        self._total = total
        if not enabled:
            return
        from rich.console import Console

        if not Console().is_terminal:
            self._plain = True
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        self._bar = Bar(TextColumn("tune"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]}  {task.fields[speed]} tok/s"),
                        TimeRemainingColumn(), transient=False)
        self._task = self._bar.add_task("tune", total=total, completed=done, loss="-", speed="-")
        self._bar.start()

    def update(self, state, loss: float, done_before: int = 0) -> None:
        """After step ``state.step``; ``done_before``: the step a resumed run started from."""
        speed = f"{state.tokens / state.seconds:.0f}" if state.seconds else "-"
        if self._bar is not None:
            self._bar.update(self._task, completed=state.step, loss=f"{loss:.4f}", speed=speed)
        elif self._plain and self._due(state.step, done_before):
            eta = f"  eta {state.seconds / state.step * (self._total - state.step):.0f}s"
            say(f"step {state.step}/{self._total}  loss {loss:.4f}  {speed} tok/s{eta}")

    def _due(self, step: int, done_before: int) -> bool:
        every = max(1, self._total // 20)
        return step - done_before <= PLAIN_FIRST or step % every == 0 or step == self._total

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
