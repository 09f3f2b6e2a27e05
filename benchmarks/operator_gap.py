"""The train / evaluation operator gap of LEADING's implicit layer on a real graph.

Evaluation scores a model at the full graph's fixed point ``X* = a (I - (1-a)Â)^{-1} X_in``;
a training step propagates ``model.num_iters`` warm-started iterations over a SAMPLED
subgraph (``train.fanouts``), normalised by ``model.subgraph_norm``, and writes the result
back into the histories. Where the graph is dense (arxiv-2023: mean degree 17.9 against
fanouts [10, 5]) a sampled row misses most of a node's neighbours, and the training forward
can drift from the point the model is scored at.

This benchmark takes one model, the frozen LM with the frozen baseline's head (the head
warm-up, :mod:`fastleading.trainer.warmup`), and scores the same training batches two ways:
at the full graph's fixed point, and by the training forward of each operator setting
(starting, like fine-tuning after the hand-over, from the fixed point, then running
``--batches`` consecutive batches whose forwards write the histories as training does; the
LM and the head do not move, so any drift is the operator's). The implicit layer writes the
histories of the targets only; the ``all rows written`` settings write every node's of the
subgraph, as the code did before. Reported per setting: the
mean loss and accuracy of the training forward on the batch targets, the fixed point's, and
their gaps over the first and the last quarter of the batches. Only training nodes are scored.

    python benchmarks/operator_gap.py --dataset arxiv-2023 --max-length 32 \\
        --out benchmarks/results/arxiv-operator-gap-cpu-2026-12-07.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fastleading.bench.report import git_commit
from fastleading.config import Config, apply_overrides
from fastleading.run.io import atomic_write_text
from fastleading.trainer.batches import epoch_order, global_targets
from fastleading.trainer.evaluate import encode_graph, full_graph_logits
from fastleading.trainer.loop import build_trainer
from fastleading.trainer.warmup import full_batch_warmup, hand_over

# (name, overrides): the default operator and its alternatives
SETTINGS = [
    ("weighted L=2 (default)", []),
    ("weighted L=5", ["model.num_iters=5"]),
    ("full-graph L=2", ["model.subgraph_norm=full-graph"]),
    ("full-graph L=5", ["model.subgraph_norm=full-graph", "model.num_iters=5"]),
    ("full-graph L=10", ["model.subgraph_norm=full-graph", "model.num_iters=10"]),
    ("subgraph L=2", ["model.subgraph_norm=subgraph"]),
    ("full-graph L=2 fanouts 25,10", ["model.subgraph_norm=full-graph", "train.fanouts=[25,10]"]),
    ("weighted L=2 history", ["model.warm_start=history"]),
    ("input L=2 (no history)", ["model.warm_start=input"]),
    ("input L=10 (no history)", ["model.warm_start=input", "model.num_iters=10"]),
    # as the code was before 2026-12-07: every node of a subgraph had its histories written back,
    # the truncated rows of the outer hops included (and the default norm was full-graph)
    ("full-graph L=2 all rows written (the old default)", ["model.subgraph_norm=full-graph"], True),
    ("weighted L=2 all rows written", [], True),
    ("subgraph L=2 all rows written", ["model.subgraph_norm=subgraph"], True),
]


def scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    return float(F.cross_entropy(logits.float(), labels)), float((logits.argmax(1) == labels).float().mean())


@torch.no_grad()
def training_forward(tr, order: torch.Tensor, batches: int, fixed_logits: torch.Tensor,
                     all_rows: bool = False) -> dict:
    """The training forward's and the fixed point's loss / accuracy on ``batches`` consecutive
    batches of ``order``, the histories written as a training step writes them: the targets'
    rows (``all_rows``: every node's of the subgraph, as before)."""
    run, cfg = tr.run, tr.cfg
    model = run.model
    model.eval()  # no dropout: the operator alone
    rows = []
    for b in range(batches):
        targets, _ = global_targets(order, b, cfg.train.batch_size, 0, 1)
        run.step = b + 1
        sub = run.sample(targets)
        x_in = run.bank.lookup(sub.node_ids).float()
        logits = model.classify(x_in, sub.rowptr, sub.col, sub.node_ids, implicit=True,
                                num_iters=cfg.model.num_iters, dinv=sub.dinv,
                                num_targets=None if all_rows else len(targets))[:len(targets)]
        labels = run.labels[targets]
        rows.append((*scores(logits, labels), *scores(fixed_logits[targets], labels)))
    t = torch.tensor(rows, dtype=torch.float64)
    q = max(1, batches // 4)
    return {"train_loss": float(t[:, 0].mean()), "train_acc": float(t[:, 1].mean()),
            "fixed_loss": float(t[:, 2].mean()), "fixed_acc": float(t[:, 3].mean()),
            "loss_gap_first_quarter": float((t[:q, 0] - t[:q, 2]).mean()),
            "loss_gap_last_quarter": float((t[-q:, 0] - t[-q:, 2]).mean()),
            "acc_gap": float((t[:, 1] - t[:, 3]).mean())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="arxiv-2023")
    p.add_argument("--split", default="")
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--override", nargs="*", default=[])
    p.add_argument("--only", default="", help="comma-separated substrings: run the settings whose name has one")
    args = p.parse_args()
    base = ["data.dataset=" + args.dataset, f"data.split={args.split}", f"data.max_length={args.max_length}",
            f"train.seed={args.seed}", *args.override]
    start = time.time()
    first = build_trainer(apply_overrides(Config(), base), Path("/tmp/operator-gap"), quiet=False)
    encode_graph(first, "fill bank", "fill")
    full_batch_warmup(first, first.cfg.train.downstream_epochs, lambda *a: None)
    hand_over(first)
    first.run.model.eval()
    fixed, _, _ = full_graph_logits(first.run.model, first.run.bank.emb, first.graph.rowptr, first.graph.col,
                                    first.cfg, first.run.precision)
    order = epoch_order(first.split.train, args.seed, 0)
    results = []
    for name, overrides, *all_rows in SETTINGS:
        if args.only and not any(part in name for part in args.only.split(",")):
            continue
        tr = build_trainer(apply_overrides(Config(), base + overrides), Path("/tmp/operator-gap"), quiet=True)
        tr.run.bank.emb.copy_(first.run.bank.emb)
        tr.run.model.load_state_dict(first.run.model.state_dict())
        tr.progress.eval_solution = None
        hand_over(tr)  # the fixed point of this model, and the histories started there
        row = {"setting": name, "overrides": overrides, "history_rows": "all" if all_rows else "targets",
               **training_forward(tr, order, args.batches, fixed, bool(all_rows))}
        results.append(row)
        print(json.dumps(row), flush=True)
    out = {"benchmark": "operator_gap", "git_commit": git_commit(), "dataset": args.dataset,
           "split": args.split or first.graph.default_split, "max_length": args.max_length,
           "batches": args.batches, "batch_size": first.cfg.train.batch_size, "seed": args.seed,
           "fanouts": first.cfg.train.fanouts, "wall_time_s": round(time.time() - start, 1),
           "command": "python benchmarks/operator_gap.py " + " ".join(sys.argv[1:]), "results": results}
    atomic_write_text(Path(args.out), json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
