"""The head warm-up before fine-tuning (``train.head_warmup_epochs``; LP-FT), and the hand-over.

With few labels the first gradients that reach the pretrained LM come from a head that knows
nothing, and they distort what the LM already knows (Kumar et al., ICLR 2022, "Fine-Tuning can
Distort Pretrained Features": linear probing, then fine-tuning). In LEADING this costs no LM
work: after the bank fill the bank holds the frozen LM's embedding of every node.

**Full batch: the frozen baseline, by construction.** Where the graph fits
(:func:`full_batch_fits`), the warm-up IS the ``pretrained`` baseline's training
(:func:`fastleading.baselines.downstream.fit_frozen_head`, for links
:func:`fastleading.link.baseline.fit_link_gnn_cfg`): the same head (``model.head``), the same
full-graph APPNP (``model.eval_iters`` steps), dropout 0.5, rate, epochs and selection, on the
bank; its best epoch's head (and link decoder) is copied into the model. The run's epoch 0 is
then the frozen LM with the frozen baseline's head, scored by LEADING's own evaluation.
Supervised fine-tuning warms its head the same way without the graph (``mlp``) on a bank filled
for the warm-up (one encode of every node, dropped afterwards).

**Mini-batches** where a full batch does not fit (ogbn-products) or the model is not the
baseline's (``model.order=propagate-then-predict``): the LEADING step minus the LM
(:func:`fastleading.trainer.steps.leading_head_step`) at ``train.head_warmup_lr``, each epoch
evaluated on the bank, the best kept.

**The hand-over** (:func:`hand_over`): the implicit layer's histories were written by the heads the
warm-up tried (or by none), not by the one it kept, so the first fine-tuning steps would start
their forward far from the fixed point the kept head was chosen at (step-1 loss 7.8 against a
warm-up training accuracy of 97%, before this). The epoch-0 evaluation solves that fixed point
on the bank; the forward histories are set to it (:func:`fastleading.trainer.evaluate.restart_histories`)
and the backward's to zero.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from fastleading.engine.bank import MemoryBank
from fastleading.trainer.batches import epoch_order, global_targets, steps_per_epoch
from fastleading.trainer.evaluate import encode_graph, evaluate_embeddings, restart_histories
from fastleading.trainer.optim import Optimization
from fastleading.trainer.steps import HEAD_STEPS

# warm-up epochs take their target orders from epoch numbers no training epoch uses
ORDER_OFFSET = 1_000_000
# and their sampling seeds from steps no training step reaches
STEP_OFFSET = 1 << 40

# Mini-batch warm-up, train.head_warmup_epochs=-1 (auto): the best of up to AUTO_MAX_EPOCHS epochs
# (train.downstream_epochs' default), at most about AUTO_MAX_STEPS head steps
AUTO_MAX_EPOCHS, AUTO_MAX_STEPS = 200, 2000

# A full-batch warm-up's working set (features in fp32, head activations, the unrolled
# propagation kept for backward) must stay under this many bytes (and under half of a GPU's free memory)
FULL_BATCH_BYTES = 8 << 30


def full_batch_bytes(cfg, num_nodes: int, hidden_size: int, width: int) -> int:
    """Bytes a full-batch warm-up keeps at its peak: fp32 features ``[N, H]``, the head's
    activations (about three ``[N, head_hidden]``) and ``model.eval_iters`` + 2 propagated
    ``[N, width]`` matrices (``width``: classes, or ``model.link_dim``) for backward."""
    m = cfg.model
    return 4 * num_nodes * (hidden_size + 3 * m.head_hidden + (m.eval_iters + 2) * width)


def full_batch_fits(cfg, num_nodes: int, hidden_size: int, width: int, device: torch.device) -> bool:
    """Whether the warm-up trains the head as the frozen baseline does, full batch
    (:func:`full_batch_bytes` under :data:`FULL_BATCH_BYTES`, and under half of the free memory
    of a GPU), with the baseline's model: predict-then-propagate. Else mini-batches."""
    if cfg.model.order != "predict-then-propagate":
        return False
    need = full_batch_bytes(cfg, num_nodes, hidden_size, width)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if need > free // 2:
            return False
    return need <= FULL_BATCH_BYTES


def full_batch(tr) -> bool:
    """:func:`full_batch_fits` for the run of ``tr`` (a :class:`fastleading.trainer.loop.Trainer`)."""
    model = tr.run.model
    width = tr.cfg.model.link_dim if tr.task is not None else tr.graph.num_classes
    return full_batch_fits(tr.cfg, tr.graph.num_nodes, model.encoder.hidden_size, width, tr.run.device)


def warmup_epochs(cfg, steps_per_epoch: int, full: bool = False) -> int:
    """The warm-up's epochs: ``train.head_warmup_epochs``, or for -1 (auto) the frozen
    baseline's head training: full batch (``full``) its ``train.downstream_epochs``; in
    mini-batches :data:`AUTO_MAX_EPOCHS` epochs, fewer where that would be more than about
    :data:`AUTO_MAX_STEPS` head steps, at least one (ogbn-products, 6,145 steps an epoch, gets
    one). None for the coupled baseline and under DeepSpeed (the engine owns the head's
    optimizer). Every epoch is evaluated; the best is kept."""
    t = cfg.train
    if t.head_warmup_epochs >= 0:
        return t.head_warmup_epochs
    if t.method not in HEAD_STEPS or t.deepspeed:
        return 0
    if full:
        return t.downstream_epochs
    return min(AUTO_MAX_EPOCHS, max(1, AUTO_MAX_STEPS // max(steps_per_epoch, 1)))


def head_parameters(model) -> list[torch.nn.Parameter]:
    """The head's parameters (and a link decoder's): what the warm-up trains."""
    params = list(model.head.parameters())
    if getattr(model, "decoder", None) is not None:
        params += list(model.decoder.parameters())
    return params


def head_warmup(tr, log, epochs: int) -> dict:
    """Train the head of ``tr`` (a :class:`fastleading.trainer.loop.Trainer` whose LEADING bank
    is filled) for ``epochs`` epochs (:func:`warmup_epochs`) on the frozen LM's embeddings, full
    batch as the frozen baseline (:func:`full_batch`) or in mini-batches, keep the best epoch's
    head, log each epoch's evaluation to ``log`` and hand over (:func:`hand_over`). Returns the
    evaluation of the model fine-tuning starts from (the run's epoch 0)."""
    from fastleading.trainer.display import WarmupDisplay

    run = tr.run
    temporary_bank = run.bank is None
    if temporary_bank:  # supervised: the frozen embeddings of every node, for the warm-up only
        run.bank = MemoryBank(tr.graph.num_nodes, run.model.encoder.hidden_size, run.precision.bank_dtype, run.device)
        encode_graph(tr, "warm-up features", "fill")
    full = full_batch(tr)
    display = WarmupDisplay(tr.cfg.train.method, epochs, "full batch" if full else "mini-batches", tr.quiet,
                            "valid" if tr.task is None else f"valid {tr.cfg.train.link_select.upper()}")

    def logged(epoch: int, metrics: dict, iters: int) -> None:
        # not an "eval" record: the run's evaluations are its history's (epoch 0 is the best of
        # these); trackers put these on an axis of their own, the warm-up epoch
        log.write({"step": run.step, "epoch": 0, "warmup_epoch": epoch, "warmup_eval": metrics,
                   "propagation_iters": iters})
        display.evaluated(epoch, metrics)

    with run.phases("head-warmup"):
        if full:
            full_batch_warmup(tr, epochs, logged)
        else:
            mini_batch_warmup(tr, epochs, logged)
        best = hand_over(tr)
    display.close(best)
    if temporary_bank:
        run.bank = None
    return best


def full_batch_warmup(tr, epochs: int, logged) -> None:
    """The frozen baseline's training on the bank (see the module docstring); its best head
    (and link decoder) is copied into the run's model."""
    from fastleading.baselines.downstream import fit_frozen_head
    from fastleading.link.baseline import fit_link_gnn_cfg

    cfg, run = tr.cfg, tr.run
    if epochs < 1:
        return
    iters = cfg.model.eval_iters
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        if tr.task is not None:
            _, gnn, decoder = fit_link_gnn_cfg(cfg, tr.graph, run.bank.emb, tr.task.split, "appnp", iters,
                                               device=run.device, epochs=epochs,
                                               on_epoch=lambda e, m: logged(e, m, iters))
            run.model.decoder.load_state_dict(decoder.state_dict())
        else:
            kind = "appnp" if cfg.train.method == "leading" else "mlp"
            _, gnn = fit_frozen_head(cfg, tr.graph, run.bank.emb, tr.split, run.device, kind, epochs,
                                     on_epoch=lambda e, m: logged(e, m, iters if kind == "appnp" else 0))
    run.model.head.load_state_dict(gnn.head.state_dict())


def mini_batch_warmup(tr, epochs: int, logged) -> None:
    """The LEADING step minus the LM (:data:`fastleading.trainer.steps.HEAD_STEPS`) at
    ``train.head_warmup_lr``, every epoch evaluated on the bank; the best epoch's head is kept."""
    cfg, run = tr.cfg, tr.run
    t = cfg.train
    params = head_parameters(run.model)
    optimizer = torch.optim.AdamW(params, lr=t.head_warmup_lr or t.lr_head, weight_decay=t.weight_decay, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warm = dataclasses.replace(run, optim=Optimization(optimizer, schedule, run.precision.make_scaler(), None, 1,
                                                       t.grad_clip), step=STEP_OFFSET)
    if tr.task is not None:
        def step_fn(r, items, refresh):
            return tr.task.step(r, items, refresh, HEAD_STEPS)
    else:
        step_fn = HEAD_STEPS[t.method]
    per_epoch = steps_per_epoch(cfg, len(tr.split.train), tr.env.world_size)
    best, best_state = None, None
    for epoch in range(1, epochs + 1):
        order = epoch_order(tr.split.train, t.seed, ORDER_OFFSET + epoch)
        for batch in range(per_epoch):
            targets, warm.loss_weight = global_targets(order, batch, t.batch_size, tr.env.rank, tr.env.world_size)
            step_fn(warm, targets, None)
            warm.step += 1
            warm.optim.step()
        warm.optim.check_bad_steps(run.step, t.max_bad_steps)
        metrics, iters = evaluate_embeddings(tr, run.bank.emb)
        logged(epoch, metrics, iters)
        if best is None or metrics["valid"] > best["valid"]:
            best, best_state = metrics, copy.deepcopy([p.detach() for p in params])
    if best_state is not None:
        with torch.no_grad():
            for p, value in zip(params, best_state, strict=True):
                p.copy_(value)


def hand_over(tr) -> dict:
    """Evaluate the kept head on the bank (the frozen LM: exactly what a fresh evaluation would
    encode) and start fine-tuning from it: the forward histories at the fixed point that
    evaluation solved, the backward's at zero (no gradient belongs to this head yet). Returns
    that evaluation."""
    run = tr.run
    tr.progress.eval_solution = None  # a warm-up head's solution is no warm start for this one's
    metrics, _ = evaluate_embeddings(tr, run.bank.emb)
    restart_histories(tr, run.bank.emb)
    run.model.appnp.g_history.zero_()
    return metrics
