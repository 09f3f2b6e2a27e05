"""What fine-tuning does to the LM's embeddings on a low-label split, evaluation by evaluation.

For each method (LEADING, supervised fine-tuning) one run on CiteSeer-TAG ``low-<seed>``; at every
evaluation the fresh embeddings of every node (what the evaluation encodes) are compared with the
frozen LM's (the bank fill / the first encode):

- ``probe_valid``: validation accuracy of a linear probe (logistic regression, fixed settings)
  trained on the 120 training nodes' embeddings: does the LM's space separate the classes better
  than the frozen one, independent of the run's own head?
- ``drift_train`` / ``drift_other``: mean ``1 - cos`` between a node's fresh and frozen embedding,
  over the training nodes and over all other nodes: how far the LM moved, and whether the texts
  it was trained on moved more than the rest;
- ``head_valid`` / ``head_train``: the run's own evaluation (built-in head, full graph).

Validation only (test accuracy is not read). Writes one JSON; the run folders stay in ``--runs``.

    python benchmarks/diagnose_finetuning.py --out benchmarks/results/citeseer-finetune-diagnosis-cpu-<date>.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import torch

from fastleading.bench.report import git_commit, require_dataset, write_result
from fastleading.config import Config, apply_overrides


def linear_probe_valid(emb: np.ndarray, labels: np.ndarray, split) -> float:
    """Validation accuracy of a logistic regression (C=1, L2-normalised inputs) fit on the
    training nodes."""
    from sklearn.linear_model import LogisticRegression

    x = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    train, valid = split.train.numpy(), split.valid.numpy()
    probe = LogisticRegression(C=1.0, max_iter=2000).fit(x[train], labels[train])
    return float((probe.predict(x[valid]) == labels[valid]).mean())


def drift(fresh: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` per node between fresh and frozen embeddings."""
    return 1.0 - torch.nn.functional.cosine_similarity(fresh.float(), frozen.float(), dim=1)


def diagnose(cfg: Config, run_dir: Path) -> list[dict]:
    """Train ``cfg`` into ``run_dir`` and return one record per evaluation."""
    from fastleading.baselines.downstream import pretrained_embeddings
    from fastleading.commands.methods import train_method
    from fastleading.trainer import evaluate as evaluate_module

    graph, frozen = pretrained_embeddings(cfg)  # the LM before fine-tuning, every node
    split = graph.split(cfg.data.split)
    labels = graph.labels.numpy()
    records: list[dict] = [{"epoch": 0, "step": 0, "probe_valid": linear_probe_valid(frozen.numpy(), labels, split),
                            "drift_train": 0.0, "drift_other": 0.0}]
    real_encode = evaluate_module.encode_graph

    def encode_graph(tr, desc, kind):
        emb = real_encode(tr, desc, kind)
        if kind == "eval":
            fresh = emb.detach().float().cpu()
            d = drift(fresh, frozen)
            is_train = torch.zeros(len(d), dtype=torch.bool)
            is_train[split.train] = True
            records.append({"epoch": tr.progress.epoch, "step": tr.run.step,
                            "probe_valid": linear_probe_valid(fresh.numpy(), labels, split),
                            "drift_train": float(d[is_train].mean()), "drift_other": float(d[~is_train].mean())})
        return emb

    evaluate_module.encode_graph = encode_graph
    try:
        summary = train_method(cfg, run_dir, quiet=True, overwrite=True)
    finally:
        evaluate_module.encode_graph = real_encode
    heads = {h["step"]: h for h in summary["history"]}
    for r in records:
        h = heads.get(r["step"], {}) if r["step"] or summary["history"][0]["epoch"] == 0 else {}
        r.update(head_valid=h.get("valid"), head_train=h.get("train"))
    return records


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default="leading,supervised")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--runs", default="runs/diagnose-finetuning")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if not require_dataset(args.root, "citeseer-tag", "diagnose_finetuning"):
        return 2
    result = {"benchmark": "citeseer-finetune-diagnosis", "date": dt.date.today().isoformat(),
              "command": "python " + " ".join(sys.argv), "git_commit": git_commit(),
              "note": "validation only; every evaluation of each run (no early stop: train.patience=0)",
              "methods": {}}
    for method in args.methods.split(","):
        cfg = apply_overrides(Config(), [
            "data.dataset=citeseer-tag", f"data.root={args.root}", f"data.max_length={args.max_length}",
            f"data.split=low-{args.seed}", f"train.seed={args.seed}", f"train.method={method}",
            f"train.epochs={args.epochs}", "train.patience=0", "train.eval_every=4", "train.checkpoint_every=0",
            *args.override])
        records = diagnose(cfg, Path(args.runs) / method)
        result["methods"][method] = {"config": cfg.to_dict(), "evaluations": records}
        for r in records:
            print(method, json.dumps(r), flush=True)
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
