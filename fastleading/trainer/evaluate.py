"""Full-graph evaluation: encode every node, apply the head, propagate over the whole graph.

LEADING's implicit layer is evaluated at its fixed point, solved by conjugate gradient to
``model.eval_tol`` and warm-started from the previous evaluation's solution
(:func:`fastleading.nn.solve_appnp`); the coupled baseline with the ``model.num_iters``
unrolled steps it trains.
"""

from __future__ import annotations

import torch

from fastleading.config import Config
from fastleading.nn import propagate, solve_appnp
from fastleading.precision import Precision
from fastleading.selection import nonfinite_rows, predict_classes
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

    def head(x: torch.Tensor) -> torch.Tensor:
        with precision.autocast():
            return torch.cat([model.head(x[i:i + HEAD_CHUNK].float()).float() for i in range(0, len(x), HEAD_CHUNK)])

    was_training = model.training
    model.eval()
    try:
        if model.predict_first:
            logits, solution, iters = spread(head(emb))
        else:
            z, solution, iters = spread(emb.float())
            logits = head(z)
    finally:
        model.train(was_training)
    if solution is not None and not bool(torch.isfinite(solution).all()):
        solution = None
    return logits.float(), solution, iters


def accuracies(logits: torch.Tensor, labels: torch.Tensor, split) -> dict[str, float]:
    """Accuracy on the train / valid / test nodes of ``split`` (NaN for an empty set), and
    ``nonfinite``: how many nodes' logits were not finite (each counts as wrong; such an
    evaluation is never the best, :mod:`fastleading.selection`)."""
    pred = predict_classes(logits).to(labels.device)
    acc = {name: float((pred[idx] == labels[idx]).float().mean()) if len(idx) else float("nan")
           for name, idx in (("train", split.train), ("valid", split.valid), ("test", split.test))}
    return {**acc, "nonfinite": int(nonfinite_rows(logits).sum())}
