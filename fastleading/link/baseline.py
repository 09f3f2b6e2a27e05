"""Link prediction with a GNN on fixed node features: the ``pretrained`` / ``shallow`` link
baselines and downstream link prediction on exported embeddings (``fastleading downstream
--task link --gnn gcn|sage``).

The encoder is a :class:`fastleading.models.gnn.GNN` whose output is a ``model.link_dim``-wide node
representation, the decoder the one LEADING trains (:class:`fastleading.link.decoder.LinkDecoder`).
Message passing uses the training graph (no validation / test edge:
:func:`fastleading.data.link_view`); as in OGB's ogbl-citation2 full-batch examples each step is a
full-graph forward and a batch of ``model.gnn_batch_size`` training edges with
``train.link_negatives`` random negatives each; the epoch with the best validation metric
(``train.link_select``) is kept and its validation / test AUC, MRR and Hits@K reported.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fastleading.errors import FastleadingError
from fastleading.link.decoder import LinkDecoder, split_metrics
from fastleading.link.split import LinkSplit, sample_negatives
from fastleading.models.gnn import GNN
from fastleading.run.selection import improves


def train_link_gnn(graph, features: torch.Tensor, split: LinkSplit, kind: str, epochs: int, seed: int = 0,
                   device: torch.device | str = "cpu", hidden: int = 256, dim: int = 128, decoder: str = "dot",
                   dropout: float = 0.5, lr: float = 0.01, weight_decay: float = 0.0, alpha: float = 0.1,
                   num_iters: int = 10, batch_size: int = 10000, negatives: int = 1,
                   hits: Sequence[int] = (10, 50, 100), select: str = "mrr") -> dict:
    """Train GNN ``kind`` + decoder on the training edges of ``split`` over ``graph`` (the
    training graph); returns the metrics of the epoch with the best validation ``select``
    (:func:`fit_link_gnn` without the models)."""
    return fit_link_gnn(graph, features, split, kind, epochs, seed, device, hidden, dim, decoder, dropout, lr,
                        weight_decay, alpha, num_iters, batch_size, negatives, hits, select)[0]


def fit_link_gnn(graph, features: torch.Tensor, split: LinkSplit, kind: str, epochs: int, seed: int = 0,
                 device: torch.device | str = "cpu", hidden: int = 256, dim: int = 128, decoder: str = "dot",
                 dropout: float = 0.5, lr: float = 0.01, weight_decay: float = 0.0, alpha: float = 0.1,
                 num_iters: int = 10, batch_size: int = 10000, negatives: int = 1,
                 hits: Sequence[int] = (10, 50, 100), select: str = "mrr", head: str = "mlp",
                 on_epoch=None) -> tuple[dict, GNN, LinkDecoder]:
    """:func:`train_link_gnn`, returning (the metrics of the best epoch, the GNN and the decoder
    with that epoch's weights, in eval mode); ``head`` is the MLP of ``appnp`` / ``mlp``
    (:class:`fastleading.models.appnp.Head`), ``on_epoch(epoch, metrics)`` is called after each epoch's
    evaluation."""
    if features.dim() != 2 or features.shape[0] != graph.num_nodes or features.shape[1] == 0:
        raise FastleadingError(f"link prediction: expected node features of shape [{graph.num_nodes}, F >= 1], "
                               f"got {list(features.shape)}")
    torch.manual_seed(seed)
    device = torch.device(device)
    model = GNN(kind, features.shape[1], dim, hidden, dropout, alpha, num_iters, head=head).to(device)
    if model.mini_batched:
        raise FastleadingError(f"config key 'model.gnn': {kind} is not supported for link prediction "
                               "(gcn, sage, gat, appnp, mlp, revgat are)")
    dec = LinkDecoder(decoder, dim, hidden, dropout).to(device)
    inputs = model.inputs(graph, features, device)
    opt = torch.optim.Adam([*model.parameters(), *dec.parameters()], lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed * 1_000_003 + 11)
    train = split.train
    n = graph.num_nodes
    best = {"valid": -1.0}
    for epoch in range(1, epochs + 1):
        model.train()
        dec.train()
        total = 0.0
        for ids in torch.randperm(train.shape[1], generator=g).split(batch_size):
            src, dst = train[0, ids], train[1, ids]
            neg = sample_negatives(n, src, negatives, g)
            opt.zero_grad(set_to_none=True)
            z = model(inputs)
            zs = z[src.to(device)]
            pos_score = dec(zs, z[dst.to(device)])
            neg_score = dec(zs[:, None, :], z[neg.to(device)])
            loss = F.softplus(-pos_score).mean() + F.softplus(neg_score).mean()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(ids)
        model.eval()
        with torch.no_grad():
            metrics = split_metrics(dec, model(inputs), split, hits, select)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if improves(metrics, best["valid"], "epoch" in best):
            best = {**metrics, "epoch": epoch, "loss": total / train.shape[1]}
            best_state = copy.deepcopy((model.state_dict(), dec.state_dict()))
    if "epoch" not in best:
        raise FastleadingError(f"link prediction with {kind}: no epoch's evaluation had finite scores "
                               "for every pair (the model diverged): lower the learning rate")
    model.load_state_dict(best_state[0])
    dec.load_state_dict(best_state[1])
    return {"gnn": kind, **best}, model.eval(), dec.eval()


def train_link_gnn_cfg(cfg, graph, features: torch.Tensor, split: LinkSplit, kind: str, num_iters: int) -> dict:
    """:func:`train_link_gnn` with the settings of ``cfg``."""
    return fit_link_gnn_cfg(cfg, graph, features, split, kind, num_iters)[0]


def fit_link_gnn_cfg(cfg, graph, features: torch.Tensor, split: LinkSplit, kind: str, num_iters: int,
                     device: torch.device | str | None = None, epochs: int | None = None,
                     on_epoch=None) -> tuple[dict, GNN, LinkDecoder]:
    """:func:`fit_link_gnn` with the settings of ``cfg`` (``epochs`` default ``train.downstream_epochs``;
    ``device`` default ``train.device``): the ``pretrained`` link baseline, and LEADING's link head
    warm-up (:mod:`fastleading.trainer.warmup`), which is that baseline by construction."""
    from fastleading.engine.precision import resolve_device

    m, t = cfg.model, cfg.train
    return fit_link_gnn(graph, features, split, kind, t.downstream_epochs if epochs is None else epochs, t.seed,
                        resolve_device(t.device) if device is None else device, m.head_hidden, m.link_dim,
                        m.link_decoder, alpha=m.alpha, num_iters=num_iters, batch_size=m.gnn_batch_size,
                        negatives=t.link_negatives, hits=t.link_hits, select=t.link_select,
                        head=m.head, on_epoch=on_epoch)
