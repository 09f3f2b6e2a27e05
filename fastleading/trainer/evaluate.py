"""Full-graph evaluation: encode every node, apply the head, propagate over the whole graph."""

from __future__ import annotations

import torch

from fastleading.config import Config
from fastleading.nn import propagate
from fastleading.precision import Precision
from fastleading.trainer.model import NodeClassifier

GRAPH_METHODS = ("leading", "coupled")

# nodes per head call in full-graph inference (bounds the head's activations)
HEAD_CHUNK = 65536


def eval_operator_iters(cfg: Config) -> int:
    """Propagation steps of full-graph inference, each method with the operator it trained:
    LEADING's implicit layer solves the fixed point (``model.eval_iters`` steps); the coupled
    baseline unrolls ``model.num_iters`` steps from X_in (the paper's LM+APPNP rows)."""
    return cfg.model.num_iters if cfg.train.method == "coupled" else cfg.model.eval_iters


@torch.no_grad()
def full_graph_logits(model: NodeClassifier, emb: torch.Tensor, rowptr: torch.Tensor, col: torch.Tensor,
                      cfg: Config, precision: Precision) -> torch.Tensor:
    """fp32 logits ``[N, C]`` of every node from its LM embedding ``emb [N, H]`` (any float
    dtype): the head on every node and, for graph methods, propagation over the full graph
    ``rowptr/col`` (on ``emb``'s device) with the method's own operator."""
    graph_method = cfg.train.method in GRAPH_METHODS
    iters = eval_operator_iters(cfg)
    was_training = model.training
    model.eval()
    try:
        with precision.autocast():
            if model.predict_first or not graph_method:
                logits = torch.cat([model.head(emb[i:i + HEAD_CHUNK].float()).float()
                                    for i in range(0, len(emb), HEAD_CHUNK)])
                if graph_method:
                    logits = propagate(logits, rowptr, col, model.appnp.alpha, iters)
            else:
                z = propagate(emb.float(), rowptr, col, model.appnp.alpha, iters)
                logits = torch.cat([model.head(z[i:i + HEAD_CHUNK]).float() for i in range(0, len(z), HEAD_CHUNK)])
    finally:
        model.train(was_training)
    return logits.float()


def accuracies(logits: torch.Tensor, labels: torch.Tensor, split) -> dict[str, float]:
    """Accuracy on the train / valid / test nodes of ``split`` (NaN for an empty set)."""
    pred = logits.argmax(-1).to(labels.device)
    return {name: float((pred[idx] == labels[idx]).float().mean()) if len(idx) else float("nan")
            for name, idx in (("train", split.train), ("valid", split.valid), ("test", split.test))}
