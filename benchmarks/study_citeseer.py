"""Real-data study: CiteSeer-TAG, low-label split (20 per class / 500 / 1000), all-MiniLM-L6-v2.

A preset of ``fastleading study`` (:func:`fastleading.commands.study.run_study`): for each seed and
method (leading, supervised, pretrained, shallow) it trains with the built-in head on split
``low-<seed>``, then follows the paper's protocol: export the node embeddings of the
(fine-tuned) LM and train a downstream GCN on them. The study folder (``--runs``) gets
results.json, table.md, the plots and the run folders (a second call resumes: finished runs
are skipped); the result file (``--out``) is a copy of results.json. Prints the markdown table.

    python benchmarks/study_citeseer.py --seeds 5 --max-length 64

Each run trains until it stops improving (``--patience`` evaluations without a better validation
accuracy, at most ``--epochs``); the other training settings are the config's defaults unless a
flag or ``--override`` sets them (the result file records every run's config).
"""

from __future__ import annotations

import sys

from fastleading.commands.study import preset_overrides, preset_parser, run_preset
from fastleading.config import Config, apply_overrides

METHODS = ("leading", "supervised", "pretrained", "shallow")


def base_config(args) -> Config:
    """Every run's config; the study sets train.method, train.seed and data.split per run."""
    return apply_overrides(Config(), ["data.dataset=citeseer-tag", f"data.root={args.root}", *preset_overrides(args),
                                      "train.checkpoint_every=0", *args.override])


def main() -> int:
    p = preset_parser(__doc__.split("\n\n")[0], METHODS, runs="runs/study-citeseer", stem="citeseer-study")
    args = p.parse_args()
    return run_preset(args, base_config(args), METHODS, splits=["low-{seed}"], name="citeseer-tag low-label",
                      stem="citeseer-study", prog="study_citeseer")


if __name__ == "__main__":
    sys.exit(main())
