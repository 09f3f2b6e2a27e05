"""The training steps: LEADING (the paper's Algorithm 1) and the two LM baselines.

Each step runs forward and backward for one batch of targets and returns the loss (this
rank's share of the global batch's mean loss, as a device tensor: the loop reads it only
where it logs). The optimizer step is the loop's (:meth:`Optimization.step`), after
``run.overlap.join()``.

  leading     two pipelines + memory bank + implicit APPNP (the paper)
  coupled     naive end-to-end LM+APPNP: every node of the sampled subgraph encoded with gradient
  supervised  graph-less fine-tuning on the labelled targets
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastleading.config import Config
from fastleading.engine import ops, transfer
from fastleading.engine.bank import MemoryBank
from fastleading.engine.distributed import align_rows, sync_bank_rows
from fastleading.engine.overlap import RefreshStream
from fastleading.engine.precision import Precision
from fastleading.engine.profiling import Phases
from fastleading.engine.sampler import NeighborSampler
from fastleading.models.appnp import ImportanceNorm
from fastleading.models.encode import EncodeCounter, encode_eval, encode_nodes
from fastleading.trainer.model import NodeClassifier
from fastleading.trainer.optim import Optimization


@dataclass
class Subgraph:
    """The sampled k-hop neighbourhood of a batch of targets (targets first)."""

    ids: torch.Tensor               # int64 [n] global node ids, on the CPU
    node_ids: torch.Tensor          # the same on the run's device
    rowptr: torch.Tensor            # int64 [n+1] CSR of the subgraph (local ids), on the device
    col: torch.Tensor               # [E] local column ids, on the device
    # [n] normalisation of its Â (None: the subgraph's own degrees); model.subgraph_norm=weighted:
    # the importance-weighted Ã's (full-graph dinv, row weights, transposed CSR), and rowptr/col
    # are then who drew whom (fastleading.engine.sampler.Draws), not the symmetric subgraph
    dinv: torch.Tensor | ImportanceNorm | None


@dataclass
class Run:
    """What a training step touches."""

    cfg: Config
    device: torch.device
    precision: Precision
    tokens: object                      # fastleading.data.tokens.TokenCache
    labels: torch.Tensor                # int64 [N] on the device
    model: NodeClassifier
    bank: MemoryBank | None             # LEADING only
    sampler: NeighborSampler | None     # graph methods only
    # 1/sqrt(deg+1) of the full graph on the device (model.subgraph_norm=full-graph or weighted),
    # else None: a sampled subgraph is then normalised with the degrees full-graph evaluation uses.
    graph_dinv: torch.Tensor | None
    overlap: RefreshStream
    phases: Phases
    counter: EncodeCounter
    optim: Optimization
    step: int = 0
    # This rank's share of the global batch's mean loss (distributed.shard_weight); 1 in one process.
    loss_weight: float = 1.0

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """LM embeddings ``[len(ids), H]`` (fp32) of nodes ``ids`` (CPU), with gradient. Under
        DeepSpeed this is a call of the engine (ZeRO-3's gradient bookkeeping needs its forward)."""
        encoder = self.optim.engine if self.optim.engine is not None else self.model.encoder
        return encode_nodes(encoder, self.tokens, ids, self.device, self.precision)

    def encode_nograd(self, ids: torch.Tensor) -> torch.Tensor:
        """No-gradient encoding in eval mode (no dropout); stores no activations. Longest first
        in micro-batches of at most ``train.encode_token_budget`` token positions; rows in the
        order of ``ids``."""
        return encode_eval(self.model.encoder, self.tokens, ids, self.device, self.precision,
                           token_budget=self.cfg.train.encode_token_budget)

    def sample(self, targets: torch.Tensor) -> Subgraph:
        """The targets' sampled neighbourhood (seeded by the step, so a resumed run samples alike)."""
        assert self.sampler is not None  # graph methods only
        sub = self.sampler.sample(targets, seed=self.cfg.train.seed * 1_000_003 + self.step)
        node_ids = transfer.to_device(sub.node_ids, self.device)
        dinv = self.graph_dinv[node_ids] if self.graph_dinv is not None else None
        if sub.draws is None:
            return Subgraph(sub.node_ids, node_ids, *self._graph(sub.rowptr, sub.col), dinv)
        # model.subgraph_norm=weighted: who drew whom and its transpose, weights built on the host
        d = sub.draws
        assert dinv is not None  # weighted: the full graph's degrees are on the device
        weight = transfer.to_device(d.weight.float(), self.device)
        norm = ImportanceNorm(dinv, weight, *self._graph(d.rowptr_t, d.col_t))
        return Subgraph(sub.node_ids, node_ids, *self._graph(d.rowptr, d.col), norm)

    def _graph(self, host_rowptr: torch.Tensor, host_col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A sampled CSR on the device; the kernels' work partition is built here, from the host
        copy: no device reads."""
        rowptr = transfer.to_device(host_rowptr, self.device)
        ops.prepare_graph(rowptr, host_rowptr)
        return rowptr, transfer.to_device(host_col, self.device)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over ``targets`` (this rank's; unweighted)."""
        return F.cross_entropy(logits.float(), self.labels[transfer.to_device(targets, self.labels.device)])

    def backward(self, loss: torch.Tensor) -> torch.Tensor:
        """Backward of this rank's share of the global mean loss; returns that share, detached."""
        self.optim.backward(loss, self.loss_weight, implicit=self.model.appnp)
        return loss.detach() * self.loss_weight


def leading_step(run: Run, targets: torch.Tensor, refresh_ids: torch.Tensor | None) -> torch.Tensor:
    """One step of Algorithm 1 (forward and backward); returns the loss. ``refresh_ids`` None:
    pipeline 2 rests this step (the bank was encoded afresh at the start of the epoch)."""
    phase, bank, model = run.phases, run.bank, run.model
    assert bank is not None  # LEADING keeps one
    # Pipeline 2, line 5: encode a random batch of ALL nodes without gradient (own CUDA stream
    # when overlapping). Line 6, caching it, is deferred until after this step's lookups.
    x_refresh = None
    if refresh_ids is not None:
        with phase("encode-refresh"), run.overlap.encode():
            x_refresh = run.encode_nograd(refresh_ids)
        run.counter.add("refresh", refresh_ids)

    # Pipeline 1, line 3: the targets' k-hop neighbourhood, targets first.
    with phase("sample"):
        sub = run.sample(targets)
    num_targets = len(targets)
    with phase("encode-grad"):
        x_targets = run.encode(targets)                                          # line 7
        if run.cfg.train.align_to_bank:  # in the frame of the stale neighbours they meet
            x_targets = align_rows(bank, targets, x_targets)
    run.counter.add("grad", targets)
    with phase("bank-refresh"):
        sync_bank_rows(bank, targets, x_targets, run.step)                       # line 8 (every rank's rows)
    with phase("bank-lookup"):
        x_in = torch.empty(len(sub.ids), x_targets.shape[1], device=run.device)
        bank.lookup(sub.node_ids[num_targets:], out=x_in, out_offset=num_targets)  # line 9
        x_in[:num_targets] = x_targets                                           # line 10
    run.overlap.lookups_done()
    with phase("propagate"), run.precision.autocast():
        logits = model.classify(x_in, sub.rowptr, sub.col, sub.node_ids, implicit=True,  # line 11
                                num_iters=run.cfg.model.num_iters, dinv=sub.dinv, num_targets=num_targets)
    with phase("loss"):
        loss = run.loss(logits[:num_targets], targets)                           # line 12
    with phase("backward"):
        loss = run.backward(loss)  # the implicit layer's backward also syncs its histories across ranks
    if refresh_ids is not None and x_refresh is not None:
        with phase("bank-refresh"), run.overlap.scatter():
            if run.cfg.train.align_to_bank:
                x_refresh = align_rows(bank, refresh_ids, x_refresh)
            sync_bank_rows(bank, refresh_ids, x_refresh, run.step)               # line 6 (every rank's rows)
    return loss


def coupled_step(run: Run, targets: torch.Tensor, refresh_ids=None) -> torch.Tensor:
    """Naive end-to-end LM+APPNP: every node of the sampled subgraph is encoded with gradient
    and the propagation is unrolled (the paper's LM+GNN rows)."""
    phase = run.phases
    with phase("sample"):
        sub = run.sample(targets)
    with phase("encode-grad"):
        x_in = run.encode(sub.ids)
    run.counter.add("grad", sub.ids)
    return propagate_loss_backward(run, x_in, sub, targets, implicit=False)


def propagate_loss_backward(run: Run, x_in: torch.Tensor, sub: Subgraph, targets: torch.Tensor,
                            implicit: bool) -> torch.Tensor:
    """Head and propagation over the subgraph ``sub`` from its rows ``x_in`` (targets first), the
    targets' loss and its backward; returns the loss (:meth:`Run.backward`)."""
    with run.phases("propagate"), run.precision.autocast():
        logits = run.model.classify(x_in, sub.rowptr, sub.col, sub.node_ids, implicit=implicit,
                                    num_iters=run.cfg.model.num_iters, dinv=sub.dinv, num_targets=len(targets))
    with run.phases("loss"):
        loss = run.loss(logits[:len(targets)], targets)
    with run.phases("backward"):
        return run.backward(loss)


def supervised_step(run: Run, targets: torch.Tensor, refresh_ids=None) -> torch.Tensor:
    """Graph-less fine-tuning: LM + head on the labelled targets only."""
    phase = run.phases
    with phase("encode-grad"):
        x = run.encode(targets)
    run.counter.add("grad", targets)
    with phase("loss"), run.precision.autocast():
        loss = run.loss(run.model.head(x), targets)
    with phase("backward"):
        return run.backward(loss)


STEPS = {"leading": leading_step, "coupled": coupled_step, "supervised": supervised_step}


# ------------------------------------------------------------- LP-FT: the head before the LM
def leading_head_step(run: Run, targets: torch.Tensor, refresh_ids=None) -> torch.Tensor:
    """:func:`leading_step` with the LM frozen (``train.head_warmup_epochs``): every row of the
    subgraph, the targets' too, comes from the bank (the frozen LM's embeddings); the head
    and the implicit layer's histories learn, the LM is not run."""
    assert run.bank is not None  # filled for the warm-up
    with run.phases("sample"):
        sub = run.sample(targets)
    with run.phases("bank-lookup"):
        x_in = run.bank.lookup(sub.node_ids).float()
    return propagate_loss_backward(run, x_in, sub, targets, implicit=True)


def supervised_head_step(run: Run, targets: torch.Tensor, refresh_ids=None) -> torch.Tensor:
    """:func:`supervised_step` with the LM frozen: the head on the targets' frozen embeddings
    (a bank filled for the warm-up)."""
    assert run.bank is not None
    with run.phases("loss"), run.precision.autocast():
        loss = run.loss(run.model.head(run.bank.lookup(targets).float()), targets)
    with run.phases("backward"):
        return run.backward(loss)


HEAD_STEPS = {"leading": leading_head_step, "supervised": supervised_head_step}
