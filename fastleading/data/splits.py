"""Seeded random splits for datasets without a standard one.

Two settings of the LEADING paper:

* ``low-<seed>``: 20 labelled nodes per class for training, 500 for validation, 1000
  (or all the rest, when fewer remain) for test;
* ``high-<seed>``: 60 / 20 / 20 percent of the labelled nodes.

And one shaped like a benchmark's, for synthetic stand-ins of it:

* ``products``: ogbn-products' proportions (196,615 train / 39,323 valid / 2,213,091 test of
  2,449,029 nodes: 8.03 / 1.61 / 90.37 percent), drawn at random (ogbn-products itself splits
  by sales rank); at ogbn-products size the counts are exactly its own.

Only labelled nodes (label >= 0) are drawn. On very small graphs the per-class count is
capped at half of each class and validation at half of what remains, so that every set
stays non-empty.
"""

from __future__ import annotations

import numpy as np
import torch

from fastleading.data.tag import Split


def _sorted(idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.sort(idx).astype(np.int64))


def low_label_split(labels: np.ndarray, seed: int, per_class: int = 20, num_valid: int = 500,
                    num_test: int = 1000) -> Split:
    """``per_class`` training nodes of every class, then ``num_valid`` / ``num_test`` of the rest.

    Args:
        labels: int64 ``[N]`` (``-1`` = unknown, never drawn).
    """
    rng = np.random.default_rng([seed, 0])
    labelled = np.flatnonzero(labels >= 0)
    perm = labelled[rng.permutation(len(labelled))]
    # The first per_class nodes of each class in `perm` order: group by class with a stable
    # sort (keeps the random order inside a class), then rank inside each group.
    lab = labels[perm]
    grouped = np.argsort(lab, kind="stable")
    sorted_lab = lab[grouped]
    rank = np.arange(len(perm)) - np.searchsorted(sorted_lab, sorted_lab, side="left")
    counts = np.bincount(sorted_lab)
    quota = np.minimum(per_class, np.maximum(1, counts // 2))
    is_train = np.zeros(len(perm), dtype=bool)
    is_train[grouped[rank < quota[sorted_lab]]] = True
    train, rest = perm[is_train], perm[~is_train]
    n_valid = min(num_valid, len(rest) // 2)
    valid = rest[:n_valid]
    test = rest[n_valid:n_valid + num_test]
    return Split(_sorted(train), _sorted(valid), _sorted(test))


def fraction_split(labels: np.ndarray, seed: int, train: float = 0.6, valid: float = 0.2) -> Split:
    """A random ``train`` / ``valid`` / rest fraction split of the labelled nodes."""
    rng = np.random.default_rng([seed, 1])
    labelled = np.flatnonzero(labels >= 0)
    perm = labelled[rng.permutation(len(labelled))]
    n_train = int(round(train * len(perm)))
    n_valid = int(round(valid * len(perm)))
    return Split(_sorted(perm[:n_train]), _sorted(perm[n_train:n_train + n_valid]),
                 _sorted(perm[n_train + n_valid:]))


# ogbn-products' official split: train / valid / test counts of its 2,449,029 nodes
PRODUCTS_COUNTS = (196_615, 39_323, 2_213_091)


def products_split(labels: np.ndarray, seed: int = 0) -> Split:
    """A random split of the labelled nodes in ogbn-products' proportions (:data:`PRODUCTS_COUNTS`)."""
    total = sum(PRODUCTS_COUNTS)
    return fraction_split(labels, seed, train=PRODUCTS_COUNTS[0] / total, valid=PRODUCTS_COUNTS[1] / total)


def seeded_splits(labels: np.ndarray, num_seeds: int) -> dict[str, Split]:
    """``low-0 .. low-{k-1}`` and ``high-0 .. high-{k-1}`` (k = ``num_seeds``)."""
    labels = np.asarray(labels)
    splits = {f"low-{s}": low_label_split(labels, s) for s in range(num_seeds)}
    splits.update({f"high-{s}": fraction_split(labels, s) for s in range(num_seeds)})
    return splits
