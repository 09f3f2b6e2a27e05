"""Real-data study: CiteSeer-TAG, low-label split (20 per class / 500 / 1000), all-MiniLM-L6-v2.

For each seed and method (leading, supervised, pretrained, shallow) it trains with the
built-in head, then follows the paper's protocol: export the node embeddings of the
(fine-tuned) LM and train a downstream GCN on them. Writes a JSON result file (mean and
std per method) and prints a markdown table.

    python benchmarks/study_citeseer.py --seeds 3 --epochs 20 --max-length 64

On CPU, shorten --max-length and --epochs (the result file records what was used).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from fastleading.config import Config, apply_overrides
from fastleading.downstream import downstream, export_embeddings
from fastleading.methods import train_method

METHODS = ("leading", "supervised", "pretrained", "shallow")


def config(args, method: str, seed: int) -> Config:
    return apply_overrides(Config(), [
        "data.dataset=citeseer-tag", f"data.root={args.root}", f"data.split=low-{seed}",
        f"data.max_length={args.max_length}", f"train.method={method}", f"train.epochs={args.epochs}",
        f"train.seed={seed}", f"train.eval_every={args.eval_every}", f"train.batch_size={args.batch_size}",
        f"train.lr_lm={args.lr_lm}", f"train.refresh_batch_size={args.refresh_batch_size}",
        f"train.device={args.device}", "train.checkpoint_every=0", *args.override,
    ])


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def valid_by_epoch(histories: dict[str, list]) -> dict[str, dict[str, float]]:
    """Mean validation accuracy over seeds at each evaluated epoch, per method (the
    trajectory that shows when a method starts to overfit)."""
    out = {}
    for method, runs in histories.items():
        epochs = sorted({h["epoch"] for run in runs for h in run})
        out[method] = {str(e): statistics.mean(h["valid"] for run in runs for h in run if h["epoch"] == e)
                       for e in epochs}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--refresh-batch-size", type=int, default=0)
    p.add_argument("--lr-lm", type=float, default=5e-5)
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run, e.g. model.num_iters=4 (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", default="runs/study-citeseer")
    p.add_argument("--out", default=None)
    p.add_argument("--note", default="", help="free text stored in the result file (e.g. what was shortened and why)")
    args = p.parse_args()
    if not (Path(args.root) / "citeseer-tag").is_dir():
        print(f"CiteSeer-TAG not found under {args.root}", file=sys.stderr)
        return 2
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    runs = Path(args.runs)
    methods = args.methods.split(",")
    if unknown := set(methods) - set(METHODS):
        p.error(f"--methods: unknown {sorted(unknown)}; expected some of {','.join(METHODS)}")
    per_method: dict[str, dict[str, list[float]]] = {m: {"head": [], "gcn": [], "wall_s": []} for m in methods}
    histories: dict[str, list] = {}  # per method and seed: the built-in head's evaluations
    for seed in range(args.seeds):
        for method in methods:
            cfg = config(args, method, seed)
            run_dir = runs / f"{method}-{seed}"
            start = time.time()
            summary = train_method(cfg, run_dir, quiet=True)
            emb = export_embeddings(run_dir, run_dir / "embeddings.npy")
            gcn_cfg = apply_overrides(cfg, ["model.gnn=gcn"])
            gcn = downstream(gcn_cfg, emb, run_dir)
            per_method[method]["head"].append(summary["test_acc"])
            per_method[method]["gcn"].append(gcn["test"])
            per_method[method]["wall_s"].append(time.time() - start)
            if summary.get("history"):  # LM methods; pretrained / shallow train their GNN in one go
                histories.setdefault(method, []).append(summary["history"])
            print(f"seed {seed} {method:<11} head test {summary['test_acc']:.4f}  GCN test {gcn['test']:.4f}  "
                  f"({time.time() - start:.0f} s)", flush=True)
    table = {m: {"head": mean_std(v["head"]), "gcn": mean_std(v["gcn"]), "wall_s": mean_std(v["wall_s"])}
             for m, v in per_method.items()}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    result = {"study": "citeseer-tag low-label", "model": config(args, methods[0], 0).model.name, "device": device,
              "torch": torch.__version__, "date": dt.date.today().isoformat(), "git_commit": commit,
              "command": "python " + " ".join(sys.argv), "settings": vars(args), "note": args.note,
              "results": table, "valid_by_epoch": valid_by_epoch(histories), "histories": histories}
    out = Path(args.out or f"benchmarks/results/citeseer-study-{device.replace(' ', '_')}-{result['date']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| method | built-in head test acc | downstream GCN test acc |\n| --- | --- | --- |")
    for m, r in table.items():
        print(f"| {m} | {100 * r['head']['mean']:.1f} ± {100 * r['head']['std']:.1f} "
              f"| {100 * r['gcn']['mean']:.1f} ± {100 * r['gcn']['std']:.1f} |")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
