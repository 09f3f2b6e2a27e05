"""Validation-only ablation of the fine-tuning recipe on CiteSeer-TAG, low-label splits.

Each variant is a list of config overrides on top of the base config (the one the real-budget
study runs; ``--override`` adds to it). Every variant trains ``--method`` on splits
``low-<seed>`` for each seed, with ``train.patience``; only VALIDATION accuracy is read and
written (the run folders hold their summaries, the result file and the table do not hold a
test number), so that the defaults chosen from this table are chosen on validation alone.

    python benchmarks/ablation_citeseer.py --seeds 2 --variants base,history,no-warmup \\
        --out benchmarks/results/citeseer-ablation-cpu-<date>.json

Resumable: a finished run is read back, a killed one resumes from its checkpoint (the
study machinery, :func:`fastleading.commands.study.run_one`). Run folders: ``--runs/<variant>/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

from fastleading.bench.report import git_commit, require_dataset
from fastleading.commands.study import NODE_CLASSIFICATION, check_run_folders, plan, run_one
from fastleading.config import Config, apply_overrides
from fastleading.errors import FastleadingError

# name -> overrides on top of the base; "base" is the recipe itself
VARIANTS = {
    "base": [],
    "history": ["model.warm_start=history"],             # the paper's forward warm start (eq. 4)
    "input": ["model.warm_start=input"],                 # plain APPNP from X_in: no forward history
    "no-align": ["train.align_to_bank=false"],           # fresh rows not moved into the bank's frame
    "no-warmup": ["train.head_warmup_epochs=0"],         # no LP-FT
    "history-no-warmup": ["model.warm_start=history", "train.head_warmup_epochs=0"],  # the old defaults
    "lr1e-5": ["train.lr_lm=1e-5"],
    "lr5e-5": ["train.lr_lm=5e-5"],
    "llrd0.8": ["train.lr_layer_decay=0.8"],
    "iters4": ["model.num_iters=4"],
    "cold-backward": ["model.warm_backward=false"],
    "wd0.1": ["train.weight_decay=0.1"],
    "fp32": ["train.precision=fp32"],
    "lora": ["model.lora=true", "train.lr_lm=5e-4"],
    # LP-FT proper: the warm-up at the head's usual rate, then the head at a rate near the LM's
    "ft-head1e-4": ["train.head_warmup_lr=1e-3", "train.lr_head=1e-4"],
    "ft-head2e-5": ["train.head_warmup_lr=1e-3", "train.lr_head=2e-5"],
    "ft-head1e-4-lr1e-5": ["train.head_warmup_lr=1e-3", "train.lr_head=1e-4", "train.lr_lm=1e-5"],
    "ft-head1e-4-llrd0.8": ["train.head_warmup_lr=1e-3", "train.lr_head=1e-4", "train.lr_layer_decay=0.8"],
}


def base_config(args) -> Config:
    return apply_overrides(Config(), [
        "data.dataset=citeseer-tag", f"data.root={args.root}", f"data.max_length={args.max_length}",
        f"train.epochs={args.epochs}", f"train.patience={args.patience}", "train.eval_every=0",
        f"train.head_warmup_epochs={args.head_warmup_epochs}", f"train.lr_lm={args.lr_lm}",
        f"train.device={args.device}", "train.checkpoint_every=0", *args.override])


def summarise(records: list[dict]) -> dict:
    """Validation only: best valid accuracy per run, its epoch, why the run stopped, wall time."""
    valid = [r["summary"]["best_valid_acc"] for r in records]
    return {"valid": {"mean": statistics.mean(valid), "std": statistics.stdev(valid) if len(valid) > 1 else 0.0,
                      "values": valid},
            "best_epoch": [r["summary"]["best_epoch"] for r in records],
            "epochs": [r["summary"]["epochs"] for r in records],
            "stopped": [r["summary"].get("stopped") for r in records],
            "wall_s": [r["summary"]["wall_time_s"] for r in records],
            "valid_curves": [[(h["epoch"], round(h["valid"], 4)) for h in r["summary"]["history"]] for r in records]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--method", default="leading")
    p.add_argument("--seeds", default="2", help="a count (2 = seeds 0,1) or a list (0,3)")
    p.add_argument("--variants", default="base,history,no-warmup", help=f"some of {','.join(VARIANTS)}")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--head-warmup-epochs", type=int, default=20)
    p.add_argument("--lr-lm", type=float, default=2e-5)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", default="runs/ablation-citeseer")
    p.add_argument("--out", required=True, help="result JSON (validation only)")
    args = p.parse_args()
    if not require_dataset(args.root, "citeseer-tag", "ablation_citeseer"):
        return 2
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := [v for v in names if v not in VARIANTS]:
        print(f"ablation_citeseer: error: unknown variants {unknown}; expected some of {','.join(VARIANTS)}",
              file=sys.stderr)
        return 2
    seeds = (list(range(int(args.seeds))) if "," not in args.seeds
             else [int(s) for s in args.seeds.split(",") if s.strip()])
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    result.update({"benchmark": "citeseer-ablation", "date": dt.date.today().isoformat(),
                   "command": "python " + " ".join(sys.argv), "method": args.method, "seeds": seeds,
                   "note": "validation accuracy only (test is never read here): defaults are chosen on it",
                   "base_overrides": base_config(args).to_dict()})
    result.setdefault("variants", {})
    try:
        for name in names:
            base = apply_overrides(base_config(args), VARIANTS[name])
            specs = plan(base, [args.method], seeds, ["low-{seed}"])
            runs_dir = Path(args.runs) / name
            check_run_folders(specs, runs_dir)
            records = []
            for spec in specs:
                start = time.time()
                records.append(run_one(NODE_CLASSIFICATION, spec, runs_dir / spec.name, [], log=lambda line: None))
                s = records[-1]["summary"]
                print(f"{name:<18} seed {spec.seed}: valid {s['best_valid_acc']:.4f} at epoch {s['best_epoch']}, "
                      f"stopped {s.get('stopped')} after {s['epochs']:.0f} epochs ({time.time() - start:.0f} s)",
                      flush=True)
            result["variants"][name] = {"overrides": VARIANTS[name], **summarise(records)}
            result["git_commit"] = git_commit()
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")
    except FastleadingError as e:
        print(f"ablation_citeseer: error: {e}", file=sys.stderr)
        return 2
    print("\n| variant | valid (%) | best epochs | stopped |\n| --- | --- | --- | --- |")
    for name, v in result["variants"].items():
        print(f"| {name} | {100 * v['valid']['mean']:.1f} ± {100 * v['valid']['std']:.1f} | {v['best_epoch']} | "
              f"{v['stopped']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
