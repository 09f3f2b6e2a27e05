"""Train/evaluation consistency of the sampled-subgraph normalisations (model.subgraph_norm).

LEADING trains on sampled subgraphs and evaluates on the whole graph. For each case (graph) and
each normalisation this script trains one run (``fastleading train`` settings below), then
measures the accuracy the TRAINING operator gives the final model: the run's checkpoint is
restored (model, bank -- fresh, written by the final evaluation --, histories) and every train
and test node is classified as in a training step (its sampled subgraph, the bank's rows, L
warm-started implicit iterations with that normalisation), without gradient. The gap is
``sampled - full-graph`` accuracy of the same model on the same nodes; the full-graph
accuracy is the run's final evaluation (the implicit layer's fixed point, by conjugate
gradient). The operator's share of it: ``sampled`` minus the full graph's operator at the
training depth (L warm-started iterations from the same histories over the whole graph).

    python benchmarks/bench_subgraph_norm.py --out benchmarks/results/subgraph-norm-cpu-2026-12-01.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

from fastleading.bench.report import git_commit
from fastleading.config import Config, apply_overrides
from fastleading.trainer.loop import build_trainer, train
from fastleading.trainer.state import load_checkpoint

NORMS = ("subgraph", "full-graph", "weighted")
CASES = {
    "synthetic-deg8": ["data.split=high-0", "data.synthetic_avg_degree=8"],
    "synthetic-deg50": ["data.split=high-0", "data.synthetic_avg_degree=50"],
    "citeseer-tag": ["data.dataset=citeseer-tag", "data.split=high-0", "data.max_length=32"],
}


@torch.no_grad()
def sampled_accuracy(cfg: Config, run_dir: Path, repeats: int) -> dict[str, float]:
    """Accuracy of the run's final model under the training operator (see the module docstring)."""
    tr = build_trainer(cfg, run_dir)
    assert load_checkpoint(tr.run, tr.progress, tr.refresh_order, run_dir)
    run, model = tr.run, tr.run.model
    model.eval()
    # The full graph's operator at the training depth: L warm-started iterations from the same
    # histories (on a copy), so that this and the sampled accuracy differ only in the operator.
    history = model.appnp.x_history.clone()
    n = tr.graph.num_nodes
    logits = model.classify(run.bank.lookup(torch.arange(n)).float(), tr.graph.rowptr, tr.graph.col,
                            torch.arange(n), implicit=True, num_iters=cfg.model.num_iters)
    model.appnp.x_history.copy_(history)
    out = {"same_depth_" + name: float((logits[nodes].argmax(1) == run.labels[nodes]).float().mean())
           for name, nodes in (("train", tr.split.train), ("test", tr.split.test))}
    for name, nodes in (("train", tr.split.train), ("test", tr.split.test)):
        correct = total = 0
        for r in range(repeats):
            order = nodes[torch.randperm(len(nodes), generator=torch.Generator().manual_seed(r))]
            for b in range(0, len(order), cfg.train.batch_size):
                targets = order[b:b + cfg.train.batch_size]
                run.step = 10_000_000 + r * 100_000 + b  # samples other than training's
                sub = run.sample(targets)
                x_in = run.bank.lookup(sub.node_ids).float()
                logits = model.classify(x_in, sub.rowptr, sub.col, sub.node_ids, implicit=True,
                                        num_iters=cfg.model.num_iters, dinv=sub.dinv, num_targets=len(targets))
                correct += int((logits[:len(targets)].argmax(1) == run.labels[targets]).sum())
                total += len(targets)
        out[name] = correct / total
    return out


def measured(final: dict, sampled: dict) -> dict:
    """The gaps: total (sampled - full-graph evaluation at the fixed point) and the operator's
    share (sampled - full graph at the training depth from the same histories)."""
    return {"sampled_final": {k: sampled[k] for k in ("train", "test")},
            "full_graph_same_depth": {k: sampled["same_depth_" + k] for k in ("train", "test")},
            "gap_train": sampled["train"] - final["train"], "gap_test": sampled["test"] - final["test"],
            "operator_gap_train": sampled["train"] - sampled["same_depth_train"],
            "operator_gap_test": sampled["test"] - sampled["same_depth_test"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--norms", default=",".join(NORMS))
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                   help="data.root (CiteSeer-TAG)")
    p.add_argument("--repeats", type=int, default=2, help="passes over the nodes for the sampled accuracy")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--runs", default="runs/subgraph-norm")
    p.add_argument("--out", default=None)
    p.add_argument("--measure-only", action="store_true",
                   help="no training: re-measure the runs already in --out from their run folders")
    args = p.parse_args()
    result = {
        "study": "train/evaluation consistency of the sampled-subgraph normalisation (model.subgraph_norm)",
        "device": f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "git_commit": git_commit(),
        "command": "python " + " ".join(sys.argv),
        "setting": "all-MiniLM-L6-v2, LEADING, defaults (3 epochs, fanouts [10, 5], 2 warm-started iterations) "
                   "plus each case's overrides; sampled accuracy: the final model on every train / test node "
                   f"through its sampled subgraph as in training, {args.repeats} passes",
        "cases": {},
    }
    if args.out and Path(args.out).exists():  # add to a partial result: runs already there are kept
        result["cases"] = json.loads(Path(args.out).read_text())["cases"]
    if args.measure_only:
        for case, runs in result["cases"].items():
            for norm, entry in runs.items():
                if norm not in NORMS:  # a replaced variant whose run folder is gone
                    continue
                cfg = apply_overrides(Config(), entry["overrides"])
                entry.update(measured(entry["full_graph_final"],
                                      sampled_accuracy(cfg, Path(args.runs) / f"{case}-{norm}", args.repeats)))
                print(case, norm, {k: entry[k] for k in ("gap_train", "gap_test", "operator_gap_train",
                                                         "operator_gap_test")}, flush=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    for case in args.cases.split(","):
        for norm in args.norms.split(","):
            if norm in result["cases"].get(case, {}):
                continue
            overrides = [*CASES[case], f"data.root={args.root}", f"model.subgraph_norm={norm}",
                         "train.checkpoint_every=0", *args.override]
            cfg = apply_overrides(Config(), overrides)
            run_dir = Path(args.runs) / f"{case}-{norm}"
            start = time.time()
            summary = train(cfg, run_dir, quiet=True)
            wall = time.time() - start
            final = summary["history"][-1]
            sampled = sampled_accuracy(cfg, run_dir, args.repeats)
            entry = {
                "command": result["command"], "threads": torch.get_num_threads(), "overrides": overrides,
                "full_graph_final": {k: final[k] for k in ("train", "valid", "test")},
                **measured(final, sampled),
                "best_valid_acc": summary["best_valid_acc"], "test_acc_at_best_valid": summary["test_acc"],
                "history": summary["history"], "train_wall_time_s": round(wall, 1),
            }
            result["cases"].setdefault(case, {})[norm] = entry
            print(f"{case:16s} {norm:10s} full-graph train/test {final['train']:.3f}/{final['test']:.3f}  "
                  f"sampled {sampled['train']:.3f}/{sampled['test']:.3f}  gap {entry['gap_train']:+.3f}/"
                  f"{entry['gap_test']:+.3f}  ({wall:.0f} s)", flush=True)
            if args.out:  # after every run: a partial result survives an interruption
                Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
