"""Seeded splits: sizes, disjointness, labelled nodes only, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from fastleading.data.splits import fraction_split, low_label_split, seeded_splits


def _parts(split) -> list[np.ndarray]:
    return [split.train.numpy(), split.valid.numpy(), split.test.numpy()]


def _check_disjoint_labelled(split, labels) -> None:
    parts = _parts(split)
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)
    assert (labels[joined] >= 0).all()
    for p in parts:
        assert (np.diff(p) > 0).all()  # sorted, no duplicates


@pytest.mark.parametrize("seed", [0, 3])
def test_low_label_split_sizes(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, 3000)
    labels[rng.random(3000) < 0.1] = -1
    s = low_label_split(labels, seed)
    _check_disjoint_labelled(s, labels)
    assert np.bincount(labels[s.train.numpy()], minlength=6).tolist() == [20] * 6
    assert len(s.valid) == 500 and len(s.test) == 1000


def test_low_label_split_takes_the_rest_when_fewer_than_1000_remain():
    labels = np.arange(1500) % 5
    s = low_label_split(labels, 0)
    assert (len(s.train), len(s.valid), len(s.test)) == (100, 500, 900)


def test_low_label_split_on_a_tiny_graph_keeps_every_set_nonempty():
    labels = np.array([0] * 6 + [1] * 3 + [2])
    s = low_label_split(labels, 0)
    _check_disjoint_labelled(s, labels)
    assert np.bincount(labels[s.train.numpy()], minlength=3).tolist() == [3, 1, 1]
    assert len(s.valid) >= 1 and len(s.test) >= 1


def test_fraction_split_partitions_the_labelled_nodes():
    labels = np.random.default_rng(1).integers(-1, 4, 1001)
    s = fraction_split(labels, 2)
    _check_disjoint_labelled(s, labels)
    n = int((labels >= 0).sum())
    assert len(s.train) + len(s.valid) + len(s.test) == n
    assert abs(len(s.train) - 0.6 * n) <= 1 and abs(len(s.valid) - 0.2 * n) <= 1


def test_seeded_splits_are_deterministic_and_differ_by_seed():
    labels = np.random.default_rng(4).integers(0, 3, 800)
    a, b = seeded_splits(labels, 3), seeded_splits(labels, 3)
    assert list(a) == ["low-0", "low-1", "low-2", "high-0", "high-1", "high-2"]
    for name in a:
        assert all(np.array_equal(x, y) for x, y in zip(_parts(a[name]), _parts(b[name]), strict=True))
    assert not np.array_equal(a["low-0"].train.numpy(), a["low-1"].train.numpy())
    assert not np.array_equal(a["high-0"].test.numpy(), a["high-1"].test.numpy())
