"""LEADING runs scored at every evaluation in the bank's frame and in the LM's own (a diagnosis tool).

Trains LEADING runs (one per ``--seeds`` seed, each also per ``--variant``), evaluating every
epoch. At each evaluation it records the run's own scores (under ``train.align_to_bank``: the
fresh rows moved back into the bank's frame, :meth:`fastleading.engine.bank.MemoryBank.move_frame`)
and, where the model keeps a frame shift, the same head's scores on the LM's own frame (the
fresh rows minus that shift: what evaluation scored before the frame was kept). Writes one JSON
file with every run's history, the per-evaluation pairs, its config and wall time; a second call
skips the runs whose folder holds a summary (the study is resumable).

    nice -n 10 python benchmarks/eval_frame.py --out benchmarks/results/citeseer-eval-frame-cpu-2026-12-07.json

A variant is ``name:key=value,key=value`` (validation-only settings screens use it too); ``{seed}``
in an override is the run's seed (``--override data.split=low-{seed}``). Every evaluation (the
warm-up's epoch 0 included) also records the cross-entropy on each split.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fastleading.config import Config, apply_overrides
from fastleading.trainer import evaluate as evaluate_module
from fastleading.trainer import loop, warmup

ORIGINAL = evaluate_module.evaluate_embeddings


def scored_both_ways(records: list):
    """``evaluate_embeddings`` that also scores the head on the LM's own frame."""
    real = ORIGINAL

    def both(tr, emb):
        metrics, iters = real(tr, emb)
        rec = {"epoch": tr.progress.epoch, "step": tr.run.step, **{k: metrics[k] for k in ("train", "valid", "test")}}
        logits, _, _ = evaluate_module.full_graph_logits(tr.run.model, emb, tr.graph.rowptr.to(emb.device),
                                                         tr.graph.col.to(emb.device), tr.cfg, tr.run.precision)
        labels = tr.run.labels.to(logits.device)
        for k in ("train", "valid", "test"):  # the cross-entropy: a proper score, not only the argmax's
            idx = getattr(tr.split, k).to(logits.device)
            rec[f"{k}_nll"] = float(F.cross_entropy(logits[idx], labels[idx]))
        shift = tr.run.model.frame_shift
        if float(shift.abs().max()) > 0:
            own = emb.float() - shift
            logits, _, _ = evaluate_module.full_graph_logits(tr.run.model, own, tr.graph.rowptr.to(own.device),
                                                             tr.graph.col.to(own.device), tr.cfg, tr.run.precision)
            acc = evaluate_module.accuracies(logits, tr.run.labels, tr.split)
            rec.update({f"own_frame_{k}": acc[k] for k in ("train", "valid", "test")}, shift_norm=float(shift.norm()))
        records.append(rec)
        print(json.dumps(rec), flush=True)
        return metrics, iters

    return both


def selected(evals: list, key: str = "valid", finetuned_only: bool = False) -> dict:
    """The evaluation with the highest ``key`` (the first on ties), among all or the fine-tuned ones."""
    pool = [e for e in evals if not finetuned_only or e["epoch"] > 0]
    return max(pool, key=lambda e: e[key]) if pool else {}


def summarise(runs: dict) -> dict:
    """Per variant, mean and std over its seeds of: epoch 0 (the frozen LM with the warm-up's
    head), the run's selection (``train.select_warmup``: true, and false), and the same head on
    the LM's own frame at the evaluation selected among the fine-tuned ones by that frame's own
    validation; valid and test accuracy, in points."""
    import statistics

    def stat(values: list) -> str:
        values = [100 * v for v in values]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.1f} ± {spread:.1f}"

    variants: dict = {}
    for key, run in runs.items():
        variants.setdefault(key.rsplit("-seed", 1)[0], []).append(run["evaluations"])
    out = {}
    for name, seeds in variants.items():
        rows = {"epoch 0": [e[0] for e in seeds], "select_warmup=true": [selected(e) for e in seeds],
                "select_warmup=false": [selected(e, finetuned_only=True) for e in seeds]}
        own = [selected([x for x in e if "own_frame_valid" in x], "own_frame_valid") for e in seeds]
        table = {row: {"valid": stat([e["valid"] for e in picks]), "test": stat([e["test"] for e in picks]),
                       "epochs": [e["epoch"] for e in picks]} for row, picks in rows.items()}
        if all(own):
            table["LM's own frame, fine-tuned only"] = {
                "valid": stat([e["own_frame_valid"] for e in own]), "test": stat([e["own_frame_test"] for e in own]),
                "epochs": [e["epoch"] for e in own]}
        out[name] = {"seeds": len(seeds), **table}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--runs", type=Path, default=Path("runs/eval-frame"))
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--variant", action="append", default=[], help="name:key=value,... (default: base: the defaults)")
    p.add_argument("--override", nargs="*", default=[], help="section.key=value for every run")
    p.add_argument("--summarise", action="store_true", help="only (re)write the summary of --out's runs")
    args = p.parse_args()
    if args.summarise:
        done = json.loads(args.out.read_text())
        done["summary"] = summarise(done["runs"])
        args.out.write_text(json.dumps(done, indent=1, ensure_ascii=False) + "\n")
        return 0
    base = ["data.dataset=citeseer-tag", "data.root=../shared/data", "data.max_length=32", "train.epochs=4",
            "train.eval_every=1", "train.patience=0", "train.checkpoint_every=0", *args.override]
    variants = [v.split(":", 1) for v in (args.variant or ["base:"])]
    result = {"study": "evaluation frame", "date": time.strftime("%Y-%m-%d"), "device": "cpu",
              "torch": torch.__version__,
              "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
              "command": "python benchmarks/eval_frame.py " + " ".join(
                  [f"--out {args.out}", f"--runs {args.runs}", f"--seeds {args.seeds}"]
                  + [f"--variant {v}" for v in args.variant]
                  + (["--override", *args.override] if args.override else [])),
              "base_overrides": base, "runs": {}}
    if args.out.is_file():
        result["runs"] = json.loads(args.out.read_text()).get("runs", {})
    for name, spec in variants:
        for seed in range(args.seeds):
            key = f"{name}-seed{seed}"
            if key in result["runs"]:
                continue
            overrides = [o.replace("{seed}", str(seed)) for o in [*base, *(s for s in spec.split(",") if s)]]
            overrides.append(f"train.seed={seed}")
            cfg = apply_overrides(Config(), overrides)
            records: list = []
            # every evaluation: the loop's, and the warm-up's epoch 0
            loop.evaluate.__globals__["evaluate_embeddings"] = warmup.evaluate_embeddings = scored_both_ways(records)
            start = time.time()
            shutil.rmtree(args.runs / key, ignore_errors=True)  # a run stopped before it was recorded
            summary = loop.train(cfg, args.runs / key, quiet=True)
            result["runs"][key] = {
                "overrides": overrides, "wall_time_s": round(time.time() - start, 1),
                "history": [{k: h[k] for k in ("epoch", "train", "valid", "test")} for h in summary["history"]],
                "evaluations": records, "best_epoch": summary["best_epoch"],
                "best_valid_acc": summary["best_valid_acc"], "test_acc": summary["test_acc"]}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            result["summary"] = summarise(result["runs"])
            args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")  # after every run: resumable
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
