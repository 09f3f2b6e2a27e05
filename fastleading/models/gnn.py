"""Downstream GNNs on fixed node features (the paper's evaluation protocol, Table 2).

* ``gcn`` / ``gat`` / ``sage``: two torch_geometric layers, full-batch.
* ``appnp``: MLP -> APPNP propagation; ``mlp``: no graph.
* ``revgat``: :class:`RevGAT`, grouped reversible GAT blocks (Li et al. 2021, "Training Graph
  Neural Networks with 1000 Layers"; the paper's ogbn-arxiv model) on PyG's
  :class:`~torch_geometric.nn.GroupAddRev`: a block's input is rebuilt from its output in
  backward, so activation memory does not grow with the number of blocks. Full-batch.
* ``gamlp``: :class:`GAMLP` (Zhang et al. 2022, "Graph Attention Multi-layer Perceptron"; the
  paper's ogbn-products model) with JK attention over the hop features ``X, ÂX, ..., Â^K X``,
  which :func:`propagated_hops` computes once before training. Its nodes are independent, so
  it trains mini-batched: a batch of node ids indexes the stored hop features.

:class:`GNN` puts all of them behind one interface for :func:`fastleading.baselines.downstream.train_gnn`:
``inputs = model.inputs(graph, features, device)`` once, then ``model(inputs, ids)`` gives
the logits ``[len(ids), C]`` of the nodes ``ids``. Full-batch models compute every node and
index; a mini-batched one (``model.mini_batched``) touches only the rows of ``ids``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fastleading.engine import ops
from fastleading.errors import FastleadingError
from fastleading.models.appnp import Head, propagate

KINDS = ("gcn", "gat", "sage", "appnp", "mlp", "revgat", "gamlp")


def edge_index_of(rowptr: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``[2, E]`` (source, target) of a symmetric CSR."""
    row = torch.repeat_interleave(torch.arange(len(rowptr) - 1, device=rowptr.device), rowptr[1:] - rowptr[:-1])
    return torch.stack([col.long(), row])


# ----------------------------------------------------------------------------- hop features
def hop_store_device(num_nodes: int, hops: int, dim: int, dtype: torch.dtype, device: torch.device) -> torch.device:
    """Where :func:`propagated_hops` keeps ``[N, K+1, F]``: on a CUDA ``device`` when it takes
    under half of the free memory there, else in host memory (batches are copied over)."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.device("cpu")
    nbytes = num_nodes * (hops + 1) * dim * torch.empty((), dtype=dtype).element_size()
    free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes < free // 2 else torch.device("cpu")


def propagated_hops(x: torch.Tensor, rowptr: torch.Tensor, col: torch.Tensor, hops: int,
                    dtype: torch.dtype = torch.float16, device: torch.device | str = "cpu",
                    store_device: torch.device | str | None = None) -> torch.Tensor:
    """``[N, K+1, F]`` = ``X, ÂX, Â²X, ..., Â^K X`` with ``Â = D̃^{-1/2}(A+I)D̃^{-1/2}``.

    Each hop is one :func:`fastleading.engine.ops.appnp_step` with ``alpha=0`` (Triton on CUDA),
    computed on ``device`` in fp32 (float64 for a float64 ``x``) from the previous hop kept
    there in full precision; two ``[N, F]`` buffers are the only working memory. Hops are
    stored in ``dtype`` on ``store_device`` (default :func:`hop_store_device`), node-major,
    so a batch of nodes is one row gather. fp16 keeps 11 significant bits where bf16 keeps
    8; a hop outside fp16's range switches the whole store to bf16.

    Bytes per node: ``(K+1) * F * 2`` in fp16, e.g. 9.2 KB for K=5 and F=768 (22.6 GB for
    ogbn-products' 2.45M nodes; half that for F=384).
    """
    if hops < 0:
        raise FastleadingError(f"config key 'model.gnn_hops': expected >= 0, got {hops}")
    device = torch.device(device)
    n, dim = x.shape
    acc = ops.accumulation_dtype(x)
    if store_device is None:
        store_device = hop_store_device(n, hops, dim, dtype, device)
    store = torch.empty(n, hops + 1, dim, dtype=dtype, device=store_device)
    rowptr, col = rowptr.to(device), col.to(device)
    dinv = ops.gcn_dinv(rowptr, acc)
    # never x itself: the buffers are overwritten
    cur = x.to(device=device, dtype=acc, memory_format=torch.contiguous_format, copy=True)
    nxt = torch.empty_like(cur) if hops > 0 else None
    for k in range(hops + 1):
        if k > 0:
            assert nxt is not None  # allocated when hops > 0
            ops.appnp_step(rowptr, col, cur, cur, 0.0, dinv, out=nxt)  # (1-0) Â cur + 0 cur
            cur, nxt = nxt, cur
        if store.dtype == torch.float16 and float(cur.abs().amax()) > torch.finfo(torch.float16).max:
            store = store.to(torch.bfloat16)
        store[:, k].copy_(cur)
    return store


# ----------------------------------------------------------------------------- RevGAT
class _RevGATBlock(nn.Module):
    """norm -> ReLU -> (shared) dropout -> GAT, on one group of channels. No attention
    dropout: a reversible block runs three times per step (forward, inverse, recompute) and
    must be the same function each time, so its only randomness is the mask passed in."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        from torch_geometric.nn import GATConv

        self.norm = nn.LayerNorm(channels)
        self.conv = GATConv(channels, channels // heads, heads=heads)

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        self.conv.reset_parameters()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, dropout_mask: torch.Tensor | None = None):
        x = F.relu(self.norm(x))
        if dropout_mask is not None:
            x = x * dropout_mask
        return self.conv(x, edge_index)


class RevGAT(nn.Module):
    """Linear -> ``layers`` grouped reversible GAT blocks -> norm, ReLU, dropout -> Linear.

    Args:
        in_dim, num_classes, hidden: widths; ``hidden`` must divide by ``groups * heads``.
        layers: reversible blocks.
        dropout: on the input features, inside every block (one mask per step shared by all
            blocks, as RevGAT's; a reversible block must see the same mask when rebuilt) and
            before the output layer.
        heads: attention heads per GAT layer (each block's group of ``hidden / groups``
            channels is ``heads`` heads of ``hidden / (groups * heads)``).
        groups: channel groups of :class:`~torch_geometric.nn.GroupAddRev` (>= 2).
        reversible: False runs the same blocks as a plain residual stack that keeps its
            activations for backward (the memory comparison of the tests).
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int, layers: int, dropout: float,
                 heads: int = 4, groups: int = 2, reversible: bool = True):
        super().__init__()
        from torch_geometric.nn import GroupAddRev

        if groups < 2 or hidden % (groups * heads):
            raise FastleadingError(f"revgat: hidden width {hidden} must be a multiple of groups x heads = "
                                   f"{groups} x {heads} (set model.head_hidden)")
        if layers < 1:
            raise FastleadingError(f"config key 'model.gnn_layers': expected a positive integer, got {layers}")
        self.dropout = dropout
        self.lin_in = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList([GroupAddRev(_RevGATBlock(hidden // groups, heads), num_groups=groups,
                                                 disable=not reversible) for _ in range(layers)])
        self.norm = nn.LayerNorm(hidden)
        self.lin_out = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = self.lin_in(F.dropout(x, self.dropout, self.training))
        mask = None
        if self.training and self.dropout > 0:
            mask = torch.empty_like(x).bernoulli_(1.0 - self.dropout).div_(1.0 - self.dropout)
        # a reversible block frees its input's storage: x here is always lin_in's fresh output
        for block in self.blocks:
            x = block(x, edge_index, mask)
        x = F.dropout(F.relu(self.norm(x)), self.dropout, self.training)
        return self.lin_out(x)


# ----------------------------------------------------------------------------- GAMLP
def _mlp(in_dim: int, hidden: int, out_dim: int, layers: int, dropout: float) -> nn.Sequential:
    """``layers`` Linear layers with BatchNorm -> PReLU -> Dropout between them (GAMLP's FFN)."""
    mods: list[nn.Module] = []
    dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    for i in range(layers):
        mods.append(nn.Linear(dims[i], dims[i + 1]))
        if i < layers - 1:
            mods += [nn.BatchNorm1d(dims[i + 1]), nn.PReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*mods)


class GAMLP(nn.Module):
    """GAMLP with JK attention (Zhang et al. 2022, section 3.3 "JK attention"), no label inputs.

    A reference vector ``r = MLP([X_0 | X_1 | ... | X_K])`` of the concatenated hops scores
    every hop, ``s_k = LeakyReLU(w . [r | X_k])``; the softmax of the scores over k weighs the
    hops node by node, ``z = sum_k a_k X_k``, and an MLP classifies z. (GAMLP's other variant,
    recursive attention, scores hop k against the running combination of hops < k.)

    ``forward(h [B, K+1, F])`` -> logits ``[B, C]``; nodes are independent of each other.
    """

    def __init__(self, in_dim: int, num_classes: int, hops: int, hidden: int, dropout: float, layers: int = 2,
                 input_dropout: float = 0.0, att_dropout: float = 0.0):
        super().__init__()
        if layers < 1:
            raise FastleadingError(f"config key 'model.gnn_layers': expected a positive integer, got {layers}")
        self.num_hops = hops + 1
        self.input_drop = nn.Dropout(input_dropout)
        self.att_drop = nn.Dropout(att_dropout)
        self.dropout = nn.Dropout(dropout)
        self.jk_ref = _mlp(self.num_hops * in_dim, hidden, hidden, layers, dropout)
        self.ref_act = nn.PReLU()
        # w . [r | X_k] split into its two halves: the r half is shared by all k
        self.att_ref = nn.Linear(hidden, 1)
        self.att_hop = nn.Linear(in_dim, 1, bias=False)
        self.out = _mlp(in_dim, hidden, num_classes, layers, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() != 3 or h.shape[1] != self.num_hops:
            raise ValueError(f"expected hop features [B, {self.num_hops}, F], got {list(h.shape)}")
        h = self.input_drop(h)
        ref = self.dropout(self.ref_act(self.jk_ref(h.flatten(1))))                     # [B, H]
        scores = F.leaky_relu(self.att_hop(h).squeeze(-1) + self.att_ref(ref), 0.2)   # [B, K+1]
        att = self.att_drop(torch.softmax(scores, dim=1))
        z = torch.einsum("bk,bkf->bf", att, h)
        return self.out(z)


# ----------------------------------------------------------------------------- one interface
@dataclass
class GraphInputs:
    """What :meth:`GNN.forward` reads: the features and graph of a full-batch model, or the
    hop features of a mini-batched one (``hops``; on the host or on ``device``)."""

    device: torch.device
    x: torch.Tensor | None = None
    edge_index: torch.Tensor | None = None
    rowptr: torch.Tensor | None = None
    col: torch.Tensor | None = None
    hops: torch.Tensor | None = None


class GNN(nn.Module):
    """The downstream model ``kind`` (one of :data:`KINDS`).

    ``gcn`` / ``sage`` / ``gat`` have two layers (GAT: 8 heads), ``appnp`` is the ``head``
    (:class:`fastleading.models.appnp.Head`: mlp or linear) followed by ``num_iters`` propagation steps at
    teleport ``alpha``; ``revgat`` has
    ``layers`` reversible blocks; ``gamlp`` attends over ``hops`` + 1 hop features with MLPs
    of ``layers`` layers.
    """

    def __init__(self, kind: str, in_dim: int, num_classes: int, hidden: int, dropout: float,
                 alpha: float, num_iters: int, layers: int = 3, hops: int = 5, head: str = "mlp"):
        super().__init__()
        from torch_geometric.nn import GATConv, GCNConv, SAGEConv

        self.kind, self.dropout, self.alpha, self.num_iters, self.hops = kind, dropout, alpha, num_iters, hops
        self.mini_batched = kind == "gamlp"
        self.net: nn.Module  # revgat, gamlp
        if kind in ("appnp", "mlp"):
            self.head = Head(in_dim, num_classes, hidden, dropout, head)
        elif kind == "gcn":
            self.convs = nn.ModuleList([GCNConv(in_dim, hidden), GCNConv(hidden, num_classes)])
        elif kind == "sage":
            self.convs = nn.ModuleList([SAGEConv(in_dim, hidden), SAGEConv(hidden, num_classes)])
        elif kind == "gat":
            heads = 8
            self.convs = nn.ModuleList([GATConv(in_dim, hidden // heads, heads=heads, dropout=dropout),
                                        GATConv(hidden, num_classes, heads=1, dropout=dropout)])
        elif kind == "revgat":
            self.net = RevGAT(in_dim, num_classes, hidden, layers, dropout)
        elif kind == "gamlp":
            if hops < 0:
                raise FastleadingError(f"config key 'model.gnn_hops': expected >= 0, got {hops}")
            self.net = GAMLP(in_dim, num_classes, hops, hidden, dropout, layers)
        else:
            raise FastleadingError(f"config key 'model.gnn': expected one of {', '.join(KINDS)}, got {kind!r}")

    def inputs(self, graph, features: torch.Tensor, device: torch.device | str) -> GraphInputs:
        """Move (full-batch) or precompute (``gamlp``: :func:`propagated_hops`) what
        :meth:`forward` reads, once per training run."""
        device = torch.device(device)
        if self.mini_batched:
            return GraphInputs(device, hops=propagated_hops(features, graph.rowptr, graph.col, self.hops,
                                                            device=device))
        return GraphInputs(device, x=features.to(device=device, dtype=torch.float32),
                           edge_index=edge_index_of(graph.rowptr, graph.col).to(device),
                           rowptr=graph.rowptr.to(device), col=graph.col.to(device))

    def forward(self, inputs: GraphInputs, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the nodes ``ids`` (every node when None; a mini-batched model needs ids)."""
        if self.mini_batched:
            if ids is None or inputs.hops is None:
                raise ValueError("a mini-batched GNN takes node ids, and the hop features of GNN.inputs")
            rows = inputs.hops[ids.to(inputs.hops.device)]
            return self.net(rows.to(device=inputs.device, dtype=torch.float32, non_blocking=True))
        out = self._full_graph(inputs.x, inputs.edge_index, inputs.rowptr, inputs.col)
        return out if ids is None else out[ids]

    def _full_graph(self, x, edge_index, rowptr, col) -> torch.Tensor:
        if self.kind == "mlp":
            return self.head(x)
        if self.kind == "appnp":
            return propagate(self.head(x), rowptr, col, self.alpha, self.num_iters)
        if self.kind == "revgat":
            return self.net(x, edge_index)
        for i, conv in enumerate(self.convs):
            x = F.dropout(x, self.dropout, self.training)
            x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = F.elu(x)
        return x
