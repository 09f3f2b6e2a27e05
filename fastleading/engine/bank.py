"""The memory bank of LM embeddings (neighbor decoupling, paper section 3.2).

Pipeline 2 and pipeline 1 ``refresh`` rows with fresh encodings; pipeline 1 ``lookup``s
the neighbours of its targets instead of encoding them. The bank also records, per node,
the step at which its row was last written (staleness). How often nodes are encoded is
counted elsewhere (:class:`fastleading.models.encode.EncodeCounter`).
"""

from __future__ import annotations

import torch

from fastleading.engine import ops, transfer


class MemoryBank:
    """``[N, dim]`` table of node embeddings.

    Args:
        num_nodes: N.
        dim: embedding width (the LM's hidden size).
        dtype: storage dtype (bf16 on GPU by default; lookups return this dtype).
        device: where the table lives.
    """

    def __init__(self, num_nodes: int, dim: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu"):
        self.emb = torch.zeros(num_nodes, dim, dtype=dtype, device=device)
        self.stamp = torch.full((num_nodes,), -1, dtype=torch.int64, device=device)

    @property
    def num_nodes(self) -> int:
        return self.emb.shape[0]

    def refresh(self, ids: torch.Tensor, emb: torch.Tensor, step: int) -> None:
        """Write ``emb [M, dim]`` (detached) into rows ``ids [M]`` and stamp them with ``step``.

        For duplicate ids the last occurrence wins (see :func:`fastleading.engine.ops.bank_scatter`).
        A row with a non-finite value keeps its previous embedding (its stamp still moves), so
        one bad encode cannot spread through every later lookup.
        """
        ids = transfer.to_device(ids, self.emb.device)
        emb = emb.detach()
        finite = torch.isfinite(emb).all(dim=1, keepdim=True)
        emb = torch.where(finite, emb, self.emb.index_select(0, ids).to(emb.dtype))
        ops.bank_scatter(self.emb, ids, emb, self.stamp, step)

    def lookup(self, ids: torch.Tensor, out: torch.Tensor | None = None, out_offset: int = 0) -> torch.Tensor:
        """Rows ``ids`` as ``[M, dim]``, or written into ``out[out_offset:out_offset+M]``."""
        return ops.bank_gather(self.emb, transfer.to_device(ids, self.emb.device), out=out, out_offset=out_offset)

    def in_frame(self, ids: torch.Tensor, rows: torch.Tensor, reduce=None) -> torch.Tensor:
        """Fresh encodings ``rows [M, dim]`` of nodes ``ids`` moved into the bank's frame: shifted
        so that their mean is the mean of the rows ``ids`` hold now (call it before they are
        overwritten). Differentiable: the shift depends on ``rows`` through their mean, so the
        gradient that reaches ``rows`` has zero mean over the batch (``train.align_to_bank``).
        Only rows written before count (the shift is the written rows' mean move): a bank that
        was never filled has no frame yet, and rows none of whose nodes were written are
        returned as they are. ``reduce`` maps the three sums (fresh rows, their bank rows, how
        many) to the global batch's (:func:`fastleading.engine.distributed.align_rows`)."""
        ids = transfer.to_device(ids, self.emb.device)
        # no host read (a step must not synchronise): the written rows as weights, not as an index
        w = (self.stamp.index_select(0, ids) >= 0).to(rows.dtype).unsqueeze(1).to(rows.device)
        old = self.lookup(ids).to(rows.dtype).to(rows.device)
        fresh_sum, old_sum, count = (rows * w).sum(0), (old * w).sum(0), w.sum()
        if reduce is not None:
            fresh_sum, old_sum, count = reduce(fresh_sum, old_sum, count)
        return rows + (old_sum - fresh_sum) / count.clamp_min(1.0)

    def frame(self, chunk: int = 65536) -> torch.Tensor | None:
        """The bank's frame: the fp32 mean ``[dim]`` of the written rows (None when none was
        written). Read in chunks of ``chunk`` rows: no fp32 copy of the table at 2.45M nodes."""
        total = torch.zeros(self.emb.shape[1], dtype=torch.float64, device=self.emb.device)
        count = 0
        for i in range(0, self.num_nodes, chunk):
            written = self.stamp[i:i + chunk] >= 0
            total += self.emb[i:i + chunk][written].sum(0, dtype=torch.float64)
            count += int(written.sum())
        return (total / count).float() if count else None

    def move_frame(self, before: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        """Shift every row so that the bank's frame (:meth:`frame`) is ``before [dim]`` again,
        after a full-graph encode wrote every row in the LM's own frame; returns the shift added
        (fp32 ``[dim]``). Evaluation calls it under ``train.align_to_bank``, so that the rows the
        head was trained among and the rows it is scored on share one frame."""
        after = self.frame(chunk)
        if after is None:
            raise ValueError("move_frame: the bank has no written row (call it after an encode wrote them)")
        shift = before.to(self.emb.device) - after
        add_rows_(self.emb, shift, chunk)
        return shift

    def staleness(self, ids: torch.Tensor, step: int) -> torch.Tensor:
        """Steps since each row was last written (``step + 1`` for never-written rows)."""
        return step - self.stamp[transfer.to_device(ids, self.stamp.device)]

    def state_dict(self) -> dict:
        return {"emb": self.emb, "stamp": self.stamp}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            getattr(self, key).copy_(value)


def add_rows_(table: torch.Tensor, shift: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """``table [N, d] += shift [d]`` in place, summed in fp32 and rounded once to the table's
    dtype, ``chunk`` rows at a time (no fp32 copy of the table); returns ``table``."""
    shift = shift.to(table.device, torch.float32)
    for i in range(0, len(table), chunk):
        rows = table[i:i + chunk]
        rows.copy_(rows.float() + shift)
    return table
