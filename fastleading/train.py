"""Training: LEADING (the paper's Algorithm 1) and the baselines, in one loop.

Methods (``train.method``):
  leading     two pipelines + memory bank + implicit APPNP (the paper)
  coupled     naive end-to-end LM+APPNP: every node of the sampled subgraph encoded with gradient
  supervised  graph-less fine-tuning on the labelled nodes
  pretrained  no fine-tuning: frozen LM embeddings -> GNN
  shallow     bag-of-words / TF-IDF features -> GNN

Outputs in ``out_dir``: config.json, metrics.jsonl, summary.json, checkpoint.pt, best.pt.
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

from fastleading import checkpoint, ops
from fastleading.bank import MemoryBank
from fastleading.config import Config
from fastleading.data import prepare
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
                                   num_classes if self.predict_first else self.encoder.hidden_size, history_dtype)

    def classify(self, x_in: torch.Tensor, rowptr: torch.Tensor, col: torch.Tensor, node_ids: torch.Tensor,
                 implicit: bool, num_iters: int) -> torch.Tensor:
        """Logits ``[n, C]`` of a (sub)graph whose nodes have input embeddings ``x_in [n, H]``."""
        def spread(x):
            if implicit:
                return self.appnp(x, rowptr, col, node_ids)
            return propagate(x, rowptr, col, self.appnp.alpha, num_iters)
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
        """LM embeddings ``[len(ids), H]`` (fp32) of nodes ``ids``, with gradient."""
        return encode_nodes(self.model.encoder, self.tokens, ids, self.device, self.precision)

    @torch.inference_mode()
    def encode_nograd(self, ids: torch.Tensor) -> torch.Tensor:
        """No-gradient encoding in eval mode (no dropout); stores no activations."""
        return encode_eval(self.model.encoder, self.tokens, ids, self.device, self.precision)

    def sample(self, targets: torch.Tensor):
        sub = self.sampler.sample(targets, seed=self.cfg.train.seed * 1_000_003 + self.step)
        return (sub.node_ids.to(self.device), sub.rowptr.to(self.device), sub.col.to(self.device))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), self.labels[targets.to(self.labels.device)])


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
        node_ids, rowptr, col = run.sample(targets)
    num_targets = len(targets)
    with phase("encode-grad"):
        x_targets = run.encode(targets)                                          # line 7
    bank.count_encodes(targets, grad=True)
    with phase("bank-refresh"):
        bank.refresh(targets, x_targets, run.step)                               # line 8
    with phase("bank-lookup"):
        x_in = torch.empty(len(node_ids), x_targets.shape[1], device=run.device)
        bank.lookup(node_ids[num_targets:], out=x_in, out_offset=num_targets)    # line 9
        x_in[:num_targets] = x_targets                                           # line 10
    run.overlap.lookups_done()
    with phase("propagate"), run.precision.autocast():
        logits = model.classify(x_in, rowptr, col, node_ids, implicit=True,     # line 11
                                num_iters=run.cfg.model.num_iters)
    with phase("loss"):
        loss = run.loss(logits[:num_targets], targets)                           # line 12
    with phase("backward"):
        backward(run, loss)
    with phase("bank-refresh"), run.overlap.scatter():
        bank.refresh(refresh_ids, x_refresh, run.step)                           # line 6
    return loss.detach()


def coupled_step(run: Run, targets: torch.Tensor, refresh_ids=None) -> torch.Tensor:
    """Naive end-to-end LM+APPNP: every node of the sampled subgraph is encoded with gradient
    and the propagation is unrolled (the paper's LM+GNN rows)."""
    phase = run.phases
    with phase("sample"):
        node_ids, rowptr, col = run.sample(targets)
    with phase("encode-grad"):
        x_in = run.encode(node_ids)
    run.bank.count_encodes(node_ids, grad=True)
    with phase("propagate"), run.precision.autocast():
        logits = run.model.classify(x_in, rowptr, col, node_ids, implicit=False,
                                    num_iters=run.cfg.model.num_iters)
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
    loss = loss / run.cfg.train.grad_accum
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
    else:
        loss.backward()


def optimizer_step(run: Run) -> float:
    """Clip, step, schedule; returns the gradient norm before clipping."""
    t = run.cfg.train
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    params = [p for g in run.optimizer.param_groups for p in g["params"]]
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
    """LM embeddings of every node, ``[N, H]`` in the bank dtype on ``device``."""
    from tqdm.auto import tqdm

    out = torch.empty(num_nodes, encoder.hidden_size, dtype=precision.bank_dtype, device=device)
    for start in tqdm(range(0, num_nodes, batch_size), desc=desc, leave=False, disable=quiet):
        ids = torch.arange(start, min(start + batch_size, num_nodes))
        out[start:start + len(ids)] = encode_eval(encoder, tokens, ids, device, precision).to(out.dtype)
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


def steps_per_epoch(cfg: Config, num_train: int) -> int:
    return math.ceil(num_train / cfg.train.batch_size)


def build_run(cfg: Config, out_dir: Path, quiet: bool = True) -> Run:
    t = cfg.train
    if t.method not in STEPS:
        raise FastleadingError(f"config key 'train.method': {t.method} is trained by train_fixed_features, "
                               "not build_run")
    seed_everything(t.seed)
    device = resolve_device(t.device)
    precision = resolve_precision(t.precision, t.bank_dtype, device)
    graph, tokens = prepare(cfg)
    split = graph.split(cfg.data.split)
    if len(split.train) == 0:
        raise FastleadingError(f"dataset '{cfg.data.dataset}': split '{cfg.data.split}' has no training nodes")
    labels = graph.labels.to(device)
    model = NodeClassifier(cfg, graph.num_nodes, graph.num_classes, precision.bank_dtype).to(device)
    # Only LEADING keeps embeddings in the bank; the other methods use it to count encodes.
    bank_dim = model.encoder.hidden_size if t.method == "leading" else 0
    bank = MemoryBank(graph.num_nodes, bank_dim, precision.bank_dtype, device)
    sampler = NeighborSampler(graph.rowptr, graph.col, list(t.fanouts)) if t.method in GRAPH_METHODS else None
    refresh_order = RefreshOrder(graph.num_nodes, t.seed) if t.method == "leading" else None
    ops.set_backend(t.kernels)
    lm_params = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": lm_params, "lr": t.lr_lm},
        {"params": list(model.head.parameters()), "lr": t.lr_head},
    ], weight_decay=t.weight_decay)
    total = math.ceil(t.epochs * steps_per_epoch(cfg, len(split.train)) / t.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, total))
    return Run(cfg=cfg, out_dir=out_dir, device=device, precision=precision, graph=graph, tokens=tokens,
               split=split, labels=labels, model=model, bank=bank, sampler=sampler, refresh_order=refresh_order,
               overlap=RefreshStream(device, t.overlap), phases=Phases(device, sync=t.profile),
               optimizer=optimizer, scheduler=scheduler, scaler=precision.make_scaler(), quiet=quiet)


def state_dict(run: Run) -> dict:
    return {
        "model": run.model.state_dict(), "bank": run.bank.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict() if run.scaler else None,
        "refresh_order": run.refresh_order.state_dict() if run.refresh_order else None,
        "step": run.step, "epoch": run.epoch, "batch_in_epoch": run.batch_in_epoch,
        "best_valid": run.best_valid, "best_epoch": run.best_epoch, "evals_since_best": run.evals_since_best,
        "history": run.history, "phases": dict(run.phases.totals), "phase_counts": dict(run.phases.counts),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }


def load_state_dict(run: Run, s: dict) -> None:
    run.model.load_state_dict(s["model"])
    run.bank.load_state_dict(s["bank"])
    run.optimizer.load_state_dict(s["optimizer"])
    run.scheduler.load_state_dict(s["scheduler"])
    if run.scaler is not None and s["scaler"] is not None:
        run.scaler.load_state_dict(s["scaler"])
    if run.refresh_order is not None:
        run.refresh_order.load_state_dict(s["refresh_order"])
    for key in ("step", "epoch", "batch_in_epoch", "best_valid", "best_epoch", "evals_since_best", "history"):
        setattr(run, key, s[key])
    run.phases.totals.update(s["phases"])
    run.phases.counts.update(s["phase_counts"])
    torch.set_rng_state(s["rng"]["torch"])
    np.random.set_state(s["rng"]["numpy"])
    random.setstate(s["rng"]["python"])
    if s["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["rng"]["cuda"])


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step and per evaluation."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.exists():
            # Drop lines written after the checkpoint we resume from: they will be written again.
            keep = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in keep))
        self._f = open(path, "a")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
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
    out_dir.mkdir(parents=True, exist_ok=True)
    start_time = time.time()
    run = build_run(cfg, out_dir, quiet=quiet)
    t = cfg.train
    resumed_from = None
    if resume and (out_dir / checkpoint.CHECKPOINT).exists():
        load_state_dict(run, checkpoint.load(out_dir / checkpoint.CHECKPOINT, map_location=run.device))
        resumed_from = run.step
    else:
        cfg.save(out_dir / "config.json")
        if t.method == "leading" and t.fill_bank:
            run.bank.refresh(torch.arange(run.graph.num_nodes), encode_graph(run, "fill bank"), step=0)
    log = MetricsLog(out_dir / "metrics.jsonl", resumed_from)
    step_fn = STEPS[t.method]
    per_epoch = steps_per_epoch(cfg, len(run.split.train))
    total_steps = t.epochs * per_epoch if not t.max_steps else min(t.max_steps, t.epochs * per_epoch)
    profiler = StepProfiler(out_dir, t.profile)
    bar = tqdm(total=total_steps, initial=run.step, disable=quiet, desc=f"{t.method}", unit="step")
    last_eval = run.history[-1]["valid"] if run.history else float("nan")
    stop = False
    while run.epoch < t.epochs and not stop:
        g = torch.Generator().manual_seed(t.seed * 7919 + run.epoch)
        order = run.split.train[torch.randperm(len(run.split.train), generator=g)]
        while run.batch_in_epoch < per_epoch:
            if t.max_steps and run.step >= t.max_steps:
                stop = True
                break
            b = run.batch_in_epoch
            targets = order[b * t.batch_size:(b + 1) * t.batch_size]
            refresh_ids = run.refresh_order.next(t.refresh_batch_size or t.batch_size) if run.refresh_order else None
            loss = step_fn(run, targets, refresh_ids)
            run.overlap.join()
            run.step += 1
            run.batch_in_epoch += 1
            record = {"step": run.step, "epoch": run.epoch, "loss": float(loss)}
            if run.step % t.grad_accum == 0:
                with run.phases("optimizer"):
                    record["grad_norm"] = optimizer_step(run)
                record["lr_lm"] = run.optimizer.param_groups[0]["lr"]
                if t.checkpoint_every and run.step % t.checkpoint_every == 0:
                    checkpoint.save(out_dir / checkpoint.CHECKPOINT, state_dict(run))
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
                checkpoint.save(out_dir / checkpoint.BEST, {"model": run.model.state_dict(), "epoch": run.epoch})
            else:
                run.evals_since_best += 1
                stop = bool(t.patience) and run.evals_since_best >= t.patience
        if run.step % t.grad_accum == 0:
            checkpoint.save(out_dir / checkpoint.CHECKPOINT, state_dict(run))
    bar.close()
    profiler.close()
    log.close()
    if not run.history:  # max_steps stopped training before the first evaluation
        acc = evaluate(run)
        run.history.append({"epoch": run.epoch, **acc})
        run.best_valid, run.best_epoch = acc["valid"], run.epoch
        checkpoint.save(out_dir / checkpoint.BEST, {"model": run.model.state_dict(), "epoch": run.epoch})
    best = max(run.history, key=lambda h: h["valid"])
    n_epochs = max(run.step / per_epoch, 1e-9)
    summary = {
        "method": t.method, "dataset": cfg.data.dataset, "model": cfg.model.name,
        "split": cfg.data.split or run.graph.default_split,
        "best_valid_acc": best["valid"], "test_acc": best["test"], "best_epoch": best["epoch"],
        "epochs": round(n_epochs, 4), "steps": run.step,
        # LM encodes in an epoch per node the epoch trains on (the paper's "encoding times
        # per node": 1 + 1 for LEADING with equal batch sizes; the initial bank fill and
        # evaluation are not counted).
        "encodes_per_node_per_epoch": {
            "grad": float(run.bank.encodes_grad.sum()) / len(run.split.train) / n_epochs,
            "nograd": float(run.bank.encodes_nograd.sum()) / len(run.split.train) / n_epochs,
        },
        "peak_memory_bytes": peak_memory_bytes(run.device),
        "wall_time_s": round(time.time() - start_time, 3),
        "phase_time_s": run.phases.as_dict(),
        "device": str(run.device), "precision": run.precision.name,
        "overlap": run.overlap.overlapped, "kernels": ops.get_backend(),
        "history": run.history,
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if t.profile:
        print(run.phases.table())
        print(f"trace: {profiler.trace_path}")
    return summary
