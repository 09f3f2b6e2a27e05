"""Graph layer: CSR construction and degree statistics.

The graph of a :class:`~fastleading.data.TextAttributedGraph` is stored as a symmetric
CSR without self-loops or duplicate edges: ``rowptr`` int64 ``[N+1]`` and ``col``
(int32 when N < 2**31, else int64) ``[E]``, each row's columns sorted ascending.
"""

from __future__ import annotations

import numpy as np
import torch


def build_csr(src, dst, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetrize, deduplicate and drop self-loops of the edge list ``src -> dst``.

    Args:
        src, dst: integer arrays/tensors ``[M]`` of node ids in ``[0, num_nodes)``.
        num_nodes: N.
    Returns:
        ``(rowptr, col)``: int64 ``[N+1]`` and int32/int64 ``[E]`` (sorted within rows).
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    key = np.concatenate([src * num_nodes + dst, dst * num_nodes + src])
    key = np.unique(key)
    row = key // num_nodes
    col = key - row * num_nodes
    counts = np.bincount(row, minlength=num_nodes)
    rowptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(counts, out=rowptr[1:])
    col_dtype = np.int32 if num_nodes < 2**31 else np.int64
    return torch.from_numpy(rowptr), torch.from_numpy(col.astype(col_dtype))


def degrees(rowptr: torch.Tensor) -> torch.Tensor:
    """Out-degree of every node (int64 ``[N]``)."""
    return rowptr[1:] - rowptr[:-1]
