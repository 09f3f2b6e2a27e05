"""Microbenchmarks of the Triton kernels: the fused APPNP step and the memory-bank gather/scatter.

APPNP step ``out = (1-a) Â x + a x_in`` on power-law graphs of ogbn-arxiv and ogbn-products
size (:mod:`fastleading.bench.graphs`) and on the real PubMed citation graph, at several
widths and dtypes, against

- (a) ``torch.addmm(x_in, Â, x, beta=a, alpha=1-a)`` with ``Â`` a torch CSR tensor whose
  normalised weights (self loops included) are precomputed: cuSPARSE SpMM plus the axpy;
- (b) torch_geometric's ``APPNP(K=1, cached=True)`` on ``edge_index`` (``x_in = x``).

Bank: gather (``out = bank[ids]``) and scatter (``bank[ids] = rows``, stamps written too)
of 8k/64k/512k rows of width 384/768/1024 in a 2.45M-row bf16 bank, against
``torch.index_select`` and ``index_copy_`` (with and without the stamps' ``index_fill_``).

Every figure is reported as time (median, 20th/80th percentile of ``triton.testing.do_bench``,
which flushes L2 between runs), GB/s under the compulsory-traffic model of
:data:`BANDWIDTH_MODEL`, % of the device-to-device copy bandwidth measured in the same
run, and speedup over the baseline. Results go to ``<out-dir>/<name>-<device>-<date>.json``.

``--toy`` runs tiny sizes end to end (on CPU under ``TRITON_INTERPRET=1``) only to prove the
pipeline works: those files say ``"interpreter": true`` and hold no performance number.

``--cpu`` is the CPU mode (no Triton): the native fused APPNP step (``ops.appnp_step`` on
the ``"native"`` backend, kernels/appnp.cpp) on a power-law graph of 500k nodes and 25M
directed edges (:data:`fastleading.bench.graphs.CPU_SIZES`), on ``--threads`` threads (2),
at widths 47 and 128, against ``torch.sparse.mm`` on a CSR ``Â`` plus the axpy, ``addmm``
on the same ``Â``, the PyTorch reference (``"torch"`` backend) and torch_sparse's
``matmul`` where it imports. The implementations run round-robin, ``--reps`` rounds after
one warm-up call each (the slow reference ``--ref-reps`` times, without warm-up), so a
machine shared with other jobs slows them alike; each gets its median wall time (and
process CPU time), GB/s under :data:`BANDWIDTH_MODEL` and the speedups of the native step.
The result goes to ``benchmarks/results/appnp-cpu-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch

from fastleading.bench import graphs
from fastleading.engine import ops
from fastleading.errors import FastleadingError
from fastleading.run.io import atomic_write_text

BANDWIDTH_MODEL = (
    "Compulsory traffic: the bytes any implementation must move at least once. "
    "APPNP: rowptr 8(N+1) + col E*s_col + dinv 4N + x N*C*s + x_in N*C*s + out N*C*s; the gather re-reads "
    "x once per nonzero, mostly from L2, and that traffic is not counted, so the figure is an effective "
    "bandwidth to compare with the copy ceiling. Bank gather: ids 8M + read M*d*s + write M*d*s; scatter: "
    "the same plus stamps 8M. GBps = bytes / time; pct_of_copy = GBps / copy_GBps, the device-to-device "
    "copy bandwidth (2 * bytes / time of a 1 GiB copy_) measured in the same run."
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
GiB = 1 << 30

# Full-size defaults, and toy ones: a few hundred rows, a feature width of two tiles, hubs
# above the heavy-row threshold, so that the CPU interpreter runs every kernel in about a minute.
FULL = {"widths": [47, 128, 768], "bank_widths": [384, 768, 1024], "bank_rows": [8_192, 65_536, 524_288]}
TOY = {"widths": [47, 200], "bank_widths": [384], "bank_rows": [64, 512]}
TOY_GRAPHS = {"arxiv": graphs.GraphSize(300, 1_500, 120), "products": graphs.GraphSize(400, 3_000, 200)}
TOY_PUBMED_NODES = 500
TOY_BANK_SIZE = 3_000
# The CPU mode (--cpu): its graph, widths and dtypes; --toy shrinks the graph.
CPU_DEFAULTS = {"graphs": ["powerlaw-500k"], "widths": [47, 128], "dtypes": ["fp32"]}
GPU_DEFAULTS = {"graphs": ["arxiv", "products", "pubmed"], "dtypes": ["fp32", "bf16"]}
TOY_GRAPHS["powerlaw-500k"] = graphs.GraphSize(2_000, 30_000, 600)


def add_kernel_bench_args(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastleading bench kernels`` / ``benchmarks/bench_kernels.py``."""
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    strs = lambda s: [v for v in s.split(",") if v]  # noqa: E731
    parser.add_argument("--toy", action="store_true",
                        help="tiny sizes (the only mode on CPU, under the Triton interpreter); not a performance run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cpu", action="store_true",
                        help="CPU mode: the native APPNP step against torch.sparse.mm (CSR), the PyTorch reference "
                             "and torch_sparse (no Triton); with --toy a tiny graph")
    parser.add_argument("--threads", type=int, default=2, help="--cpu: torch threads (the native step uses as many)")
    parser.add_argument("--reps", type=int, default=5, help="--cpu: timed round-robin rounds")
    parser.add_argument("--ref-reps", type=int, default=1, help="--cpu: timed calls of the slow PyTorch reference")
    parser.add_argument("--out-dir", default=None,
                        help="where the JSON goes (default: benchmarks/results on CUDA and for --cpu, "
                             "a temp dir for --toy on CPU)")
    parser.add_argument("--name", default=None, help="file name prefix (default kernels; appnp for --cpu)")
    parser.add_argument("--graphs", type=strs,
                        help="comma list of arxiv, products, powerlaw-500k (power-law synthetic of that size), "
                             f"pubmed (real); default {GPU_DEFAULTS['graphs']}, --cpu {CPU_DEFAULTS['graphs']}")
    parser.add_argument("--widths", type=ints, help=f"APPNP feature widths (default {FULL['widths']}, toy "
                                                    f"{TOY['widths']}, --cpu {CPU_DEFAULTS['widths']})")
    parser.add_argument("--dtypes", type=strs, help=f"APPNP feature dtypes (default {GPU_DEFAULTS['dtypes']}, "
                                                    f"--cpu {CPU_DEFAULTS['dtypes']})")
    parser.add_argument("--alpha", type=float, default=0.1, help="APPNP teleport weight")
    parser.add_argument("--bank-ops", type=strs, default=["gather", "scatter"])
    parser.add_argument("--bank-rows", type=ints,
                        help=f"rows per gather/scatter (default {FULL['bank_rows']}, toy {TOY['bank_rows']})")
    parser.add_argument("--bank-widths", type=ints, help=f"default {FULL['bank_widths']}, toy {TOY['bank_widths']}")
    parser.add_argument("--bank-size", type=int, help=f"rows of the bf16 bank (default "
                        f"{graphs.OGB_SIZES['products'].num_nodes}, toy {TOY_BANK_SIZE})")
    parser.add_argument("--data-dir", default=os.environ.get("FASTLEADING_DATA_DIR", "../shared/data"),
                        help="shared data folder holding pubmed-cites/")
    parser.add_argument("--skip-pyg", action="store_true", help="leave out the torch_geometric baseline")
    parser.add_argument("--warmup-ms", type=int, default=25)
    parser.add_argument("--rep-ms", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)


# ----------------------------------------------------------------------------- measuring
class Timer:
    """``do_bench`` on CUDA (median and 20/80th percentiles, L2 flushed); one wall-clock call on CPU."""

    def __init__(self, device: torch.device, warmup_ms: int, rep_ms: int):
        self.device, self.warmup_ms, self.rep_ms = device, warmup_ms, rep_ms

    def __call__(self, fn: Callable[[], object]) -> dict:
        if self.device.type == "cuda":
            from triton.testing import do_bench

            med, p20, p80 = do_bench(fn, warmup=self.warmup_ms, rep=self.rep_ms, quantiles=[0.5, 0.2, 0.8])
            return {"ms": med, "ms_p20": p20, "ms_p80": p80}
        start = time.perf_counter()
        fn()
        return {"ms": (time.perf_counter() - start) * 1e3}


def measure(timer: Timer, fn: Callable[[], object], nbytes: int, copy_gbps: float, baseline: bool = False) -> dict:
    """Time ``fn`` and express it as GB/s of ``nbytes`` and % of the copy bandwidth.

    A baseline's failure (out of memory, unsupported dtype or layout) is recorded as
    ``{"error": ...}``; a failure of our kernels propagates.
    """
    try:
        t = timer(fn)
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as e:
        if not baseline:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    return with_rates(t, nbytes, copy_gbps)


def with_rates(t: dict, nbytes: int, copy_gbps: float) -> dict:
    """A timing ``t`` (``"ms"``, ...) plus GB/s of ``nbytes`` and % of the copy bandwidth."""
    gbps = nbytes / (t["ms"] * 1e6)
    return {**t, "GBps": gbps, "pct_of_copy": 100.0 * gbps / copy_gbps}


def speedup(baseline: dict, ours: dict) -> float | None:
    return baseline["ms"] / ours["ms"] if "ms" in baseline and "ms" in ours else None


def copy_bandwidth(timer: Timer, device: torch.device, nbytes: int) -> float:
    """Device-to-device copy bandwidth in GB/s, counting read + write (``2 * nbytes / t``)."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))["ms"]
    return 2 * nbytes / (ms * 1e6)


# ----------------------------------------------------------------------------- APPNP
def normalized_csr(rowptr: torch.Tensor, col: torch.Tensor, dinv: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Â = D̃^{-1/2}(A+I)D̃^{-1/2} as a torch sparse CSR tensor (self loops inserted, columns sorted)."""
    n = rowptr.numel() - 1
    row = torch.repeat_interleave(torch.arange(n, device=rowptr.device), rowptr[1:] - rowptr[:-1])
    diag = torch.arange(n, device=rowptr.device)
    r, c = torch.cat([row, diag]), torch.cat([col.long(), diag])
    order = torch.argsort(r * n + c)
    r, c = r[order], c[order]
    index_dtype = torch.int32 if c.numel() < 2**31 else torch.int64
    crow = (rowptr + torch.arange(n + 1, device=rowptr.device)).to(index_dtype)
    values = (dinv[r] * dinv[c]).to(dtype)
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, c.to(index_dtype), values, (n, n))


def appnp_bytes(n: int, e: int, col: torch.Tensor, width: int, dtype: torch.dtype) -> int:
    s = torch.tensor([], dtype=dtype).element_size()
    return 8 * (n + 1) + e * col.element_size() + 4 * n + 3 * n * width * s


def bench_appnp_graph(name: str, rowptr: torch.Tensor, col: torch.Tensor, args, timer: Timer,
                      copy_gbps: float, device: torch.device) -> tuple[dict, list[dict]]:
    """All widths x dtypes of one graph; returns (graph record, result records)."""
    from fastleading.kernels.appnp import build_appnp_plan

    rowptr, col = rowptr.to(device), col.to(device)
    n, e = rowptr.numel() - 1, col.numel()
    deg = rowptr[1:] - rowptr[:-1]
    start = time.perf_counter()
    plan = build_appnp_plan(rowptr)
    if device.type == "cuda":
        torch.cuda.synchronize()
    graph = {"graph": name, "num_nodes": n, "num_edges": e, "max_degree": int(deg.max()),
             "mean_degree": e / max(n, 1), "isolated_nodes": int((deg == 0).sum()),
             "plan": {"heavy_threshold": plan.heavy_threshold, "chunk_size": plan.chunk_size,
                      "heavy_rows": plan.heavy_rows.numel(), "heavy_nonzeros": int(deg[plan.heavy_rows].sum()),
                      "chunks": plan.num_chunks, "build_ms_first_call": (time.perf_counter() - start) * 1e3}}
    dinv = ops.gcn_dinv(rowptr)
    row = torch.repeat_interleave(torch.arange(n, device=device), deg) if not args.skip_pyg else None
    results = []
    gen = torch.Generator(device=device).manual_seed(args.seed)
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        a_hat = normalized_csr(rowptr, col, dinv, dtype)
        for width in args.widths:
            x = torch.randn(n, width, device=device, generator=gen).to(dtype)
            x_in = torch.randn(n, width, device=device, generator=gen).to(dtype)
            out = torch.empty_like(x)
            nbytes = appnp_bytes(n, e, col, width, dtype)
            rec = {"graph": name, "width": width, "dtype": dtype_name, "compulsory_bytes": nbytes}
            with ops.use_backend("triton"):
                rec["ours"] = measure(timer, partial(ops.appnp_step, rowptr, col, x, x_in, args.alpha, dinv, out),
                                      nbytes, copy_gbps)

            rec["csr"], csr_step = bench_csr(a_hat, x, x_in, args.alpha, timer, nbytes, copy_gbps)
            if csr_step is not None:
                ref = csr_step().float()
                rec["max_abs_diff_vs_csr"] = float((out.float() - ref).abs().max())
                rec["max_abs_value"] = float(ref.abs().max())
                del ref
            rec["speedup_vs_csr"] = speedup(rec["csr"], rec["ours"])
            if not args.skip_pyg:
                assert row is not None  # built unless --skip-pyg
                rec["pyg_appnp"] = bench_pyg(row, col, x, args.alpha, timer, nbytes, copy_gbps)
                rec["speedup_vs_pyg"] = speedup(rec["pyg_appnp"], rec["ours"])
            results.append(rec)
            print(summary_line(rec), flush=True)
            del x, x_in, out
        del a_hat
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return graph, results


def sparse_mm_axpy(a_hat: torch.Tensor, x: torch.Tensor, x_in: torch.Tensor, alpha: float) -> torch.Tensor:
    """Baseline APPNP step: ``(1-a) Â x + a x_in`` as torch's SpMM followed by the axpy."""
    return torch.sparse.mm(a_hat, x).mul_(1 - alpha).add_(x_in, alpha=alpha)


def torch_sparse_axpy(matmul: Callable, a_hat, x: torch.Tensor, x_in: torch.Tensor, alpha: float) -> torch.Tensor:
    """The same with ``torch_sparse.matmul`` (passed in: torch_sparse is optional) on its SparseTensor."""
    return matmul(a_hat, x).mul_(1 - alpha).add_(x_in, alpha=alpha)


def appnp_step_on(backend: str, *args) -> torch.Tensor:
    """``ops.appnp_step(*args)`` on the kernel backend ``backend``."""
    with ops.use_backend(backend):
        return ops.appnp_step(*args)


def copy_and_stamp(bank: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, stamps: torch.Tensor) -> None:
    """Baseline bank scatter: ``index_copy_`` of the rows, then the stamps."""
    bank.index_copy_(0, ids, rows)
    stamps.index_fill_(0, ids, 1)


def bench_csr(a_hat: torch.Tensor, x: torch.Tensor, x_in: torch.Tensor, alpha: float, timer: Timer,
              nbytes: int, copy_gbps: float) -> tuple[dict, Callable[[], torch.Tensor] | None]:
    """Baseline (a): ``addmm`` (SpMM with the axpy as its beta term), else ``sparse.mm`` then the axpy.

    Returns the measurement of the first form that runs (with ``"form"``) and that form, or
    the errors of both and None.
    """
    forms = {
        "addmm": partial(torch.addmm, x_in, a_hat, x, beta=alpha, alpha=1 - alpha),
        "sparse.mm+axpy": partial(sparse_mm_axpy, a_hat, x, x_in, alpha),
    }
    errors = {}
    for form, fn in forms.items():
        rec = measure(timer, fn, nbytes, copy_gbps, baseline=True)
        if "error" not in rec:
            return {"form": form, **rec}, fn
        errors[form] = rec["error"]
    return {"error": "; ".join(f"{k}: {v}" for k, v in errors.items())}, None


def bench_pyg(row: torch.Tensor, col: torch.Tensor, x: torch.Tensor, alpha: float, timer: Timer,
              nbytes: int, copy_gbps: float) -> dict:
    """torch_geometric APPNP(K=1) on edge_index, normalisation cached (computed before timing)."""
    try:
        from torch_geometric.nn import APPNP
    except ImportError as e:
        return {"error": f"ImportError: {e}"}
    conv = APPNP(K=1, alpha=alpha, cached=True)
    edge_index = torch.stack([row, col.long()])
    with torch.no_grad():
        return measure(timer, lambda: conv(x, edge_index), nbytes, copy_gbps, baseline=True)


def summary_line(rec: dict) -> str:
    def fmt(r: dict | None) -> str:
        if r is None:
            return "-"
        return r["error"][:40] if "error" in r else f"{r['ms']:.3f} ms {r['GBps']:.0f} GB/s {r['pct_of_copy']:.0f}%"

    head = " ".join(f"{k}={rec[k]}" for k in ("graph", "op", "rows", "width", "dtype") if k in rec)
    rest = " | ".join(f"{k}: {fmt(v)}" for k, v in rec.items() if isinstance(v, dict) and ("ms" in v or "error" in v))
    return f"{head} | {rest}"


# ----------------------------------------------------------------------------- bank
def bench_bank(args, timer: Timer, copy_gbps: float, device: torch.device) -> list[dict]:
    results = []
    bank_size = args.bank_size
    gen = torch.Generator(device=device).manual_seed(args.seed)
    for width in args.bank_widths:
        bank = torch.randn(bank_size, width, device=device, generator=gen).to(torch.bfloat16)
        stamps = torch.zeros(bank_size, dtype=torch.int64, device=device)
        for m in args.bank_rows:
            move = 2 * m * width * bank.element_size()
            if "gather" in args.bank_ops:
                ids = torch.randint(0, bank_size, (m,), device=device, generator=gen)
                out = torch.empty(m, width, dtype=bank.dtype, device=device)
                rec = {"op": "gather", "rows": m, "width": width, "dtype": "bf16", "bank_rows": bank_size}
                with ops.use_backend("triton"):
                    rec["ours"] = measure(timer, partial(ops.bank_gather, bank, ids, out=out), 8 * m + move,
                                          copy_gbps)
                    matches = torch.equal(out, bank.index_select(0, ids))
                rec["index_select"] = measure(timer, partial(torch.index_select, bank, 0, ids, out=out),
                                              8 * m + move, copy_gbps, baseline=True)
                rec["matches_index_select"] = matches
                rec["speedup_vs_index_select"] = speedup(rec["index_select"], rec["ours"])
                results.append(rec)
                print(summary_line(rec), flush=True)
            if "scatter" in args.bank_ops:
                ids = torch.randperm(bank_size, device=device, generator=gen)[:m]  # index_copy_ needs unique ids
                rows = torch.randn(m, width, device=device, generator=gen).to(torch.bfloat16)
                nbytes = 16 * m + move
                rec = {"op": "scatter", "rows": m, "width": width, "dtype": "bf16", "bank_rows": bank_size}
                with ops.use_backend("triton"):
                    rec["ours"] = measure(timer, partial(ops.bank_scatter, bank, ids, rows, stamps, 1), nbytes,
                                          copy_gbps)
                rec["index_copy"] = measure(timer, partial(bank.index_copy_, 0, ids, rows), 8 * m + move, copy_gbps,
                                            baseline=True)
                rec["index_copy_and_stamps"] = measure(timer, partial(copy_and_stamp, bank, ids, rows, stamps),
                                                       nbytes, copy_gbps, baseline=True)
                rec["speedup_vs_index_copy_and_stamps"] = speedup(rec["index_copy_and_stamps"], rec["ours"])
                results.append(rec)
                print(summary_line(rec), flush=True)
        del bank, stamps
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


# ----------------------------------------------------------------------------- CPU mode
def round_robin(fns: Mapping[str, Callable[[], Any]], reps: int, few: dict[str, int],
                ours: str) -> tuple[dict[str, dict], dict[str, Any]]:
    """Time ``fns`` side by side on the CPU: one untimed warm-up call each, then ``reps`` rounds
    that call each in turn. ``few[name]`` caps the timed calls of a slow one (no warm-up).

    Returns per name the median wall time ``ms`` (also min, max, every sample) and the median
    process CPU time ``cpu_ms`` (all threads; less sensitive to other jobs taking the cores),
    or ``{"error": ...}`` for a baseline that raised (``ours`` raising propagates); and the
    output of each one's first call.
    """
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    first: dict[str, object] = {}
    errors: dict[str, str] = {}

    def call(name: str, timed: bool) -> None:
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            result = fns[name]()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        except (RuntimeError, NotImplementedError, ValueError, TypeError) as e:
            if name == ours:
                raise
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            return
        first.setdefault(name, result)
        if timed:
            samples[name].append((wall * 1e3, cpu * 1e3))

    for name in fns:
        if name not in few:
            call(name, timed=False)
    for _ in range(reps):
        for name in fns:
            if name not in errors and len(samples[name]) < few.get(name, reps):
                call(name, timed=True)
    timings: dict[str, dict] = {}
    for name, runs in samples.items():
        if name in errors or not runs:
            timings[name] = {"error": errors.get(name, "not run")}
            continue
        walls = [w for w, _ in runs]
        timings[name] = {"ms": statistics.median(walls), "ms_min": min(walls), "ms_max": max(walls),
                         "cpu_ms": statistics.median(c for _, c in runs), "samples_ms": walls}
    return timings, first


def torch_sparse_matrix(a_hat: torch.Tensor):
    """``Â`` as a torch_sparse ``SparseTensor`` and None, or None and why it cannot be had."""
    try:
        import torch_sparse
    except ImportError as e:
        return None, f"ImportError: {e}"
    try:
        return torch_sparse.SparseTensor(rowptr=a_hat.crow_indices().long(), col=a_hat.col_indices().long(),
                                         value=a_hat.values(), sparse_sizes=tuple(a_hat.shape)), None
    except (RuntimeError, ValueError, TypeError) as e:
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"


CPU_SPEEDUPS = ("csr_sparse_mm_axpy", "csr_addmm", "reference", "torch_sparse_matmul_axpy")
CPU_IMPLEMENTATIONS = (
    "native: ops.appnp_step on the 'native' backend writing into a preallocated out (as the GPU mode times "
    "the Triton step), with the column passes it picks (native_passes); native_iterate_layout: the same with "
    "x and out in ops.empty_rows' layout, as appnp_iterate and the CG solver keep their iterates (rows padded "
    "to whole 64-byte lines, transparent huge pages from 16 MiB; x_in as given); native_new_out: the same "
    "as native allocating "
    "its output, as the baselines do; native_one_pass (where native_passes > 1): _native.appnp_step forced "
    "to one pass; "
    "csr_sparse_mm_axpy: torch.sparse.mm(A_hat, x).mul_(1-a).add_(x_in, alpha=a) with A_hat a torch CSR "
    "tensor (normalised weights and self loops precomputed, built outside the timings); "
    "csr_sparse_mm_axpy_huge_pages: the same with x copied onto transparent huge pages "
    "(ops.huge_page_empty, contiguous), the baseline given the memory advantage of ours; csr_addmm: "
    "torch.addmm(x_in, A_hat, x, beta=a, alpha=1-a); reference: ops.appnp_step on the 'torch' backend "
    "(index_select + index_add_); torch_sparse_matmul_axpy: torch_sparse.matmul on the same A_hat plus the "
    "axpy, where torch_sparse imports")


def bench_appnp_cpu_graph(name: str, rowptr: torch.Tensor, col: torch.Tensor, args,
                          copy_gbps: float) -> tuple[dict, list[dict]]:
    """All widths x dtypes of one graph on the CPU; returns (graph record, result records)."""
    from fastleading import _native

    n, e = rowptr.numel() - 1, col.numel()
    deg = rowptr[1:] - rowptr[:-1]
    graph = {"graph": name, "num_nodes": n, "num_edges": e, "max_degree": int(deg.max()),
             "mean_degree": e / max(n, 1), "isolated_nodes": int((deg == 0).sum()), "col_dtype": str(col.dtype)}
    dinv = ops.gcn_dinv(rowptr)
    alpha = args.alpha
    results = []
    gen = torch.Generator().manual_seed(args.seed)
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        start = time.perf_counter()
        a_hat = normalized_csr(rowptr, col, dinv, dtype)  # built once, outside the timings
        csr_build_ms = (time.perf_counter() - start) * 1e3
        sparse_tensor, sparse_error = torch_sparse_matrix(a_hat)
        for width in args.widths:
            x = torch.randn(n, width, generator=gen).to(dtype)
            x_in = torch.randn(n, width, generator=gen).to(dtype)
            out = torch.empty_like(x)

            # What the native step chooses here (untimed): its threads and column passes.
            native_threads, native_passes = _native.appnp_step(rowptr, col, x, x_in, alpha, out, dinv,
                                                               torch.get_num_threads())
            fns = {"native": partial(appnp_step_on, "native", rowptr, col, x, x_in, alpha, dinv, out),
                   # as the baselines: a fresh output tensor per call
                   "native_new_out": partial(appnp_step_on, "native", rowptr, col, x, x_in, alpha, dinv),
                   "csr_sparse_mm_axpy": partial(sparse_mm_axpy, a_hat, x, x_in, alpha),
                   "csr_addmm": partial(torch.addmm, x_in, a_hat, x, beta=alpha, alpha=1 - alpha),
                   "reference": partial(appnp_step_on, "torch", rowptr, col, x, x_in, alpha, dinv)}
            # the layout appnp_iterate and the CG solver keep their iterates in, and the baseline on huge pages
            x_layout = ops.empty_rows(n, width, dtype, "cpu").copy_(x)
            out_layout = ops.empty_rows(n, width, dtype, "cpu")
            huge = ops.huge_page_empty(x.numel() * x.element_size(), dtype)
            x_huge = huge.view(n, width).copy_(x) if huge is not None else None
            fns["native_iterate_layout"] = partial(appnp_step_on, "native", rowptr, col, x_layout, x_in, alpha, dinv,
                                                   out_layout)
            if x_huge is not None:
                fns["csr_sparse_mm_axpy_huge_pages"] = partial(sparse_mm_axpy, a_hat, x_huge, x_in, alpha)
            if native_passes > 1:  # the same step in one pass over all of x, for comparison
                fns["native_one_pass"] = partial(_native.appnp_step, rowptr, col, x, x_in, alpha, out, dinv,
                                                 torch.get_num_threads(), passes=1)
            if sparse_tensor is not None:
                import torch_sparse

                fns["torch_sparse_matmul_axpy"] = partial(torch_sparse_axpy, torch_sparse.matmul, sparse_tensor, x,
                                                          x_in, alpha)
            timings, first = round_robin(fns, args.reps, {"reference": args.ref_reps}, ours="native")
            nbytes = appnp_bytes(n, e, col, width, dtype)
            rec = {"graph": name, "width": width, "dtype": dtype_name, "compulsory_bytes": nbytes,
                   "threads": torch.get_num_threads(), "native_isa": _native.appnp_isas()[0],
                   "native_threads": native_threads, "native_passes": native_passes,
                   "csr_build_ms": csr_build_ms}
            for key, t in timings.items():
                rec[key] = with_rates(t, nbytes, copy_gbps) if "ms" in t else t
            if sparse_tensor is None:
                rec["torch_sparse_matmul_axpy"] = {"error": sparse_error}
            for key in CPU_SPEEDUPS:
                rec[f"speedup_vs_{key}"] = speedup(rec[key], rec["native"])
            if "native_one_pass" in rec:
                rec["speedup_one_pass_vs_csr_sparse_mm_axpy"] = speedup(rec["csr_sparse_mm_axpy"],
                                                                        rec["native_one_pass"])
            rec["speedup_new_out_vs_csr_sparse_mm_axpy"] = speedup(rec["csr_sparse_mm_axpy"], rec["native_new_out"])
            for key in ("csr_sparse_mm_axpy", "csr_sparse_mm_axpy_huge_pages"):
                if key in rec:
                    rec[f"speedup_iterate_layout_vs_{key}"] = speedup(rec[key], rec["native_iterate_layout"])
            rec["iterate_layout_bitwise_equal_to_native"] = torch.equal(first["native_iterate_layout"], first["native"])
            ours = first["native"].float()
            for key in ("csr_sparse_mm_axpy", "reference"):
                if key in first:
                    rec[f"max_abs_diff_vs_{key}"] = float((ours - first[key].float()).abs().max())
            if "reference" in first:
                rec["bitwise_equal_to_reference"] = torch.equal(first["native"], first["reference"])
            rec["max_abs_value"] = float(ours.abs().max())
            results.append(rec)
            print(summary_line(rec), flush=True)
            del x, x_in, out, first, ours, fns, x_layout, out_layout, huge, x_huge
        del a_hat, sparse_tensor
    return graph, results


def transparent_hugepages() -> str | None:
    """The kernel's THP mode (``[madvise]`` means torch's 4 KiB pages: random row gathers miss the TLB)."""
    try:
        return Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        return None


def run_cpu_bench(args: argparse.Namespace) -> Path:
    """The CPU mode of :func:`run_kernel_bench` (``--cpu``); returns the JSON path."""
    from fastleading import _native
    from fastleading.bench.report import git_commit
    from fastleading.bench.sampler import machine

    for key, value in CPU_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for d in args.dtypes:
        if d not in DTYPES:
            raise FastleadingError(f"--dtypes: unknown dtype {d!r}: expected one of {', '.join(DTYPES)}")
    if args.threads < 1 or args.reps < 1 or args.ref_reps < 1:
        raise FastleadingError("--threads, --reps and --ref-reps must be >= 1")
    if not hasattr(_native, "appnp_step"):
        raise FastleadingError("bench kernels --cpu: fastleading._native has no appnp_step; rebuild it")
    torch.set_num_threads(args.threads)
    env = environment(torch.device("cpu"), interpreter=False, argv=getattr(args, "argv", None))
    env.update(git_commit=git_commit(), machine=machine(), torch_threads=torch.get_num_threads(),
               mkl=torch.backends.mkl.is_available(), native_isas=_native.appnp_isas(),
               transparent_hugepage=transparent_hugepages())
    copy_bytes = (8 << 20) if args.toy else (256 << 20)
    src = torch.ones(copy_bytes // 4)
    dst = torch.empty_like(src)
    copy_ms = round_robin({"copy": partial(dst.copy_, src)}, args.reps, {}, ours="copy")[0]["copy"]["ms"]
    copy_gbps = 2 * copy_bytes / (copy_ms * 1e6)
    del src, dst
    report = {"benchmark": "appnp-cpu", "toy": bool(args.toy), "interpreter": False,
              "note": ("toy sizes: smoke run, not representative" if args.toy else
                       f"performance run on {os.cpu_count()} logical CPUs that other jobs may share: the "
                       "implementations run round-robin in one process, so compare them by the ratios"),
              "env": env, "bandwidth_model": BANDWIDTH_MODEL, "copy_GBps": copy_gbps,
              "copy_note": f"torch copy_ of {copy_bytes >> 20} MiB on {args.threads} threads, median of {args.reps}",
              "alpha": args.alpha, "reps": args.reps, "ref_reps": args.ref_reps,
              "implementations": CPU_IMPLEMENTATIONS,
              "timing": "wall-clock ms per step: median of the round-robin samples (cpu_ms: process CPU time, "
                        "all threads); speedup_vs_X = X ms / native ms",
              "graphs": [], "appnp": []}
    for entry in load_graphs(args, args.toy):
        if len(entry) == 2:
            report["graphs"].append({"graph": entry[0], "skipped": entry[1]})
            print(f"skipping {entry[0]}: {entry[1]}", flush=True)
            continue
        graph, results = bench_appnp_cpu_graph(*entry, args, copy_gbps)
        report["graphs"].append(graph)
        report["appnp"].extend(results)
    env["load_avg_1m_at_end"] = os.getloadavg()[0]
    out_dir = Path(args.out_dir) if args.out_dir else (
        Path(tempfile.gettempdir()) / "fastleading-bench" if args.toy else Path("benchmarks/results"))
    now = datetime.datetime.now()
    stem = f"{args.name or 'appnp'}-cpu{'-toy' if args.toy else ''}-{now:%Y-%m-%d}"
    path = out_dir / f"{stem}.json"
    if path.exists():  # never overwrite an earlier run of the same day
        path = out_dir / f"{stem}-{now:%H%M%S}.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
    return path


# ----------------------------------------------------------------------------- run
def command_line(argv: list[str] | None) -> str:
    """The command that ran: ``fastleading bench kernels ARGS`` when main() got the arguments
    (the CLI passes them), else this process's own command line."""
    return shlex.join(["fastleading", "bench", "kernels", *argv] if argv is not None else [sys.executable, *sys.argv])


def environment(device: torch.device, interpreter: bool, argv: list[str] | None = None) -> dict:
    from fastleading.bench.report import git_commit

    commit = git_commit()
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return {"device": device.type, "device_name": name, "torch": torch.__version__, "triton": triton_version,
            "cuda": torch.version.cuda, "git_commit": commit, "command": command_line(argv),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
            "triton_interpreter": interpreter}


def load_graphs(args, toy: bool) -> list[tuple[str, torch.Tensor, torch.Tensor] | tuple[str, str]]:
    """(name, rowptr, col) per requested graph, or (name, reason) when it cannot be had."""
    loaded: list[tuple[str, torch.Tensor, torch.Tensor] | tuple[str, str]] = []
    synthetic = {**graphs.OGB_SIZES, **graphs.CPU_SIZES}
    for name in args.graphs:
        if name in synthetic:
            size = TOY_GRAPHS[name] if toy else synthetic[name]
            loaded.append((f"{name}-like", *graphs.powerlaw_csr(size, seed=args.seed)))
        elif name == "pubmed":
            try:
                rowptr, col = graphs.pubmed_csr(args.data_dir)
            except FastleadingError as e:
                loaded.append((name, str(e)))
                continue
            if toy:
                rowptr, col = graphs.induced_prefix(rowptr, col, TOY_PUBMED_NODES)
            loaded.append((name, rowptr, col))
        else:
            raise FastleadingError(f"--graphs: unknown graph {name!r}: expected arxiv, products, powerlaw-500k "
                                   "or pubmed")
    return loaded


def _require_interpreter_for_cpu() -> None:
    """Turn the Triton interpreter on for a CPU run (it must be on before the kernels are defined)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return
    if any(m.startswith("fastleading.kernels.") for m in sys.modules):
        raise FastleadingError("bench kernels on CPU: the Triton kernels were already loaded without "
                               "TRITON_INTERPRET=1; set it in the environment and run again")
    os.environ["TRITON_INTERPRET"] = "1"


def run_kernel_bench(args: argparse.Namespace) -> Path:
    """Run the benchmark described by ``args`` (see :func:`add_kernel_bench_args`); returns the JSON path."""
    if args.cpu:
        return run_cpu_bench(args)
    for key, default in GPU_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FastleadingError("--device cuda: no CUDA device is available (use --device cpu --toy)")
    interpreter = device.type == "cpu"
    if interpreter:
        if not args.toy:
            raise FastleadingError("bench kernels on CPU runs the Triton kernels only with --toy (the Triton "
                                   "interpreter is ~1 ms per program: full sizes need a CUDA device); "
                                   "--cpu benchmarks the native CPU step")
        _require_interpreter_for_cpu()
    for d in args.dtypes:
        if d not in DTYPES:
            raise FastleadingError(f"--dtypes: unknown dtype {d!r}: expected one of {', '.join(DTYPES)}")
    defaults = TOY if args.toy else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.bank_size is None:
        args.bank_size = TOY_BANK_SIZE if args.toy else graphs.OGB_SIZES["products"].num_nodes
    timer = Timer(device, args.warmup_ms, args.rep_ms)
    copy_gbps = copy_bandwidth(timer, device, 8 << 20 if args.toy else GiB)
    report = {"benchmark": "kernels", "toy": bool(args.toy), "interpreter": interpreter,
              "note": ("Triton CPU interpreter at toy sizes: proves the pipeline runs end to end; "
                       "NOT a performance number") if interpreter else
                      ("toy sizes: smoke run, not representative" if args.toy else "performance run"),
              "env": environment(device, interpreter, getattr(args, "argv", None)), "bandwidth_model": BANDWIDTH_MODEL,
              "copy_GBps": copy_gbps, "alpha": args.alpha,
              "graphs": [], "appnp": [], "bank": []}
    for entry in load_graphs(args, args.toy):
        if len(entry) == 2:
            report["graphs"].append({"graph": entry[0], "skipped": entry[1]})
            print(f"skipping {entry[0]}: {entry[1]}", flush=True)
            continue
        graph, results = bench_appnp_graph(*entry, args, timer, copy_gbps, device)
        report["graphs"].append(graph)
        report["appnp"].extend(results)
    report["bank"] = bench_bank(args, timer, copy_gbps, device)
    out_dir = Path(args.out_dir) if args.out_dir else (
        Path(tempfile.gettempdir()) / "fastleading-bench" if interpreter else Path("benchmarks/results"))
    slug = re.sub(r"[^a-z0-9]+", "-", report["env"]["device_name"].lower()).strip("-") or device.type
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"{args.name or 'kernels'}-{slug}{'-toy' if args.toy else ''}-{stamp}.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    """``fastleading bench kernels [options]``."""
    parser = argparse.ArgumentParser(prog="fastleading bench kernels", description=__doc__.split("\n\n")[0])
    add_kernel_bench_args(parser)
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else None
    run_kernel_bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
