"""A training run's progress on the terminal.

On a terminal, a bar of the run's steps whose postfix shows the last logged loss and the last
evaluation, refreshed as soon as either happens. Redirected to a file (stderr not a terminal),
plain lines instead, no carriage returns or cursor movements: one after every evaluation and,
at the logging points, one at most every :data:`PLAIN_SECONDS`. Quiet: nothing.
See :mod:`fastleading.console`.
"""

from __future__ import annotations

import math
import sys
import time

from fastleading import console

PLAIN_SECONDS = 60.0


class StepDisplay:
    """Progress of ``total`` steps, from ``initial`` (a resumed run), over ``epochs`` epochs;
    ``valid`` is the last evaluation's validation value before this call (NaN: none yet)."""

    def __init__(self, desc: str, total: int, initial: int, epochs: int, quiet: bool, valid: float = math.nan):
        self.desc, self.total, self.step, self.epochs = desc, total, initial, epochs
        self.epoch, self.loss, self.valid = 0, math.nan, valid
        self.bar = console.bar(total=total, initial=initial, desc=desc, unit="step") \
            if console.bars_enabled(quiet) else None
        self.plain = self.bar is None and not quiet and not console.is_quiet()
        self._last_line = time.monotonic()

    def logged(self, step: int, epoch: int, loss: float) -> None:
        """A logging point: the loss of ``step`` (in epoch ``epoch``, counted from 0)."""
        self.epoch, self.loss = epoch, loss
        if self.bar is not None:
            self._postfix()
        elif self.plain and time.monotonic() - self._last_line >= PLAIN_SECONDS:
            self._line(step)

    def evaluated(self, step: int, epoch: int, valid: float) -> None:
        """An evaluation after ``epoch`` epochs (counted from 1) at ``step``: shown at once."""
        self.epoch, self.valid = epoch, valid
        if self.bar is not None:
            self._postfix()
        elif self.plain:
            self._line(step, evaluated=True)

    def advance(self) -> None:
        self.step += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _postfix(self) -> None:
        self.bar.set_postfix(loss=f"{self.loss:.3f}", valid=f"{self.valid:.3f}")

    def _line(self, step: int, evaluated: bool = False) -> None:
        what = f"epoch {self.epoch}/{self.epochs} evaluated" if evaluated else f"epoch {self.epoch + 1}/{self.epochs}"
        print(f"{self.desc}: step {step}/{self.total}, {what}: loss {self.loss:.4f}, valid {self.valid:.4f}",
              file=sys.stderr, flush=True)
        self._last_line = time.monotonic()
