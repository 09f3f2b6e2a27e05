"""A training run's progress on the terminal.

First one line saying what is trained, on what and into which folder (:func:`start_line`).
On a terminal, a bar of the run's steps whose postfix shows the last logged loss and the last
evaluation, refreshed as soon as either happens. Redirected to a file (stderr not a terminal),
plain lines instead, no carriage returns or cursor movements: one after every evaluation (its
validation value, named: ``valid MRR`` for link prediction) and, at the logging points, one at
most every :data:`PLAIN_SECONDS`. Quiet: nothing. See :mod:`fastleading.run.console`.

The head warm-up before the steps (:class:`WarmupDisplay`) shows its epochs the same way: a bar
with the last and the best validation value on a terminal; redirected, a line when it starts,
one at most every :data:`PLAIN_SECONDS` and one when it ends.
"""

from __future__ import annotations

import math
import sys
import time

from fastleading.run import console
from fastleading.run.selection import improves

PLAIN_SECONDS = 60.0


def start_line(method: str, dataset: str, num_nodes: int, split: str, sizes: tuple[int, int, int], unit: str,
               out_dir, resume: bool) -> str:
    """``leading on citeseer-tag: 3,186 nodes, split low-0: 120 train / 500 valid / 1,000 test
    nodes; run folder runs/x`` (``unit``: what the split counts, nodes or edges)."""
    train, valid, test = sizes
    return (f"{method} on {dataset}: {num_nodes:,} nodes, split {split}: {train:,} train / {valid:,} valid / "
            f"{test:,} test {unit}; run folder {out_dir}" + (" (resuming)" if resume else ""))


def show_start(tr, out_dir, resume: bool) -> None:
    """Print the :func:`start_line` of the trainer ``tr`` on stderr unless it is quiet."""
    if tr.quiet or console.is_quiet():
        return
    cfg, split = tr.cfg, tr.split
    name = tr.task.split.name if tr.task is not None else cfg.data.split or tr.graph.default_split
    print(start_line(cfg.train.method, cfg.data.dataset, tr.graph.num_nodes, name,
                     (len(split.train), len(split.valid), len(split.test)),
                     "nodes" if tr.task is None else "edges", out_dir, resume), file=sys.stderr, flush=True)


class StepDisplay:
    """Progress of ``total`` steps, from ``initial`` (a resumed run), over ``epochs`` epochs;
    ``valid`` is the last evaluation's validation value before this call (NaN: none yet),
    ``metric`` its name in the lines (``valid``: accuracy; ``valid MRR``...)."""

    def __init__(self, desc: str, total: int, initial: int, epochs: int, quiet: bool, valid: float = math.nan,
                 metric: str = "valid"):
        self.desc, self.total, self.step, self.epochs, self.metric = desc, total, initial, epochs, metric
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
        assert self.bar is not None  # called where a bar is drawn
        self.bar.set_postfix(loss=f"{self.loss:.3f}", valid=f"{self.valid:.3f}")

    def _line(self, step: int, evaluated: bool = False) -> None:
        # an evaluation line shows the evaluation only (the last logged loss may be steps old)
        what = (f"epoch {self.epoch}/{self.epochs} evaluated: {self.metric} {self.valid:.4f}" if evaluated
                else f"epoch {self.epoch + 1}/{self.epochs}: loss {self.loss:.4f}, {self.metric} {self.valid:.4f}")
        print(f"{self.desc}: step {step}/{self.total}, {what}", file=sys.stderr, flush=True)
        self._last_line = time.monotonic()


class WarmupDisplay:
    """Progress of the head warm-up's ``epochs`` epochs (``how``: ``full batch`` or
    ``mini-batches``), each evaluated; ``desc`` and ``metric`` as in :class:`StepDisplay`. The
    best is the first best under :func:`fastleading.run.selection.improves`, the warm-up's own rule."""

    def __init__(self, desc: str, epochs: int, how: str, quiet: bool, metric: str = "valid"):
        self.desc, self.epochs, self.metric = desc, epochs, metric
        self.best: dict | None = None
        self.bar = console.bar(total=epochs, desc=f"{desc} head warm-up", unit="epoch") \
            if console.bars_enabled(quiet) else None
        self.plain = self.bar is None and not quiet and not console.is_quiet()
        self._start = self._last_line = time.monotonic()
        if self.plain:
            self._print(f"head warm-up, {epochs} epochs of the head on the frozen LM's embeddings ({how})")

    def evaluated(self, epoch: int, metrics: dict) -> None:
        """Warm-up epoch ``epoch`` (counted from 1) evaluated: ``metrics["valid"]`` is its value."""
        if improves(metrics, self.best["valid"] if self.best else math.nan, self.best is not None):
            self.best = {"epoch": epoch, "valid": metrics["valid"]}
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({"valid": f"{metrics['valid']:.3f}", "best": f"{self._best_valid():.3f}"})
        elif self.plain and time.monotonic() - self._last_line >= PLAIN_SECONDS:
            self._print(f"head warm-up epoch {epoch}/{self.epochs}: {self.metric} {metrics['valid']:.4f}, best "
                        f"{self._best_valid():.4f} (epoch {self.best['epoch'] if self.best else '-'})")

    def close(self, kept: dict) -> None:
        """The warm-up ended; ``kept``: the evaluation of the head it keeps (the run's epoch 0)."""
        if self.bar is not None:
            self.bar.close()
        elif self.plain:
            self._print(f"head warm-up done: {self.epochs} epochs in {time.monotonic() - self._start:.0f} s; the "
                        f"kept head (epoch 0 of the run): {self.metric} {kept['valid']:.4f}")

    def _best_valid(self) -> float:
        return self.best["valid"] if self.best else math.nan

    def _print(self, what: str) -> None:
        print(f"{self.desc}: {what}", file=sys.stderr, flush=True)
        self._last_line = time.monotonic()
