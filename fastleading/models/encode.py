"""LM encoding of node sets, and the count of how often each node was encoded.

Used by the training steps (with and without gradient), evaluation, the bank fill, export
and the downstream baselines: one implementation of "token rows of these nodes -> LM
embeddings" for all of them.

- :func:`encode_nodes`: ``[len(ids), H]`` under the run's autocast, with gradient when
  grad mode is on.
- :func:`encode_eval`: the same without gradient and in eval mode (no dropout), in
  length-sorted micro-batches under a token budget; rows come back in the caller's order.
- :func:`encode_all`: every node of the graph, in length-sorted chunks, sharded over ranks.
- :func:`length_order`, :func:`budget_chunks`, :func:`padding_ratio`: the plan behind both.
- :class:`EncodeCounter`: LM encodes per node and kind (the paper's "encoding times per
  node"), kept apart from the memory bank.

Length-aware no-gradient encoding. :meth:`TokenCache.batch` pads a batch to its longest
row, so nodes taken in id or random order spend most of a forward on padding when text
lengths vary (CiteSeer-TAG at 512 tokens: p50 199, max 512). Without gradient the order of
the rows is free: the nodes are sorted longest first (stable) and cut into consecutive
micro-batches of ``rows = min(max_rows, token_budget // width)`` rows, ``width`` being the
micro-batch's first (longest) row, so ``rows x padded width <= token_budget`` (a row longer
than the budget goes alone) and rows of similar length share a forward. ``token_budget=0``
turns this off (the caller's order, one forward per ``max_rows`` nodes).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch

from fastleading.engine import transfer
from fastleading.engine.distributed import allgather_rows, get_rank, get_world_size, shard
from fastleading.engine.precision import Precision
from fastleading.models.encode_backend import fixed_weights

if TYPE_CHECKING:
    from fastleading.engine.bank import MemoryBank

# Token positions per no-gradient forward for callers that pass no budget; the default of
# ``train.encode_token_budget`` (tests/test_encode.py checks they agree). 256 x 64: never more
# positions than the old default (eval_batch_size 256 at data.max_length 64) computed per forward.
DEFAULT_TOKEN_BUDGET: int = 16384


def length_order(lengths: torch.Tensor) -> torch.Tensor:
    """Positions of ``lengths`` (``[M]``, any integer dtype, CPU) longest first; a stable sort,
    so equal lengths keep their order. int64 ``[M]``. One sort, no Python loop per node (a
    memory-mapped ``[N]`` length array of ogbn-products size sorts in well under a second)."""
    lengths = torch.as_tensor(lengths).to(torch.int64)
    return torch.sort(lengths, descending=True, stable=True).indices


def budget_chunks(sorted_lengths: torch.Tensor, token_budget: int, max_rows: int | None = None,
                  world: int = 1) -> list[tuple[int, int]]:
    """Cut lengths sorted longest first into consecutive ``[start, stop)`` chunks.

    A chunk starting at a row of length ``w`` holds ``world x rows`` rows (fewer at the end),
    ``rows = min(max_rows, max(1, token_budget // w))``: each rank's contiguous shard of it
    (:func:`fastleading.engine.distributed.shard`) has at most ``rows`` rows, none longer than ``w``,
    so a forward computes at most ``token_budget`` token positions, unless one row alone is
    longer than the budget (then it goes alone). ``token_budget=0``: fixed chunks of
    ``world x max_rows`` rows (``max_rows=None``: one chunk). One Python step per chunk,
    not per node."""
    n = int(sorted_lengths.numel())
    if n == 0:
        return []
    if token_budget < 0 or (max_rows is not None and max_rows < 1) or world < 1:
        raise ValueError(f"expected token_budget >= 0, max_rows >= 1, world >= 1; got {token_budget}, "
                         f"{max_rows}, {world}")
    cap = n if max_rows is None else max_rows
    if token_budget == 0:
        step = cap * world
        return [(start, min(start + step, n)) for start in range(0, n, step)]
    lengths = np.asarray(torch.as_tensor(sorted_lengths).cpu().numpy())
    chunks, start = [], 0
    while start < n:
        width = max(int(lengths[start]), 1)
        rows = min(cap, max(1, token_budget // width))
        stop = min(start + rows * world, n)
        chunks.append((start, stop))
        start = stop
    return chunks


def padding_ratio(batch_lengths: Iterable[torch.Tensor]) -> float:
    """Share of the token positions computed that are padding, over forwards whose rows have
    the given lengths (one ``[B]`` tensor per forward, each padded to its longest row, as
    :meth:`TokenCache.batch` does): ``1 - real tokens / sum(B x max length)``."""
    real = computed = 0
    for lengths in batch_lengths:
        lengths = torch.as_tensor(lengths).to(torch.int64)
        if lengths.numel():
            real += int(lengths.sum())
            computed += int(lengths.numel()) * int(lengths.max())
    return 1.0 - real / computed if computed else 0.0


def _budget(encoder, token_budget: int | None) -> int:
    """The token budget per forward: ``token_budget`` (None: :data:`DEFAULT_TOKEN_BUDGET`; 0: off),
    capped by the encoder's own ``token_budget`` where it has one (an ONNX Runtime session)."""
    budget = DEFAULT_TOKEN_BUDGET if token_budget is None else token_budget
    own = getattr(encoder, "token_budget", None)
    return min(budget, own) if budget and own else budget


def encode_nodes(encoder, tokens, ids: torch.Tensor, device: torch.device, precision: Precision) -> torch.Tensor:
    """LM embeddings ``[len(ids), H]`` (fp32) of nodes ``ids`` (int64, CPU) under the run's autocast.

    ``encoder`` is an :class:`fastleading.models.lm.LMEncoder` (or a DeepSpeed engine around one);
    ``tokens`` a :class:`fastleading.data.tokens.TokenCache`. On a GPU the token rows are
    copied from pinned memory without blocking (:func:`fastleading.engine.transfer.to_device`)."""
    input_ids, mask = tokens.batch(ids.cpu())
    with precision.autocast():
        return encoder(transfer.to_device(input_ids, device), transfer.to_device(mask, device))


@torch.inference_mode()
def encode_eval(encoder, tokens, ids: torch.Tensor, device: torch.device, precision: Precision,
                token_budget: int | None = None, max_rows: int | None = None, backend: str = "eager") -> torch.Tensor:
    """:func:`encode_nodes` without gradient, in eval mode (no dropout); stores no activations.

    The nodes are encoded longest first in micro-batches of at most ``token_budget`` token
    positions (rows x padded width; None: :data:`DEFAULT_TOKEN_BUDGET`) and at most
    ``max_rows`` rows (None: no row limit); the rows come back in the order of ``ids``.
    ``token_budget=0``: the old way, ``ids`` in their order, ``max_rows`` per forward. The
    plan is made on the host from ``tokens.lengths``; the reordering is one gather on the
    device (no host read of a device value). ``backend``: ``train.encode_backend``
    (:func:`fastleading.models.encode_backend.fixed_weights`; only for weights that stay fixed across
    calls: an ONNX export per call of changing weights costs more than it saves)."""
    encoder = fixed_weights(encoder, backend, device, precision)
    was_training = encoder.training
    encoder.eval()
    try:
        ids = torch.as_tensor(ids, dtype=torch.long).cpu()
        budget = _budget(encoder, token_budget)
        if len(ids) == 0 or (budget == 0 and (max_rows is None or len(ids) <= max_rows)):
            return encode_nodes(encoder, tokens, ids, device, precision)
        if budget == 0:
            assert max_rows is not None  # else the whole set went in one forward above
            return torch.cat([encode_nodes(encoder, tokens, ids[a:a + max_rows], device, precision)
                              for a in range(0, len(ids), max_rows)])
        lengths = tokens.lengths[ids]
        order = length_order(lengths)
        parts = [encode_nodes(encoder, tokens, ids[order[a:b]], device, precision)
                 for a, b in budget_chunks(lengths[order], budget, max_rows)]
        emb = torch.cat(parts) if len(parts) > 1 else parts[0]
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        return emb.index_select(0, transfer.to_device(inverse, emb.device))
    finally:
        encoder.train(was_training)


def encode_all(encoder, tokens, num_nodes: int, device: torch.device, precision: Precision,
               batch_size: int, quiet: bool = True, desc: str = "encode",
               counter: EncodeCounter | None = None, kind: str = "eval",
               token_budget: int | None = None, into: MemoryBank | None = None, step: int = 0,
               backend: str = "eager") -> torch.Tensor:
    """LM embeddings of every node, ``[N, H]`` in the bank dtype on ``device``; with ``into``
    (a :class:`fastleading.engine.bank.MemoryBank`) written straight into the bank as its rows
    refreshed at ``step`` (no second ``[N, H]`` matrix) and returned as ``into.emb``.

    The nodes are taken longest first (:func:`length_order` of ``tokens.lengths``, the same on
    every rank) and cut by :func:`budget_chunks` into chunks of ``world x rows`` nodes, where
    ``rows = min(batch_size, token_budget // the chunk's longest length)``: each rank encodes
    its shard of every chunk in one forward of at most ``batch_size`` nodes and
    ``token_budget`` token positions (None: :data:`DEFAULT_TOKEN_BUDGET`; 0: id order, chunks
    of ``batch_size x world``), and the shards are all-gathered, so every rank ends with the
    whole matrix. Every rank runs one forward per chunk. ``counter`` counts this rank's
    encodes as ``kind``. ``backend``: ``train.encode_backend``, what runs the LM
    (:func:`fastleading.models.encode_backend.fixed_weights`: eager PyTorch or ONNX Runtime)."""
    from fastleading.run.console import bar

    encoder = fixed_weights(encoder, backend, device, precision)
    rank, world = get_rank(), get_world_size()
    budget = _budget(encoder, token_budget)
    if into is None:
        out = torch.empty(num_nodes, encoder.hidden_size, dtype=precision.bank_dtype, device=device)
    else:
        out = into.emb
    lengths = tokens.lengths[:num_nodes]
    order = length_order(lengths) if budget else torch.arange(num_nodes)
    for start, stop in bar(budget_chunks(lengths[order], budget, batch_size, world), desc=desc, leave=False,
                           quiet=quiet):
        ids = order[start:stop]
        local = shard(ids, rank, world)
        # A rank with an empty shard still runs one forward and drops it: under ZeRO-3 every
        # forward is collective, so all ranks must run as many. The shard is one micro-batch
        # within the budget already: encode it as it is.
        emb = encode_eval(encoder, tokens, local if len(local) else ids[:1], device, precision,
                          token_budget=0)[:len(local)]
        if counter is not None:
            counter.add(kind, len(local))
        all_ids, all_emb = allgather_rows(local, emb.to(out.dtype))
        if into is None:
            out[all_ids] = all_emb
        else:
            into.refresh(all_ids, all_emb, step)
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

    # what an encode with gradient costs in no-gradient encodes (forward + backward, about 3x)
    GRAD_COST = 3

    def cost(self) -> int:
        """This process's training encodes so far in no-gradient encodes: ``3 x grad + refresh``
        (the bank fill and evaluation are not training)."""
        return self.GRAD_COST * self.totals["grad"] + self.totals["refresh"]

    def state_dict(self) -> dict:
        return {"per_node": dict(self.per_node), "totals": dict(self.totals)}

    def load_state_dict(self, state: dict) -> None:
        for kind, counts in state["per_node"].items():
            self.per_node[kind].copy_(counts)
        self.totals.update(state["totals"])
