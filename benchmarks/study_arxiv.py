"""Real-data study: arXiv-2023 (33,868 CS papers, titles, 39 classes), upstream split, all-MiniLM-L6-v2.

A preset of ``fastleading study`` (:func:`fastleading.commands.study.run_study`): for each seed and
method (leading, supervised, pretrained, shallow) it trains with the built-in head on the
upstream split (19,461 train / 4,682 valid / 668 test: the papers of 2023), then follows the
paper's protocol: export the node embeddings of the (fine-tuned) LM and train a downstream GCN on
them. The study folder (``--runs``) gets results.json, table.md, the plots and the run folders
(a second call resumes: finished runs are skipped, a killed run continues from its checkpoint);
the result file (``--out``) is a copy of results.json. Prints the markdown table.

    nice -n 10 python benchmarks/study_arxiv.py --seeds 3 --max-length 32

Titles are short (p99 27 tokens): 32 tokens keep every one whole. Each run trains until it stops
improving (``--patience`` evaluations without a better validation accuracy, at most
``--epochs``); the other settings are the config's defaults unless a flag or ``--override``
sets them (the result file records every run's config).
"""

from __future__ import annotations

import sys

from fastleading.commands.study import preset_overrides, preset_parser, run_preset
from fastleading.config import Config, apply_overrides

METHODS = ("leading", "supervised", "pretrained", "shallow")


def base_config(args) -> Config:
    """Every run's config; the study sets train.method and train.seed per run."""
    return apply_overrides(Config(), ["data.dataset=arxiv-2023", f"data.root={args.root}", *preset_overrides(args),
                                      "train.checkpoint_minutes=10", *args.override])


def main() -> int:
    p = preset_parser(__doc__.split("\n\n")[0], METHODS, runs="runs/study-arxiv", stem="arxiv-study")
    p.set_defaults(max_length=32, epochs=20)
    args = p.parse_args()
    return run_preset(args, base_config(args), METHODS, splits=["upstream"], name="arxiv-2023 upstream",
                      stem="arxiv-study", prog="study_arxiv", dataset_dir="arxiv-2023")


if __name__ == "__main__":
    sys.exit(main())
