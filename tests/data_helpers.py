"""Brute-force references shared by the data-layer tests."""

from __future__ import annotations

import numpy as np
import torch


def reference_pairs(src, dst) -> set[tuple[int, int]]:
    """Directed (row, col) pairs of the symmetric, deduplicated, loop-free graph."""
    pairs = set()
    for a, b in zip(np.asarray(src).tolist(), np.asarray(dst).tolist(), strict=True):
        if a != b:
            pairs.add((a, b))
            pairs.add((b, a))
    return pairs


def csr_pairs(graph) -> list[tuple[int, int]]:
    """The (row, col) pairs a graph's CSR stores, in storage order."""
    rowptr, col = graph.rowptr.numpy(), graph.col.numpy()
    rows = np.repeat(np.arange(len(rowptr) - 1), np.diff(rowptr))
    return list(zip(rows.tolist(), col.tolist(), strict=True))


def assert_csr_matches(graph, src, dst) -> None:
    """The CSR holds exactly the reference pairs, each row sorted, no duplicates."""
    pairs = csr_pairs(graph)
    assert pairs == sorted(reference_pairs(src, dst))
    assert graph.rowptr.dtype == torch.int64
    assert graph.col.dtype == torch.int32
