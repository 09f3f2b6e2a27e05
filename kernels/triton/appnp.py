"""Fused APPNP step: ``out = (1-a) Â x + a x_in`` in one pass over a CSR graph.

``Â = D̃^{-1/2} (A + I) D̃^{-1/2}`` with ``D̃ = D + I``, so for row ``i``::

    out[i] = (1-a) * dinv[i] * (sum_{j in N(i)} dinv[j] * x[j]  +  dinv[i] * x[i])  +  a * x_in[i]

The normalisation weights come from ``dinv`` (fp32 ``[N]``) on the fly and the self loop
is folded into the epilogue, so no edge-weight array, no ``Â`` and no ``Âx`` is ever
materialised; x_in and out are touched once per row, x once per row plus once per
nonzero (the gather). Features may be fp32/bf16/fp16 (accumulation is fp32, and every
load is converted to fp32 at once: bf16 arithmetic is wrong in the Triton interpreter),
``col`` int32 or int64, any width (the feature dim is tiled by a power-of-2 ``BLOCK_C``
with a mask).

Load balance on skewed graphs (a row of degree 10k next to rows of degree 1) comes from
a per-graph :class:`AppnpPlan`, built once with torch ops and cached by the caller:

- light rows (degree <= ``heavy_threshold``) are sorted by degree, descending, and
  processed ``ROWS`` at a time as a ``[ROWS, BLOCK_C]`` tile: step ``k`` of the loop
  gathers the ``k``-th neighbour of every row in the tile (``ROWS`` independent gathers
  in flight, no reduction). Rows of a tile have nearly equal degree, so few lanes idle,
  and the heaviest tiles are launched first (longest-processing-time-first order).
- heavy rows are split into chunks of ``chunk_size`` nonzeros, one program each, that
  gather ``[BLOCK_E, BLOCK_C]`` tiles and write one fp32 partial sum per chunk; a second,
  tiny kernel adds a heavy row's partials in a fixed order (deterministic, no atomics)
  and applies the same epilogue.

``Â`` is symmetric, so the backward of the implicit layer (``g = (1-a) Âᵀ g + grad``)
runs the very same kernels.
"""

import dataclasses
import math
from dataclasses import dataclass

import torch

import triton
import triton.language as tl

from .convert import cast_to

# Register tiles, sized with ptxas for sm_90 at 4 warps (Triton 3.6 and 3.9): a
# [ROWS, BLOCK_C] light tile of 2048 elements takes 56-80 registers per thread when the
# row strides are multiples of 16 elements (16-byte vector accesses); 4096 would take 165
# and halve occupancy. Other strides (widths 40, 47, 200) give scalar accesses with a
# 64-bit address per element: 2048 elements would take ~240 registers, 1024 take ~80-96.
# The heavy tile [BLOCK_E, BLOCK_C] only keeps its accumulator live (56-80 registers).
_LIGHT_TILE = 2048
_LIGHT_TILE_UNALIGNED = 1024
_HEAVY_TILE = 4096
# Features per program: 128 is 512 B of fp32 / 256 B of bf16 per row, i.e. whole 16-byte
# vectors on every lane, and narrow enough to leave many programs on small graphs.
_MAX_BLOCK_C = 128


# Kernels index their tiles with 2-D [ROWS, 1] / [1, BLOCK_C] vectors from the start: with
# 1-D row vectors broadcast inside the loop, Triton 3.6 (the GPU image) fails to compile
# the light kernel for BLOCK_C < 128 ("mask type matches ptr type" in
# RemoveLayoutConversions); Triton 3.9 compiles both forms.


@triton.jit
def _appnp_epilogue(acc, row, row_mask, c, c_mask, dinv_ptr, x_ptr, xin_ptr, out_ptr,
                    stride_x, stride_xin, stride_out, alpha):
    """Self loop + normalisation + axpy for an [R, BLOCK_C] tile of neighbour sums (row [R, 1], c [1, BLOCK_C])."""
    mask = row_mask & c_mask
    di = tl.load(dinv_ptr + row, mask=row_mask, other=0.0)
    xi = tl.load(x_ptr + row * stride_x + c, mask=mask, other=0.0).to(tl.float32)
    xin = tl.load(xin_ptr + row * stride_xin + c, mask=mask, other=0.0).to(tl.float32)
    res = (1.0 - alpha) * di * (acc + di * xi) + alpha * xin
    tl.store(out_ptr + row * stride_out + c, cast_to(res, out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _appnp_light_kernel(rowptr_ptr, col_ptr, dinv_ptr, order_ptr, x_ptr, xin_ptr, out_ptr,
                        n_rows, n_cols, stride_x, stride_xin, stride_out, alpha,
                        ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """ROWS degree-sorted light rows x BLOCK_C features per program; grid (row tiles, feature tiles)."""
    slot = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]
    row_mask = slot < n_rows
    row = tl.load(order_ptr + slot, mask=row_mask, other=0).to(tl.int64)
    start = tl.load(rowptr_ptr + row, mask=row_mask, other=0)
    deg = tl.load(rowptr_ptr + row + 1, mask=row_mask, other=0) - start
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
    c_mask = c < n_cols
    acc = tl.zeros([ROWS, BLOCK_C], dtype=tl.float32)
    # Step k gathers the k-th neighbour of every row of the tile (masked past its degree).
    for k in range(0, tl.max(deg)):
        e_mask = k < deg
        j = tl.load(col_ptr + start + k, mask=e_mask, other=0).to(tl.int64)
        w = tl.load(dinv_ptr + j, mask=e_mask, other=0.0)
        xj = tl.load(x_ptr + j * stride_x + c, mask=e_mask & c_mask, other=0.0).to(tl.float32)
        acc += w * xj
    _appnp_epilogue(acc, row, row_mask, c, c_mask, dinv_ptr, x_ptr, xin_ptr, out_ptr,
                    stride_x, stride_xin, stride_out, alpha)


@triton.jit
def _appnp_heavy_partial_kernel(col_ptr, dinv_ptr, x_ptr, chunk_start_ptr, chunk_end_ptr, partial_ptr,
                                n_cols, stride_x, BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr):
    """partial[k] = sum over the nonzeros of chunk k of dinv[j] * x[j] (fp32); grid (chunks, feature tiles)."""
    k = tl.program_id(0)
    e_begin = tl.load(chunk_start_ptr + k)
    e_end = tl.load(chunk_end_ptr + k)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
    c_mask = c < n_cols
    acc = tl.zeros([BLOCK_E, BLOCK_C], dtype=tl.float32)
    for e in range(e_begin, e_end, BLOCK_E):
        offs = e + tl.arange(0, BLOCK_E)[:, None]
        e_mask = offs < e_end
        j = tl.load(col_ptr + offs, mask=e_mask, other=0).to(tl.int64)
        w = tl.load(dinv_ptr + j, mask=e_mask, other=0.0)
        xj = tl.load(x_ptr + j * stride_x + c, mask=e_mask & c_mask, other=0.0).to(tl.float32)
        acc += w * xj
    tl.store(partial_ptr + k.to(tl.int64) * n_cols + c, tl.sum(acc, axis=0, keep_dims=True), mask=c_mask)


@triton.jit
def _appnp_heavy_finish_kernel(heavy_rows_ptr, chunk_ptr_ptr, partial_ptr, dinv_ptr, x_ptr, xin_ptr, out_ptr,
                               n_cols, stride_x, stride_xin, stride_out, alpha, BLOCK_C: tl.constexpr):
    """Sum a heavy row's chunk partials in order, then the epilogue; grid (heavy rows, feature tiles)."""
    h = tl.program_id(0)
    one = tl.arange(0, 1)[:, None]
    row = tl.load(heavy_rows_ptr + h + one)
    k_begin = tl.load(chunk_ptr_ptr + h)
    k_end = tl.load(chunk_ptr_ptr + h + 1)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
    c_mask = c < n_cols
    acc = tl.zeros([1, BLOCK_C], dtype=tl.float32)
    for k in range(k_begin, k_end):
        acc += tl.load(partial_ptr + k * n_cols + c, mask=c_mask, other=0.0)
    _appnp_epilogue(acc, row, one < 1, c, c_mask, dinv_ptr, x_ptr, xin_ptr, out_ptr,
                    stride_x, stride_xin, stride_out, alpha)


@dataclass(frozen=True)
class AppnpPlan:
    """Per-graph work partition of the fused APPNP step (all tensors on the graph's device).

    Attributes:
        num_nodes: N.
        light_order: int32 (int64 past 2**31 rows) ``[N_light]``, rows of degree <= ``heavy_threshold``,
            by degree descending.
        heavy_rows: int64 ``[H]``, rows of degree > ``heavy_threshold``.
        chunk_ptr: int64 ``[H+1]``, heavy row ``h`` owns chunks ``chunk_ptr[h]:chunk_ptr[h+1]``.
        chunk_start, chunk_end: int64 ``[K]``, nonzero range ``[start, end)`` of each chunk.
        heavy_threshold, chunk_size: the parameters the plan was built with.
    """

    num_nodes: int
    light_order: torch.Tensor
    heavy_rows: torch.Tensor
    chunk_ptr: torch.Tensor
    chunk_start: torch.Tensor
    chunk_end: torch.Tensor
    heavy_threshold: int
    chunk_size: int

    @property
    def num_chunks(self) -> int:
        return self.chunk_start.numel()

    def to(self, device: torch.device | str) -> "AppnpPlan":
        """The same plan with its tensors on ``device`` (host copies from pinned memory, not blocking)."""
        from fastleading.engine import transfer

        move = {name: transfer.to_device(getattr(self, name), device)
                for name in ("light_order", "heavy_rows", "chunk_ptr", "chunk_start", "chunk_end")}
        return dataclasses.replace(self, **move)


def default_heavy_threshold(rowptr: torch.Tensor) -> int:
    """16x the mean degree (at least 32): a light row tile then costs at most ~16x an average one."""
    n = rowptr.numel() - 1
    mean_deg = int(rowptr[-1]) / max(n, 1)
    return max(32, 16 * math.ceil(mean_deg))


def build_appnp_plan(rowptr: torch.Tensor, heavy_threshold: int | None = None,
                     chunk_size: int | None = None) -> AppnpPlan:
    """Partition the rows of the CSR graph ``rowptr`` (int64 ``[N+1]``) for :func:`fused_appnp_step`.

    ``heavy_threshold`` defaults to :func:`default_heavy_threshold`; ``chunk_size`` (nonzeros
    per heavy-row program) to 8x the threshold, which about matches the loop length of a
    light tile since a heavy program gathers 8-32 nonzeros per step.
    """
    thr = default_heavy_threshold(rowptr) if heavy_threshold is None else int(heavy_threshold)
    chunk = 8 * thr if chunk_size is None else int(chunk_size)
    if thr < 0 or chunk < 1:
        raise ValueError(f"heavy_threshold must be >= 0 and chunk_size >= 1, got {thr}, {chunk}")
    n = rowptr.numel() - 1
    deg = rowptr[1:] - rowptr[:-1]
    order = torch.argsort(deg, descending=True, stable=True)
    n_heavy = int((deg > thr).sum())
    heavy_rows = order[:n_heavy].contiguous()
    light_order = order[n_heavy:].to(torch.int32 if n < 2**31 else torch.int64)
    chunks_per_row = (deg[heavy_rows] + chunk - 1) // chunk
    chunk_ptr = torch.zeros(n_heavy + 1, dtype=torch.int64, device=rowptr.device)
    torch.cumsum(chunks_per_row, 0, out=chunk_ptr[1:])
    owner = torch.repeat_interleave(torch.arange(n_heavy, device=rowptr.device), chunks_per_row)
    index_in_row = torch.arange(owner.numel(), device=rowptr.device) - chunk_ptr[owner]
    chunk_start = rowptr[heavy_rows][owner] + index_in_row * chunk
    chunk_end = torch.minimum(chunk_start + chunk, rowptr[heavy_rows + 1][owner])
    return AppnpPlan(n, light_order, heavy_rows, chunk_ptr, chunk_start, chunk_end, thr, chunk)


def partial_buffer(plan: AppnpPlan, n_cols: int, device: torch.device) -> torch.Tensor | None:
    """The fp32 ``[K, C]`` scratch of heavy-row partial sums (None when the graph has no heavy row)."""
    if plan.num_chunks == 0:
        return None
    return torch.empty(plan.num_chunks, n_cols, dtype=torch.float32, device=device)


def fused_appnp_step(plan: AppnpPlan, rowptr: torch.Tensor, col: torch.Tensor, dinv: torch.Tensor,
                     x: torch.Tensor, x_in: torch.Tensor, alpha: float, out: torch.Tensor,
                     partial: torch.Tensor | None = None) -> torch.Tensor:
    """Launch the fused step ``out = (1-a) Â x + a x_in``; returns ``out``.

    Args:
        plan: :func:`build_appnp_plan` of ``rowptr``.
        rowptr: int64 ``[N+1]``; col: int32/int64 ``[E]`` (no self loops).
        dinv: fp32 ``[N]``, ``1/sqrt(deg+1)``.
        x, x_in, out: ``[N, C]`` with unit stride along C; out must not overlap x or x_in.
        partial: :func:`partial_buffer` to reuse (allocated here when None and needed).
    """
    n, n_cols = x.shape
    if n == 0 or n_cols == 0:
        return out
    block_c = min(triton.next_power_of_2(n_cols), _MAX_BLOCK_C)
    grid_c = triton.cdiv(n_cols, block_c)
    alpha = float(alpha)
    if plan.num_chunks:
        partial = partial_buffer(plan, n_cols, x.device) if partial is None else partial
        block_e = max(8, min(32, _HEAVY_TILE // block_c))
        _appnp_heavy_partial_kernel[(plan.num_chunks, grid_c)](
            col, dinv, x, plan.chunk_start, plan.chunk_end, partial, n_cols, x.stride(0),
            BLOCK_E=block_e, BLOCK_C=block_c)
    n_light = plan.light_order.numel()
    if n_light:
        aligned = x.stride(0) % 16 == 0 and x_in.stride(0) % 16 == 0 and out.stride(0) % 16 == 0
        rows = max(8, min(64, (_LIGHT_TILE if aligned else _LIGHT_TILE_UNALIGNED) // block_c))
        _appnp_light_kernel[(triton.cdiv(n_light, rows), grid_c)](
            rowptr, col, dinv, plan.light_order, x, x_in, out, n_light, n_cols,
            x.stride(0), x_in.stride(0), out.stride(0), alpha, ROWS=rows, BLOCK_C=block_c)
    if plan.num_chunks:
        _appnp_heavy_finish_kernel[(plan.heavy_rows.numel(), grid_c)](
            plan.heavy_rows, plan.chunk_ptr, partial, dinv, x, x_in, out, n_cols,
            x.stride(0), x_in.stride(0), out.stride(0), alpha, BLOCK_C=block_c)
    return out
