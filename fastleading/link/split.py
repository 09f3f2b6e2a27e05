"""Edge splits for link prediction, and the training graph that excludes held-out edges.

A :class:`LinkSplit` holds the training edges, the validation and test edges, and for every
validation / test edge ``(s, t)`` a fixed row of ``K`` negative targets ``t'`` (the pairs
``(s, t')`` it is ranked against: OGB's ogbl-citation2 protocol, see
:mod:`fastleading.link.metrics`).

* Generated (``data.link_split`` = ``"train/valid/test"`` percentages, e.g. ``10/30/60`` or
  ``85/5/10`` as in the paper's appendix C): the undirected edges of the graph (each once,
  ``s < t``) are shuffled with ``data.link_seed`` and cut by the percentages; the negatives
  (``data.link_eval_negatives`` per positive) are drawn with the same seed among the nodes
  that are neither ``s`` nor a neighbour of ``s`` in the whole graph (rejection, a few rounds).
  Computed deterministically from the seed on every load (seconds even for large graphs).
* Official (``official``; the default for a dataset that ships one, e.g. ogbl-citation2):
  read from the dataset's files by the reader its registry entry names
  (:func:`fastleading.data.load_link_split`, which also picks between the two).

:func:`training_graph` is the message-passing graph of training and evaluation: the dataset's
graph minus every validation and test edge (both directions), so held-out edges never reach
training (no label leakage). :func:`drop_edges` removes pairs from a CSR; the link step uses it
to take a batch's own training edges out of its sampled subgraph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastleading.config import parse_ratios
from fastleading.errors import FastleadingError

DEFAULT_RATIOS = "85/5/10"


@dataclass(frozen=True)
class LinkSplit:
    """Edges (int64 ``[2, M]`` source / target rows) and fixed negatives (int64 ``[M, K]``)."""

    train: torch.Tensor
    valid: torch.Tensor
    valid_neg: torch.Tensor
    test: torch.Tensor
    test_neg: torch.Tensor
    name: str

    def sizes(self) -> dict[str, int]:
        return {"train": self.train.shape[1], "valid": self.valid.shape[1], "test": self.test.shape[1],
                "negatives_per_positive": self.valid_neg.shape[1] if self.valid_neg.dim() == 2 else 0}


def csr_rows(rowptr: torch.Tensor) -> torch.Tensor:
    """The row of every CSR entry (int64 ``[E]``)."""
    return torch.repeat_interleave(torch.arange(len(rowptr) - 1, device=rowptr.device), rowptr[1:] - rowptr[:-1])


def _keys(src: torch.Tensor, dst: torch.Tensor, n: int) -> torch.Tensor:
    return src.long() * n + dst.long()


def _isin_sorted(keys: torch.Tensor, sorted_keys: torch.Tensor) -> torch.Tensor:
    if sorted_keys.numel() == 0:
        return torch.zeros(keys.shape, dtype=torch.bool, device=keys.device)
    pos = torch.searchsorted(sorted_keys, keys).clamp_(max=sorted_keys.numel() - 1)
    return sorted_keys[pos] == keys


def drop_edges(rowptr: torch.Tensor, col: torch.Tensor, src: torch.Tensor,
               dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The CSR ``rowptr/col`` without the pairs ``(src, dst)`` and ``(dst, src)``, and the mask
    of the entries kept (None when nothing is dropped: the CSR is returned as is).

    Column order inside rows is kept and ``col`` keeps its dtype; on the input's device.
    O(E log M) for M pairs; nothing of size N squared."""
    n = len(rowptr) - 1
    if src.numel() == 0:
        return rowptr, col, None
    drop = torch.unique(torch.cat([_keys(src, dst, n), _keys(dst, src, n)]).to(rowptr.device))
    rows = csr_rows(rowptr)
    keep = ~_isin_sorted(_keys(rows, col, n), drop)
    new_rowptr = torch.zeros_like(rowptr)
    torch.cumsum(torch.bincount(rows[keep], minlength=n), 0, out=new_rowptr[1:])
    return new_rowptr, col[keep].contiguous(), keep


def undirected_edges(rowptr: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """Every undirected edge of a symmetric CSR once, ``s < t``, as int64 ``[2, M]`` sorted by (s, t)."""
    rows = csr_rows(rowptr)
    upper = rows < col.long()
    return torch.stack([rows[upper], col.long()[upper]])


def sample_negatives(num_nodes: int, src: torch.Tensor, k: int, generator: torch.Generator,
                     forbidden: torch.Tensor | None = None, rounds: int = 20) -> torch.Tensor:
    """int64 ``[len(src), k]`` uniform random targets ``t != s`` for every source ``s``;
    with ``forbidden`` (sorted keys ``s * N + t`` of the graph's edges), pairs that are edges
    are redrawn (up to ``rounds`` times: a source adjacent to nearly every node may keep some)."""
    if num_nodes < 2:
        raise FastleadingError(f"link prediction: the graph needs at least 2 nodes, it has {num_nodes}")
    src = src.long()
    out = torch.empty(len(src), k, dtype=torch.int64)
    todo = torch.ones(len(src), k, dtype=torch.bool)
    s = src[:, None].expand(-1, k)
    for _ in range(rounds):
        count = int(todo.sum())
        if count == 0:
            break
        # uniform over the N - 1 nodes other than s
        draw = torch.randint(0, num_nodes - 1, (count,), generator=generator)
        s_todo = s[todo]
        draw = draw + (draw >= s_todo).long()
        out[todo] = draw
        bad = torch.zeros_like(todo)
        if forbidden is not None:
            bad[todo] = _isin_sorted(_keys(s_todo, draw, num_nodes), forbidden)
        todo = bad
    return out


def random_link_split(rowptr: torch.Tensor, col: torch.Tensor, ratios: str, seed: int,
                      num_negatives: int) -> LinkSplit:
    """A seeded split of the undirected edges of the symmetric CSR ``rowptr/col`` (see the module)."""
    train_f, valid_f, _ = parse_ratios(ratios)
    n = len(rowptr) - 1
    edges = undirected_edges(rowptr, col)
    m = edges.shape[1]
    if m < 3:
        raise FastleadingError(f"link prediction: the graph has {m} undirected edges; a split needs at least 3")
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + 17)
    edges = edges[:, torch.randperm(m, generator=g)]
    n_train = max(1, int(round(train_f * m)))
    n_valid = min(int(round(valid_f * m)), m - n_train)
    train, valid, test = edges[:, :n_train], edges[:, n_train:n_train + n_valid], edges[:, n_train + n_valid:]
    forbidden = _keys(csr_rows(rowptr), col, n)  # sorted: rows ascend, columns ascend inside rows
    neg = sample_negatives(n, torch.cat([valid[0], test[0]]), num_negatives, g, forbidden)
    return LinkSplit(train.contiguous(), valid.contiguous(), neg[:n_valid], test.contiguous(), neg[n_valid:],
                     name=f"{ratios}-seed{seed}")


def training_graph(rowptr: torch.Tensor, col: torch.Tensor, split: LinkSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """The graph's CSR without any validation or test edge (either direction)."""
    held_out = torch.cat([split.valid, split.test], dim=1)
    return drop_edges(rowptr, col, held_out[0], held_out[1])[:2]
