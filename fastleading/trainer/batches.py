"""Which nodes each step takes: pipeline 1's targets and pipeline 2's refresh batch.

Targets: consecutive global batches of ``batch_size x WORLD_SIZE`` of a seeded per-epoch
permutation of the training nodes, one shard per rank. Refresh: consecutive batches of
seeded per-epoch permutations of ALL nodes (:class:`RefreshOrder`), sharded the same way.
"""

from __future__ import annotations

import math

import torch

from fastleading.config import Config
from fastleading.engine.distributed import shard, shard_weight
from fastleading.engine.graph import k_hop_nodes


class RefreshOrder:
    """Pipeline 2's node order: consecutive batches of per-epoch permutations of its scope,
    ``nodes``: an int (all nodes ``0..N-1``) or the int64 ids of the nodes it re-encodes
    (:func:`refresh_scope`)."""

    def __init__(self, nodes: int | torch.Tensor, seed: int):
        self.nodes = None if isinstance(nodes, int) else nodes
        self.num_nodes, self.seed = (nodes if isinstance(nodes, int) else len(nodes)), seed
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.num_nodes, generator=g)
        return perm if self.nodes is None else self.nodes[perm]

    def next(self, size: int) -> torch.Tensor:
        if self.pos >= self.num_nodes:
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation()
        ids = self._perm[self.pos:self.pos + size]
        self.pos += len(ids)
        return ids

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.pos = s["epoch"], s["pos"]
        self._perm = self._permutation()


def steps_per_epoch(cfg: Config, num_train: int, world: int = 1) -> int:
    """Global batches of ``batch_size x world`` targets per epoch. A last batch with fewer
    targets than ranks is dropped (a rank would have none); in one process it is kept."""
    full, rest = divmod(num_train, cfg.train.batch_size * world)
    return full + int(rest >= world)


def epoch_order(train_ids: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """The training targets of ``epoch`` in their seeded order."""
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    return train_ids[torch.randperm(len(train_ids), generator=g)]


def global_targets(order: torch.Tensor, batch: int, batch_size: int, rank: int,
                   world: int) -> tuple[torch.Tensor, float]:
    """This rank's shard of global batch ``batch`` of ``order`` and its loss weight (its share
    of the global batch's mean loss, :func:`fastleading.engine.distributed.shard_weight`)."""
    size = batch_size * world
    ids = order[batch * size:(batch + 1) * size]
    targets = shard(ids, rank, world)
    return targets, shard_weight(len(targets), len(ids), world)


def refresh_scope(cfg: Config, rowptr: torch.Tensor, col: torch.Tensor, train_ids: torch.Tensor) -> torch.Tensor | int:
    """The nodes pipeline 2 re-encodes (``train.refresh_scope``): ``reachable``, the nodes within
    ``len(train.fanouts)`` hops of a training target (no other bank row is ever looked up by a
    training step; sorted int64 ids), or every node (an int, N) for ``all`` and for link
    prediction, whose random negatives make every node a target."""
    n = len(rowptr) - 1
    if cfg.train.refresh_scope == "all" or cfg.train.task == "link":
        return n
    return k_hop_nodes(rowptr, col, train_ids, len(cfg.train.fanouts))


def refresh_batch_size(cfg: Config, num_nodes: int, num_train: int, world: int = 1) -> int:
    """Pipeline 2's nodes per step and rank: ``train.refresh_batch_size``, or when that is 0
    enough to re-encode each of the ``num_nodes`` nodes of its scope once per epoch, so that
    the bank is as fresh as the paper's ("the memory will at least be filled after the first
    epoch") also when the targets are few (low-label splits). With every node a target this is
    about ``batch_size``."""
    if cfg.train.refresh_batch_size:
        return cfg.train.refresh_batch_size
    return math.ceil(num_nodes / (steps_per_epoch(cfg, num_train, world) * world))


def refresh_batch(order: RefreshOrder, size: int, rank: int, world: int) -> torch.Tensor:
    """This rank's shard of the next refresh batch of ``size x world`` nodes."""
    ids = order.next(size * world)
    if len(ids) < world:  # the end of a permutation: top up from the next so no rank's shard is empty
        ids = torch.cat([ids, order.next(world - len(ids))])
    return shard(ids, rank, world)
