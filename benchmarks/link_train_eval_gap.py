"""The train / evaluation gap of LEADING link prediction, with and without the forward history.

A link step drops its batch's own positive edges from the sampled subgraph, but with the paper's
forward warm start (``model.warm_start=history``) each node starts from its output of earlier
steps, which propagated across those same edges: the training scores can see the edge they are
asked to predict. This benchmark trains LEADING on CiteSeer-TAG with one edge split for each
warm start given, then scores every training edge (and one random negative per edge) exactly as
a training step sees it (sampled subgraph without the batch's edges, the implicit layer started
as in training, no update, LM in eval mode) and compares that AUC with the validation AUC of the
run's own evaluation (full training graph, fixed point). A shortcut that evaluation does not
have shows as a training AUC far above the validation AUC.

    python benchmarks/link_train_eval_gap.py --out benchmarks/results/link-train-eval-gap-cpu-<date>.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from functools import partial
from pathlib import Path

import torch

from fastleading.bench.report import git_commit, require_dataset, write_result
from fastleading.config import Config, apply_overrides


def keep_trainer(build, kept: dict, *args, **kwargs):
    """``build(*args, **kwargs)``, the trainer it builds kept in ``kept["tr"]``."""
    return kept.setdefault("tr", build(*args, **kwargs))


@torch.no_grad()
def training_view_auc(tr, batch_size: int) -> float:
    """AUC of every training edge against its step's negative, each scored as a training step
    scores it (forward only; the implicit layer's histories are written as in training)."""
    from fastleading.link.metrics import link_metrics

    run, split = tr.run, tr.task.split
    model = run.model
    pos_all, neg_all = [], []
    model.eval()
    try:
        for edge_ids in torch.arange(split.train.shape[1]).split(batch_size):
            targets = run.begin_batch(edge_ids)
            sub = run.sample(targets)
            x_in = run.bank.lookup(sub.node_ids).float()
            x_in[:len(targets)] = run.encode_nograd(targets)
            z = model.classify(x_in, sub.rowptr, sub.col, sub.node_ids, implicit=True,
                               num_iters=tr.cfg.model.num_iters, dinv=sub.dinv,
                               num_targets=len(targets))[:len(targets)].float()
            b = run.batch
            pos_all.append(model.decoder(z[b.pos_src], z[b.pos_dst]))
            neg_all.append(model.decoder(z[b.pos_src][:, None, :], z[b.neg_dst]))
    finally:
        model.train()
    return link_metrics(torch.cat(pos_all), torch.cat(neg_all))["auc"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--split", default="10/30/60")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warm-starts", default="history,input")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--runs", default="runs/link-train-eval-gap")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if not require_dataset(args.root, "citeseer-tag", "link_train_eval_gap"):
        return 2
    from fastleading.trainer import loop

    result = {"benchmark": "link-train-eval-gap", "date": dt.date.today().isoformat(), "git_commit": git_commit(),
              "command": "python " + " ".join(sys.argv), "split": args.split, "seed": args.seed, "runs": {}}
    for warm_start in args.warm_starts.split(","):
        cfg = apply_overrides(Config(), [
            "data.dataset=citeseer-tag", f"data.root={args.root}", f"data.max_length={args.max_length}",
            "train.task=link", f"data.link_split={args.split}", f"data.link_seed={args.seed}",
            f"train.seed={args.seed}", f"train.epochs={args.epochs}", "train.eval_every=1",
            "train.checkpoint_every=0", *args.override])
        cfg.model.warm_start = warm_start  # past validation: 'history' is refused for link runs (the leak)
        kept = {}
        build = loop.build_trainer
        loop.build_trainer = partial(keep_trainer, build, kept)
        try:
            run_dir = Path(args.runs) / warm_start
            summary = loop.train(cfg, run_dir, quiet=True)
        finally:
            loop.build_trainer = build
        tr = kept["tr"]
        train_auc = training_view_auc(tr, cfg.train.batch_size)
        last = summary["history"][-1]
        entry = {"warm_start": warm_start, "train_view_auc": train_auc, "valid_auc": last["valid_auc"],
                 "gap": train_auc - last["valid_auc"], "epochs": summary["epochs"],
                 "valid_auc_by_epoch": [round(h["valid_auc"], 4) for h in summary["history"]]}
        result["runs"][warm_start] = entry
        print(json.dumps(entry), flush=True)
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
