"""Experiment tracking (``train.report_to``): the run's metrics in TensorBoard or Weights & Biases.

The trainer writes ``metrics.jsonl`` at its logging points (every ``train.log_every`` steps,
and one line per evaluation); a tracker receives every one of those records
(:class:`fastleading.trainer.metrics.MetricsLog` hands them over) and logs, at the record's
``step``:

- the record's numbers, nested dicts flattened with ``/`` (``loss``, ``grad_norm``, ``lr_lm``,
  ``epoch``; an evaluation's ``eval/train``, ``eval/valid``, ``eval/test`` or the link
  metrics, ``propagation_iters``);
- ``encodes_per_node/<kind>``: the LM encodes so far by kind (grad, refresh, fill, eval)
  divided by the nodes of the graph;
- ``phase_time_s/<phase>``: the seconds spent so far in each phase of a step.

The head warm-up's evaluations (``warmup_eval`` records, up to ``train.downstream_epochs`` of
them, all before the first step) go on an axis of their own, the warm-up epoch
(:meth:`Tracker.log`): ``warmup/train``, ``warmup/valid``, ``warmup/test`` (link runs: their
metrics), ``warmup/propagation_iters``.

All of it is already on the host at a logging point (the loss was just read for
``metrics.jsonl``; encode counts and phase timers are host numbers), so tracking adds no
device read. Only rank 0 tracks. The fixed-feature baselines (``pretrained``, ``shallow``)
write no per-step metrics and are not tracked.

- ``tensorboard``: event files in ``OUT/tensorboard/`` (``torch.utils.tensorboard``; the
  ``tensorboard`` extra). A resumed run purges the events logged after its checkpoint's step,
  as ``metrics.jsonl`` drops its lines. The warm-up's are in ``OUT/tensorboard/warmup/`` (a run
  of its own in TensorBoard, step = warm-up epoch; no resume purges them: a resumed run does
  not warm up again).
- ``wandb``: ``wandb.init(dir=OUT, mode=offline)`` unless ``WANDB_MODE`` says otherwise (then
  ``wandb sync OUT/wandb/offline-run-*`` uploads it); project ``$WANDB_PROJECT`` or
  ``fastleading``, run name the run folder's name, the resolved config as the run's config.
  A resumed run continues the same wandb run (its id is kept in ``OUT/wandb-run-id``). wandb's
  history has one row per step, so the warm-up's evaluations go in one table, ``warmup/evaluations``
  (a column per metric, a row per warm-up epoch), and one chart of them against the warm-up epoch,
  ``warmup/curves``, logged at the step of the first record after the warm-up.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Protocol

from fastleading.errors import FastleadingError

BACKENDS = ("none", "tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
WARMUP_DIR = "warmup"  # the warm-up's event files, inside TENSORBOARD_DIR
WANDB_ID_FILE = "wandb-run-id"
HINTS = {"tensorboard": "train.report_to=tensorboard needs tensorboard: pip install 'fastleading[tensorboard]'",
         "wandb": "train.report_to=wandb needs wandb: pip install 'fastleading[wandb]'"}


class Sink(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...

    def log_warmup(self, scalars: dict[str, float], epoch: int) -> None: ...

    def close(self) -> None: ...


def require(backend: str) -> None:
    """Fail with one line, before anything trains, when ``backend``'s package does not import."""
    if backend not in BACKENDS:
        raise FastleadingError(f"config key 'train.report_to': expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "none":
        return
    try:
        if backend == "tensorboard":
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        else:
            import wandb  # noqa: F401
    except ImportError:
        raise FastleadingError(HINTS[backend]) from None


def flatten(record: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of ``record`` (nested dicts joined with ``/``; ``step`` left out, bools and
    strings skipped)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step":
            out[name] = float(value)
    return out


class Tracker:
    """Turns ``metrics.jsonl`` records into scalars for a :class:`Sink`, with the run's encode
    counts per node and phase times at the same step.

    Args:
        sink: where the scalars go (TensorBoard, wandb, or a test's list).
        counter: the run's :class:`fastleading.models.encode.EncodeCounter` (host totals).
        phases: the run's :class:`fastleading.engine.profiling.Phases` (host seconds).
        num_nodes: nodes of the graph (the encode counts are divided by it).
    """

    def __init__(self, sink: Sink, counter, phases, num_nodes: int):
        self.sink, self.counter, self.phases, self.num_nodes = sink, counter, phases, max(int(num_nodes), 1)

    def log(self, record: dict) -> None:
        if "warmup_epoch" in record:  # the head warm-up's evaluations: their own axis, the warm-up epoch
            self.sink.log_warmup(flatten({"warmup": {**record["warmup_eval"],
                                                     "propagation_iters": record["propagation_iters"]}}),
                                 int(record["warmup_epoch"]))
            return
        scalars = flatten(record)
        scalars.update({f"encodes_per_node/{kind}": count / self.num_nodes
                        for kind, count in self.counter.totals.items()})
        scalars.update({f"phase_time_s/{name}": float(seconds) for name, seconds in self.phases.totals.items()})
        self.sink.log(scalars, int(record["step"]))

    def close(self) -> None:
        self.sink.close()


class TensorBoardSink:
    """Scalars into event files under ``log_dir`` (``purge_step``: drop events at and after it,
    for a resumed run); the warm-up's under ``log_dir/warmup``, where no purge reaches them."""

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self.warmup_writer: SummaryWriter | None = None  # opened by the first warm-up record

    def log(self, scalars: dict[str, float], step: int) -> None:
        _add_scalars(self.writer, scalars, step)

    def log_warmup(self, scalars: dict[str, float], epoch: int) -> None:
        if self.warmup_writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.warmup_writer = SummaryWriter(log_dir=str(self.log_dir / WARMUP_DIR))
        _add_scalars(self.warmup_writer, scalars, epoch)

    def close(self) -> None:
        self.writer.close()
        if self.warmup_writer is not None:
            self.warmup_writer.close()


def _add_scalars(writer, scalars: dict[str, float], step: int) -> None:
    for name, value in scalars.items():
        writer.add_scalar(name, value, step)
    writer.flush()


class WandbSink:
    """Scalars into a Weights & Biases run in ``out_dir`` (offline unless ``WANDB_MODE`` is set)."""

    def __init__(self, out_dir: Path, config: dict, resumed: bool):
        import wandb

        id_file = out_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if resumed and id_file.is_file() else secrets.token_hex(4)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fastleading"), name=out_dir.name,
                              dir=str(out_dir), id=run_id, resume="allow", config=config,
                              mode=os.environ.get("WANDB_MODE", "offline"))
        id_file.write_text(run_id + "\n")
        self.warmup: list[tuple[int, dict[str, float]]] = []

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log({**self._warmup_panels(), **scalars}, step=step)

    def log_warmup(self, scalars: dict[str, float], epoch: int) -> None:
        self.warmup.append((epoch, scalars))  # logged with the next record (a table and its chart)

    def _warmup_panels(self) -> dict:
        """The warm-up's evaluations held so far as a ``wandb.Table`` and a chart of its
        columns against the warm-up epoch (then forgotten); empty when there are none."""
        if not self.warmup:
            return {}
        import wandb

        names = sorted({name.removeprefix("warmup/") for _, scalars in self.warmup for name in scalars})
        rows = [[epoch, *(scalars.get(f"warmup/{name}", float("nan")) for name in names)]
                for epoch, scalars in self.warmup]
        self.warmup = []
        curves = [i for i, name in enumerate(names) if name not in ("propagation_iters", "nonfinite")]  # the scores
        return {"warmup/evaluations": wandb.Table(columns=["epoch", *names], data=rows),
                "warmup/curves": wandb.plot.line_series(xs=[row[0] for row in rows],
                                                        ys=[[row[1 + i] for row in rows] for i in curves],
                                                        keys=[names[i] for i in curves], title="head warm-up",
                                                        xname="warm-up epoch")}

    def close(self) -> None:
        panels = self._warmup_panels()
        if panels:  # a run that ended right after its warm-up
            self.run.log(panels)
        self.run.finish()


def open_tracker(cfg, out_dir: Path, counter, phases, num_nodes: int,
                 resumed_from: int | None = None) -> Tracker | None:
    """The tracker of ``cfg.train.report_to`` for the run in ``out_dir`` (None for ``none``);
    call on rank 0 only. ``resumed_from``: the step of the checkpoint a resumed run starts from."""
    backend = cfg.train.report_to
    require(backend)
    if backend == "none":
        return None
    sink: Sink
    if backend == "tensorboard":
        sink = TensorBoardSink(out_dir / TENSORBOARD_DIR, None if resumed_from is None else resumed_from + 1)
    else:
        sink = WandbSink(out_dir, cfg.to_dict(), resumed_from is not None)
    return Tracker(sink, counter, phases, num_nodes)
