"""Memory-bank gather and scatter: wide row copies between a bank ``[N, d]`` and a row batch.

Each program copies a ``[ROWS, BLOCK_D]`` tile: several rows at once (many independent
loads in flight) and a power-of-2 run of contiguous features per row. When the row
strides are multiples of 16 elements (Triton specialises integer arguments divisible by
16, e.g. d = 384/768/1024), every row segment moves as 16-byte vector accesses.
Rows are cast on the fly (bank bf16 -> fp32 features, fp32 embeddings -> bf16 bank).

Scatter with duplicate ids is defined: the LAST occurrence wins, for the row and for its
stamp. The launcher first records, for every destination row, the largest position that
targets it (``scatter_reduce_(amax)`` into an ``[N]`` scratch); the kernel then writes a
position only when it is that winner, so no two programs ever write the same bank row.
"""

import torch

import triton
import triton.language as tl

from .convert import cast_to

_TILE_ELEMS = 4096
_TILE_ELEMS_UNALIGNED = 2048
_MAX_BLOCK_D = 256


@triton.jit
def _bank_gather_kernel(bank_ptr, ids_ptr, out_ptr, n_ids, n_cols, stride_bank, stride_out,
                        ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[m] = bank[ids[m]] for a [ROWS, BLOCK_D] tile; grid (row tiles, feature tiles)."""
    slot = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]
    row_mask = slot < n_ids
    ids = tl.load(ids_ptr + slot, mask=row_mask, other=0).to(tl.int64)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]
    mask = row_mask & (d < n_cols)
    vals = tl.load(bank_ptr + ids * stride_bank + d, mask=mask)
    tl.store(out_ptr + slot.to(tl.int64) * stride_out + d, cast_to(vals, out_ptr.dtype.element_ty), mask=mask)


# `step` changes every call: not a specialisation key (a new value must not recompile the kernel)
@triton.jit(do_not_specialize=["step"])
def _bank_scatter_kernel(bank_ptr, ids_ptr, last_ptr, rows_ptr, stamps_ptr, step, n_ids, n_cols,
                         stride_bank, stride_rows, HAS_STAMPS: tl.constexpr,
                         ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """bank[ids[m]] = rows[m] (and stamps[ids[m]] = step) where m is the last position of ids[m]
    (last_ptr[m] != 0)."""
    slot = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]
    row_mask = slot < n_ids
    ids = tl.load(ids_ptr + slot, mask=row_mask, other=0).to(tl.int64)
    wins = row_mask & (tl.load(last_ptr + slot, mask=row_mask, other=0) != 0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]
    mask = wins & (d < n_cols)
    vals = tl.load(rows_ptr + slot.to(tl.int64) * stride_rows + d, mask=mask)
    tl.store(bank_ptr + ids * stride_bank + d, cast_to(vals, bank_ptr.dtype.element_ty), mask=mask)
    if HAS_STAMPS:  # noqa: SIM102 (a tl.constexpr: this `if` is resolved when the kernel compiles, the inner one runs)
        if tl.program_id(1) == 0:  # the first feature tile of a row writes its stamp
            tl.store(stamps_ptr + ids, tl.full([ROWS, 1], step, dtype=stamps_ptr.dtype.element_ty), mask=wins)


def _tiles(n_cols: int, aligned: bool) -> tuple[int, int]:
    """(ROWS, BLOCK_D): the widest power of 2 <= 256 dividing d (no masked lanes for 384/768/1024),
    else the next power of 2 of a narrow d; ROWS fills the tile.

    ``aligned``: both row strides are multiples of 16 elements, so accesses are 16-byte
    vectors (32-40 registers per thread at 4096 elements, ptxas sm_90). Otherwise every
    element has its own 64-bit address and 2048 elements already take 72-80 registers.
    """
    divisor = n_cols & -n_cols
    block_d = min(_MAX_BLOCK_D, divisor) if divisor >= 32 else min(_MAX_BLOCK_D, triton.next_power_of_2(n_cols))
    return max(1, (_TILE_ELEMS if aligned else _TILE_ELEMS_UNALIGNED) // block_d), block_d


def gather_rows(bank: torch.Tensor, ids: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out[m] = bank[ids[m]]`` cast to out's dtype. bank ``[N, d]``, ids int64 ``[M]``, out ``[M, d]``
    (unit stride along d). Returns out."""
    n_ids, n_cols = out.shape
    if n_ids == 0 or n_cols == 0:
        return out
    rows, block_d = _tiles(n_cols, bank.stride(0) % 16 == 0 and out.stride(0) % 16 == 0)
    _bank_gather_kernel[(triton.cdiv(n_ids, rows), triton.cdiv(n_cols, block_d))](
        bank, ids, out, n_ids, n_cols, bank.stride(0), out.stride(0), ROWS=rows, BLOCK_D=block_d)
    return out


def last_occurrence(ids: torch.Tensor) -> torch.Tensor:
    """bool ``[M]``: True at the last position of each distinct id of ``ids`` (int64 ``[M]``).

    A stable sort groups equal ids in their original order, so the last of each group is the
    id's last occurrence: O(M) memory and no host synchronisation, whatever the bank's size.
    """
    sorted_ids, order = torch.sort(ids, stable=True)
    last_in_group = torch.ones_like(sorted_ids, dtype=torch.bool)
    last_in_group[:-1] = sorted_ids[1:] != sorted_ids[:-1]
    return torch.empty_like(last_in_group).scatter_(0, order, last_in_group)


def scatter_rows(bank: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor,
                 stamps: torch.Tensor | None, step: int) -> None:
    """``bank[ids[m]] = rows[m]`` (cast to bank's dtype) and ``stamps[ids[m]] = step``, last
    occurrence winning. bank ``[N, d]``, ids int64 ``[M]``, rows ``[M, d]``, stamps int ``[N]`` or None;
    bank and rows with unit stride along d."""
    n_ids, n_cols = rows.shape
    if n_ids == 0:
        return
    last = last_occurrence(ids)
    rows_per_prog, block_d = _tiles(max(n_cols, 1), bank.stride(0) % 16 == 0 and rows.stride(0) % 16 == 0)
    grid = (triton.cdiv(n_ids, rows_per_prog), max(1, triton.cdiv(n_cols, block_d)))
    _bank_scatter_kernel[grid](
        bank, ids, last, rows, stamps if stamps is not None else ids, int(step), n_ids, n_cols,
        bank.stride(0), rows.stride(0), HAS_STAMPS=stamps is not None, ROWS=rows_per_prog, BLOCK_D=block_d)
