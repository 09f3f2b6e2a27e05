"""Multi-process training with torch.distributed: the environment, sharding, and keeping the
memory bank and the implicit histories identical on every rank.

Launched by ``torchrun`` or the ``deepspeed`` launcher, every process finds RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT in its environment; without them the run is a single
process and every function here degrades to its single-process meaning (no collectives).

Each step every rank encodes a disjoint shard of the targets and of the refresh batch
(:func:`shard`), then exchanges the fresh rows (:func:`sync_bank_rows`; the implicit layer
syncs its own histories the same way, :meth:`fastleading.models.appnp.ImplicitAPPNP.sync_histories`: an
all-gather of ids and rows, written in rank order on every rank), so all banks and histories
stay bit-identical. Gradients are averaged by
:func:`all_reduce_gradients` (plain data parallelism) or by the DeepSpeed engine.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastleading.engine import transfer
from fastleading.errors import FastleadingError


def require_deepspeed() -> None:
    """Fail with one line when the optional ``deepspeed`` package cannot be imported."""
    try:
        import deepspeed  # noqa: F401
    except ImportError as e:
        raise FastleadingError("--deepspeed needs the deepspeed package: pip install 'fastleading[deepspeed]' "
                               f"({type(e).__name__}: {e})") from None


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job (from the launcher's environment variables)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """Read RANK, WORLD_SIZE, LOCAL_RANK (default: RANK, i.e. one node), MASTER_ADDR and
        MASTER_PORT; a single process when RANK and WORLD_SIZE are both absent."""
        env = os.environ if environ is None else environ
        if "RANK" not in env and "WORLD_SIZE" not in env:
            return cls()
        for key in ("RANK", "WORLD_SIZE"):
            if key not in env:
                raise FastleadingError(f"environment: {key} is not set but {'WORLD_SIZE' if key == 'RANK' else 'RANK'} "
                                       "is; launch with torchrun or deepspeed, or set both")
        values = {}
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
            raw = env.get(key, env["RANK"] if key == "LOCAL_RANK" else None)
            if raw is None:
                continue
            try:
                values[key] = int(raw)
            except ValueError:
                raise FastleadingError(f"environment: {key}={raw!r} is not an integer") from None
        rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
        if world < 1 or not 0 <= rank < world:
            raise FastleadingError(f"environment: expected 0 <= RANK < WORLD_SIZE, got RANK={rank} WORLD_SIZE={world}")
        if local < 0:
            raise FastleadingError(f"environment: LOCAL_RANK must be >= 0, got {local}")
        addr, port = env.get("MASTER_ADDR"), values.get("MASTER_PORT")
        if world > 1 and (not addr or port is None):
            raise FastleadingError(f"environment: WORLD_SIZE={world} needs MASTER_ADDR and MASTER_PORT "
                                   "(torchrun and the deepspeed launcher set them)")
        return cls(rank, world, local, addr, port)

    def device(self, base: torch.device) -> torch.device:
        """This rank's device: ``cuda:LOCAL_RANK`` when ``base`` is a CUDA device, else ``base``."""
        return torch.device("cuda", self.local_rank) if base.type == "cuda" else base


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(backend: str = "auto", *, force: bool = False) -> DistEnv:
    """Join the process group that the environment describes; returns this process's :class:`DistEnv`.

    ``backend``: ``auto`` (nccl when CUDA is available, else gloo), ``nccl`` or ``gloo``.
    A single process creates no group unless ``force``: then it starts a one-rank group on
    127.0.0.1 (DeepSpeed needs a group even alone) and exports the five launcher variables
    so that DeepSpeed finds them. Calling it when a group exists returns the environment as is.
    """
    if backend not in ("auto", "nccl", "gloo"):
        raise ValueError(f"backend must be auto, nccl or gloo, got {backend!r}")
    env = DistEnv.from_environ()
    if dist.is_initialized():
        return env
    if not env.is_distributed and not force:
        return env
    if not env.is_distributed and (env.master_addr is None or env.master_port is None):
        port = free_port()
        env = DistEnv(0, 1, 0, "127.0.0.1", port)
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    device_id = None
    if backend == "nccl":
        # Pin the rank to its GPU before the first collective, else NCCL guesses cuda:0 for all.
        torch.cuda.set_device(env.local_rank)
        device_id = torch.device("cuda", env.local_rank)
    dist.init_process_group(backend, init_method=f"tcp://{env.master_addr}:{env.master_port}",
                            rank=env.rank, world_size=env.world_size, device_id=device_id)
    return env


def shutdown() -> None:
    """Leave the process group in order: wait for every rank, forget the host group, destroy.

    Without the barrier, rank 0 (which serves the rendezvous store) can exit while another rank
    still tears its groups down; without the destroy, the groups' threads are left to the
    interpreter's exit. Call it once training is over, on every rank; a no-op without a group.
    """
    global _host_group
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_world_size() > 1:
        dist.barrier()
    _host_group = None
    dist.destroy_process_group()


def is_distributed() -> bool:
    """True when a process group of more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Only rank 0 writes outputs (metrics, summary, checkpoints that are not collective)."""
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard(ids: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous slice of ``ids [M]`` (sizes differ by at most one).

    Every rank passes the same ``ids`` (the same seeded permutation), so the slices are
    disjoint and their concatenation in rank order is ``ids``.
    """
    if not 0 <= rank < world:
        raise ValueError(f"expected 0 <= rank < world, got rank={rank} world={world}")
    return torch.tensor_split(ids, world)[rank]


def shard_weight(num_local: int, num_global: int, world: int) -> float:
    """Factor for a rank's mean loss over ``num_local`` of ``num_global`` items so that the
    average over ranks of the weighted losses (what gradient averaging computes) equals the
    mean loss over all ``num_global`` items, also when shards differ in size."""
    return num_local * world / num_global if num_global else 0.0


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over ranks in place (a no-op in a single process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor)
        tensor.div_(dist.get_world_size())
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (e.g. encode counters, correct-prediction counts); returns it."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def broadcast_module_(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (identical replicas)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def all_reduce_gradients(params: Iterable[torch.nn.Parameter], bucket_bytes: int = 64 << 20) -> None:
    """Average the ``.grad`` of ``params`` over ranks (plain data parallelism, after backward and
    before clipping). Gradients are flattened into buckets of at most ``bucket_bytes`` per
    (device, dtype) so that a few large collectives replace one per tensor. A parameter without
    a gradient on this rank counts as a zero gradient, so every rank reduces the same tensors."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    buckets: dict[tuple, list[torch.Tensor]] = {}
    sizes: dict[tuple, int] = {}

    def flush(key) -> None:
        grads = buckets.pop(key, [])
        sizes.pop(key, None)
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    for p in params:
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        key = (p.grad.device, p.grad.dtype)
        buckets.setdefault(key, []).append(p.grad)
        sizes[key] = sizes.get(key, 0) + p.grad.numel() * p.grad.element_size()
        if sizes[key] >= bucket_bytes:
            flush(key)
    for key in list(buckets):
        flush(key)


_host_group: tuple[object, object] | None = None  # (the default group, its host group)


def host_group():
    """The group for small exchanges of host values (row counts): the default group when its
    backend takes CPU tensors (gloo), else a gloo group over the same ranks, made at the first
    call (collective: every rank reaches it in the same order). With NCCL a count gathered on
    the GPU and read back would make the host wait for the device, twice per training step."""
    global _host_group
    if "gloo" in str(dist.get_backend()):
        return None
    if _host_group is None or _host_group[0] is not dist.group.WORLD:  # a new default group
        _host_group = (dist.group.WORLD, dist.new_group(backend="gloo"))
    return _host_group[1]


def allgather_rows(ids: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' ``(ids [M_r], rows [M_r, d])`` concatenated in rank order, on every rank.

    ``M_r`` may differ across ranks (zero included): each rank pads to the largest ``M_r``
    and the padding is cut off after the exchange. Returns ``(int64 [sum M_r],
    [sum M_r, d] in rows' dtype)`` on ``rows.device``; ``(ids, rows)`` in a single process.
    """
    if rows.dim() != 2 or ids.dim() != 1 or ids.numel() != rows.shape[0]:
        raise ValueError(f"expected ids [M] and rows [M, d], got {list(ids.shape)} and {list(rows.shape)}")
    ids = transfer.to_device(ids.to(torch.int64), rows.device)
    if not is_distributed():
        return ids, rows
    world = dist.get_world_size()
    # Every rank knows its own count on the host: exchange the counts there (no device read)
    count = torch.tensor([ids.numel()], dtype=torch.int64)
    counts = [torch.empty_like(count) for _ in range(world)]
    dist.all_gather(counts, count, group=host_group())
    sizes = [int(c) for c in counts]
    m = max(sizes)
    if m == 0:
        return ids, rows
    padded_ids = torch.zeros(m, dtype=torch.int64, device=rows.device)
    padded_ids[:ids.numel()] = ids
    padded_rows = rows.new_zeros(m, rows.shape[1])
    padded_rows[:rows.shape[0]] = rows
    all_ids = [torch.empty_like(padded_ids) for _ in range(world)]
    all_rows = [torch.empty_like(padded_rows) for _ in range(world)]
    dist.all_gather(all_ids, padded_ids)
    dist.all_gather(all_rows, padded_rows.contiguous())
    return (torch.cat([t[:c] for t, c in zip(all_ids, sizes, strict=True)]),
            torch.cat([t[:c] for t, c in zip(all_rows, sizes, strict=True)]))


def align_rows(bank, ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """:meth:`fastleading.engine.bank.MemoryBank.in_frame` of this rank's fresh ``rows`` with the global
    batch's shift: the sums are all-reduced over the ranks (the fresh rows' differentiably, so
    each rank's gradient loses the global batch's mean, as one process's would)."""
    if not is_distributed():
        return bank.in_frame(ids, rows)

    def reduce(fresh_sum, old_sum, count):
        import torch.distributed.nn.functional as dist_nn

        fixed = torch.cat([old_sum, count.reshape(1)])
        dist.all_reduce(fixed)
        return dist_nn.all_reduce(fresh_sum), fixed[:-1], fixed[-1]

    return bank.in_frame(ids, rows, reduce)


def sync_bank_rows(bank, ids: torch.Tensor, rows: torch.Tensor, step: int) -> None:
    """Refresh ``bank`` (a :class:`fastleading.engine.bank.MemoryBank`) with every rank's fresh rows.

    Each rank passes its own ``ids [M_r]`` and ``rows [M_r, dim]`` (detached); all ranks then
    write the same concatenation in rank order, so banks and stamps stay identical. An id
    refreshed by several ranks keeps the highest rank's row (the bank's last-occurrence rule).
    """
    rows = rows.detach().to(bank.emb.device, bank.emb.dtype)  # gather in the storage dtype: fewer bytes, same rows
    all_ids, all_rows = allgather_rows(ids, rows)
    bank.refresh(all_ids, all_rows, step)
