"""LM encoding of node sets, and the count of how often each node was encoded.

Used by the training steps (with and without gradient), evaluation, the bank fill, export
and the downstream baselines: one implementation of "token rows of these nodes -> LM
embeddings" for all of them.

- :func:`encode_nodes`: ``[len(ids), H]`` under the run's autocast, with gradient when
  grad mode is on.
- :func:`encode_eval`: the same without gradient and in eval mode (no dropout).
- :func:`encode_all`: every node of the graph, in chunks, sharded over ranks.
- :class:`EncodeCounter`: LM encodes per node and kind (the paper's "encoding times per
  node"), kept apart from the memory bank.
"""

from __future__ import annotations

import torch

from fastleading import transfer
from fastleading.distributed import allgather_rows, get_rank, get_world_size, shard
from fastleading.precision import Precision


def encode_nodes(encoder, tokens, ids: torch.Tensor, device: torch.device, precision: Precision) -> torch.Tensor:
    """LM embeddings ``[len(ids), H]`` (fp32) of nodes ``ids`` (int64, CPU) under the run's autocast.

    ``encoder`` is an :class:`fastleading.lm.LMEncoder` (or a DeepSpeed engine around one);
    ``tokens`` a :class:`fastleading.data.tokens.TokenCache`. On a GPU the token rows are
    copied from pinned memory without blocking (:func:`fastleading.transfer.to_device`)."""
    input_ids, mask = tokens.batch(ids.cpu())
    with precision.autocast():
        return encoder(transfer.to_device(input_ids, device), transfer.to_device(mask, device))


@torch.inference_mode()
def encode_eval(encoder, tokens, ids: torch.Tensor, device: torch.device, precision: Precision) -> torch.Tensor:
    """:func:`encode_nodes` without gradient, in eval mode (no dropout); stores no activations."""
    was_training = encoder.training
    encoder.eval()
    try:
        return encode_nodes(encoder, tokens, ids, device, precision)
    finally:
        encoder.train(was_training)


def encode_all(encoder, tokens, num_nodes: int, device: torch.device, precision: Precision,
               batch_size: int, quiet: bool = True, desc: str = "encode",
               counter: "EncodeCounter | None" = None, kind: str = "eval") -> torch.Tensor:
    """LM embeddings of every node, ``[N, H]`` in the bank dtype on ``device``.

    With several ranks each encodes its shard of every chunk of ``batch_size x world`` nodes
    and the shards are all-gathered, so every rank ends with the whole matrix. ``counter``
    counts this rank's encodes as ``kind``."""
    from tqdm.auto import tqdm

    rank, world = get_rank(), get_world_size()
    out = torch.empty(num_nodes, encoder.hidden_size, dtype=precision.bank_dtype, device=device)
    for start in tqdm(range(0, num_nodes, batch_size * world), desc=desc, leave=False, disable=quiet):
        ids = torch.arange(start, min(start + batch_size * world, num_nodes))
        local = shard(ids, rank, world)
        # A rank with an empty shard still runs one forward and drops it: under ZeRO-3 every
        # forward is collective, so all ranks must run as many.
        emb = encode_eval(encoder, tokens, local if len(local) else ids[:1], device, precision)[:len(local)]
        if counter is not None:
            counter.add(kind, len(local))
        all_ids, all_emb = allgather_rows(local, emb.to(out.dtype))
        out[all_ids] = all_emb
    return out


class EncodeCounter:
    """How many times this process LM-encoded each node, by kind.

    Kinds: ``grad`` (with gradient: pipeline 1's targets, every node of a coupled subgraph,
    supervised targets), ``refresh`` (pipeline 2), ``fill`` (the bank fill before training),
    ``eval`` (evaluation). ``grad`` and ``refresh`` are also counted per node (int32 ``[N]``
    on the CPU, 9.8 MB each at ogbn-products size); every kind has a total. Ids are counted
    on the CPU before they go to the device, so counting never synchronises a GPU.
    """

    KINDS = ("grad", "refresh", "fill", "eval")
    PER_NODE = ("grad", "refresh")

    def __init__(self, num_nodes: int):
        self.per_node = {kind: torch.zeros(num_nodes, dtype=torch.int32) for kind in self.PER_NODE}
        self.totals = dict.fromkeys(self.KINDS, 0)

    def add(self, kind: str, ids: torch.Tensor | int) -> None:
        """Record one encode of each node of ``ids`` (int64 ``[M]``; an int: M nodes, not per node)."""
        if kind not in self.totals:
            raise ValueError(f"unknown encode kind {kind!r}; expected one of {', '.join(self.KINDS)}")
        if isinstance(ids, int):
            if kind in self.per_node:
                raise ValueError(f"encode kind {kind!r} is counted per node: pass the ids")
            self.totals[kind] += ids
            return
        self.totals[kind] += ids.numel()
        if kind in self.per_node:
            counts = self.per_node[kind]
            counts.index_add_(0, ids.cpu(), torch.ones(ids.numel(), dtype=counts.dtype))

    def state_dict(self) -> dict:
        return {"per_node": dict(self.per_node), "totals": dict(self.totals)}

    def load_state_dict(self, state: dict) -> None:
        for kind, counts in state["per_node"].items():
            self.per_node[kind].copy_(counts)
        self.totals.update(state["totals"])
