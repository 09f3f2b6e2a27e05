"""Real-data link prediction study: CiteSeer-TAG edge splits 10/30/60 and 85/5/10, all-MiniLM-L6-v2.

A preset of ``fastleading study --task link`` (:func:`fastleading.commands.study.run_study`): for each
seed, edge split (``data.link_split``; the seed sets ``data.link_seed``, so each seed draws its
own split and evaluation negatives) and method (leading, supervised, pretrained, shallow) it
trains with the built-in head and decoder, then exports the node embeddings of the (fine-tuned)
LM and trains a downstream GCN + decoder on them (``fastleading downstream --task link``). The
study folder (``--runs``) gets results.json (test / valid AUC and MRR per method, mean ± std
and values), table.md, the plots and the run folders (a second call resumes: finished runs are
skipped); the result file (``--out``) is a copy of results.json. Prints the markdown table.

    python benchmarks/study_link_citeseer.py --seeds 3 --epochs 20 --max-length 64

On CPU, shorten --max-length, --epochs, --max-steps and e.g. ``--override model.num_iters=10``
(the result file records what was used).
"""

from __future__ import annotations

import sys

from fastleading.commands.study import preset_overrides, preset_parser, run_preset
from fastleading.config import Config, apply_overrides

METHODS = ("leading", "supervised", "pretrained", "shallow")
SPLITS = ("10/30/60", "85/5/10")


def base_config(args) -> Config:
    """Every run's config; the study sets train.method, train.seed, data.link_seed and data.link_split per run."""
    return apply_overrides(Config(), ["data.dataset=citeseer-tag", f"data.root={args.root}", "train.task=link",
                                      *preset_overrides(args), f"train.max_steps={args.max_steps}",
                                      "train.checkpoint_every=0", *args.override])


def main() -> int:
    p = preset_parser(__doc__.split("\n\n")[0], METHODS, runs="runs/study-link-citeseer", stem="citeseer-link-study")
    p.add_argument("--splits", default=",".join(SPLITS), help="comma-separated data.link_split ratios")
    p.add_argument("--max-steps", type=int, default=0, help="train.max_steps (0 = no limit)")
    args = p.parse_args()
    return run_preset(args, base_config(args), METHODS, splits=[s.strip() for s in args.splits.split(",") if s.strip()],
                      task="link", name="citeseer-tag link prediction", stem="citeseer-link-study",
                      prog="study_link_citeseer")


if __name__ == "__main__":
    sys.exit(main())
