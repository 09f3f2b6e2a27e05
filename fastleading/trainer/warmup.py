"""The head warm-up before fine-tuning (``train.head_warmup_epochs``; LP-FT).

With few labels the first gradients that reach the pretrained LM come from a head that knows
nothing, and they distort what the LM already knows (Kumar et al., ICLR 2022, "Fine-Tuning can
Distort Pretrained Features": linear probing, then fine-tuning). In LEADING this costs no LM
work: after the bank fill the bank holds the frozen LM's embedding of every node, so the head
(and the implicit layer's histories) train on the bank alone with the LEADING step minus the
LM (:func:`fastleading.trainer.steps.leading_head_step`), and each warm-up epoch is evaluated
on the bank itself, which is exactly what a fresh evaluation would encode. Supervised
fine-tuning warms its head the same way on a bank filled for the warm-up (one encode of every
node, dropped afterwards). The head of the best warm-up epoch (validation) is kept; fine-tuning
starts from it, and its evaluation is the run's epoch 0.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from fastleading.bank import MemoryBank
from fastleading.trainer.batches import epoch_order, global_targets, steps_per_epoch
from fastleading.trainer.evaluate import encode_graph, evaluate_embeddings
from fastleading.trainer.optim import Optimization
from fastleading.trainer.steps import HEAD_STEPS

# warm-up epochs take their target orders from epoch numbers no training epoch uses
ORDER_OFFSET = 1_000_000
# and their sampling seeds from steps no training step reaches
STEP_OFFSET = 1 << 40


# train.head_warmup_epochs=-1 (auto): the head trained as the frozen baseline's is, the best of up
# to AUTO_MAX_EPOCHS epochs (train.downstream_epochs' default), at most about AUTO_MAX_STEPS steps
AUTO_MAX_EPOCHS, AUTO_MAX_STEPS = 200, 2000


def warmup_epochs(cfg, steps_per_epoch: int) -> int:
    """The warm-up's epochs: ``train.head_warmup_epochs``, or for -1 (auto) the frozen
    baseline's head training: :data:`AUTO_MAX_EPOCHS` epochs, fewer where that would be more
    than about :data:`AUTO_MAX_STEPS` head steps, at least one (ogbn-products, 6,145 steps an
    epoch, gets one); none for the coupled baseline and under DeepSpeed (the engine owns the
    head's optimizer). Every epoch is evaluated; the best is kept."""
    t = cfg.train
    if t.head_warmup_epochs >= 0:
        return t.head_warmup_epochs
    if t.method not in HEAD_STEPS or t.deepspeed:
        return 0
    return min(AUTO_MAX_EPOCHS, max(1, AUTO_MAX_STEPS // max(steps_per_epoch, 1)))


def head_parameters(model) -> list[torch.nn.Parameter]:
    """The head's parameters (and a link decoder's): what the warm-up trains."""
    params = list(model.head.parameters())
    if getattr(model, "decoder", None) is not None:
        params += list(model.decoder.parameters())
    return params


def head_warmup(tr, log, epochs: int) -> dict:
    """Train the head of ``tr`` (a :class:`fastleading.trainer.loop.Trainer` whose LEADING bank
    is filled) for ``epochs`` epochs (:func:`warmup_epochs`) on the frozen LM's embeddings,
    evaluate every epoch on them, keep the best epoch's head; log each evaluation to ``log``.
    Returns that evaluation (the metrics of the model fine-tuning starts from)."""
    cfg, run = tr.cfg, tr.run
    t = cfg.train
    temporary_bank = run.bank is None
    if temporary_bank:  # supervised: the frozen embeddings of every node, for the warm-up only
        run.bank = MemoryBank(tr.graph.num_nodes, run.model.encoder.hidden_size, run.precision.bank_dtype, run.device)
        encode_graph(tr, "warm-up features", "fill")
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
    with run.phases("head-warmup"):
        for epoch in range(1, epochs + 1):
            order = epoch_order(tr.split.train, t.seed, ORDER_OFFSET + epoch)
            for batch in range(per_epoch):
                targets, warm.loss_weight = global_targets(order, batch, t.batch_size, tr.env.rank,
                                                           tr.env.world_size)
                step_fn(warm, targets, None)
                warm.step += 1
                warm.optim.step()
            warm.optim.check_bad_steps(run.step, t.max_bad_steps)
            metrics, iters = evaluate_embeddings(tr, run.bank.emb)
            # not an "eval" record: the run's evaluations are its history's (epoch 0 is the best of these)
            log.write({"step": run.step, "epoch": 0, "warmup_epoch": epoch, "warmup_eval": metrics,
                       "propagation_iters": iters})
            if best is None or metrics["valid"] > best["valid"]:
                best, best_state = metrics, copy.deepcopy([p.detach() for p in params])
    with torch.no_grad():
        for p, value in zip(params, best_state):
            p.copy_(value)
    if temporary_bank:
        run.bank = None
    return best
