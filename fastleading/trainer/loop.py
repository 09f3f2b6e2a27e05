"""The training loop of the LM methods (``leading``, ``coupled``, ``supervised``), top to bottom.

``build_trainer`` wires the parts together from one :class:`fastleading.config.Config`;
``train`` fills the bank, runs epochs of steps (:mod:`.steps`), evaluates
(:mod:`.evaluate`), checkpoints (:mod:`.state`) and reports (:mod:`.metrics`). The fixed-feature
baselines (``pretrained``, ``shallow``) train no LM: :func:`fastleading.baselines.downstream.train_fixed_features`.

Outputs in ``out_dir``: config.json, metrics.jsonl, summary.json, checkpoint.pt (or, with
``train.deepspeed``, the DeepSpeed checkpoint folder ``deepspeed/``), best.pt.

Several processes (``torchrun`` or the ``deepspeed`` launcher; see :mod:`fastleading.engine.distributed`)
split every global batch of ``batch_size x WORLD_SIZE`` targets and every refresh batch into one
shard per rank, exchange the refreshed bank rows and implicit histories each step so that all
ranks hold the same tables, and average gradients (themselves, or through the DeepSpeed engine).
Only rank 0 writes outputs.

The loop reads the device (loss, gradient norm, the count of non-finite steps) only at its
logging points (every ``train.log_every`` steps, the first and the last) and at epoch ends.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fastleading.config import Config
from fastleading.data import prepare
from fastleading.data.tag import Split, TextAttributedGraph
from fastleading.engine import ops, zero
from fastleading.engine.bank import MemoryBank
from fastleading.engine.distributed import (
    DistEnv,
    all_reduce_mean,
    barrier,
    broadcast_module_,
    init_distributed,
    is_distributed,
    is_main,
)
from fastleading.engine.overlap import RefreshStream
from fastleading.engine.precision import resolve_device, resolve_precision
from fastleading.engine.profiling import Phases, StepProfiler, peak_memory_bytes
from fastleading.engine.sampler import NeighborSampler
from fastleading.errors import FastleadingError
from fastleading.models.encode import EncodeCounter
from fastleading.run.folder import resume_run_folder, start_run_folder
from fastleading.run.io import remove_stale_temp_files
from fastleading.run.tracking import open_tracker
from fastleading.trainer.batches import (
    RefreshOrder,
    epoch_order,
    global_targets,
    refresh_batch,
    refresh_batch_size,
    refresh_scope,
    steps_per_epoch,
)
from fastleading.trainer.evaluate import GRAPH_METHODS, encode_graph, evaluate, evaluation_due
from fastleading.trainer.metrics import MetricsLog, encode_rates, write_summary
from fastleading.trainer.model import build_model, subgraph_norm
from fastleading.trainer.optim import build_optimization
from fastleading.trainer.state import Progress, load_checkpoint, save_best, save_checkpoint, settle_best
from fastleading.trainer.steps import STEPS, Run
from fastleading.trainer.warmup import full_batch, head_warmup, warmup_epochs

if TYPE_CHECKING:
    from fastleading.link.task import LinkTask

# the wall clock of train.checkpoint_minutes (a module attribute: tests advance their own)
clock = time.monotonic


@dataclass
class Trainer:
    """A run and what the loop around it needs."""

    cfg: Config
    out_dir: Path
    env: DistEnv
    graph: TextAttributedGraph          # train.task=link: the training graph
    split: Split                        # the items: train / valid / test node ids (link: edge ids)
    run: Run
    refresh_order: RefreshOrder | None  # LEADING only
    refresh_size: int                   # pipeline 2's nodes per step and rank
    progress: Progress
    quiet: bool = True
    task: LinkTask | None = None        # train.task=link


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_trainer(cfg: Config, out_dir: Path, quiet: bool = True) -> Trainer:
    t = cfg.train
    if t.method not in STEPS:
        raise FastleadingError(f"config key 'train.method': {t.method} trains no LM; run it with "
                               "fastleading.baselines.downstream.train_fixed_features (the CLI does)")
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
    task = None
    if t.task == "link":  # the graph becomes the training graph; the items are edges
        from fastleading.link.task import link_task

        graph, split, task = link_task(cfg, graph)
    else:
        split = graph.split(cfg.data.split)
    if len(split.train) == 0:
        raise FastleadingError(f"dataset '{cfg.data.dataset}': split '{cfg.data.split}' has no training nodes")
    n = graph.num_nodes
    model = build_model(cfg, n, graph.num_classes, precision.bank_dtype).to(device)
    if env.is_distributed:
        broadcast_module_(model)  # identical replicas (and histories) on every rank
        torch.manual_seed(t.seed + env.rank)  # but each rank draws its own dropout masks
    per_epoch = steps_per_epoch(cfg, len(split.train), env.world_size)
    optim = build_optimization(model, cfg, math.ceil(t.epochs * per_epoch / t.grad_accum), device, precision,
                               ds_config)
    # ZeRO-3 gathers and frees parameters in module hooks: keep both pipelines on one stream.
    overlap = t.overlap and (ds_config is None or zero.zero_stage(ds_config) < 3)
    leading = t.method == "leading"
    graph_dinv = None
    norm = subgraph_norm(cfg)
    if t.method in GRAPH_METHODS and norm in ("full-graph", "weighted"):
        graph_dinv = ops.gcn_dinv(graph.rowptr).to(device)
    ops.set_backend(t.kernels)
    run = Run(cfg=cfg, device=device, precision=precision, tokens=tokens, labels=graph.labels.to(device),
              model=model,
              bank=MemoryBank(n, model.encoder.hidden_size, precision.bank_dtype, device) if leading else None,
              sampler=NeighborSampler(graph.rowptr, graph.col, list(t.fanouts),
                                      draws=norm == "weighted") if t.method in GRAPH_METHODS else None,
              graph_dinv=graph_dinv, overlap=RefreshStream(device, overlap), phases=Phases(device, sync=t.profile),
              counter=EncodeCounter(n), optim=optim)
    if task is not None:
        from fastleading.link.task import LinkRun

        run = LinkRun.from_run(run, task)
    scope = refresh_scope(cfg, graph.rowptr, graph.col, split.train) if leading else 0
    scope_size = scope if isinstance(scope, int) else len(scope)
    return Trainer(cfg=cfg, out_dir=out_dir, env=env, graph=graph, split=split, run=run, task=task,
                   refresh_order=RefreshOrder(scope, t.seed) if leading else None,
                   refresh_size=refresh_batch_size(cfg, scope_size, len(split.train), env.world_size) if leading else 0,
                   progress=Progress(), quiet=quiet)


def rank0_decides(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (a collective; the flag itself in one process)."""
    if is_distributed():
        value = torch.tensor([float(flag)])
        torch.distributed.broadcast(value, 0)
        flag = bool(value.item())
    return flag


def checkpoint_clock_due(last_save: float, minutes: float) -> bool:
    """Whether ``minutes`` of wall time have passed since ``last_save`` (rank 0's clock decides for
    every rank: a collective, so call it at the logging points only)."""
    return rank0_decides(bool(minutes) and clock() - last_save >= 60.0 * minutes)


def record_evaluation(tr: Trainer, log: MetricsLog, acc: dict, iters: int, candidate: bool = True) -> bool:
    """Log an evaluation at the loop's current epoch and add it to the history, keep ``best.pt``
    if it is the best so far (never one with non-finite outputs, nor one that is not a
    ``candidate``; ``train.max_bad_evals`` stops a run whose evaluations keep having them);
    returns whether train.patience now stops the run."""
    progress, t = tr.progress, tr.cfg.train
    log.write({"step": tr.run.step, "epoch": progress.epoch, "eval": acc, "propagation_iters": iters})
    if progress.record_eval({"step": tr.run.step, **acc}, t.max_bad_evals, candidate):
        save_best(tr.run, progress.epoch, tr.out_dir)
        return False
    return bool(t.patience) and progress.evals_since_best >= t.patience


def train(cfg: Config, out_dir: str | Path, resume: bool = False, quiet: bool = False) -> dict:
    """Train an LM method with ``cfg`` and write the run folder; returns the summary dict."""
    from fastleading.trainer.display import StepDisplay, show_start

    out_dir = Path(out_dir)
    start_time = clock()
    tr = build_trainer(cfg, out_dir, quiet=quiet)
    tr.quiet = quiet or not is_main()  # known once build_trainer has joined the process group
    show_start(tr, out_dir, resume)
    run, progress, t, env = tr.run, tr.progress, cfg.train, tr.env
    if is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    resumed_from = None
    if resume and is_main():
        remove_stale_temp_files(out_dir)  # a killed run may have died inside an atomic write
    if resume and load_checkpoint(run, progress, tr.refresh_order, out_dir):
        resumed_from = run.step
        if is_main():  # under way: only now may the resume change the run folder
            resume_run_folder(out_dir, cfg, tr.graph.default_split)
    else:
        if is_main():
            start_run_folder(out_dir, cfg, tr.graph.default_split)
        if run.bank is not None and t.fill_bank:
            encode_graph(tr, "fill bank", "fill")  # writes every row of the bank at step 0
            progress.bank_fresh_epoch = 0  # pipeline 2 rests in the first epoch
    tracker = (open_tracker(cfg, out_dir, run.counter, run.phases, tr.graph.num_nodes, resumed_from)
               if is_main() else None)
    log = MetricsLog(out_dir / "metrics.jsonl", resumed_from, len(progress.history), tracker)
    step_fn = tr.task.step if tr.task is not None else STEPS[t.method]
    per_epoch = steps_per_epoch(cfg, len(tr.split.train), env.world_size)
    warmup = warmup_epochs(cfg, per_epoch, full_batch(tr))
    warming_up = bool(warmup) and not progress.warmed_up  # a resumed run does not warm up again
    if warming_up:  # LP-FT: the head first, on the frozen LM; its best is the run's epoch 0
        record_evaluation(tr, log, head_warmup(tr, log, warmup), 0, candidate=t.select_warmup)
        progress.warmed_up = True
    total_steps = t.epochs * per_epoch if not t.max_steps else min(t.max_steps, t.epochs * per_epoch)
    profiler = StepProfiler(out_dir, t.profile and is_main())
    display = StepDisplay(t.method, total_steps, run.step, t.epochs, tr.quiet,
                          progress.history[-1]["valid"] if progress.history else float("nan"),
                          "valid" if tr.task is None else f"valid {t.link_select.upper()}")
    saved_at, saved_time = resumed_from, clock()
    earlier_wall_s = progress.wall_time_s  # the killed or stopped attempts' time, up to their checkpoint

    def checkpoint_now() -> None:
        nonlocal saved_at, saved_time
        progress.wall_time_s = earlier_wall_s + clock() - start_time
        save_checkpoint(run, progress, tr.refresh_order, out_dir)
        saved_at, saved_time = run.step, clock()

    def out_of_steps() -> bool:
        return bool(t.max_steps) and run.step >= t.max_steps

    if warming_up:  # the warm-up's result is kept: a kill after it does not redo it
        checkpoint_now()
    # a run that patience stopped stays stopped on resume, unless the resume raised train.patience
    stopped_by_patience = progress.stopped == "patience" and 0 < t.patience <= progress.evals_since_best
    if not stopped_by_patience:
        progress.stopped = ""

    while progress.epoch < t.epochs and not out_of_steps() and not stopped_by_patience:
        order = epoch_order(tr.split.train, t.seed, progress.epoch)
        # pipeline 2 re-encodes every node once in an epoch, unless the epoch starts with all of
        # them freshly encoded (bank fill, or the evaluation that ended the previous epoch)
        refresh_order = tr.refresh_order if progress.bank_fresh_epoch != progress.epoch else None
        while progress.batch_in_epoch < per_epoch and not out_of_steps():
            targets, run.loss_weight = global_targets(order, progress.batch_in_epoch, t.batch_size, env.rank,
                                                      env.world_size)
            refresh = (refresh_batch(refresh_order, tr.refresh_size, env.rank, env.world_size)
                       if refresh_order is not None else None)
            loss = step_fn(run, targets, refresh)
            run.overlap.join()
            run.step += 1
            progress.batch_in_epoch += 1
            boundary = run.step % t.grad_accum == 0
            grad_norm = None
            if boundary or run.optim.engine is not None:
                with run.phases("optimizer"):
                    grad_norm = run.optim.step()
            profiler.step()
            # a logging point: read the device here (the last step too, so a short run has a loss curve)
            if run.step % t.log_every == 0 or run.step == 1 or run.step == total_steps:
                # the global batch's mean loss: every rank's loss is weighted by its share
                record = {"step": run.step, "epoch": progress.epoch, "loss": float(all_reduce_mean(loss.clone()))}
                if boundary and grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
                    record["lr_lm"] = run.optim.lm_lr()
                log.write(record)
                display.logged(run.step, progress.epoch, record["loss"])
                run.optim.check_bad_steps(run.step, t.max_bad_steps)
                if boundary and saved_at != run.step and checkpoint_clock_due(saved_time, t.checkpoint_minutes):
                    checkpoint_now()
            # after the step's metrics line: a kill between them must not lose a line the checkpoint skips
            if boundary and t.checkpoint_every and run.step % t.checkpoint_every == 0 and saved_at != run.step:
                checkpoint_now()
            display.advance()
        if progress.batch_in_epoch < per_epoch:  # max_steps stopped it inside the epoch
            break
        progress.epoch += 1
        progress.batch_in_epoch = 0
        run.optim.check_bad_steps(run.step, t.max_bad_steps)
        stop = False
        spent = (run.counter.cost() - progress.cost_at_eval) * env.world_size
        if rank0_decides(evaluation_due(cfg, progress.epoch, spent, tr.graph.num_nodes)):
            acc, iters = evaluate(tr)
            display.evaluated(run.step, progress.epoch, acc["valid"])
            stop = record_evaluation(tr, log, acc, iters)
        if stop:
            progress.stopped = "patience"  # in the checkpoint: a resume does not train on
        if run.step % t.grad_accum == 0:
            checkpoint_now()
        if stop:
            break
    if not progress.stopped:
        progress.stopped = "max_steps" if out_of_steps() and progress.epoch < t.epochs else "epochs"
    # A run stopped by max_steps ends with a checkpoint too (at an accumulation boundary: a
    # checkpoint cannot hold half-accumulated gradients).
    if saved_at != run.step and run.step % t.grad_accum == 0:
        checkpoint_now()
    if not progress.history:  # max_steps stopped training before the first evaluation
        # after the checkpoint: a resumed run continues as if this look had not been taken
        acc, iters = evaluate(tr)
        display.evaluated(run.step, progress.epoch, acc["valid"])
        record_evaluation(tr, log, acc, iters)
    display.close()
    profiler.close()
    log.close()
    best = progress.best_evaluation()
    settle_best(out_dir, progress.best_epoch)  # a best no checkpoint followed: the summary records it
    n_epochs = run.step / per_epoch
    summary = {
        "method": t.method, "dataset": cfg.data.dataset, "model": cfg.model.name,
        "split": cfg.data.split or tr.graph.default_split,
        **({"best_valid_acc": best["valid"], "test_acc": best["test"]} if tr.task is None
           else tr.task.summary_fields(best)),
        "best_epoch": best["epoch"],
        "epochs": round(n_epochs, 4), "steps": run.step, "stopped": progress.stopped,
        "head_warmup_epochs": warmup,
        **encode_rates(run.counter, len(tr.split.train), tr.graph.num_nodes, n_epochs),
        "refresh_batch_size": tr.refresh_size,
        "peak_memory_bytes": peak_memory_bytes(run.device),
        "wall_time_s": round(earlier_wall_s + clock() - start_time, 3),
        "phase_time_s": run.phases.as_dict(),
        "device": str(run.device), "precision": run.precision.name,
        "overlap": run.overlap.overlapped, "kernels": ops.get_backend(),
        "history": progress.history, "world_size": env.world_size, "deepspeed": t.deepspeed,
    }
    write_summary(out_dir, summary)
    if t.profile and is_main():
        print(run.phases.table())
        print(f"trace: {profiler.trace_path}")
    return summary
