"""Link prediction metrics: AUC, and MRR / Hits@K with OGB's ranking rule.

Every positive pair ``(s, t)`` is scored against its own fixed set of ``K`` negative pairs
``(s, t'_1..K)`` (ogbl-citation2's protocol; generated splits draw them once, seeded).

* ``rank = 1 + (#neg > pos + #neg >= pos) / 2`` per positive (a tie counts half: the mean of
  the optimistic and the pessimistic rank), as OGB's ``Evaluator`` for ogbl-citation2;
* ``mrr = mean(1 / rank)``; ``hits@K = mean(rank <= K)``;
* ``auc``: the probability that a positive scores above a negative, pooled over every positive
  and every negative pair (ties count half), computed from the ranks of the pooled scores in
  ``O((P + P K) log)``.

Scores that are not finite (a diverged model's NaN or infinities) rank worst: a non-finite
positive below every negative, a non-finite negative above every positive (compared as numbers,
NaN makes every comparison false, which would rank a NaN positive first). All-NaN scores
therefore give AUC 0, MRR ``1 / (K + 1)`` and Hits@K 0 for K <= the number of negatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastleading.errors import FastleadingError


def worst_first(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pos`` with every non-finite score replaced by -inf and ``neg`` with every one replaced by
    +inf (same shapes and dtypes): each then loses every comparison it takes part in."""
    return (torch.where(torch.isfinite(pos), pos, float("-inf")),
            torch.where(torch.isfinite(neg), neg, float("inf")))


def ogb_ranks(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """float64 ``[P]`` ranks of the positives ``pos [P]`` among their negatives ``neg [P, K]``
    (non-finite scores rank worst)."""
    if neg.dim() != 2 or pos.dim() != 1 or neg.shape[0] != pos.shape[0]:
        raise FastleadingError(f"link metrics: expected pos [P] and neg [P, K], got {tuple(pos.shape)} and "
                               f"{tuple(neg.shape)}")
    pos, neg = worst_first(pos, neg)
    p = pos[:, None]
    optimistic = (neg > p).sum(1)
    pessimistic = (neg >= p).sum(1)
    return 1.0 + 0.5 * (optimistic + pessimistic).double()


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """ROC AUC of positive scores ``pos`` against negative scores ``neg`` (any shapes; pooled),
    ties counted half (the Mann-Whitney U statistic over ``|pos| |neg|``); non-finite scores
    rank worst."""
    pos, neg = worst_first(pos.reshape(-1).double(), neg.reshape(-1).double())
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    scores = torch.cat([pos, neg])
    values, order = torch.sort(scores)
    # average rank (1-based) of each group of equal values
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1.0) / 2.0
    ranks = torch.empty_like(scores)
    ranks[order] = mean_rank[inverse]
    n_pos, n_neg = pos.numel(), neg.numel()
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def link_metrics(pos: torch.Tensor, neg: torch.Tensor, hits: Sequence[int] = (10, 50, 100)) -> dict[str, float]:
    """``{"auc", "mrr", "hits@K" for K in hits}`` of scores ``pos [P]`` and ``neg [P, K]``
    (NaN when there are no positives)."""
    if pos.numel() == 0:
        return {"auc": float("nan"), "mrr": float("nan"), **{f"hits@{k}": float("nan") for k in hits}}
    pos, neg = pos.detach().float().cpu(), neg.detach().float().cpu()
    ranks = ogb_ranks(pos, neg)
    out = {"auc": auc(pos, neg), "mrr": float((1.0 / ranks).mean())}
    out.update({f"hits@{k}": float((ranks <= k).double().mean()) for k in hits})
    return out


def summary_fields(best: dict, split_name: str, split_sizes: dict) -> dict:
    """The link entries of a run's ``summary.json`` from its best evaluation ``best``
    (``valid`` = the selected metric, ``valid_*`` / ``test_*``)."""
    out = {"task": "link", "split": split_name, "link_split": split_sizes, "best_valid": best["valid"],
           "best_valid_auc": best["valid_auc"], "best_valid_mrr": best["valid_mrr"],
           "test_auc": best["test_auc"], "test_mrr": best["test_mrr"]}
    out.update({k: v for k, v in best.items() if k.startswith("test_hits@")})
    return out
