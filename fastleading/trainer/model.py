"""The trained model: LM encoder -> head -> implicit APPNP (or the other order)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fastleading.config import Config
from fastleading.engine.bank import add_rows_
from fastleading.models.appnp import Head, ImplicitAPPNP, ImportanceNorm, propagate
from fastleading.models.lm import LMEncoder
from fastleading.run import checkpoint


def warm_start(cfg: Config) -> str:
    """``model.warm_start`` resolved: auto is ``delta``, and ``input`` for link prediction (a
    forward history would carry a batch's own positive edges into its scores)."""
    if cfg.model.warm_start != "auto":
        return cfg.model.warm_start
    return "input" if cfg.train.task == "link" else "delta"


def subgraph_norm(cfg: Config) -> str:
    """``model.subgraph_norm`` resolved: auto is ``weighted`` (an unbiased estimate of every
    sampled row: on arxiv-2023, mean degree 17.9 against fanouts [10, 5], the training forward
    then stays at the fixed point evaluation scores, ``benchmarks/operator_gap.py``), and
    ``full-graph`` for link prediction, which does not support ``weighted``."""
    if cfg.model.subgraph_norm != "auto":
        return cfg.model.subgraph_norm
    return "full-graph" if cfg.train.task == "link" else "weighted"


class NodeClassifier(nn.Module):
    """LM encoder, head and propagation. ``order`` decides whether the head runs before the
    propagation (predict-then-propagate: propagate C-dim logits) or after it.

    ``state_dict()`` holds the encoder, the head and ``frame_shift``; the implicit layer's
    histories are run state, saved by the checkpoint (:mod:`fastleading.trainer.state`), not by
    ``best.pt``.

    ``frame_shift [H]`` (fp32, a buffer): what evaluation added to the LM's embeddings to keep
    them in the memory bank's frame (``train.align_to_bank``,
    :meth:`fastleading.engine.bank.MemoryBank.move_frame`), so the head is scored, and predicts,
    on inputs in the frame it was trained in. Zero until the first evaluation after fine-tuning
    steps; inference adds it with :meth:`to_head_frame_`."""

    def __init__(self, cfg: Config, num_nodes: int, num_classes: int, history_dtype: torch.dtype):
        super().__init__()
        m = cfg.model
        self.encoder = LMEncoder(m)
        self.predict_first = m.order == "predict-then-propagate"
        self.head = Head(self.encoder.hidden_size, num_classes, m.head_hidden, m.head_dropout, m.head)
        self.appnp = ImplicitAPPNP(m.alpha, m.num_iters, num_nodes,
                                   num_classes if self.predict_first else self.encoder.hidden_size, history_dtype,
                                   warm_backward=m.warm_backward, warm_start=warm_start(cfg))
        self.frame_shift: torch.Tensor
        self.register_buffer("frame_shift", torch.zeros(self.encoder.hidden_size))

    def to_head_frame_(self, emb: torch.Tensor) -> torch.Tensor:
        """LM embeddings ``emb [N, H]`` (any float dtype) moved in place into the frame the head
        was trained in (plus ``frame_shift``); returns ``emb``."""
        return add_rows_(emb, self.frame_shift)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # best.pt and checkpoints written before the frame was kept have none: zero, as then
        state_dict.setdefault(prefix + "frame_shift", torch.zeros_like(self.frame_shift))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def classify(self, x_in: torch.Tensor, rowptr: torch.Tensor, col: torch.Tensor, node_ids: torch.Tensor,
                 implicit: bool, num_iters: int, dinv: torch.Tensor | ImportanceNorm | None = None,
                 num_targets: int | None = None) -> torch.Tensor:
        """Logits ``[n, C]`` of a (sub)graph whose nodes have input embeddings ``x_in [n, H]``;
        ``dinv`` normalises Â (default: the (sub)graph's own degrees). ``implicit``: the
        warm-started implicit layer (LEADING), which writes the histories of the first
        ``num_targets`` nodes only (default all); else ``num_iters`` unrolled steps from X_in."""
        def spread(x):
            if implicit:
                return self.appnp(x, rowptr, col, node_ids, dinv, num_targets)
            return propagate(x, rowptr, col, self.appnp.alpha, num_iters, dinv)
        if self.predict_first:
            return spread(self.head(x_in))
        return self.head(spread(x_in))


class LinkPredictor(NodeClassifier):
    """:class:`NodeClassifier` whose head maps to ``model.link_dim``-wide node representations
    (propagated like logits), plus the pair decoder (``model.link_decoder``)."""

    def __init__(self, cfg: Config, num_nodes: int, history_dtype: torch.dtype):
        super().__init__(cfg, num_nodes, cfg.model.link_dim, history_dtype)
        from fastleading.link.decoder import LinkDecoder

        self.decoder = LinkDecoder(cfg.model.link_decoder, cfg.model.link_dim, cfg.model.head_hidden,
                                   cfg.model.head_dropout)


def build_model(cfg: Config, num_nodes: int, num_classes: int, history_dtype: torch.dtype) -> NodeClassifier:
    """The model of ``cfg.train.task``: a :class:`NodeClassifier`, or a :class:`LinkPredictor`."""
    if cfg.train.task == "link":
        return LinkPredictor(cfg, num_nodes, history_dtype)
    return NodeClassifier(cfg, num_nodes, num_classes, history_dtype)


def load_best(run_dir: Path, cfg: Config, num_nodes: int, num_classes: int,
              history_dtype: torch.dtype) -> NodeClassifier:
    """The model of the run in ``run_dir`` (config ``cfg``) with its ``best.pt`` weights (encoder
    and head; no histories), on the CPU, in eval mode."""
    model = build_model(cfg, num_nodes, num_classes, history_dtype)
    model.load_state_dict(checkpoint.load(Path(run_dir) / checkpoint.BEST)["model"])
    return model.eval()
