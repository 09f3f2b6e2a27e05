"""CSR construction and neighbour sampling on an ogbn-products-sized synthetic graph.

The graph is a Chung-Lu power-law graph: node i gets weight ~(i+1)^-a with a chosen so the
largest expected degree is --max-degree, edge endpoints are drawn in proportion to the
weights, and node ids are shuffled (hubs spread over the id range, as in real datasets).
Defaults match ogbn-products: 2,449,029 nodes, 61.9M undirected edges handed to build_csr
as 123.7M directed ones (both directions, as OGB stores them), max degree ~20k.

Measured: build_csr (wall time, peak RSS), then [10, 5] neighbourhoods of batches of 128
targets for the C++ sampler (all threads and one; one also with the draws of
``model.subgraph_norm=weighted``), the PyTorch sampler, and PyG's
NeighborLoader when pyg-lib or torch-sparse is importable.

    fastleading bench sampler                        # full size (~2 min, ~4 GB)
    python benchmarks/bench_sampler.py --nodes 100000 --avg-degree 20
    python benchmarks/bench_sampler.py --json benchmarks/results/sampler-cpu-DATE.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from fastleading.bench.report import git_commit
from fastleading.engine.graph import build_csr, degree_percentiles
from fastleading.engine.sampler import NeighborSampler
from fastleading.run.io import atomic_write_text

PRODUCTS_NODES = 2_449_029
PRODUCTS_AVG_DEGREE = 50.5  # 123,718,280 directed edges / 2,449,029 nodes


# -- the graph -------------------------------------------------------------------------------

def power_law_exponent(num_nodes: int, num_endpoints: int, max_degree: float) -> float:
    """Exponent a in (0, 1) giving node 0 an expected degree of max_degree (bisection: node
    0's share of the endpoints grows with a)."""
    lo, hi = 1e-6, 1 - 1e-6
    for _ in range(60):
        a = (lo + hi) / 2
        lo, hi = (a, hi) if num_endpoints * hub_share(num_nodes, a) < max_degree else (lo, a)
    return (lo + hi) / 2


def hub_share(num_nodes: int, a: float) -> float:
    """Probability that an endpoint is node 0 under the density x^-a on [1, N+1)."""
    b = 1 - a
    return (2**b - 1) / ((num_nodes + 1) ** b - 1)


def power_law_edges(num_nodes: int, avg_degree: float, max_degree: float, seed: int,
                    chunk: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Directed edge list int64 ``[2U]`` x 2 holding U = N * avg_degree / 2 undirected edges in
    both directions. Endpoints are floor(x) - 1 for x drawn from the density x^-a on [1, N+1)
    by inverting its CDF (no table lookups); generated in chunks, so memory is the output
    plus O(N + chunk)."""
    rng = np.random.default_rng(seed)
    undirected = int(num_nodes * avg_degree / 2)
    b = 1 - power_law_exponent(num_nodes, 2 * undirected, max_degree)
    span = (num_nodes + 1) ** b - 1
    relabel = rng.permutation(num_nodes)

    def endpoints(count: int) -> np.ndarray:
        x = (span * rng.random(count) + 1) ** (1 / b)
        return relabel[np.minimum(x.astype(np.int64) - 1, num_nodes - 1)]

    src = np.empty(2 * undirected, dtype=np.int64)
    dst = np.empty(2 * undirected, dtype=np.int64)
    for lo in range(0, undirected, chunk):
        hi = min(undirected, lo + chunk)
        u, v = endpoints(hi - lo), endpoints(hi - lo)
        src[lo:hi], dst[lo:hi] = u, v
        src[undirected + lo:undirected + hi], dst[undirected + lo:undirected + hi] = v, u
    return src, dst


# -- measuring -------------------------------------------------------------------------------

def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Peak resident memory while the block runs, polled every 5 ms (the native code
    releases the GIL, so the polling thread keeps running)."""

    def __enter__(self):
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def time_batches(sample, batches: list[torch.Tensor], seconds: float) -> dict:
    """Runs sample(targets, seed) over the batches (2 warm-up calls first) until all are done
    or `seconds` have passed; returns the rate and the mean subgraph size."""
    for i in range(2):
        sample(batches[i], i)
    nodes = edges = done = 0
    start = time.perf_counter()
    for i, targets in enumerate(batches):
        sub = sample(targets, i)
        nodes += sub[0]
        edges += sub[1]
        done += 1
        if time.perf_counter() - start > seconds:
            break
    wall = time.perf_counter() - start
    return {"batches": done, "wall_s": round(wall, 3), "batches_per_s": round(done / wall, 1),
            "ms_per_batch": round(1000 * wall / done, 3), "mean_nodes": round(nodes / done, 1),
            "mean_edges": round(edges / done, 1)}


def ours(sampler: NeighborSampler):
    def sample(targets, seed):
        sub = sampler.sample(targets, seed)
        return sub.num_nodes, sub.col.numel()
    return sample


def pyg_loader(rowptr, col, fanouts, batch_size, order):
    """PyG's NeighborLoader over the same graph, or the reason it cannot run here."""
    try:
        import pyg_lib  # noqa: F401
    except ImportError:
        try:
            import torch_sparse  # noqa: F401
        except ImportError:
            return None, "pyg-lib and torch-sparse are not importable (neither is installable here)"
    from torch_geometric.data import Data
    from torch_geometric.loader import NeighborLoader

    row = torch.repeat_interleave(torch.arange(rowptr.numel() - 1), rowptr[1:] - rowptr[:-1])
    data = Data(edge_index=torch.stack([row, col.long()]), num_nodes=rowptr.numel() - 1)
    loader = NeighborLoader(data, num_neighbors=fanouts, batch_size=batch_size, input_nodes=order)
    return loader, ""


def time_loader(loader, max_batches: int, seconds: float) -> dict:
    it = iter(loader)
    for _ in range(2):
        next(it)
    nodes = edges = done = 0
    start = time.perf_counter()
    for batch in it:
        nodes += batch.num_nodes
        edges += batch.edge_index.shape[1]
        done += 1
        if done >= max_batches or time.perf_counter() - start > seconds:
            break
    wall = time.perf_counter() - start
    return {"batches": done, "wall_s": round(wall, 3), "batches_per_s": round(done / wall, 1),
            "ms_per_batch": round(1000 * wall / done, 3), "mean_nodes": round(nodes / done, 1),
            "mean_edges": round(edges / done, 1)}


# -- report ----------------------------------------------------------------------------------

def machine() -> dict:
    cpu = ""
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(mem / 2**30, 1), "load_avg_1m_at_start": os.getloadavg()[0]}


def gib(x: int) -> float:
    return round(x / 2**30, 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=PRODUCTS_NODES)
    p.add_argument("--avg-degree", type=float, default=PRODUCTS_AVG_DEGREE, help="directed edges per node")
    p.add_argument("--max-degree", type=float, default=20_000, help="expected degree of the largest hub")
    p.add_argument("--fanouts", type=int, nargs="+", default=[10, 5])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=2000, help="batches per sampler (at most)")
    p.add_argument("--seconds", type=float, default=10.0, help="time limit per sampler")
    p.add_argument("--threads", type=int, default=0, help="threads of build_csr and the C++ sampler (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. machine load)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)

    result = {"benchmark": "sampler", "date": datetime.date.today().isoformat(),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "git_commit": git_commit(),
              "machine": machine(), "note": args.note,
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "numpy": np.__version__, "torch_num_threads": torch.get_num_threads()},
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}

    t = time.perf_counter()
    src, dst = power_law_edges(args.nodes, args.avg_degree, args.max_degree, args.seed)
    gen_s = time.perf_counter() - t
    print(f"graph: {args.nodes:,} nodes, {src.size:,} directed edges generated in {gen_s:.1f} s")

    rss_before = rss_bytes()
    with PeakRss() as peak:
        t = time.perf_counter()
        rowptr, col = build_csr(src, dst, args.nodes, num_threads=args.threads)
        build_s = time.perf_counter() - t
    del src, dst
    p50, p99, dmax = degree_percentiles(rowptr, [50, 99, 100])
    result["build_csr"] = {"wall_s": round(build_s, 2), "directed_edges_in": 2 * int(args.nodes * args.avg_degree / 2),
                           "csr_entries": col.numel(), "rss_before_gib": gib(rss_before),
                           "peak_rss_gib": gib(peak.peak), "peak_rss_increase_gib": gib(peak.peak - rss_before),
                           "degree_p50": p50, "degree_p99": p99, "degree_max": dmax}
    print(f"build_csr: {build_s:.2f} s, peak RSS {gib(peak.peak)} GiB (inputs held: {gib(rss_before)} GiB), "
          f"{col.numel():,} CSR entries, degree p50 {p50:.0f} p99 {p99:.0f} max {dmax:.0f}")

    order = torch.randperm(args.nodes, generator=torch.Generator().manual_seed(args.seed))
    count = min(args.batches + 2, args.nodes // args.batch_size)
    batches = [order[i * args.batch_size:(i + 1) * args.batch_size] for i in range(count)]
    samplers = {
        "native": ours(NeighborSampler(rowptr, col, args.fanouts, backend="native", num_threads=args.threads)),
        "native_1_thread": ours(NeighborSampler(rowptr, col, args.fanouts, backend="native", num_threads=1)),
        # model.subgraph_norm=weighted: also who drew whom, its transpose and the row weights
        "native_1_thread_draws": ours(NeighborSampler(rowptr, col, args.fanouts, backend="native", num_threads=1,
                                                      draws=True)),
        "torch_cpu": ours(NeighborSampler(rowptr, col, args.fanouts, backend="torch")),
    }
    result["samplers"] = {}
    threads = torch.get_num_threads()
    for name, sample in samplers.items():
        # Intra-op threads only slow the torch sampler's small ops down (and spin when the
        # cores are shared): it runs on one, as the C++ sampler does at this batch size.
        torch.set_num_threads(1 if name == "torch_cpu" else threads)
        r = time_batches(sample, batches, args.seconds)
        r["torch_threads"] = torch.get_num_threads()
        result["samplers"][name] = r
        print(f"{name:>16}: {r['batches_per_s']:8.1f} batches/s ({r['ms_per_batch']:.3f} ms/batch, "
              f"{r['batches']} batches, {r['mean_nodes']:.0f} nodes / {r['mean_edges']:.0f} CSR entries per batch)")

    loader, why = pyg_loader(rowptr, col, args.fanouts, args.batch_size, order)
    if loader is None:
        result["samplers"]["pyg_neighbor_loader"] = {"skipped": why}
        print(f"PyG NeighborLoader: not run: {why}")
    else:
        r = time_loader(loader, args.batches, args.seconds)
        result["samplers"]["pyg_neighbor_loader"] = r
        print(f"PyG NeighborLoader: {r['batches_per_s']:8.1f} batches/s ({r['ms_per_batch']:.3f} ms/batch)")

    torch.set_num_threads(threads)
    result["peak_rss_gib_process"] = gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(f"process peak RSS: {result['peak_rss_gib_process']} GiB")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
