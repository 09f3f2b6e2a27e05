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
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from fastleading import ops
from fastleading.bench import graphs
from fastleading.errors import FastleadingError
from fastleading.io import atomic_write_text

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


def add_kernel_bench_args(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastleading bench kernels`` / ``benchmarks/bench_kernels.py``."""
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    strs = lambda s: [v for v in s.split(",") if v]  # noqa: E731
    parser.add_argument("--toy", action="store_true",
                        help="tiny sizes (the only mode on CPU, under the Triton interpreter); not a performance run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out-dir", default=None,
                        help="where the JSON goes (default: benchmarks/results on CUDA, a temp dir on CPU)")
    parser.add_argument("--name", default="kernels", help="file name prefix")
    parser.add_argument("--graphs", type=strs, default=["arxiv", "products", "pubmed"],
                        help="comma list of arxiv, products (power-law synthetic of that size), pubmed (real)")
    parser.add_argument("--widths", type=ints, help=f"APPNP feature widths (default {FULL['widths']}, toy {TOY['widths']})")
    parser.add_argument("--dtypes", type=strs, default=["fp32", "bf16"], help="APPNP feature dtypes")
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
                rec["ours"] = measure(timer, lambda: ops.appnp_step(rowptr, col, x, x_in, args.alpha, dinv, out),
                                      nbytes, copy_gbps)

            rec["csr"], csr_step = bench_csr(a_hat, x, x_in, args.alpha, timer, nbytes, copy_gbps)
            if csr_step is not None:
                ref = csr_step().float()
                rec["max_abs_diff_vs_csr"] = float((out.float() - ref).abs().max())
                rec["max_abs_value"] = float(ref.abs().max())
                del ref
            rec["speedup_vs_csr"] = speedup(rec["csr"], rec["ours"])
            if not args.skip_pyg:
                rec["pyg_appnp"] = bench_pyg(row, col, x, args.alpha, timer, nbytes, copy_gbps)
                rec["speedup_vs_pyg"] = speedup(rec["pyg_appnp"], rec["ours"])
            results.append(rec)
            print(summary_line(rec), flush=True)
            del x, x_in, out
        del a_hat
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return graph, results


def bench_csr(a_hat: torch.Tensor, x: torch.Tensor, x_in: torch.Tensor, alpha: float, timer: Timer,
              nbytes: int, copy_gbps: float) -> tuple[dict, Callable[[], torch.Tensor] | None]:
    """Baseline (a): ``addmm`` (SpMM with the axpy as its beta term), else ``sparse.mm`` then the axpy.

    Returns the measurement of the first form that runs (with ``"form"``) and that form, or
    the errors of both and None.
    """
    forms = {
        "addmm": lambda: torch.addmm(x_in, a_hat, x, beta=alpha, alpha=1 - alpha),
        "sparse.mm+axpy": lambda: torch.sparse.mm(a_hat, x).mul_(1 - alpha).add_(x_in, alpha=alpha),
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
                    rec["ours"] = measure(timer, lambda: ops.bank_gather(bank, ids, out=out), 8 * m + move, copy_gbps)
                    matches = torch.equal(out, bank.index_select(0, ids))
                rec["index_select"] = measure(timer, lambda: torch.index_select(bank, 0, ids, out=out),
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
                    rec["ours"] = measure(timer, lambda: ops.bank_scatter(bank, ids, rows, stamps, 1), nbytes, copy_gbps)
                rec["index_copy"] = measure(timer, lambda: bank.index_copy_(0, ids, rows), 8 * m + move, copy_gbps,
                                            baseline=True)

                def copy_and_stamp():
                    bank.index_copy_(0, ids, rows)
                    stamps.index_fill_(0, ids, 1)

                rec["index_copy_and_stamps"] = measure(timer, copy_and_stamp, nbytes, copy_gbps, baseline=True)
                rec["speedup_vs_index_copy_and_stamps"] = speedup(rec["index_copy_and_stamps"], rec["ours"])
                results.append(rec)
                print(summary_line(rec), flush=True)
        del bank, stamps
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


# ----------------------------------------------------------------------------- run
def environment(device: torch.device, interpreter: bool) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return {"device": device.type, "device_name": name, "torch": torch.__version__, "triton": triton_version,
            "cuda": torch.version.cuda, "git_commit": commit, "command": " ".join([sys.executable] + sys.argv),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
            "triton_interpreter": interpreter}


def load_graphs(args, toy: bool) -> list[tuple[str, torch.Tensor, torch.Tensor] | tuple[str, str]]:
    """(name, rowptr, col) per requested graph, or (name, reason) when it cannot be had."""
    loaded = []
    for name in args.graphs:
        if name in graphs.OGB_SIZES:
            size = TOY_GRAPHS[name] if toy else graphs.OGB_SIZES[name]
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
            raise FastleadingError(f"--graphs: unknown graph {name!r}: expected arxiv, products or pubmed")
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
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FastleadingError("--device cuda: no CUDA device is available (use --device cpu --toy)")
    interpreter = device.type == "cpu"
    if interpreter:
        if not args.toy:
            raise FastleadingError("bench kernels on CPU runs only with --toy (the Triton interpreter is "
                                   "~1 ms per program: full sizes need a CUDA device)")
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
              "env": environment(device, interpreter), "bandwidth_model": BANDWIDTH_MODEL, "copy_GBps": copy_gbps, "alpha": args.alpha,
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
    path = out_dir / f"{args.name}-{slug}{'-toy' if args.toy else ''}-{stamp}.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    """``fastleading bench kernels [options]``."""
    parser = argparse.ArgumentParser(prog="fastleading bench kernels", description=__doc__.split("\n\n")[0])
    add_kernel_bench_args(parser)
    run_kernel_bench(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
