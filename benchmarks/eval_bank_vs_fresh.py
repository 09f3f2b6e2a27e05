"""Evaluation from the memory bank vs a fresh encode, on CiteSeer-TAG (real text).

LEADING could evaluate during training from the bank rows it already holds (no LM encode)
instead of re-encoding every node. How far is that from the fresh evaluation, and would it
pick another best epoch? One LEADING run on split ``low-<seed>``; at every evaluation this
computes the accuracies both ways on the same model: from the bank as it stands (rows encoded
at most an epoch ago: by the previous evaluation, the bank fill, or pipeline 1 for this epoch's
targets) and from the fresh encode the trainer then makes. Writes a JSON to
``benchmarks/results/``.

    python benchmarks/eval_bank_vs_fresh.py --epochs 12 --max-length 64
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastleading.config import Config, apply_overrides
from fastleading.run.io import atomic_write_text
from fastleading.trainer import loop
from fastleading.trainer.evaluate import accuracies, full_graph_logits


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lr-lm", type=float, default=5e-5)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if not (Path(args.root) / "citeseer-tag").is_dir():
        print(f"CiteSeer-TAG not found under {args.root}", file=sys.stderr)
        return 2
    cfg = apply_overrides(Config(), [
        "data.dataset=citeseer-tag", f"data.root={args.root}", f"data.split=low-{args.seed}",
        f"data.max_length={args.max_length}", f"train.epochs={args.epochs}", f"train.lr_lm={args.lr_lm}",
        f"train.seed={args.seed}", "train.device=cpu"])
    rows = []
    real_evaluate = loop.evaluate

    def both(tr):
        run = tr.run
        bank_logits, _, _ = full_graph_logits(run.model, run.bank.emb, tr.graph.rowptr, tr.graph.col, tr.cfg,
                                              run.precision, tr.progress.eval_solution)
        bank_acc = accuracies(bank_logits, run.labels, tr.split)
        stale = run.step - run.bank.stamp
        fresh_acc, iters = real_evaluate(tr)
        rows.append({"epoch": tr.progress.epoch, "step": run.step, "bank": bank_acc, "fresh": fresh_acc,
                     "bank_rows_age_steps": {"mean": float(stale.float().mean()), "max": int(stale.max())}})
        print(f"epoch {tr.progress.epoch}: valid bank {bank_acc['valid']:.4f} fresh {fresh_acc['valid']:.4f}",
              flush=True)
        return fresh_acc, iters

    loop.evaluate = both
    start = time.time()
    with tempfile.TemporaryDirectory() as out:
        summary = loop.train(cfg, out, quiet=True)
    best_bank = max(rows, key=lambda r: r["bank"]["valid"])
    best_fresh = max(rows, key=lambda r: r["fresh"]["valid"])
    gaps = [abs(r["bank"]["valid"] - r["fresh"]["valid"]) for r in rows]
    result = {
        "what": "validation accuracy of LEADING evaluated from the memory bank vs a fresh LM encode, same model, "
                "every epoch",
        "dataset": "citeseer-tag", "split": f"low-{args.seed}", "model": cfg.model.name,
        "max_length": args.max_length, "epochs": args.epochs, "lr_lm": args.lr_lm,
        "evaluations": rows,
        "valid_gap_abs": {"mean": sum(gaps) / len(gaps), "max": max(gaps)},
        "best_epoch": {"bank": best_bank["epoch"], "fresh": best_fresh["epoch"]},
        "test_at_best": {"bank_choice": best_bank["fresh"]["test"], "fresh_choice": best_fresh["fresh"]["test"]},
        "summary_encodes_per_graph_node_per_epoch": summary["encodes_per_graph_node_per_epoch"],
        "wall_time_s": round(time.time() - start, 1),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.date.today().isoformat(),
    }
    out = Path(args.out or f"benchmarks/results/eval-bank-vs-fresh-cpu-{result['date']}.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"mean |valid gap| {result['valid_gap_abs']['mean']:.4f}, best epoch bank {best_bank['epoch']} "
          f"fresh {best_fresh['epoch']}; {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
