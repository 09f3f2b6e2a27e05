"""Real-data study: CiteSeer-TAG, low-label split (20 per class / 500 / 1000), all-MiniLM-L6-v2.

A preset of ``fastleading study`` (:func:`fastleading.study.run_study`): for each seed and
method (leading, supervised, pretrained, shallow) it trains with the built-in head on split
``low-<seed>``, then follows the paper's protocol: export the node embeddings of the
(fine-tuned) LM and train a downstream GCN on them. The study folder (``--runs``) gets
results.json, table.md, the plots and the run folders (a second call resumes: finished runs
are skipped); the result file (``--out``) is a copy of results.json. Prints the markdown table.

    python benchmarks/study_citeseer.py --seeds 3 --epochs 20 --max-length 64

On CPU, shorten --max-length and --epochs (the result file records what was used).
"""

from __future__ import annotations

import sys

from fastleading.config import Config, apply_overrides
from fastleading.study import preset_parser, run_preset

METHODS = ("leading", "supervised", "pretrained", "shallow")


def base_config(args) -> Config:
    """Every run's config; the study sets train.method, train.seed and data.split per run."""
    return apply_overrides(Config(), [
        "data.dataset=citeseer-tag", f"data.root={args.root}", f"data.max_length={args.max_length}",
        f"train.epochs={args.epochs}", f"train.eval_every={args.eval_every}", f"train.batch_size={args.batch_size}",
        f"train.lr_lm={args.lr_lm}", f"train.refresh_batch_size={args.refresh_batch_size}",
        f"train.device={args.device}", "train.checkpoint_every=0", *args.override,
    ])


def main() -> int:
    p = preset_parser(__doc__.split("\n\n")[0], METHODS, runs="runs/study-citeseer", stem="citeseer-study")
    args = p.parse_args()
    return run_preset(args, base_config(args), METHODS, splits=["low-{seed}"], name="citeseer-tag low-label",
                      stem="citeseer-study", prog="study_citeseer")


if __name__ == "__main__":
    sys.exit(main())
