"""Graph and memory-bank operations of the trainer, dispatched to Triton or PyTorch.

Public ops (all dispatch on the backend, see :func:`set_backend`):

- :func:`gcn_dinv`: ``1/sqrt(deg+1)`` of ``Â = D̃^{-1/2} (A+I) D̃^{-1/2}``.
- :func:`appnp_step` / :func:`appnp_iterate`: ``x <- (1-a) Â x + a x_in`` (eq. 5 of the
  paper), once or ``L`` times with two ping-pong buffers. ``Â`` is symmetric, so the
  implicit backward (eq. 7) calls the same ops on the gradient.
- :func:`bank_gather` / :func:`bank_scatter`: rows of the memory bank in and out, the
  scatter also writing the staleness stamps.

Backends: ``"torch"`` runs the vectorised PyTorch references below (``*_reference``,
fp32 accumulation); ``"triton"`` runs :mod:`fastleading.kernels` (CUDA tensors, or CPU
tensors under ``TRITON_INTERPRET=1``); ``"native"`` runs the multi-threaded C++ APPNP step
of ``fastleading._native`` (kernels/appnp.cpp) on CPU tensors, bitwise equal to the
reference, and the references for the bank ops; ``"auto"`` (default) picks Triton for CUDA
tensors when Triton imports, the native APPNP step for CPU tensors when the module has
it, and the reference otherwise. float64 inputs (exact-gradient tests) always take the
reference. The ops are not differentiable (they run inside the implicit layer's custom
autograd function).

Indices (``col``, bank ``ids``) are trusted to be in range on CUDA: checking them would
synchronise the device. CPU inputs are checked.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import weakref
from collections import OrderedDict
from collections.abc import Iterator

import torch

from fastleading.errors import FastleadingError

BACKENDS = ("auto", "triton", "torch", "native")
_backend = "auto"

# Per-graph cache of the Triton work partition and of dinv, keyed by the rowptr tensor
# object (id + weakref + version counter, so a freed or modified rowptr never hits).
_PLAN_CACHE_SIZE = 8
_plan_cache: OrderedDict[int, tuple[weakref.ref, int, object]] = OrderedDict()

# Edges per chunk of the reference's gather/scatter-add, bounding its [chunk, C] message buffer.
_REFERENCE_EDGE_CHUNK = 1 << 20


# ----------------------------------------------------------------------------- backend
def set_backend(name: str) -> None:
    """Select the kernel backend: ``"auto"``, ``"triton"``, ``"torch"`` or ``"native"``."""
    global _backend
    if name not in BACKENDS:
        raise FastleadingError(f"kernel backend {name!r} is unknown: expected one of {', '.join(BACKENDS)}")
    _backend = name


def get_backend() -> str:
    """The backend selected by :func:`set_backend` (``"auto"`` unless changed)."""
    return _backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager: run the enclosed ops with backend ``name``, then restore the previous one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


@functools.lru_cache(maxsize=1)
def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _use_triton(t: torch.Tensor) -> bool:
    """Whether the op on tensor ``t`` runs the Triton kernel under the current backend.

    float64 always takes the PyTorch reference (the kernels accumulate in fp32); so does
    every op under ``"native"`` that has no native kernel (the bank ops).
    """
    if _backend in ("torch", "native") or t.dtype == torch.float64:
        return False
    if _backend == "auto":
        return t.is_cuda and _triton_importable()
    if not _triton_importable():
        raise FastleadingError("kernel backend 'triton' needs the triton package: pip install triton")
    if not t.is_cuda and not _interpreter_on():
        raise FastleadingError(f"kernel backend 'triton' got {t.device.type} tensors: it needs CUDA tensors, "
                               "or TRITON_INTERPRET=1 set before start-up to interpret the kernels on CPU")
    return True


@functools.lru_cache(maxsize=1)
def _native_appnp():
    """``fastleading._native.appnp_step``, or None when the built module predates it (or is missing)."""
    try:
        from fastleading import _native
    except ImportError:
        return None
    return getattr(_native, "appnp_step", None)


def _appnp_backend(x: torch.Tensor) -> str:
    """Which implementation runs the APPNP ops on ``x``: ``"triton"``, ``"native"`` or ``"torch"``.

    ``"auto"``: Triton on CUDA, the native step on CPU (fp32/bf16/fp16), the reference when
    the native module lacks it. ``"native"`` on CUDA tensors, or without the module, raises.
    """
    if _use_triton(x):
        return "triton"
    if _backend not in ("auto", "native") or x.dtype == torch.float64:
        return "torch"
    if x.is_cuda or x.device.type != "cpu":
        if _backend == "native":
            raise FastleadingError(f"kernel backend 'native' got {x.device.type} tensors: it runs on CPU tensors")
        return "torch"
    if _native_appnp() is None:
        if _backend == "native":
            raise FastleadingError("kernel backend 'native': fastleading._native has no appnp_step; rebuild it "
                                   "(pip install --no-build-isolation -e .)")
        return "torch"
    return "native"


# ----------------------------------------------------------------------------- validation
def _checks_index_values(t: torch.Tensor) -> bool:
    """Whether the index values in ``t`` are range-checked: on the CPU yes; on a GPU the check
    would read device values back to the host (a synchronisation), so kernels trust them."""
    return not t.is_cuda


def _check_graph(rowptr: torch.Tensor, col: torch.Tensor, n: int, dinv: torch.Tensor | None) -> None:
    if rowptr.dtype != torch.int64 or rowptr.dim() != 1 or rowptr.numel() != n + 1:
        raise ValueError(f"rowptr must be int64 [N+1] = [{n + 1}], got {rowptr.dtype} {list(rowptr.shape)}")
    if col.dtype not in (torch.int32, torch.int64) or col.dim() != 1:
        raise ValueError(f"col must be int32/int64 [E], got {col.dtype} {list(col.shape)}")
    if rowptr.device != col.device:
        raise ValueError(f"rowptr on {rowptr.device} but col on {col.device}")
    if _checks_index_values(col) and col.numel() and (int(col.min()) < 0 or int(col.max()) >= n):
        raise IndexError(f"col has entries outside [0, {n})")
    if dinv is not None and (dinv.shape != (n,) or dinv.device != rowptr.device):
        raise ValueError(f"dinv must be [{n}] on {rowptr.device}, got {list(dinv.shape)} on {dinv.device}")


def _check_features(x: torch.Tensor, x_in: torch.Tensor, rowptr: torch.Tensor) -> None:
    # float64 is accepted by the PyTorch reference only (exact-gradient tests); kernels take the rest.
    floats = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
    if x.dim() != 2 or x.dtype not in floats or x_in.dtype not in floats:
        raise ValueError(f"x and x_in must be fp32/bf16/fp16/fp64 [N, C], got {x.dtype} {list(x.shape)}, {x_in.dtype}")
    if x_in.shape != x.shape:
        raise ValueError(f"x_in shape {list(x_in.shape)} differs from x shape {list(x.shape)}")
    if not (x.device == x_in.device == rowptr.device):
        raise ValueError(f"x on {x.device}, x_in on {x_in.device}, graph on {rowptr.device}")


def _byte_span(t: torch.Tensor) -> tuple[int, int]:
    """``[first, last + 1)`` byte addresses a non-empty tensor ``t`` can touch (strides are >= 0)."""
    last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))
    return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()


def _check_rows_disjoint(t: torch.Tensor, name: str) -> None:
    """A ``[N, C]`` tensor written row by row (in parallel) must not have rows that share memory:
    an expanded (stride-0) view, or rows closer than their width."""
    if t.dim() == 2 and t.shape[0] > 1 and t.shape[1] and t.stride(0) < t.shape[1]:
        raise ValueError(f"{name} rows overlap (row stride {t.stride(0)} < width {t.shape[1]}, e.g. an expanded "
                         "view): it must be a tensor whose rows are distinct memory")


def _check_out(out: torch.Tensor, like: torch.Tensor, *no_overlap: torch.Tensor) -> None:
    if out.shape != like.shape or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(f"out must be {like.dtype} {list(like.shape)} on {like.device}, "
                         f"got {out.dtype} {list(out.shape)} on {out.device}")
    if out.numel() and out.stride(-1) != 1:
        raise ValueError("out must have unit stride along its last dim")
    _check_rows_disjoint(out, "out")
    _check_no_overlap(out, *no_overlap)


def _check_no_overlap(out: torch.Tensor, *inputs: torch.Tensor) -> None:
    """``out`` must not share memory with an input: compared by the address ranges they span, so
    that another storage object over the same memory (a numpy round trip, ``from_blob``) is caught
    too (conservatively: interleaved views of one buffer count as sharing)."""
    if not out.numel():
        return
    lo, hi = _byte_span(out)
    for t in inputs:
        if t.numel() and t.device == out.device:
            t_lo, t_hi = _byte_span(t)
            if lo < t_hi and t_lo < hi:
                raise ValueError("out must not share memory with the inputs")


def _check_ids(ids: torch.Tensor, num_rows: int) -> None:
    if ids.dtype != torch.int64 or ids.dim() != 1:
        raise ValueError(f"ids must be int64 [M], got {ids.dtype} {list(ids.shape)}")
    if _checks_index_values(ids) and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_rows):
        raise IndexError(f"ids has entries outside [0, {num_rows})")


def _device_of(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it ``t``'s."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _rows_unit_stride(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _native_takes(x: torch.Tensor, x_in: torch.Tensor) -> bool:
    """Whether the native step computes the reference's result for these dtypes: x_in must have
    x's dtype, or x is fp32 (x_in is then cast to fp32, as the reference does)."""
    return x_in.dtype == x.dtype or x.dtype == torch.float32


def _native_operands(rowptr: torch.Tensor, col: torch.Tensor, x_in: torch.Tensor, dinv: torch.Tensor | None,
                     dtype: torch.dtype) -> tuple:
    """(rowptr, col, x_in, dinv) as the native step takes them for features of ``dtype``
    (see :func:`_native_takes`)."""
    x_in = x_in.to(dtype)
    if dinv is not None:
        dinv = dinv.to(torch.float32).contiguous()
    return rowptr.contiguous(), col.contiguous(), _rows_unit_stride(x_in).detach(), dinv


def _native_step(operands: tuple, x: torch.Tensor, alpha: float, out: torch.Tensor) -> torch.Tensor:
    rowptr, col, x_in, dinv = operands
    _native_appnp()(rowptr, col, _rows_unit_stride(x).detach(), x_in, float(alpha), out.detach(), dinv,
                    torch.get_num_threads())
    return out


# ----------------------------------------------------------------------------- APPNP
def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the APPNP ops accumulate ``x`` in: float64 for float64, else fp32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


ROW_ALIGN_ELEMENTS = 16
"""The native step's vector width (one AVX-512 vector of fp32; 16 fp32 = one 64-byte cache line)."""
HUGE_PAGE_BYTES = 2 << 20
HUGE_PAGE_MIN_BYTES = 16 << 20
"""CPU feature matrices from this size up are put on transparent huge pages (:func:`empty_rows`)."""


def huge_page_empty(nbytes: int, dtype: torch.dtype) -> torch.Tensor | None:
    """An uninitialised 1-D CPU tensor of ``nbytes`` on anonymous memory advised for transparent
    huge pages (``MADV_HUGEPAGE``; the base 2 MiB aligned), or None where the platform has no such
    advice. PyTorch's allocator leaves its memory on 4 KiB pages unless the machine's THP mode is
    ``always``: random row gathers from a matrix of hundreds of MB then miss the TLB on almost
    every row. The memory is unmapped when the last tensor viewing it is freed. None too where
    the kernel refuses the advice (built without transparent huge pages: ``EINVAL``)."""
    if not hasattr(mmap, "MADV_HUGEPAGE") or nbytes <= 0:
        return None
    region = mmap.mmap(-1, nbytes + HUGE_PAGE_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        region.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # EINVAL: a kernel built without transparent huge pages
        region.close()
        return None
    raw = torch.frombuffer(region, dtype=torch.uint8)  # the tensor keeps the mapping alive
    offset = (-raw.data_ptr()) % HUGE_PAGE_BYTES
    return raw[offset:offset + nbytes].view(dtype)


def empty_rows(num_rows: int, num_cols: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """An uninitialised ``[num_rows, num_cols]`` feature matrix in the layout the native CPU step
    gathers fastest. On the CPU each row is padded to a multiple of :data:`ROW_ALIGN_ELEMENTS`
    elements (a view of the first ``num_cols`` columns, base aligned to 64 bytes): a gathered fp32
    row of 47 features then covers exactly 3 cache lines instead of 3 or 4 (a bf16 one 2 instead
    of 2 or 3), for at most 15 elements of padding per row; and a matrix of at least
    :data:`HUGE_PAGE_MIN_BYTES` lives on transparent huge pages (:func:`huge_page_empty`). Other
    devices get a contiguous tensor from their allocator."""
    device = torch.device(device)
    if device.type != "cpu":
        return torch.empty(num_rows, num_cols, dtype=dtype, device=device)
    width = num_cols + (-num_cols) % ROW_ALIGN_ELEMENTS
    nbytes = num_rows * width * torch.empty(0, dtype=dtype).element_size()
    flat = huge_page_empty(nbytes, dtype) if nbytes >= HUGE_PAGE_MIN_BYTES else None
    if flat is None:
        flat = torch.empty(num_rows * width, dtype=dtype)
    return flat.view(num_rows, width)[:, :num_cols]


def gcn_dinv(rowptr: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[N]`` = ``1/sqrt(deg+1)`` in ``dtype`` for the CSR ``rowptr`` (int64 ``[N+1]``); +1 is
    the self loop. float64 inputs need a float64 ``dinv`` (see :func:`accumulation_dtype`)."""
    return (rowptr[1:] - rowptr[:-1] + 1).to(dtype).rsqrt()


def _triton_plan(rowptr: torch.Tensor):
    """Cached ``(AppnpPlan, dinv)`` of the graph ``rowptr`` (built from ``rowptr`` itself, which
    reads device values, unless :func:`prepare_graph` built it first)."""
    from fastleading.kernels.appnp import build_appnp_plan

    key = id(rowptr)
    hit = _plan_cache.get(key)
    if hit is not None and hit[0]() is rowptr and hit[1] == rowptr._version:
        _plan_cache.move_to_end(key)
        return hit[2]
    return _cache_plan(rowptr, build_appnp_plan(rowptr))


def _cache_plan(rowptr: torch.Tensor, plan) -> tuple:
    entry = (plan, gcn_dinv(rowptr))
    _plan_cache[id(rowptr)] = (weakref.ref(rowptr), rowptr._version, entry)
    _plan_cache.move_to_end(id(rowptr))
    while len(_plan_cache) > _PLAN_CACHE_SIZE:
        _plan_cache.popitem(last=False)
    return entry


def prepare_graph(rowptr: torch.Tensor, host_rowptr: torch.Tensor) -> None:
    """Build and cache the Triton work partition of the graph ``rowptr`` from ``host_rowptr``,
    its copy on the CPU, so that no device value is read (building it from a CUDA ``rowptr``
    reads degrees back to the host). Call it where a graph is made, e.g. for each sampled
    subgraph; a no-op when the Triton kernels will not run on ``rowptr``'s device."""
    if rowptr.numel() < 2 or not _use_triton(rowptr):
        return
    from fastleading.kernels.appnp import build_appnp_plan

    _cache_plan(rowptr, build_appnp_plan(host_rowptr.cpu()).to(rowptr.device))


def appnp_step_reference(rowptr: torch.Tensor, col: torch.Tensor, x: torch.Tensor, x_in: torch.Tensor,
                         alpha: float, dinv: torch.Tensor | None = None,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """PyTorch reference of :func:`appnp_step` (index_select + index_add_ over edge chunks; fp32
    accumulation, fp64 for fp64 inputs)."""
    n = x.shape[0]
    acc = accumulation_dtype(x)
    dinv = gcn_dinv(rowptr, acc) if dinv is None else dinv.to(acc)
    row = torch.repeat_interleave(torch.arange(n, device=x.device), rowptr[1:] - rowptr[:-1])
    col = col.long()
    xf = x.to(acc)
    agg = dinv[:, None] * xf  # the self loop's dinv[i] * x[i]
    for begin in range(0, col.numel(), _REFERENCE_EDGE_CHUNK):
        c = col[begin:begin + _REFERENCE_EDGE_CHUNK]
        agg.index_add_(0, row[begin:begin + _REFERENCE_EDGE_CHUNK], xf.index_select(0, c) * dinv[c, None])
    res = (1.0 - alpha) * dinv[:, None] * agg + alpha * x_in.to(acc)
    if out is None:
        return res.to(x.dtype)
    return out.copy_(res)


def appnp_step(rowptr: torch.Tensor, col: torch.Tensor, x: torch.Tensor, x_in: torch.Tensor, alpha: float,
               dinv: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """One APPNP step ``out = (1-a) Â x + a x_in`` with ``Â = D̃^{-1/2} (A+I) D̃^{-1/2}``.

    Args:
        rowptr: int64 ``[N+1]``; col: int32/int64 ``[E]``, the CSR of A without self loops
            (the self loop is folded in).
        x, x_in: ``[N, C]`` fp32/bf16/fp16 (accumulation in fp32).
        alpha: teleport weight ``a``.
        dinv: ``[N]`` from :func:`gcn_dinv` (computed, and cached per graph, when None); fp32,
            or float64 for float64 inputs.
        out: ``[N, C]`` of x's dtype, not sharing memory with x or x_in (allocated when None).
    Returns:
        out.
    """
    _check_features(x, x_in, rowptr)
    backend = _appnp_backend(x)
    native = backend == "native" and _native_takes(x, x_in)
    # The native step checks col itself (while gathering): a separate pass over it would cost
    # a few percent of the step.
    _check_graph(rowptr, col[:0] if native else col, x.shape[0], dinv)
    if out is not None:
        _check_out(out, x, x, x_in)
    if native:
        out = torch.empty_like(x, memory_format=torch.contiguous_format) if out is None else out
        return _native_step(_native_operands(rowptr, col, x_in, dinv, x.dtype), x, alpha, out)
    if backend != "triton":
        return appnp_step_reference(rowptr, col, x, x_in, alpha, dinv, out)
    from fastleading.kernels.appnp import fused_appnp_step

    plan, cached_dinv = _triton_plan(rowptr)
    dinv = cached_dinv if dinv is None else dinv.to(torch.float32).contiguous()
    out = torch.empty_like(x, memory_format=torch.contiguous_format) if out is None else out
    with _device_of(x):
        return fused_appnp_step(plan, rowptr, col.contiguous(), dinv, _rows_unit_stride(x),
                                _rows_unit_stride(x_in), alpha, out)


def appnp_iterate(rowptr: torch.Tensor, col: torch.Tensor, x0: torch.Tensor, x_in: torch.Tensor, alpha: float,
                  num_iters: int, dinv: torch.Tensor | None = None) -> torch.Tensor:
    """``num_iters`` APPNP steps from ``x0`` (shapes and dtypes as :func:`appnp_step`).

    Two ping-pong buffers of x0's shape are the only allocations (one when ``num_iters``
    is 1; the Triton path adds one fp32 scratch for the partial sums of heavy rows, the
    native path the fp32 ``dinv``); x0 and x_in are not modified. Returns a new tensor (a
    copy of x0 when ``num_iters`` is 0). On the native path the buffers have padded rows
    (:func:`empty_rows`), so the result may be a non-contiguous view with unit column stride.
    """
    if num_iters < 0:
        raise ValueError(f"num_iters must be >= 0, got {num_iters}")
    _check_features(x0, x_in, rowptr)
    backend = _appnp_backend(x0)
    native = backend == "native" and _native_takes(x0, x_in)
    _check_graph(rowptr, col[:0] if native else col, x0.shape[0], dinv)
    if num_iters == 0:
        return x0.clone()
    def buffer() -> torch.Tensor:  # the native step gathers its iterates from rows padded to 64 bytes
        if native:
            return empty_rows(x0.shape[0], x0.shape[1], x0.dtype, x0.device)
        return torch.empty_like(x0, memory_format=torch.contiguous_format)

    buffers = [buffer() for _ in range(min(num_iters, 2))]
    if native:
        # dinv once for all steps (the native step would compute it at every step).
        operands = _native_operands(rowptr, col, x_in, gcn_dinv(rowptr) if dinv is None else dinv, x0.dtype)

        def step(src: torch.Tensor, dst: torch.Tensor) -> None:
            _native_step(operands, src, alpha, dst)
    elif backend == "triton":
        from fastleading.kernels.appnp import fused_appnp_step, partial_buffer

        plan, cached_dinv = _triton_plan(rowptr)
        dinv = cached_dinv if dinv is None else dinv.to(torch.float32).contiguous()
        col = col.contiguous()
        x_in = _rows_unit_stride(x_in)
        partial = partial_buffer(plan, x0.shape[1], x0.device)

        def step(src: torch.Tensor, dst: torch.Tensor) -> None:
            fused_appnp_step(plan, rowptr, col, dinv, src, x_in, alpha, dst, partial)
    else:
        dinv = gcn_dinv(rowptr, accumulation_dtype(x0)) if dinv is None else dinv

        def step(src: torch.Tensor, dst: torch.Tensor) -> None:
            appnp_step_reference(rowptr, col, src, x_in, alpha, dinv, dst)

    src = _rows_unit_stride(x0)
    with _device_of(x0):
        for it in range(num_iters):
            dst = buffers[it % 2]
            step(src, dst)
            src = dst
    return src


# ----------------------------------------------------------------------------- memory bank
def bank_gather_reference(bank: torch.Tensor, ids: torch.Tensor, out: torch.Tensor | None = None,
                          out_offset: int = 0) -> torch.Tensor:
    """PyTorch reference of :func:`bank_gather` (index_select)."""
    rows = bank.index_select(0, ids)
    if out is None:
        return rows
    out[out_offset:out_offset + ids.numel()].copy_(rows)
    return out


def bank_scatter_reference(bank: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor,
                           stamps: torch.Tensor | None = None, step: int = 0) -> None:
    """PyTorch reference of :func:`bank_scatter`: dedup ids keeping each id's last position, then index_copy_."""
    if ids.numel() == 0:
        return
    unique_ids, inverse = torch.unique(ids, return_inverse=True)
    positions = torch.arange(ids.numel(), device=ids.device)
    last = torch.full((unique_ids.numel(),), -1, dtype=torch.int64, device=ids.device)
    last.scatter_reduce_(0, inverse, positions, "amax")
    bank.index_copy_(0, unique_ids, rows[last].to(bank.dtype))
    if stamps is not None:
        stamps.index_fill_(0, unique_ids, step)


def _check_bank(bank: torch.Tensor, ids: torch.Tensor) -> None:
    if bank.dim() != 2:
        raise ValueError(f"bank must be [N, d], got {list(bank.shape)}")
    if bank.device != ids.device:
        raise ValueError(f"bank on {bank.device} but ids on {ids.device}")
    _check_ids(ids, bank.shape[0])


def bank_gather(bank: torch.Tensor, ids: torch.Tensor, out: torch.Tensor | None = None,
                out_offset: int = 0) -> torch.Tensor:
    """Rows ``bank[ids]`` into ``out[out_offset:out_offset+M]`` (cast to out's dtype).

    Args:
        bank: ``[N, d]`` (bf16/fp16/fp32); ids: int64 ``[M]``.
        out: ``[>= out_offset+M, d]`` with unit stride along d, e.g. the subgraph feature
            matrix whose first rows hold the targets; a new ``[M, d]`` tensor of bank's dtype when None.
    Returns:
        out.
    """
    _check_bank(bank, ids)
    m = ids.numel()
    if out is None:
        if out_offset != 0:
            raise ValueError("out_offset needs an out tensor")
        out = torch.empty(m, bank.shape[1], dtype=bank.dtype, device=bank.device)
    elif (out.dim() != 2 or out.shape[1] != bank.shape[1] or out.device != bank.device
          or out_offset < 0 or out_offset + m > out.shape[0]):
        raise ValueError(f"out {list(out.shape)} on {out.device} cannot take {m} rows of width "
                         f"{bank.shape[1]} at offset {out_offset}")
    if out.numel() and out.stride(1) != 1:
        raise ValueError("out must have unit stride along its last dim")
    _check_rows_disjoint(out, "out")
    _check_no_overlap(out[out_offset:out_offset + m], bank)
    if not _use_triton(bank):
        return bank_gather_reference(bank, ids, out, out_offset)
    from fastleading.kernels.bank import gather_rows

    with _device_of(bank):
        gather_rows(_rows_unit_stride(bank), ids.contiguous(), out[out_offset:out_offset + m])
    return out


def bank_scatter(bank: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, stamps: torch.Tensor | None = None,
                 step: int = 0) -> None:
    """``bank[ids] = rows`` (cast to bank's dtype) and ``stamps[ids] = step`` in the same pass.

    Args:
        bank: ``[N, d]`` (bf16/fp16/fp32), unit stride along d; updated in place.
        ids: int64 ``[M]``. Duplicates are allowed: the LAST occurrence of an id wins.
        rows: ``[M, d]`` (any float dtype).
        stamps: integer ``[N]`` (e.g. the step each row was last refreshed) or None.
        step: value written to ``stamps[ids]``.
    """
    _check_bank(bank, ids)
    if rows.dim() != 2 or rows.shape != (ids.numel(), bank.shape[1]) or rows.device != bank.device:
        raise ValueError(f"rows must be [{ids.numel()}, {bank.shape[1]}] on {bank.device}, "
                         f"got {list(rows.shape)} on {rows.device}")
    if stamps is not None and (stamps.shape != (bank.shape[0],) or stamps.device != bank.device
                               or stamps.dtype.is_floating_point or stamps.stride(0) != 1):
        raise ValueError(f"stamps must be a contiguous integer [{bank.shape[0]}] tensor on {bank.device}, "
                         f"got {stamps.dtype} {list(stamps.shape)} on {stamps.device}")
    if bank.numel() and bank.stride(1) != 1:
        raise ValueError("bank must have unit stride along its last dim")
    _check_rows_disjoint(bank, "bank")
    if not _use_triton(bank):
        bank_scatter_reference(bank, ids, rows, stamps, step)
        return
    from fastleading.kernels.bank import scatter_rows

    with _device_of(bank):
        scatter_rows(bank, ids.contiguous(), _rows_unit_stride(rows), stamps, step)
