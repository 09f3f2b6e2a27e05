"""LEADING for link prediction (``train.task=link``): the loop's task hooks and the link run.

A step takes a batch of training edges ``(s, t)`` and ``train.link_negatives`` random pairs
``(s, t')`` per edge. The distinct endpoints of all of them are the step's targets: encoded
with gradient, their neighbours read from the bank, propagated by the implicit APPNP,
exactly :func:`fastleading.trainer.steps.leading_step` (and ``coupled_step`` /
``supervised_step`` for the baselines) with two task hooks of :class:`LinkRun`:

* ``sample``: the targets' neighbourhood is sampled on the TRAINING graph (the dataset's
  graph without any validation / test edge, :func:`fastleading.link.split.training_graph`),
  and this batch's own training edges are dropped from the sampled CSR, both directions
  (:class:`EdgeDroppingSampler`); the full-graph normalisation ``D̃^{-1/2}`` of their endpoints
  leaves out every edge of the batch, sampled or not (a hub that did not draw its partner still
  counts it in its full-graph degree), so not even their degree tells the model about them;
* ``loss``: the decoder (:class:`fastleading.link.decoder.LinkDecoder`) scores the pairs from the
  targets' propagated representations; binary cross-entropy, ``mean over positives + mean over
  negatives`` (OGB's ogbl-citation2 example).

Evaluation (:meth:`LinkTask.metrics`, :func:`fastleading.link.decoder.split_metrics`): every node encoded without
gradient, the head and the propagation over the training graph
(:func:`fastleading.trainer.evaluate.full_graph_logits`, LEADING at its fixed point), then every validation / test
edge scored against its fixed negatives: AUC, MRR and Hits@K (:mod:`fastleading.link.metrics`). Nothing of size
``N x N``; the step allocates nothing ``[N]``-sized and reads nothing back from the device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastleading.config import Config
from fastleading.data import link_view
from fastleading.data.tag import Split, TextAttributedGraph
from fastleading.engine import transfer
from fastleading.errors import FastleadingError
from fastleading.link.decoder import split_metrics
from fastleading.link.metrics import summary_fields
from fastleading.link.split import LinkSplit, drop_edges, sample_negatives
from fastleading.trainer.model import LinkPredictor, subgraph_norm
from fastleading.trainer.steps import STEPS, Run, Subgraph


@dataclass
class LinkBatch:
    """One step's pairs in local target ids (on the run's device)."""

    pos_src: torch.Tensor     # [B]
    pos_dst: torch.Tensor     # [B]
    neg_dst: torch.Tensor     # [B, k] (the negatives share the positive's source)


class EdgeDroppingSampler:
    """Wraps a :class:`fastleading.engine.sampler.NeighborSampler`: each sample drops the pairs set in
    :attr:`drop` (local ids of the targets, which come first in every sample) from the
    sampled CSR."""

    def __init__(self, inner):
        self.inner = inner
        self.drop: tuple[torch.Tensor, torch.Tensor] | None = None

    def __getattr__(self, name):  # everything else (rowptr, col, fanouts, ...) is the inner sampler's
        return getattr(self.inner, name)

    def sample(self, targets, seed: int):
        sub = self.inner.sample(targets, seed)
        if self.drop is None:
            return sub
        rowptr, col, _ = drop_edges(sub.rowptr, sub.col, *self.drop)
        # col is the sample's only per-edge array (who-drew-whom draws are refused for link runs)
        return dataclasses.replace(sub, rowptr=rowptr, col=col)


def edges_per_node(src: torch.Tensor, dst: torch.Tensor, n: int) -> torch.Tensor:
    """How many of the distinct undirected edges ``(src, dst)`` (self loops left out) touch
    each of the nodes ``0 .. n-1``: int64 ``[n]``."""
    keep = src != dst
    a, b = torch.minimum(src, dst)[keep], torch.maximum(src, dst)[keep]
    pairs = torch.unique(a * n + b)
    return torch.bincount(torch.cat([pairs // n, pairs % n]), minlength=n)


@dataclass
class LinkRun(Run):
    """A :class:`Run` whose targets are a batch's endpoints (see the module docstring)."""

    model: LinkPredictor  # (Run's field: the node classifier plus the pair decoder)
    link: LinkTask | None = None
    batch: LinkBatch | None = None
    # per target of the batch (CPU): its training edges in the batch, which its degree must not count
    batch_degree: torch.Tensor | None = None

    @classmethod
    def from_run(cls, run: Run, task: LinkTask) -> LinkRun:
        fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(Run)}
        if fields["sampler"] is not None:
            fields["sampler"] = EdgeDroppingSampler(fields["sampler"])
        return cls(**fields, link=task)

    def begin_batch(self, edge_ids: torch.Tensor) -> torch.Tensor:
        """Set up the step of training edges ``edge_ids`` (CPU); returns its targets (CPU):
        the distinct endpoints of the edges and of their seeded negatives."""
        assert self.link is not None  # set by from_run
        train = self.link.split.train
        src, dst = train[0, edge_ids], train[1, edge_ids]
        k = self.cfg.train.link_negatives
        g = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + self.step + 500_009)
        neg = sample_negatives(self.link.num_nodes, src, k, g)
        targets, local = torch.unique(torch.cat([src, dst, neg.reshape(-1)]), return_inverse=True)
        b = len(src)
        pos_src, pos_dst, neg_dst = local[:b], local[b:2 * b], local[2 * b:].view(b, k)
        if isinstance(self.sampler, EdgeDroppingSampler):
            self.sampler.drop = (pos_src, pos_dst)
        self.batch_degree = edges_per_node(pos_src, pos_dst, len(targets))
        self.batch = LinkBatch(*(transfer.to_device(t, self.device) for t in (pos_src, pos_dst, neg_dst)))
        return targets

    def sample(self, targets: torch.Tensor) -> Subgraph:
        sub = super().sample(targets)
        if isinstance(sub.dinv, torch.Tensor) and self.batch_degree is not None:
            # the full-graph degree of the batch's endpoints (the targets come first), less the
            # batch's edges, whether the sample drew them or not
            lost = torch.zeros(len(sub.dinv), dtype=torch.float64)
            lost[:len(self.batch_degree)] = self.batch_degree.double()
            deg = torch.round(sub.dinv.double().pow(-2)) - transfer.to_device(lost, self.device)
            sub = dataclasses.replace(sub, dinv=deg.rsqrt().to(sub.dinv.dtype))
        return sub

    def loss(self, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the batch's pairs, scored from the targets' rows ``z``."""
        b, decoder = self.batch, self.model.decoder
        assert b is not None  # set by begin_batch
        z = z.float()
        zs = z[b.pos_src]
        pos = decoder(zs, z[b.pos_dst])
        neg = decoder(zs[:, None, :], z[b.neg_dst])
        return F.softplus(-pos).mean() + F.softplus(neg).mean()


@dataclass
class LinkTask:
    """What the loop needs for ``train.task=link``: the split, the step, the metrics."""

    cfg: Config
    split: LinkSplit
    num_nodes: int

    def step(self, run: Run, edge_ids: torch.Tensor, refresh_ids: torch.Tensor | None,
             steps: dict = STEPS) -> torch.Tensor:
        """The step of ``train.method`` (from ``steps``: :data:`~fastleading.trainer.steps.STEPS`,
        or ``HEAD_STEPS`` in the head warm-up) on the training edges ``edge_ids``."""
        assert isinstance(run, LinkRun)  # the loop's run of a link task (LinkRun.from_run)
        return steps[self.cfg.train.method](run, run.begin_batch(edge_ids), refresh_ids)

    def metrics(self, model, z: torch.Tensor) -> dict[str, float]:
        """``valid_*`` / ``test_*`` AUC, MRR, Hits@K of the representations ``z [N, D]``."""
        return split_metrics(model.decoder, z, self.split, self.cfg.train.link_hits, self.cfg.train.link_select)

    def summary_fields(self, best: dict) -> dict:
        return summary_fields(best, self.split.name, self.split.sizes())


def link_task(cfg: Config, graph: TextAttributedGraph) -> tuple[TextAttributedGraph, Split, LinkTask]:
    """(the graph with its CSR replaced by the training graph, the loop's items: training /
    validation / test EDGE ids, the task)."""
    if cfg.train.deepspeed:
        raise FastleadingError("config key 'train.deepspeed': not supported with train.task=link")
    if subgraph_norm(cfg) not in ("full-graph", "subgraph"):
        raise FastleadingError(f"config key 'model.subgraph_norm': train.task=link supports full-graph or subgraph, "
                               f"got {cfg.model.subgraph_norm!r}")
    view, split = link_view(cfg, graph)
    items = Split(*(torch.arange(e.shape[1]) for e in (split.train, split.valid, split.test)))
    return view, items, LinkTask(cfg, split, graph.num_nodes)
