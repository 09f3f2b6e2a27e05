"""Full-graph evaluation: encode every node, apply the head, propagate over the whole graph.

LEADING's implicit layer is evaluated at its fixed point, solved by conjugate gradient to
``model.eval_tol`` and warm-started from the previous evaluation's solution
(:func:`fastleading.models.appnp.solve_appnp`); the coupled baseline with the ``model.num_iters``
unrolled steps it trains.

:func:`evaluate` encodes every node afresh (under LEADING into the bank) and scores the
embeddings (:func:`evaluate_embeddings`); the head warm-up scores the frozen bank without an
encode.
"""

from __future__ import annotations

import torch

from fastleading.config import Config
from fastleading.engine.precision import Precision
from fastleading.models.appnp import propagate, solve_appnp
from fastleading.models.encode import encode_all
from fastleading.run.selection import nonfinite_rows, predict_classes
from fastleading.trainer.model import NodeClassifier

GRAPH_METHODS = ("leading", "coupled")

# nodes per head call in full-graph inference (bounds the head's activations)
HEAD_CHUNK = 65536


@torch.no_grad()
def full_graph_logits(model: NodeClassifier, emb: torch.Tensor, rowptr: torch.Tensor, col: torch.Tensor,
                      cfg: Config, precision: Precision,
                      x0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Logits of every node from its LM embedding ``emb [N, H]`` (any float dtype): the head on
    every node and, for graph methods, propagation over the full graph ``rowptr/col`` (on
    ``emb``'s device) with the method's own operator.

    Returns ``(fp32 logits [N, C], the propagated matrix to warm-start the next evaluation
    from (LEADING, when finite; None otherwise: one non-finite evaluation must not poison the
    later ones or a checkpoint), propagation iterations used)``; ``x0`` is the previous one.
    """
    method = cfg.train.method
    alpha = model.appnp.alpha

    def spread(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        if method == "leading":
            solution, iters = solve_appnp(x, rowptr, col, alpha, cfg.model.eval_tol, cfg.model.eval_iters, x0)
            return solution, solution, iters
        if method in GRAPH_METHODS:
            return propagate(x, rowptr, col, alpha, cfg.model.num_iters), None, cfg.model.num_iters
        return x, None, 0

    was_training = model.training
    model.eval()
    try:
        if model.predict_first:
            logits, solution, iters = spread(head_logits(model, emb, precision))
        else:
            z, solution, iters = spread(emb.float())
            logits = head_logits(model, z, precision)
    finally:
        model.train(was_training)
    if solution is not None and not bool(torch.isfinite(solution).all()):
        solution = None
    return logits.float(), solution, iters


@torch.no_grad()
def head_logits(model: NodeClassifier, x: torch.Tensor, precision: Precision) -> torch.Tensor:
    """The head on every row of ``x [N, *]`` in chunks of :data:`HEAD_CHUNK` rows, fp32 ``[N, C]``
    (call it in eval mode: no dropout)."""
    with precision.autocast():
        return torch.cat([model.head(x[i:i + HEAD_CHUNK].float()).float() for i in range(0, len(x), HEAD_CHUNK)])


@torch.no_grad()
def restart_histories(tr, emb: torch.Tensor) -> None:
    """Start LEADING's forward warm starts at the fixed point the last evaluation solved for
    the embeddings ``emb [N, H]`` (:meth:`fastleading.models.appnp.ImplicitAPPNP.start_at`; nothing when that
    evaluation had non-finite outputs). Called after the head warm-up (the histories then belong
    to the heads the warm-up tried, not to the one it selected) and after every evaluation
    (they hold the outputs of sampled, truncated rows, which drift from the fixed point the model
    is scored at)."""
    solution, model = tr.progress.eval_solution, tr.run.model
    if solution is None or tr.cfg.train.method != "leading":
        return
    was_training = model.training
    model.eval()
    try:
        x_in = head_logits(model, emb, tr.run.precision) if model.predict_first else emb
        model.appnp.start_at(solution.to(tr.run.device), x_in)
    finally:
        model.train(was_training)


def accuracies(logits: torch.Tensor, labels: torch.Tensor, split) -> dict[str, float]:
    """Accuracy on the train / valid / test nodes of ``split`` (NaN for an empty set), and
    ``nonfinite``: how many nodes' logits were not finite (each counts as wrong; such an
    evaluation is never the best, :mod:`fastleading.run.selection`)."""
    pred = predict_classes(logits).to(labels.device)
    acc = {name: float((pred[idx] == labels[idx]).float().mean()) if len(idx) else float("nan")
           for name, idx in (("train", split.train), ("valid", split.valid), ("test", split.test))}
    return {**acc, "nonfinite": int(nonfinite_rows(logits).sum())}


def encode_graph(tr, desc: str, kind: str) -> torch.Tensor:
    """Every node's LM embedding without gradient, counted as ``kind`` (``fill`` or ``eval``).
    Under LEADING the rows go straight into the bank (refreshed at this step; no second
    ``[N, H]`` matrix) and the bank's table is returned. ``tr``: a
    :class:`fastleading.trainer.loop.Trainer`."""
    run = tr.run
    return encode_all(run.model.encoder, run.tokens, tr.graph.num_nodes, run.device, run.precision,
                      tr.cfg.train.eval_batch_size, tr.quiet, desc, run.counter, kind,
                      token_budget=tr.cfg.train.encode_token_budget, into=run.bank, step=run.step,
                      backend=tr.cfg.train.encode_backend)


def evaluate(tr) -> tuple[dict[str, float], int]:
    """Metrics of the current model on the whole graph, and the propagation iterations used.

    Every node is re-encoded; under LEADING the fresh rows also refresh the bank, so pipeline 2
    rests in the epoch that follows (each node then costs one no-gradient encode per epoch, as
    the paper's economy, and no row is ever more than an epoch stale). Under
    ``train.align_to_bank`` the fresh rows are then shifted back into the bank's frame (its
    mean before the encode) and the model's ``frame_shift`` records the shift, for inference."""
    run, progress = tr.run, tr.progress
    keep_frame = run.bank is not None and tr.cfg.train.align_to_bank
    with run.phases("eval-encode"):
        before = run.bank.frame() if keep_frame else None
        emb = encode_graph(tr, "evaluate", "eval")  # under LEADING: the bank, every row fresh
        if before is not None:  # the fresh rows back in the frame the head was trained in
            run.model.frame_shift.copy_(run.bank.move_frame(before))
    if run.bank is not None:
        progress.bank_fresh_epoch = progress.epoch
    progress.cost_at_eval = run.counter.cost()
    metrics, iters = evaluate_embeddings(tr, emb)
    restart_histories(tr, emb)
    return metrics, iters


def evaluate_embeddings(tr, emb: torch.Tensor) -> tuple[dict[str, float], int]:
    """Metrics (accuracies, or the link task's) of the model on LM embeddings ``emb [N, H]`` of
    every node, and the propagation iterations used. The propagation is warm-started from the
    previous evaluation's solution, which is kept only when it is finite."""
    run, progress = tr.run, tr.progress
    x0 = progress.eval_solution.to(run.device) if progress.eval_solution is not None else None
    with run.phases("eval-propagate"):
        logits, solution, iters = full_graph_logits(
            run.model, emb, tr.graph.rowptr.to(run.device), tr.graph.col.to(run.device), tr.cfg, run.precision, x0)
    progress.eval_solution = solution
    if tr.task is not None:
        return tr.task.metrics(run.model, logits), iters
    return accuracies(logits, run.labels, tr.split), iters


def evaluation_due(cfg: Config, epoch: int, spent: int, num_nodes: int) -> bool:
    """Whether the loop evaluates at the end of ``epoch`` (counted from 1): every
    ``train.eval_every`` epochs and after the last; with ``train.eval_every=0`` once the LM
    encodes since the last evaluation, ``spent`` (global, an encode with gradient counted
    3, :meth:`fastleading.models.encode.EncodeCounter.cost`), reach one evaluation's ``num_nodes``."""
    t = cfg.train
    if epoch >= t.epochs:
        return True
    if t.eval_every:
        return epoch % t.eval_every == 0
    return spent >= num_nodes

