"""Fine-tune from another LEADING run's epoch 0, without redoing its head warm-up (a diagnosis tool).

The source run's ``best.pt`` must hold its epoch 0 (the frozen LM and the head its warm-up kept:
a run whose fine-tuning never beat its warm-up, or one stopped right after it). The new run
takes the source's config with ``--override`` applied, loads that model in place of the warm-up,
hands over as the warm-up would (:func:`fastleading.trainer.warmup.hand_over`: evaluation on the
bank, histories at its fixed point) and trains on. On arxiv-2023 this skips about 45 minutes of
full-batch head training per run on 2 CPU cores.

Prints the new run's summary; with ``--frozen`` (a file of ``embedding_probe.py --cache``) also how
far the fine-tuned LM's embeddings moved from the frozen ones, and how much of that move is one
shift shared by every node.

    nice -n 10 python benchmarks/from_epoch0.py runs/study-arxiv/runs/leading-upstream-seed0 \
        runs/align/arxiv-seed0 --override train.epochs=1 --frozen runs/probe/embeddings-step609.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from fastleading.config import apply_overrides
from fastleading.run import checkpoint
from fastleading.run.folder import read_run_config
from fastleading.trainer import loop
from fastleading.trainer.warmup import hand_over


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="a LEADING run folder whose best.pt is its epoch 0")
    p.add_argument("out", type=Path)
    p.add_argument("--override", nargs="*", default=[])
    p.add_argument("--frozen", type=Path, help="embedding_probe.py's cache file (its 'frozen' entry)")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    best = checkpoint.load(args.source / checkpoint.BEST)
    if best.get("epoch") != 0:
        raise SystemExit(f"{args.source / checkpoint.BEST}: holds epoch {best.get('epoch')}, not epoch 0")
    cfg = apply_overrides(read_run_config(args.source), args.override)

    def epoch0(tr, log, epochs):
        tr.run.model.load_state_dict(best["model"], strict=False)
        return hand_over(tr)

    loop.head_warmup = epoch0
    summary = loop.train(cfg, args.out, resume=args.resume)
    result = {"source": str(args.source), "override": args.override, "summary": summary}
    if args.frozen:
        frozen = torch.load(args.frozen)["frozen"]
        state = checkpoint.load(args.out / checkpoint.CHECKPOINT)
        tuned = state["bank"]["emb"].float()  # the last evaluation's encode of every node
        move = tuned - frozen
        result["drift"] = {"cosine_mean": float(F.cosine_similarity(tuned, frozen, dim=1).mean()),
                           "shared_shift_fraction": float(move.mean(0).norm() ** 2 / (move.norm(dim=1) ** 2).mean()),
                           "norm_frozen": float(frozen.norm(dim=1).mean()),
                           "norm_tuned": float(tuned.norm(dim=1).mean())}
    print(json.dumps({k: v for k, v in result.items() if k != "summary"} | {
        "history": summary["history"]}, indent=2))
    (args.out / "from_epoch0.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
