"""What a run reports: ``metrics.jsonl`` (one line per logged step and per evaluation) and
``summary.json`` (the run in one object)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from fastleading.engine.distributed import all_reduce_sum, is_main
from fastleading.errors import FastleadingError
from fastleading.models.encode import EncodeCounter
from fastleading.run.io import atomic_write_text, write_error


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step and per evaluation (rank 0 only:
    on other ranks nothing is opened and ``write`` does nothing).

    Resuming from the checkpoint of step ``resume_step`` with ``evals`` evaluations in its history
    keeps the step lines up to that step and the first ``evals`` evaluation lines (the later ones
    are written again: an evaluation logged after that checkpoint, at its step, is one of them);
    without one (``None``: a fresh run, or a resumed run killed before its first checkpoint, which
    starts over) the file starts empty. A torn last line (the run was killed, or the disk filled,
    while writing it) is dropped with one line on stderr; an unreadable line before the last is
    an error naming it. Each line is written unbuffered: a write that fails (disk full) leaves
    no buffered rest behind and stops with one line naming the file. ``tracker`` (a
    :class:`fastleading.run.tracking.Tracker`, ``train.report_to``) gets every record too."""

    def __init__(self, path: Path, resume_step: int | None, evals: int = 0, tracker=None):
        self.path = path
        self._f = None
        self.tracker = tracker
        if not is_main():
            return
        if resume_step is not None and path.exists():
            keep, seen = [], 0
            for record in read_records(path):
                seen += "eval" in record
                if ("eval" in record and seen <= evals) or ("eval" not in record
                                                            and record.get("step", 0) <= resume_step):
                    keep.append(json.dumps(record) + "\n")
            atomic_write_text(path, "".join(keep))
        try:
            self._f = open(path, "ab" if resume_step is not None else "wb", buffering=0)  # noqa: SIM115 (the log's file: closed by close())
        except OSError as e:
            raise write_error(path, e, "cannot open") from None

    def write(self, record: dict) -> None:
        if self.tracker is not None:
            self.tracker.log(record)
        if self._f is None:
            return
        data = memoryview((json.dumps(record) + "\n").encode())
        try:
            while data:  # a raw write may write less than asked (the last bytes before a size limit)
                data = data[self._f.write(data):]
        except OSError as e:
            raise write_error(self.path, e) from None

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
        if self.tracker is not None:
            self.tracker.close()


def read_records(path: Path) -> list[dict]:
    """The JSON objects of ``metrics.jsonl``, one per line; a torn last line is dropped (said on
    stderr), any other line that is not a JSON object is an error naming it."""
    lines = [(i, line) for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if line.strip()]
    records = []
    for k, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif k == len(lines) - 1:
            print(f"fastleading: {path}: dropped its torn last line {number} (the run was killed or the disk "
                  "filled while writing it)", file=sys.stderr)
        else:
            raise FastleadingError(f"{path}: line {number} is not a JSON object (expected one per line, as "
                                   "`fastleading train` writes)")
    return records


def encode_rates(counter: EncodeCounter, num_train: int, num_nodes: int, epochs: float) -> dict:
    """LM encodes per node per epoch, summed over ranks (collective).

    ``encodes_per_node_per_epoch`` divides the training steps' encodes by the targets per
    epoch (the paper's "encoding times per node": 1 + 1 for LEADING with equal batch sizes;
    ``nograd`` is pipeline 2); ``encodes_per_graph_node_per_epoch`` divides by the nodes of
    the graph and also reports the bank fill, evaluation and ``nograd_total`` (pipeline 2 plus
    evaluation: every no-gradient encode of the training itself, the fill excepted)."""
    totals = all_reduce_sum(torch.tensor([counter.totals[k] for k in EncodeCounter.KINDS], dtype=torch.float64))
    by_kind = dict(zip(EncodeCounter.KINDS, totals.tolist(), strict=True))
    epochs = max(epochs, 1e-9)
    return {
        # the counts themselves: a run shorter than an epoch (train.max_steps) makes the
        # per-epoch rates below large (one evaluation divided by a fraction of an epoch)
        "encodes_total": {kind: int(count) for kind, count in by_kind.items()},
        "encodes_per_node_per_epoch": {"grad": by_kind["grad"] / num_train / epochs,
                                       "nograd": by_kind["refresh"] / num_train / epochs},
        "encodes_per_graph_node_per_epoch": {"grad": by_kind["grad"] / num_nodes / epochs,
                                             "nograd": by_kind["refresh"] / num_nodes / epochs,
                                             "fill": by_kind["fill"] / num_nodes / epochs,
                                             "eval": by_kind["eval"] / num_nodes / epochs,
                                             "nograd_total": (by_kind["refresh"] + by_kind["eval"])
                                             / num_nodes / epochs},
    }


def write_summary(out_dir: Path, summary: dict) -> None:
    if is_main():
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
