"""Why LEADING degraded with longer training, at the smallest size that shows it: the head alone.

The LM is frozen (its embeddings of every node fill the bank once) and only LEADING's head and
implicit layer train, with the LEADING step minus the LM: exactly the head warm-up
(:func:`fastleading.trainer.warmup.head_warmup`), run for many epochs and evaluated on the bank
after every epoch. Nothing moves but the head, so any instability is the head's training
dynamics; each ``model.warm_start`` is run on the same embeddings, splits ``low-<seed>``.

Per variant and seed: the validation accuracy after every epoch, its peak, its end, and the
oscillation (mean absolute change between consecutive epochs over the second half of the
epochs). Validation only. The frozen LM's own baseline (``pretrained``: the same head trained
full-batch on the fixed embeddings, best of ``train.downstream_epochs``) is listed beside.

    python benchmarks/head_dynamics.py --seeds 5 --epochs 100 --out benchmarks/results/head-dynamics-cpu-<date>.json
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import itertools
import statistics
import sys
from pathlib import Path

import torch

from fastleading.bench.report import git_commit, require_dataset, write_result
from fastleading.config import Config, apply_overrides

WARM_STARTS = ("history", "delta", "input")


class Curve:
    """A stand-in for the run's MetricsLog: keeps the warm-up's validation accuracy per epoch."""

    def __init__(self):
        self.valid: list[float] = []

    def write(self, record: dict) -> None:
        if "warmup_eval" in record:
            self.valid.append(record["warmup_eval"]["valid"])


def mean_std(runs: list[dict], key: str) -> str:
    """``mean ± std`` of ``100 * run[key]`` over the runs."""
    xs = [100 * r[key] for r in runs]
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.1f}"


def oscillation(values: list[float]) -> float:
    """Mean |change| between consecutive values over the second half."""
    half = values[len(values) // 2:]
    return statistics.mean(abs(b - a) for a, b in itertools.pairwise(half))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--warm-starts", default=",".join(WARM_STARTS))
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if not require_dataset(args.root, "citeseer-tag", "head_dynamics"):
        return 2
    from fastleading.baselines.downstream import pretrained_embeddings, train_gnn
    from fastleading.trainer.loop import build_trainer
    from fastleading.trainer.warmup import head_warmup

    base = apply_overrides(Config(), [
        "data.dataset=citeseer-tag", f"data.root={args.root}", f"data.max_length={args.max_length}",
        f"train.head_warmup_epochs={args.epochs}", *args.override])
    graph, frozen = pretrained_embeddings(base)  # one encode of every node by the frozen LM
    result = {"benchmark": "head-dynamics", "date": dt.date.today().isoformat(), "git_commit": git_commit(),
              "command": "python " + " ".join(sys.argv), "note": "validation accuracy only; the LM is frozen",
              "config": base.to_dict(), "variants": {}, "pretrained_head": []}
    for seed in range(args.seeds):
        split_name = f"low-{seed}"
        split = graph.split(split_name)
        best = train_gnn(graph, frozen, split, "appnp", base.train.downstream_epochs, seed, "cpu",
                         base.model.head_hidden, 0.5, alpha=base.model.alpha, num_iters=base.model.eval_iters)
        result["pretrained_head"].append({"seed": seed, "best_valid": best["valid"], "best_epoch": best["epoch"]})
        for warm_start in args.warm_starts.split(","):
            cfg = apply_overrides(copy.deepcopy(base), [f"model.warm_start={warm_start}", f"data.split={split_name}",
                                                        f"train.seed={seed}"])
            torch.manual_seed(seed)
            tr = build_trainer(cfg, Path("/dev/null"))
            tr.run.bank.refresh(torch.arange(graph.num_nodes), frozen, 0)
            curve = Curve()
            head_warmup(tr, curve)
            v = curve.valid
            entry = {"seed": seed, "valid": [round(x, 4) for x in v], "peak": max(v),
                     "peak_epoch": v.index(max(v)) + 1, "end": v[-1], "oscillation": oscillation(v)}
            result["variants"].setdefault(warm_start, []).append(entry)
            print(f"seed {seed} {warm_start:<8} peak {entry['peak']:.3f} (epoch {entry['peak_epoch']}) "
                  f"end {entry['end']:.3f} oscillation {entry['oscillation']:.4f}", flush=True)
        write_result(args.out, result)
    print("\n| warm start | peak valid | end valid | peak - end | oscillation |\n| --- | --- | --- | --- | --- |")
    for name, runs in result["variants"].items():
        drop = [100 * (r["peak"] - r["end"]) for r in runs]
        print(f"| {name} | {mean_std(runs, 'peak')} | {mean_std(runs, 'end')} | {statistics.mean(drop):.1f} | "
              f"{mean_std(runs, 'oscillation')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
