"""Multi-hop neighbour sampling: the k-hop subgraph of a batch of target nodes.

At hop h every node first reached at hop h-1 (the targets for h = 1) draws
``min(degree, fanouts[h-1])`` distinct neighbours uniformly at random (all of them when the
fanout is -1). The result is a :class:`SampledSubgraph`: the targets first, then the new
nodes of hop 1, hop 2, ..., and the sampled edges as a symmetric CSR over local ids.

With ``draws=True`` the subgraph also says who drew whom (:class:`Draws`), for the
importance-weighted propagation of ``model.subgraph_norm=weighted``: a node ``i`` that drew
``k_i`` of its ``deg_i`` neighbours weights their messages by ``deg_i / k_i``, an unbiased
estimate of its full-graph row.

Two backends keep the same contract (the samples themselves differ):

- ``"native"``: C++ (``fastleading._native.sample``) for CPU graphs. The draws of node v at
  hop h depend only on (seed, h, v), so a seed gives the same subgraph on any number of
  threads; threads start only for frontiers large enough to pay for them. Releases the GIL.
- ``"torch"``: vectorised PyTorch ops (Floyd's algorithm over all frontier rows at once),
  for graphs that live on the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fastleading import _native
from fastleading.engine.graph import build_csr_reference
from fastleading.errors import FastleadingError

BACKENDS = ("auto", "native", "torch")


@dataclass(frozen=True)
class Draws:
    """Who drew whom in a sampled subgraph (local ids), and the importance weight of each row.

    Attributes:
        rowptr: int64 ``[n+1]``; col: int64 ``[E']``: the directed CSR ``C``. Row ``i`` of a
            node that was expanded (reached before the last hop) lists the neighbours it drew
            itself (a drawn self loop is dropped); the rows of the last hop's nodes, which draw
            nothing, are empty. Columns sorted within rows.
        rowptr_t, col_t: ``C^T`` in the same form.
        weight: float64 ``[n]``: ``deg_i / k_i`` for an expanded node that drew ``k_i`` of its
            ``deg_i`` full-graph neighbours (1 when all were drawn: the row is exact); 0 for the
            last hop's nodes (and any node that drew nothing).

    The weighted operator of a row ``i`` is then ``dinv_i^2 x_i + weight_i * sum_{j in C_i}
    dinv_i dinv_j x_j`` with the full graph's ``dinv``: for an expanded row its expectation over
    the draws is the full-graph row of ``Â`` (see :class:`fastleading.models.appnp.ImportanceNorm`); a
    node of the last hop keeps only its self loop. (Estimating the last hop's rows from the
    nodes that drew them, scaled to their degree, was tried: at hubs that estimate rests on one
    neighbour, its noise reached the implicit layer's histories and training collapsed, see
    docs/training.md "Known limitations".)
    """

    rowptr: torch.Tensor
    col: torch.Tensor
    rowptr_t: torch.Tensor
    col_t: torch.Tensor
    weight: torch.Tensor


@dataclass(frozen=True)
class SampledSubgraph:
    """A sampled k-hop neighbourhood.

    Attributes:
        node_ids: int64 ``[n]`` global ids; local id = position. ``node_ids[:num_targets]``
            are the targets in the order given.
        rowptr: int64 ``[n+1]`` CSR over local ids of the sampled edges: symmetric, no
            duplicates, no self loops, columns sorted within rows.
        col: int64 ``[E]`` local ids.
        num_targets: B.
        nodes_per_hop: ``[B, new nodes at hop 1, ..., at hop H]``, summing to n.
        draws: who drew whom and the rows' importance weights (a sampler made with
            ``draws=True``), else None.
    """

    node_ids: torch.Tensor
    rowptr: torch.Tensor
    col: torch.Tensor
    num_targets: int
    nodes_per_hop: list[int]
    draws: Draws | None = None

    @property
    def num_nodes(self) -> int:
        return self.node_ids.numel()

    def edge_index(self) -> torch.Tensor:
        """The sampled edges as int64 ``[2, E]`` (row, col) local ids, for PyG layers."""
        row = torch.repeat_interleave(
            torch.arange(self.num_nodes, device=self.rowptr.device), self.rowptr[1:] - self.rowptr[:-1]
        )
        return torch.stack([row, self.col])


class NeighborSampler:
    """Samples the ``len(fanouts)``-hop neighbourhood of target batches in a CSR graph.

    Args:
        rowptr: int64 ``[N+1]`` CSR offsets (see :func:`fastleading.engine.graph.build_csr`).
        col: int32/int64 ``[E]`` neighbour ids, on the device of ``rowptr``.
        fanouts: neighbours drawn per node at each hop (>= 1, or -1 for all).
        backend: ``"native"`` (C++, CPU graphs), ``"torch"`` (any device) or ``"auto"``
            (``"torch"`` for a graph on the GPU, else ``"native"``).
        num_threads: threads of the native backend; 0 uses every core.
        draws: also return who drew whom and the importance weights (:class:`Draws`); the
            sample itself is the same.
    """

    def __init__(self, rowptr: torch.Tensor, col: torch.Tensor, fanouts: Sequence[int],
                 backend: str = "auto", num_threads: int = 0, draws: bool = False):
        if backend not in BACKENDS:
            raise FastleadingError(f"sampler backend: expected one of {BACKENDS}, got {backend!r}")
        fanouts = [int(f) for f in fanouts]
        if not fanouts or any(f < 1 and f != -1 for f in fanouts):
            raise FastleadingError(f"fanouts: expected a non-empty list of ints >= 1 (or -1 for all), got {fanouts}")
        _check_csr(rowptr, col)
        if backend == "auto":
            backend = "native" if rowptr.device.type == "cpu" else "torch"
        if backend == "native" and rowptr.device.type != "cpu":
            raise FastleadingError(f"sampler backend 'native' needs the graph on the CPU, it is on {rowptr.device}")
        self.rowptr, self.col = rowptr, col
        self.fanouts = fanouts
        self.backend = backend
        self.num_threads = num_threads
        self.draws = bool(draws)
        self.num_nodes = rowptr.numel() - 1
        if backend == "native":
            # Zero-copy views the C++ code reads (tensors and views share memory).
            self._rowptr_np = rowptr.numpy()
            self._col_np = col.numpy()

    def sample(self, targets, seed: int) -> SampledSubgraph:
        """The subgraph around ``targets`` (distinct node ids ``[B]``, B >= 1), drawn with ``seed``.

        Returns tensors on the graph's device.
        """
        targets = torch.as_tensor(targets, dtype=torch.int64, device=self.rowptr.device).reshape(-1)
        if targets.numel() == 0:
            raise FastleadingError("sampler targets: expected at least one node id")
        if self.backend == "native":
            return self._sample_native(targets, seed)
        return self._sample_torch(targets, seed)

    def _sample_native(self, targets: torch.Tensor, seed: int) -> SampledSubgraph:
        try:
            out = _native.sample(self._rowptr_np, self._col_np, np.ascontiguousarray(targets.numpy()),
                                 self.fanouts, seed % 2**64, self.num_threads, self.draws)
        except IndexError:
            raise FastleadingError(f"sampler targets: node ids must lie in [0, {self.num_nodes})") from None
        except ValueError:
            raise FastleadingError("sampler targets: a node id appears twice") from None
        node_ids, rowptr, col = (torch.from_numpy(a) for a in out[:3])
        per_hop = out[3]
        draws = None
        if self.draws:
            weight, d_rowptr, d_col, t_rowptr, t_col = (torch.from_numpy(a) for a in out[4:])
            draws = Draws(d_rowptr, d_col, t_rowptr, t_col, weight)
        return SampledSubgraph(node_ids, rowptr, col, targets.numel(), per_hop, draws)

    def _weights(self, node_ids: torch.Tensor, num_draws: torch.Tensor) -> torch.Tensor:
        """:attr:`Draws.weight` (float64 ``[n]``): degree / draws, 0 where a node drew nothing."""
        degree = (self.rowptr[node_ids + 1] - self.rowptr[node_ids]).double()
        count = num_draws.double()
        return torch.where(count > 0, degree / count.clamp(min=1), torch.zeros_like(degree))

    def _sample_torch(self, targets: torch.Tensor, seed: int) -> SampledSubgraph:
        if int(targets.min()) < 0 or int(targets.max()) >= self.num_nodes:
            raise FastleadingError(f"sampler targets: node ids must lie in [0, {self.num_nodes})")
        if torch.unique(targets).numel() != targets.numel():
            raise FastleadingError("sampler targets: a node id appears twice")
        device = self.rowptr.device
        generator = torch.Generator(device=device)
        generator.manual_seed(seed % 2**64)
        nodes = targets
        frontier = torch.arange(targets.numel(), device=device)  # local ids of the last hop's new nodes
        per_hop = [targets.numel()]
        edge_src, edge_dst, num_draws = [], [], []
        for fanout in self.fanouts:
            start = self.rowptr[nodes[frontier]]
            degree = self.rowptr[nodes[frontier] + 1] - start
            num_draws.append(degree if fanout < 0 else degree.clamp(max=fanout))
            owner, position = _draw_positions(degree, fanout, generator)
            drawn = self.col[start[owner] + position].long()
            u = frontier[owner]
            keep = drawn != nodes[u]  # a self loop in the input graph is no sampled edge
            u, drawn = u[keep], drawn[keep]
            known = nodes.numel()
            v, nodes = _relabel(nodes, drawn)
            edge_src.append(u)
            edge_dst.append(v)
            frontier = torch.arange(known, nodes.numel(), device=device)
            per_hop.append(nodes.numel() - known)
        src, dst = torch.cat(edge_src), torch.cat(edge_dst)
        n = nodes.numel()
        rowptr, col = build_csr_reference(src, dst, n)
        draws = None
        if self.draws:
            d_rowptr, d_col = _directed_csr(src, dst, n)
            t_rowptr, t_col = _directed_csr(dst, src, n)
            counts = torch.zeros(n, dtype=torch.int64, device=device)
            counts[:n - per_hop[-1]] = torch.cat(num_draws)  # the last hop's nodes draw nothing
            draws = Draws(d_rowptr, d_col, t_rowptr, t_col, self._weights(nodes, counts))
        return SampledSubgraph(nodes, rowptr, col, targets.numel(), per_hop, draws)


def _draw_positions(degree: torch.Tensor, fanout: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct neighbour positions for every frontier row, uniform over k-subsets.

    Args:
        degree: int64 ``[F]`` degrees of the frontier rows.
        fanout: draws per row (-1: all).
    Returns:
        ``(owner, position)``: int64 ``[D]`` each, D = sum of min(degree, fanout); row
        ``owner[i]`` draws neighbour number ``position[i]``, grouped by row.
    """
    device = degree.device
    k = degree if fanout < 0 else degree.clamp(max=fanout)
    offset = torch.cumsum(k, 0) - k
    owner = torch.repeat_interleave(torch.arange(degree.numel(), device=device), k)
    position = torch.arange(owner.numel(), device=device) - offset[owner]  # all neighbours, in order
    rows = torch.nonzero(degree > k).flatten()
    if rows.numel():
        # Floyd's algorithm, one column per draw, vectorised over the rows above the fanout:
        # draw t in [0, d-f+j]; if t was drawn already take d-f+j itself (never drawable before).
        d = degree[rows]
        chosen = torch.empty(rows.numel(), fanout, dtype=torch.int64, device=device)
        for j in range(fanout):
            bound = d - fanout + j + 1
            u = torch.rand(rows.numel(), generator=generator, dtype=torch.float64, device=device)
            t = torch.minimum((u * bound).long(), bound - 1)
            seen = (chosen[:, :j] == t[:, None]).any(1)
            chosen[:, j] = torch.where(seen, bound - 1, t)
        slots = offset[rows][:, None] + torch.arange(fanout, device=device)
        position[slots.flatten()] = chosen.flatten()
    return owner, position


def _directed_csr(src: torch.Tensor, dst: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 CSR ``(rowptr [n+1], col)`` of the directed edges ``src -> dst`` (duplicates kept),
    columns sorted within rows."""
    order = torch.argsort(src * n + dst)
    rowptr = torch.zeros(n + 1, dtype=torch.int64, device=src.device)
    rowptr[1:] = torch.cumsum(torch.bincount(src, minlength=n), 0)
    return rowptr, dst[order]


def _relabel(nodes: torch.Tensor, drawn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Local ids of ``drawn`` (global ids), appending the unseen ones (sorted) to ``nodes``.

    Returns:
        ``(local, nodes)``: int64 ``[len(drawn)]`` and the extended int64 ``[n']``.
    """
    n = nodes.numel()
    sorted_nodes, order = torch.sort(nodes)
    pos = torch.searchsorted(sorted_nodes, drawn).clamp_(max=n - 1)
    found = sorted_nodes[pos] == drawn
    new = torch.unique(drawn[~found])  # sorted
    local = torch.where(found, order[pos], n + torch.searchsorted(new, drawn))
    return local, torch.cat([nodes, new])


def _check_csr(rowptr: torch.Tensor, col: torch.Tensor) -> None:
    """Rejects a malformed CSR once, so sampling can index it without bounds checks."""
    if rowptr.dtype != torch.int64 or rowptr.dim() != 1 or rowptr.numel() < 1:
        raise FastleadingError(f"sampler rowptr: expected int64 [N+1], got {rowptr.dtype} {tuple(rowptr.shape)}")
    if col.dtype not in (torch.int32, torch.int64) or col.dim() != 1:
        raise FastleadingError(f"sampler col: expected int32/int64 [E], got {col.dtype} {tuple(col.shape)}")
    if col.device != rowptr.device:
        raise FastleadingError(f"sampler col: on {col.device}, rowptr on {rowptr.device}")
    if not (rowptr.is_contiguous() and col.is_contiguous()):
        raise FastleadingError("sampler rowptr/col: expected contiguous tensors")
    n = rowptr.numel() - 1
    if int(rowptr[0]) != 0 or int(rowptr[-1]) != col.numel() or bool((rowptr[1:] < rowptr[:-1]).any()):
        raise FastleadingError("sampler rowptr: expected 0 first, col length last, non-decreasing")
    if col.numel() and (int(col.min()) < 0 or int(col.max()) >= n):
        raise FastleadingError(f"sampler col: neighbour ids must lie in [0, {n})")
