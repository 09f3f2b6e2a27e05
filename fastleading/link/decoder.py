"""Link decoders: the score of a node pair from the two nodes' representations.

Shared by LEADING's link training (:mod:`fastleading.link.task`) and the link GNNs on fixed
features (:mod:`fastleading.link.baseline`), so every method scores pairs alike.

* ``dot``: ``<z_s, z_t>``;
* ``mlp``: an MLP on the Hadamard product ``z_s * z_t`` (symmetric in the pair).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastleading.errors import FastleadingError
from fastleading.link.metrics import link_metrics

DECODERS = ("dot", "mlp")

# pairs per decoder call in evaluation (bounds the [pairs, D] temporaries)
SCORE_CHUNK = 1 << 18


class LinkDecoder(nn.Module):
    """``forward(z_src [..., D], z_dst [..., D]) -> scores [...]`` (logits)."""

    def __init__(self, kind: str, dim: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        if kind not in DECODERS:
            raise FastleadingError(f"config key 'model.link_decoder': expected one of {', '.join(DECODERS)}, "
                                   f"got {kind!r}")
        self.kind = kind
        self.net = (nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, 1)) if kind == "mlp" else None)

    def forward(self, z_src: torch.Tensor, z_dst: torch.Tensor) -> torch.Tensor:
        if self.net is None:
            return (z_src * z_dst).sum(-1)
        return self.net(z_src * z_dst).squeeze(-1)


@torch.no_grad()
def score_pairs(decoder: LinkDecoder, z: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """fp32 scores of the pairs ``(src[i], dst[i, ...])`` from node representations ``z [N, D]``:
    ``dst`` is ``[P]`` or ``[P, K]`` (every source against a row of targets); chunked over
    sources. Runs the decoder in eval mode."""
    was_training = decoder.training
    decoder.eval()
    try:
        src, dst = src.to(z.device), dst.to(z.device)
        per = dst.shape[1] if dst.dim() == 2 else 1
        step = max(1, SCORE_CHUNK // per)
        out = []
        for i in range(0, len(src), step):
            s, t = src[i:i + step], dst[i:i + step]
            zs = z[s].float()
            if t.dim() == 2:
                zs = zs[:, None, :]
            out.append(decoder(zs, z[t].float()).float())
        shape = (0, per) if dst.dim() == 2 else (0,)
        return torch.cat(out) if out else torch.zeros(shape, device=z.device)
    finally:
        decoder.train(was_training)


def split_metrics(decoder: LinkDecoder, z: torch.Tensor, split, hits: Sequence[int], select: str) -> dict[str, float]:
    """``valid_*`` / ``test_*`` AUC, MRR and Hits@K of node representations ``z [N, D]`` on the
    validation / test edges of ``split`` (a :class:`fastleading.link.split.LinkSplit`),
    each edge against its fixed negatives; ``valid`` / ``test``: the ``select`` metric;
    ``nonfinite``: how many of the scores were not finite (they rank worst; such an evaluation is
    never the best, :mod:`fastleading.run.selection`)."""
    out, nonfinite = {}, 0
    for name, pos, neg in (("valid", split.valid, split.valid_neg), ("test", split.test, split.test_neg)):
        p = score_pairs(decoder, z, pos[0], pos[1])
        n = score_pairs(decoder, z, pos[0], neg)
        nonfinite += int((~torch.isfinite(p)).sum()) + int((~torch.isfinite(n)).sum())
        for key, value in link_metrics(p, n, hits).items():
            out[f"{name}_{key}"] = value
    out["valid"], out["test"] = out[f"valid_{select}"], out[f"test_{select}"]
    out["nonfinite"] = nonfinite
    return out
