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

All of it is already on the host at a logging point (the loss was just read for
``metrics.jsonl``; encode counts and phase timers are host numbers), so tracking adds no
device read. Only rank 0 tracks. The fixed-feature baselines (``pretrained``, ``shallow``)
write no per-step metrics and are not tracked.

- ``tensorboard``: event files in ``OUT/tensorboard/`` (``torch.utils.tensorboard``; the
  ``tensorboard`` extra). A resumed run purges the events logged after its checkpoint's step,
  as ``metrics.jsonl`` drops its lines.
- ``wandb``: ``wandb.init(dir=OUT, mode=offline)`` unless ``WANDB_MODE`` says otherwise (then
  ``wandb sync OUT/wandb/offline-run-*`` uploads it); project ``$WANDB_PROJECT`` or
  ``fastleading``, run name the run folder's name, the resolved config as the run's config.
  A resumed run continues the same wandb run (its id is kept in ``OUT/wandb-run-id``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Protocol

from fastleading.errors import FastleadingError

BACKENDS = ("none", "tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
WANDB_ID_FILE = "wandb-run-id"
HINTS = {"tensorboard": "train.report_to=tensorboard needs tensorboard: pip install 'fastleading[tensorboard]'",
         "wandb": "train.report_to=wandb needs wandb: pip install 'fastleading[wandb]'"}


class Sink(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...

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
        scalars = flatten(record)
        scalars.update({f"encodes_per_node/{kind}": count / self.num_nodes
                        for kind, count in self.counter.totals.items()})
        scalars.update({f"phase_time_s/{name}": float(seconds) for name, seconds in self.phases.totals.items()})
        self.sink.log(scalars, int(record["step"]))

    def close(self) -> None:
        self.sink.close()


class TensorBoardSink:
    """Scalars into event files under ``log_dir`` (``purge_step``: drop events at and after it,
    for a resumed run)."""

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


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

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
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
