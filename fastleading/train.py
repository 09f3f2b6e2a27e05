"""Training: LEADING (the paper's Algorithm 1) and the baselines, in one loop.

Methods (``train.method``):
  leading     two pipelines + memory bank + implicit APPNP (the paper)
  coupled     naive end-to-end LM+APPNP: every node of the sampled subgraph encoded with gradient
  supervised  graph-less fine-tuning on the labelled nodes
  pretrained  no fine-tuning: frozen LM embeddings -> GNN
  shallow     bag-of-words / TF-IDF features -> GNN

Outputs in ``out_dir``: config.json, metrics.jsonl, summary.json, checkpoint.pt (or, with
``train.deepspeed``, the DeepSpeed checkpoint folder ``deepspeed/``), best.pt.

Several processes (``torchrun`` or the ``deepspeed`` launcher; see :mod:`fastleading.distributed`)
split every global batch of ``batch_size x WORLD_SIZE`` targets and every refresh batch into one
shard per rank, exchange the refreshed bank rows and implicit histories each step so that all
ranks hold the same tables, and average gradients (themselves, or through the DeepSpeed engine).
Only rank 0 writes outputs.
"""

from __future__ import annotations

import json
import math
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastleading import checkpoint, ops, zero
from fastleading.bank import MemoryBank
from fastleading.config import Config
from fastleading.data import prepare
from fastleading.distributed import (DistEnv, all_reduce_gradients, all_reduce_mean, all_reduce_sum, allgather_rows,
                                     barrier, broadcast_module_, get_rank, get_world_size, init_distributed, is_main,
                                     shard, shard_weight, sync_bank_rows, sync_history_rows)
from fastleading.errors import FastleadingError
from fastleading.io import atomic_write_text
from fastleading.lm import LMEncoder
from fastleading.nn import Head, ImplicitAPPNP, propagate
from fastleading.overlap import RefreshStream
from fastleading.precision import Precision, resolve_device, resolve_precision
from fastleading.profiling import Phases, StepProfiler
from fastleading.sampler import NeighborSampler

LM_METHODS = ("leading", "coupled", "supervised")
GRAPH_METHODS = ("leading", "coupled")
FIXED_FEATURE_METHODS = ("pretrained", "shallow")


class NodeClassifier(nn.Module):
    """LM encoder, head and propagation. ``order`` decides whether the head runs before the
    propagation (predict-then-propagate: propagate C-dim logits) or after it."""

    def __init__(self, cfg: Config, num_nodes: int, num_classes: int, history_dtype: torch.dtype):
        super().__init__()
        m = cfg.model
        self.encoder = LMEncoder(m)
        self.predict_first = m.order == "predict-then-propagate"
        self.head = Head(self.encoder.hidden_size, num_classes, m.head_hidden, m.head_dropout, m.head)
        self.appnp = ImplicitAPPNP(m.alpha, m.num_iters, num_nodes,
                                   num_classes if self.predict_first else self.encoder.hidden_size, history_dtype,
                                   warm_backward=m.warm_backward)

    def classify(self, x_in: torch.Tensor, rowptr: torch.Tensor, col: torch.Tensor, node_ids: torch.Tensor,
                 implicit: bool, num_iters: int, dinv: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[n, C]`` of a (sub)graph whose nodes have input embeddings ``x_in [n, H]``;
        ``dinv`` normalises Â (default: the (sub)graph's own degrees)."""
        def spread(x):
            if implicit:
                return self.appnp(x, rowptr, col, node_ids, dinv)
            return propagate(x, rowptr, col, self.appnp.alpha, num_iters, dinv)
        if self.predict_first:
            return spread(self.head(x_in))
        return self.head(spread(x_in))


class RefreshOrder:
    """Pipeline 2's node order: consecutive batches of per-epoch permutations of ALL nodes."""

    def __init__(self, num_nodes: int, seed: int):
        self.num_nodes, self.seed = num_nodes, seed
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_nodes, generator=g)

    def next(self, size: int) -> torch.Tensor:
        if self.pos >= self.num_nodes:
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation()
        ids = self._perm[self.pos:self.pos + size]
        self.pos += len(ids)
        return ids

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.pos = s["epoch"], s["pos"]
        self._perm = self._permutation()


@dataclass
class Run:
    """Everything a training step touches."""

    cfg: Config
    out_dir: Path
    device: torch.device
    precision: Precision
    graph: object
    tokens: object
    split: object
    labels: torch.Tensor
    model: NodeClassifier
    bank: MemoryBank | None
    sampler: NeighborSampler | None
    refresh_order: RefreshOrder | None
    overlap: RefreshStream
    phases: Phases
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: object
    engine: object = None  # the DeepSpeed engine holding the encoder and the head (train.deepspeed)
    # 1/sqrt(deg+1) of the full graph on the device (model.subgraph_norm=full-graph), else None:
    # a sampled subgraph is then normalised with the degrees full-graph evaluation uses.
    graph_dinv: torch.Tensor | None = None
    env: DistEnv = field(default_factory=DistEnv)
    # This rank's share of the global batch's mean loss (distributed.shard_weight); 1 in one process.
    loss_weight: float = 1.0
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_valid: float = -1.0
    best_epoch: int = -1
    evals_since_best: int = 0
    history: list = field(default_factory=list)
    quiet: bool = True

    # -- small helpers used by the steps ---------------------------------------------------
    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """LM embeddings ``[len(ids), H]`` (fp32) of nodes ``ids``, with gradient. Under DeepSpeed
        this is a call of the engine (ZeRO-3's gradient bookkeeping needs its forward)."""
        encoder = self.engine if self.engine is not None else self.model.encoder
        return encode_nodes(encoder, self.tokens, ids, self.device, self.precision)

    @torch.inference_mode()
    def encode_nograd(self, ids: torch.Tensor) -> torch.Tensor:
        """No-gradient encoding in eval mode (no dropout); stores no activations."""
        return encode_eval(self.model.encoder, self.tokens, ids, self.device, self.precision)

    def sample(self, targets: torch.Tensor):
        """The targets' sampled neighbourhood: ``(node_ids, rowptr, col, dinv)`` on the device,
        ``dinv`` the normalisation of its Â (None: the subgraph's own degrees)."""
        sub = self.sampler.sample(targets, seed=self.cfg.train.seed * 1_000_003 + self.step)
        node_ids = sub.node_ids.to(self.device)
        dinv = self.graph_dinv[node_ids] if self.graph_dinv is not None else None
        return node_ids, sub.rowptr.to(self.device), sub.col.to(self.device), dinv

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over ``targets``, weighted by this rank's share of the global batch."""
        return F.cross_entropy(logits.float(), self.labels[targets.to(self.labels.device)]) * self.loss_weight


# -- the training steps ---------------------------------------------------------------------

def leading_step(run: Run, targets: torch.Tensor, refresh_ids: torch.Tensor) -> torch.Tensor:
    """One step of Algorithm 1 (forward and backward); returns the loss."""
    phase, bank, model = run.phases, run.bank, run.model
    # Pipeline 2, line 5: encode a random batch of ALL nodes without gradient (own CUDA stream
    # when overlapping). Line 6, caching it, is deferred until after this step's lookups.
    with phase("encode-refresh"), run.overlap.encode():
        x_refresh = run.encode_nograd(refresh_ids)
    bank.count_encodes(refresh_ids, grad=False)

    # Pipeline 1, line 3: the targets' k-hop neighbourhood, targets first.
    with phase("sample"):
        node_ids, rowptr, col, dinv = run.sample(targets)
    num_targets = len(targets)
    with phase("encode-grad"):
        x_targets = run.encode(targets)                                          # line 7
    bank.count_encodes(targets, grad=True)
    with phase("bank-refresh"):
        sync_bank_rows(bank, targets, x_targets, run.step)                       # line 8 (every rank's rows)
    with phase("bank-lookup"):
        x_in = torch.empty(len(node_ids), x_targets.shape[1], device=run.device)
        bank.lookup(node_ids[num_targets:], out=x_in, out_offset=num_targets)    # line 9
        x_in[:num_targets] = x_targets                                           # line 10
    run.overlap.lookups_done()
    with phase("propagate"), run.precision.autocast():
        logits = model.classify(x_in, rowptr, col, node_ids, implicit=True,     # line 11
                                num_iters=run.cfg.model.num_iters, dinv=dinv)
    with phase("loss"):
        loss = run.loss(logits[:num_targets], targets)                           # line 12
    with phase("backward"):
        backward(run, loss)
        sync_history_rows(model.appnp, node_ids)  # the backward wrote this rank's histories
    with phase("bank-refresh"), run.overlap.scatter():
        sync_bank_rows(bank, refresh_ids, x_refresh, run.step)                   # line 6 (every rank's rows)
    return loss.detach()


def coupled_step(run: Run, targets: torch.Tensor, refresh_ids=None) -> torch.Tensor:
    """Naive end-to-end LM+APPNP: every node of the sampled subgraph is encoded with gradient
    and the propagation is unrolled (the paper's LM+GNN rows)."""
    phase = run.phases
    with phase("sample"):
        node_ids, rowptr, col, dinv = run.sample(targets)
    with phase("encode-grad"):
        x_in = run.encode(node_ids)
    run.bank.count_encodes(node_ids, grad=True)
    with phase("propagate"), run.precision.autocast():
        logits = run.model.classify(x_in, rowptr, col, node_ids, implicit=False,
                                    num_iters=run.cfg.model.num_iters, dinv=dinv)
    with phase("loss"):
        loss = run.loss(logits[:len(targets)], targets)
    with phase("backward"):
        backward(run, loss)
    return loss.detach()


def supervised_step(run: Run, targets: torch.Tensor, refresh_ids=None) -> torch.Tensor:
    """Graph-less fine-tuning: LM + head on the labelled targets only."""
    phase = run.phases
    with phase("encode-grad"):
        x = run.encode(targets)
    run.bank.count_encodes(targets, grad=True)
    with phase("loss"), run.precision.autocast():
        loss = run.loss(run.model.head(x), targets)
    with phase("backward"):
        backward(run, loss)
    return loss.detach()


STEPS = {"leading": leading_step, "coupled": coupled_step, "supervised": supervised_step}


def backward(run: Run, loss: torch.Tensor) -> None:
    if run.engine is not None:
        zero.engine_backward(run.engine, loss)  # the engine divides by grad_accum itself
        return
    loss = loss / run.cfg.train.grad_accum
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
    else:
        loss.backward()


def optimizer_step(run: Run) -> float | None:
    """Clip, step, schedule; returns the gradient norm before clipping.

    Under DeepSpeed call it after every step: the engine counts micro steps, steps at the
    accumulation boundary and returns None between boundaries."""
    if run.engine is not None:
        return zero.engine_step(run.engine)
    t = run.cfg.train
    params = [p for g in run.optimizer.param_groups for p in g["params"]]
    # Average before unscaling: an inf on any rank then reaches every rank's GradScaler.
    all_reduce_gradients(params)
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else float("inf"))
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return float(norm)


# -- evaluation -----------------------------------------------------------------------------

def encode_nodes(encoder: LMEncoder, tokens, ids: torch.Tensor, device: torch.device,
                 precision: Precision) -> torch.Tensor:
    """LM embeddings ``[len(ids), H]`` (fp32) of nodes ``ids`` under the run's autocast."""
    input_ids, mask = tokens.batch(ids.cpu())
    with precision.autocast():
        return encoder(input_ids.to(device, non_blocking=True), mask.to(device, non_blocking=True))


@torch.inference_mode()
def encode_eval(encoder: LMEncoder, tokens, ids: torch.Tensor, device: torch.device,
                precision: Precision) -> torch.Tensor:
    """No-gradient encoding in eval mode (no dropout)."""
    was_training = encoder.training
    encoder.eval()
    try:
        return encode_nodes(encoder, tokens, ids, device, precision)
    finally:
        encoder.train(was_training)


def encode_all(encoder: LMEncoder, tokens, num_nodes: int, device: torch.device, precision: Precision,
               batch_size: int, quiet: bool = True, desc: str = "encode") -> torch.Tensor:
    """LM embeddings of every node, ``[N, H]`` in the bank dtype on ``device``.

    With several ranks each encodes its shard of every chunk of ``batch_size x world`` nodes
    and the shards are all-gathered, so every rank ends with the whole matrix."""
    from tqdm.auto import tqdm

    rank, world = get_rank(), get_world_size()
    out = torch.empty(num_nodes, encoder.hidden_size, dtype=precision.bank_dtype, device=device)
    for start in tqdm(range(0, num_nodes, batch_size * world), desc=desc, leave=False, disable=quiet):
        ids = torch.arange(start, min(start + batch_size * world, num_nodes))
        local = shard(ids, rank, world)
        # A rank with an empty shard still runs one forward and drops it: under ZeRO-3 every
        # forward is collective, so all ranks must run as many.
        emb = encode_eval(encoder, tokens, local if len(local) else ids[:1], device, precision)[:len(local)]
        all_ids, all_emb = allgather_rows(local, emb.to(out.dtype))
        out[all_ids] = all_emb
    return out


def encode_graph(run: "Run", desc: str) -> torch.Tensor:
    return encode_all(run.model.encoder, run.tokens, run.graph.num_nodes, run.device, run.precision,
                      run.cfg.train.eval_batch_size, run.quiet, desc)


@torch.no_grad()
def full_graph_logits(run: Run, emb: torch.Tensor) -> torch.Tensor:
    """Full-graph inference: head on every node and (graph methods) propagation to convergence."""
    model = run.model
    model.eval()
    try:
        graph_method = run.cfg.train.method in GRAPH_METHODS
        rowptr, col = run.graph.rowptr.to(run.device), run.graph.col.to(run.device)
        bs = 65536
        with run.precision.autocast():
            if model.predict_first or not graph_method:
                logits = torch.cat([model.head(emb[i:i + bs].float()).float() for i in range(0, len(emb), bs)])
                if graph_method:
                    logits = propagate(logits, rowptr, col, model.appnp.alpha, run.cfg.model.eval_iters)
            else:
                z = propagate(emb.float(), rowptr, col, model.appnp.alpha, run.cfg.model.eval_iters)
                logits = torch.cat([model.head(z[i:i + bs]).float() for i in range(0, len(z), bs)])
    finally:
        model.train()
    return logits.float()


def accuracies(logits: torch.Tensor, labels: torch.Tensor, split) -> dict[str, float]:
    pred = logits.argmax(-1).to(labels.device)
    return {name: float((pred[idx] == labels[idx]).float().mean()) if len(idx) else float("nan")
            for name, idx in (("train", split.train), ("valid", split.valid), ("test", split.test))}


# -- building and running -------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _lr_lambda(cfg: Config, total_steps: int):
    t = cfg.train
    warmup = int(t.warmup_ratio * total_steps)

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if t.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if t.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)
    return f


def steps_per_epoch(cfg: Config, num_train: int, world: int = 1) -> int:
    """Global batches of ``batch_size x world`` targets per epoch. A last batch with fewer
    targets than ranks is dropped (a rank would have none); in one process it is kept."""
    full, rest = divmod(num_train, cfg.train.batch_size * world)
    return full + int(rest >= world)


def global_targets(run: Run, order: torch.Tensor) -> torch.Tensor:
    """This rank's shard of the epoch's current global batch of ``order``; sets ``run.loss_weight``."""
    size = run.cfg.train.batch_size * run.env.world_size
    batch = order[run.batch_in_epoch * size:(run.batch_in_epoch + 1) * size]
    targets = shard(batch, run.env.rank, run.env.world_size)
    run.loss_weight = shard_weight(len(targets), len(batch), run.env.world_size)
    return targets


def refresh_batch_size(cfg: Config, num_nodes: int, num_train: int, world: int = 1) -> int:
    """Pipeline 2's nodes per step and rank: ``train.refresh_batch_size``, or when that is 0
    enough to re-encode every node once per epoch, so that the bank is as fresh as the paper's
    ("the memory will at least be filled after the first epoch") also when the targets are
    few (low-label splits). With every node a target this is about ``batch_size``."""
    if cfg.train.refresh_batch_size:
        return cfg.train.refresh_batch_size
    return math.ceil(num_nodes / (steps_per_epoch(cfg, num_train, world) * world))


def refresh_batch(run: Run) -> torch.Tensor | None:
    """This rank's shard of the next refresh batch (:func:`refresh_batch_size` ``x world`` nodes)."""
    if run.refresh_order is None:
        return None
    world = run.env.world_size
    size = refresh_batch_size(run.cfg, run.graph.num_nodes, len(run.split.train), world)
    ids = run.refresh_order.next(size * world)
    if len(ids) < world:  # the end of a permutation: top up from the next so no rank's shard is empty
        ids = torch.cat([ids, run.refresh_order.next(world - len(ids))])
    return shard(ids, run.env.rank, world)


def build_run(cfg: Config, out_dir: Path, quiet: bool = True) -> Run:
    t = cfg.train
    if t.method not in STEPS:
        raise FastleadingError(f"config key 'train.method': {t.method} is trained by train_fixed_features, "
                               "not build_run")
    seed_everything(t.seed)
    base_device = resolve_device(t.device)
    env = init_distributed("nccl" if base_device.type == "cuda" else "gloo")
    device = env.device(base_device)
    precision = resolve_precision(t.precision, t.bank_dtype, device)
    ds_config = None
    if t.deepspeed:  # checked before the data are prepared: a bad preset fails at once
        ds_config = zero.deepspeed_config(t.deepspeed, micro_batch_size=t.batch_size, grad_accum=t.grad_accum,
                                          grad_clip=t.grad_clip, precision=precision.name,
                                          world_size=env.world_size)
    # Rank 0 builds the dataset cache first; the others then read it instead of racing to write it.
    if env.rank > 0:
        barrier()
    graph, tokens = prepare(cfg)
    if env.rank == 0:
        barrier()
    split = graph.split(cfg.data.split)
    if len(split.train) == 0:
        raise FastleadingError(f"dataset '{cfg.data.dataset}': split '{cfg.data.split}' has no training nodes")
    labels = graph.labels.to(device)
    model = NodeClassifier(cfg, graph.num_nodes, graph.num_classes, precision.bank_dtype).to(device)
    if env.is_distributed:
        broadcast_module_(model)  # identical replicas (and histories) on every rank
        torch.manual_seed(t.seed + env.rank)  # but each rank draws its own dropout masks
    # Only LEADING keeps embeddings in the bank; the other methods use it to count encodes.
    bank_dim = model.encoder.hidden_size if t.method == "leading" else 0
    bank = MemoryBank(graph.num_nodes, bank_dim, precision.bank_dtype, device)
    sampler = NeighborSampler(graph.rowptr, graph.col, list(t.fanouts)) if t.method in GRAPH_METHODS else None
    refresh_order = RefreshOrder(graph.num_nodes, t.seed) if t.method == "leading" else None
    graph_dinv = None
    if t.method in GRAPH_METHODS and cfg.model.subgraph_norm == "full-graph":
        graph_dinv = ops.gcn_dinv(graph.rowptr).to(device)
    ops.set_backend(t.kernels)
    lm_params = [p for p in model.encoder.parameters() if p.requires_grad]
    groups = [{"params": lm_params, "lr": t.lr_lm}, {"params": list(model.head.parameters()), "lr": t.lr_head}]
    if ds_config is None:
        optimizer = torch.optim.AdamW(groups, weight_decay=t.weight_decay)
    else:
        optimizer = zero.build_optimizer(groups, t.weight_decay, ds_config, device)
    total = math.ceil(t.epochs * steps_per_epoch(cfg, len(split.train), env.world_size) / t.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, total))
    engine, scaler, overlap = None, precision.make_scaler(), t.overlap
    if ds_config is not None:
        # The engine holds the encoder and the head (the same module objects as `model`'s), steps
        # our optimizer and schedule, and scales fp16 losses itself.
        engine = zero.initialize_engine(zero.EncoderHead(model.encoder, model.head), optimizer, scheduler,
                                        ds_config, device)
        scaler = None
        # ZeRO-3 gathers and frees parameters in module hooks: keep both pipelines on one stream.
        overlap = overlap and zero.zero_stage(ds_config) < 3
    return Run(cfg=cfg, out_dir=out_dir, device=device, precision=precision, graph=graph, tokens=tokens,
               split=split, labels=labels, model=model, bank=bank, sampler=sampler, refresh_order=refresh_order,
               overlap=RefreshStream(device, overlap), phases=Phases(device, sync=t.profile),
               optimizer=optimizer, scheduler=scheduler, scaler=scaler, engine=engine, graph_dinv=graph_dinv,
               env=env, quiet=quiet)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def train_state(run: Run) -> dict:
    """The resumable state besides the model, optimizer, schedule and scaler (which the
    DeepSpeed engine checkpoints itself when there is one)."""
    return {
        "bank": run.bank.state_dict(), "refresh_order": run.refresh_order.state_dict() if run.refresh_order else None,
        "step": run.step, "epoch": run.epoch, "batch_in_epoch": run.batch_in_epoch,
        "best_valid": run.best_valid, "best_epoch": run.best_epoch, "evals_since_best": run.evals_since_best,
        "history": run.history, "phases": dict(run.phases.totals), "phase_counts": dict(run.phases.counts),
        "rng": rng_state(),
    }


def state_dict(run: Run) -> dict:
    return {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict() if run.scaler else None,
            **train_state(run)}


def load_train_state(run: Run, s: dict) -> None:
    run.bank.load_state_dict(s["bank"])
    if run.refresh_order is not None:
        run.refresh_order.load_state_dict(s["refresh_order"])
    for key in ("step", "epoch", "batch_in_epoch", "best_valid", "best_epoch", "evals_since_best", "history"):
        setattr(run, key, s[key])
    run.phases.totals.update(s["phases"])
    run.phases.counts.update(s["phase_counts"])
    set_rng_state(s["rng"])


def load_state_dict(run: Run, s: dict) -> None:
    run.model.load_state_dict(s["model"])
    run.optimizer.load_state_dict(s["optimizer"])
    run.scheduler.load_state_dict(s["scheduler"])
    if run.scaler is not None and s["scaler"] is not None:
        run.scaler.load_state_dict(s["scaler"])
    load_train_state(run, s)


def rank_state(run: Run) -> dict:
    """What differs between ranks (the rest of the state is identical on all): the RNG
    states and this rank's encode counters."""
    return {"rng": rng_state(), "encodes_grad": run.bank.encodes_grad.cpu(),
            "encodes_nograd": run.bank.encodes_nograd.cpu()}


def load_rank_state(run: Run, s: dict) -> None:
    set_rng_state(s["rng"])
    run.bank.encodes_grad.copy_(s["encodes_grad"])
    run.bank.encodes_nograd.copy_(s["encodes_nograd"])


DEEPSPEED_DIR = "deepspeed"  # the engine's checkpoints, inside the run folder


def save_checkpoint(run: Run) -> None:
    """Write the resumable state. Collective: every rank calls it. Without DeepSpeed rank 0
    writes ``checkpoint.pt`` (with every rank's :func:`rank_state` when there are several)."""
    if run.engine is not None:
        client_state = {**train_state(run), "appnp": run.model.appnp.state_dict()}
        zero.save_engine_checkpoint(run.engine, run.out_dir / DEEPSPEED_DIR, run.step, client_state, rank_state(run))
        return
    state = state_dict(run)
    if run.env.is_distributed:
        state["ranks"] = [None] * run.env.world_size
        torch.distributed.all_gather_object(state["ranks"], rank_state(run))
    if is_main():
        checkpoint.save(run.out_dir / checkpoint.CHECKPOINT, state)
    barrier()


def load_checkpoint(run: Run) -> bool:
    """Restore the newest checkpoint of ``run.out_dir`` on every rank; False when there is none."""
    if run.engine is not None:
        folder = run.out_dir / DEEPSPEED_DIR
        if not zero.has_engine_checkpoint(folder):
            return False
        client_state, own = zero.load_engine_checkpoint(run.engine, folder)
        run.model.appnp.load_state_dict(client_state["appnp"])
        load_train_state(run, client_state)
    else:
        path = run.out_dir / checkpoint.CHECKPOINT
        if not path.exists():
            return False
        state = checkpoint.load(path, map_location=run.device)
        load_state_dict(run, state)
        ranks = state.get("ranks") or [None]
        if len(ranks) != run.env.world_size:
            raise FastleadingError(f"{path}: written by {len(ranks)} rank(s) but this run has "
                                   f"WORLD_SIZE={run.env.world_size}; resume with as many ranks")
        own = ranks[run.env.rank]
    if own is not None:
        load_rank_state(run, own)
    return True


def model_state(run: Run) -> dict[str, torch.Tensor]:
    """The NodeClassifier's state dict (for ``best.pt``); under ZeRO-3 gathered from the
    partitions, which is collective: every rank calls it."""
    if run.engine is None:
        return run.model.state_dict()
    appnp = {f"appnp.{k}": v for k, v in run.model.appnp.state_dict().items()}
    return {**zero.full_state_dict(run.engine), **appnp}


def save_best(run: Run) -> None:
    state = model_state(run)
    if is_main():
        checkpoint.save(run.out_dir / checkpoint.BEST, {"model": state, "epoch": run.epoch})


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step and per evaluation (rank 0 only:
    on other ranks nothing is opened and ``write`` does nothing)."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        self._f = None
        if not is_main():
            return
        if resume_step is not None and path.exists():
            # Drop lines written after the checkpoint we resume from: they will be written again.
            keep = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in keep))
        self._f = open(path, "a")

    def write(self, record: dict) -> None:
        if self._f is not None:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def evaluate(run: Run) -> dict[str, float]:
    emb = encode_graph(run, "evaluate")
    return accuracies(full_graph_logits(run, emb), run.labels, run.split)


def train(cfg: Config, out_dir: str | Path, resume: bool = False, quiet: bool = False) -> dict:
    """Train with ``cfg`` and write the run folder; returns the summary dict."""
    if cfg.train.method in FIXED_FEATURE_METHODS:
        from fastleading.downstream import train_fixed_features

        return train_fixed_features(cfg, Path(out_dir), quiet=quiet)
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    start_time = time.time()
    run = build_run(cfg, out_dir, quiet=quiet)
    run.quiet = quiet or not is_main()  # known once build_run has joined the process group
    if is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    t = cfg.train
    resumed_from = None
    if resume and load_checkpoint(run):
        resumed_from = run.step
    else:
        if is_main():
            cfg.save(out_dir / "config.json")
        if t.method == "leading" and t.fill_bank:
            run.bank.refresh(torch.arange(run.graph.num_nodes), encode_graph(run, "fill bank"), step=0)
    log = MetricsLog(out_dir / "metrics.jsonl", resumed_from)
    step_fn = STEPS[t.method]
    per_epoch = steps_per_epoch(cfg, len(run.split.train), run.env.world_size)
    total_steps = t.epochs * per_epoch if not t.max_steps else min(t.max_steps, t.epochs * per_epoch)
    profiler = StepProfiler(out_dir, t.profile and is_main())
    bar = tqdm(total=total_steps, initial=run.step, disable=run.quiet, desc=f"{t.method}", unit="step")
    last_eval = run.history[-1]["valid"] if run.history else float("nan")
    stop = False
    while run.epoch < t.epochs and not stop:
        g = torch.Generator().manual_seed(t.seed * 7919 + run.epoch)
        order = run.split.train[torch.randperm(len(run.split.train), generator=g)]
        while run.batch_in_epoch < per_epoch:
            if t.max_steps and run.step >= t.max_steps:
                stop = True
                break
            targets = global_targets(run, order)
            loss = step_fn(run, targets, refresh_batch(run))
            run.overlap.join()
            run.step += 1
            run.batch_in_epoch += 1
            # the global batch's mean loss: every rank's loss is weighted by its share
            record = {"step": run.step, "epoch": run.epoch, "loss": float(all_reduce_mean(loss.clone()))}
            boundary = run.step % t.grad_accum == 0
            if boundary or run.engine is not None:
                with run.phases("optimizer"):
                    grad_norm = optimizer_step(run)
            if boundary:
                record["grad_norm"] = grad_norm
                record["lr_lm"] = run.optimizer.param_groups[0]["lr"]
                if t.checkpoint_every and run.step % t.checkpoint_every == 0:
                    save_checkpoint(run)
            profiler.step()
            if run.step % t.log_every == 0 or run.step == 1:
                log.write(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", valid=f"{last_eval:.3f}")
        if stop:
            break
        run.epoch += 1
        run.batch_in_epoch = 0
        if run.epoch % t.eval_every == 0 or run.epoch == t.epochs:
            acc = evaluate(run)
            last_eval = acc["valid"]
            run.history.append({"epoch": run.epoch, **acc})
            log.write({"step": run.step, "epoch": run.epoch, "eval": acc})
            if acc["valid"] > run.best_valid:
                run.best_valid, run.best_epoch, run.evals_since_best = acc["valid"], run.epoch, 0
                save_best(run)
            else:
                run.evals_since_best += 1
                stop = bool(t.patience) and run.evals_since_best >= t.patience
        if run.step % t.grad_accum == 0:
            save_checkpoint(run)
    bar.close()
    profiler.close()
    log.close()
    if not run.history:  # max_steps stopped training before the first evaluation
        acc = evaluate(run)
        run.history.append({"epoch": run.epoch, **acc})
        run.best_valid, run.best_epoch = acc["valid"], run.epoch
        save_best(run)
    best = max(run.history, key=lambda h: h["valid"])
    n_epochs = max(run.step / per_epoch, 1e-9)
    encodes = all_reduce_sum(torch.stack([run.bank.encodes_grad.sum(), run.bank.encodes_nograd.sum()]))
    summary = {
        "method": t.method, "dataset": cfg.data.dataset, "model": cfg.model.name,
        "split": cfg.data.split or run.graph.default_split,
        "best_valid_acc": best["valid"], "test_acc": best["test"], "best_epoch": best["epoch"],
        "epochs": round(n_epochs, 4), "steps": run.step,
        # LM encodes in an epoch per node the epoch trains on (the paper's "encoding times
        # per node": 1 + 1 for LEADING with equal batch sizes; the initial bank fill and
        # evaluation are not counted).
        "encodes_per_node_per_epoch": {
            "grad": float(encodes[0]) / len(run.split.train) / n_epochs,
            "nograd": float(encodes[1]) / len(run.split.train) / n_epochs,
        },
        # the same per node of the whole graph (LEADING's default refresh: nograd 1)
        "encodes_per_graph_node_per_epoch": {
            "grad": float(encodes[0]) / run.graph.num_nodes / n_epochs,
            "nograd": float(encodes[1]) / run.graph.num_nodes / n_epochs,
        },
        "refresh_batch_size": (refresh_batch_size(cfg, run.graph.num_nodes, len(run.split.train), run.env.world_size)
                               if t.method == "leading" else 0),
        "peak_memory_bytes": peak_memory_bytes(run.device),
        "wall_time_s": round(time.time() - start_time, 3),
        "phase_time_s": run.phases.as_dict(),
        "device": str(run.device), "precision": run.precision.name,
        "overlap": run.overlap.overlapped, "kernels": ops.get_backend(),
        "history": run.history, "world_size": run.env.world_size, "deepspeed": t.deepspeed,
    }
    if not is_main():
        return summary
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if t.profile:
        print(run.phases.table())
        print(f"trace: {profiler.trace_path}")
    return summary
