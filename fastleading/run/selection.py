"""Which evaluation counts: outputs that are not finite predict nothing and are never the best.

A diverged model produces NaN or infinite logits and link scores. Compared as numbers they make
every test false, which ranks a NaN positive first and lets ``argmax`` of a NaN row name a class,
so a diverged run could score as perfect and be kept as the best. Every trainer goes through
these rules instead:

* a node whose logits are not all finite predicts no class (:func:`predict_classes`): it counts
  as wrong in every accuracy;
* link scores that are not finite rank worst (:mod:`fastleading.link.metrics`);
* an evaluation reports how many of its outputs were not finite (``nonfinite``), and one with any
  is never selected as best (:func:`improves`); the LM trainer also stops after
  ``train.max_bad_evals`` of them in a row (:meth:`fastleading.trainer.state.Progress.record_eval`).
"""

from __future__ import annotations

import math

import torch


def nonfinite_rows(logits: torch.Tensor) -> torch.Tensor:
    """bool ``[N]``: whether row ``i`` of ``logits [N, C]`` holds a NaN or an infinity."""
    return ~torch.isfinite(logits).all(-1)


def predict_classes(logits: torch.Tensor) -> torch.Tensor:
    """int64 ``[N]``: the argmax class of each row of ``logits [N, C]``, -1 (no class, never equal
    to a label) where the row is not finite."""
    return torch.where(nonfinite_rows(logits), -1, logits.argmax(-1))


def improves(metrics: dict, best_valid: float, have_best: bool) -> bool:
    """Whether the evaluation ``metrics`` (``valid``: the selection metric; ``nonfinite``: how many
    outputs were not finite) becomes the best: all its outputs finite, and either there is no best
    yet or its ``valid`` is greater than ``best_valid``. A NaN ``valid`` (an empty validation set)
    is taken only when there is no best yet, as the first evaluation."""
    if metrics.get("nonfinite", 0):
        return False
    return not have_best or (not math.isnan(metrics["valid"]) and metrics["valid"] > best_valid)
