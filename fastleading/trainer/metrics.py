"""What a run reports: ``metrics.jsonl`` (one line per logged step and per evaluation) and
``summary.json`` (the run in one object)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fastleading.distributed import all_reduce_sum, is_main
from fastleading.encode import EncodeCounter
from fastleading.io import atomic_write_text


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step and per evaluation (rank 0 only:
    on other ranks nothing is opened and ``write`` does nothing). ``tracker`` (a
    :class:`fastleading.tracking.Tracker`, ``train.report_to``) gets every record too."""

    def __init__(self, path: Path, resume_step: int | None, tracker=None):
        self.path = path
        self._f = None
        self.tracker = tracker
        if not is_main():
            return
        if resume_step is not None and path.exists():
            # Drop lines written after the checkpoint we resume from: they will be written again.
            keep = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in keep))
        # a run that starts (not resumes) starts its own file: never appended to an old run's lines
        self._f = open(path, "a" if resume_step is not None else "w")

    def write(self, record: dict) -> None:
        if self._f is not None:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()
        if self.tracker is not None:
            self.tracker.log(record)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
        if self.tracker is not None:
            self.tracker.close()


def encode_rates(counter: EncodeCounter, num_train: int, num_nodes: int, epochs: float) -> dict:
    """LM encodes per node per epoch, summed over ranks (collective).

    ``encodes_per_node_per_epoch`` divides the training steps' encodes by the targets per
    epoch (the paper's "encoding times per node": 1 + 1 for LEADING with equal batch sizes;
    ``nograd`` is pipeline 2); ``encodes_per_graph_node_per_epoch`` divides by the nodes of
    the graph and also reports the bank fill, evaluation and ``nograd_total`` (pipeline 2 plus
    evaluation: every no-gradient encode of the training itself, the fill excepted)."""
    totals = all_reduce_sum(torch.tensor([counter.totals[k] for k in EncodeCounter.KINDS], dtype=torch.float64))
    by_kind = dict(zip(EncodeCounter.KINDS, totals.tolist()))
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
                                             "nograd_total": (by_kind["refresh"] + by_kind["eval"]) / num_nodes / epochs},
    }


def write_summary(out_dir: Path, summary: dict) -> None:
    if is_main():
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
