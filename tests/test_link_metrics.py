"""Link metrics against brute-force references (every positive against every negative by loops)."""

import itertools

import pytest
import torch

from fastleading.errors import FastleadingError
from fastleading.link.metrics import auc, link_metrics, ogb_ranks


def brute_auc(pos, neg):
    total = 0.0
    for p, n in itertools.product(pos.tolist(), neg.reshape(-1).tolist()):
        total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * neg.numel())


def brute_rank(p, negs):
    # OGB ogbl-citation2 Evaluator: 0.5 * (optimistic + pessimistic) + 1
    return 1 + 0.5 * (sum(n > p for n in negs) + sum(n >= p for n in negs))


def test_toy_case_by_hand():
    pos = torch.tensor([3.0, 1.0, 0.5])
    neg = torch.tensor([[1.0, 2.0, 0.0], [1.0, 1.0, 2.0], [0.5, 0.5, 0.5]])
    # ranks: 1; 1 + (1 + 3)/2 = 3; 1 + (0 + 3)/2 = 2.5
    assert ogb_ranks(pos, neg).tolist() == [1.0, 3.0, 2.5]
    m = link_metrics(pos, neg, hits=(1, 2, 3))
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2.5) / 3)
    assert m["hits@1"] == pytest.approx(1 / 3) and m["hits@2"] == pytest.approx(1 / 3)
    assert m["hits@3"] == pytest.approx(1.0)
    # AUC: pos 3 beats all 9; pos 1 beats 0, 0.5 x3 (4), ties 1.0 x3 (1.5) -> 5.5; pos 0.5 beats 0 (1), ties 3 (1.5)
    assert m["auc"] == pytest.approx((9 + 5.5 + 2.5) / 27)


@pytest.mark.parametrize("seed", range(5))
def test_random_scores_with_ties_match_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randint(0, 6, (13,), generator=g).float()  # few values: many ties
    neg = torch.randint(0, 6, (13, 7), generator=g).float()
    assert auc(pos, neg) == pytest.approx(brute_auc(pos, neg), abs=1e-12)
    ranks = ogb_ranks(pos, neg)
    ref = [brute_rank(p, n) for p, n in zip(pos.tolist(), neg.tolist(), strict=True)]
    assert ranks.tolist() == ref
    m = link_metrics(pos, neg, hits=(1, 3, 5))
    assert m["mrr"] == pytest.approx(sum(1 / r for r in ref) / len(ref))
    for k in (1, 3, 5):
        assert m[f"hits@{k}"] == pytest.approx(sum(r <= k for r in ref) / len(ref))


def test_continuous_scores_match_brute_force():
    g = torch.Generator().manual_seed(7)
    pos, neg = torch.randn(40, generator=g) + 0.5, torch.randn(40, 9, generator=g)
    assert auc(pos, neg) == pytest.approx(brute_auc(pos, neg), abs=1e-12)


def test_bad_shapes_and_empty():
    with pytest.raises(FastleadingError, match="neg \\[P, K\\]"):
        ogb_ranks(torch.zeros(3), torch.zeros(4, 2))
    m = link_metrics(torch.zeros(0), torch.zeros(0, 5))
    assert all(v != v for v in m.values())


def worst_case_reference(pos, neg):
    """A non-finite positive below every negative, a non-finite negative above every positive:
    the brute-force references on scores where they are replaced by -inf / +inf."""
    return (torch.where(torch.isfinite(pos), pos, float("-inf")), torch.where(torch.isfinite(neg), neg, float("inf")))


@pytest.mark.parametrize("seed", range(4))
def test_non_finite_scores_rank_worst(seed):
    """A diverged model's NaN / inf scores: a non-finite positive ranks below all its negatives
    and a non-finite negative above its positive, in ranks, MRR, Hits@K and AUC alike
    (compared as numbers, NaN made every comparison false: rank 1)."""
    g = torch.Generator().manual_seed(seed)
    pos, neg = torch.randn(30, generator=g), torch.randn(30, 6, generator=g)
    pos[torch.rand(30, generator=g) < 0.3] = float("nan")
    neg[torch.rand(30, 6, generator=g) < 0.2] = float("nan")
    pos[0], neg[1, 2], neg[2, 0] = float("inf"), float("-inf"), float("inf")
    ref_pos, ref_neg = worst_case_reference(pos, neg)
    ref = [brute_rank(p, n) for p, n in zip(ref_pos.tolist(), ref_neg.tolist(), strict=True)]
    assert ogb_ranks(pos, neg).tolist() == ref
    assert auc(pos, neg) == pytest.approx(brute_auc(ref_pos, ref_neg), abs=1e-12)
    m = link_metrics(pos, neg, hits=(1, 3))
    assert m["mrr"] == pytest.approx(sum(1 / r for r in ref) / len(ref))
    assert m["hits@3"] == pytest.approx(sum(r <= 3 for r in ref) / len(ref))


def test_all_nan_scores_score_as_the_worst_possible_model():
    m = link_metrics(torch.full((50,), float("nan")), torch.full((50, 20), float("nan")), hits=(10, 20))
    assert m == {"auc": 0.0, "mrr": pytest.approx(1 / 21), "hits@10": 0.0, "hits@20": 0.0}
