"""Benchmark graphs: power-law synthetic graphs of OGB sizes and the real PubMed citation graph.

The synthetic graphs are Chung-Lu graphs: both ends of every edge are drawn with
probability proportional to a weight ``w_r = r^-b`` of the node's (randomly permuted)
rank ``r``, and ``b`` is chosen so that the largest expected degree is the target max
degree. Sizes and max degrees follow the real graphs (after symmetrisation):

- ogbn-arxiv: 169,343 nodes, 2,315,598 directed edges, max degree ~13k;
- ogbn-products: 2,449,029 nodes, 123,718,280 directed edges, max degree ~17k.

The CPU benchmark (``fastleading bench kernels --cpu``) uses a graph in between:
500,000 nodes, 25M directed edges, hubs of ~10k neighbours.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from fastleading.engine.graph import build_csr
from fastleading.errors import FastleadingError


@dataclass(frozen=True)
class GraphSize:
    num_nodes: int
    num_edges: int  # directed (each undirected edge counted twice), no self loops
    max_degree: int


OGB_SIZES = {
    "arxiv": GraphSize(169_343, 2_315_598, 13_161),
    "products": GraphSize(2_449_029, 123_718_280, 17_481),
}

CPU_SIZES = {
    "powerlaw-500k": GraphSize(500_000, 25_000_000, 10_000),
}

PUBMED_FILE = Path("pubmed-cites") / "Pubmed-Diabetes.DIRECTED.cites.tab.gz"


def _rank_exponent(num_nodes: int, max_over_mean: float) -> float:
    """``b`` in (0, 1) with ``w_1 / mean(w) = (1-b) N^b = max_over_mean`` (integral approximation)."""
    lo, hi = 1e-6, 1.0 - 1e-6
    for _ in range(100):
        mid = (lo + hi) / 2
        if math.log1p(-mid) + mid * math.log(num_nodes) < math.log(max_over_mean):
            lo = mid
        else:
            hi = mid
    return lo


def _chung_lu_edges(num_nodes: int, num_samples: int, b: float, gen: torch.Generator):
    weights = torch.arange(1, num_nodes + 1, dtype=torch.float64).pow(-b)
    cdf = torch.cumsum(weights, 0)
    cdf /= cdf[-1].clone()
    perm = torch.randperm(num_nodes, generator=gen)  # hubs land anywhere in the id range, as in real graphs
    ends = [perm[torch.searchsorted(cdf, torch.rand(num_samples, generator=gen, dtype=torch.float64))
                 .clamp_(max=num_nodes - 1)] for _ in range(2)]
    return ends[0], ends[1]


def powerlaw_csr(size: GraphSize, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric CSR (``fastleading.engine.graph.build_csr``) of a Chung-Lu graph close to ``size``.

    Duplicate draws collapse in build_csr, so a first draw measures the loss and a second,
    rescaled draw lands within about 1% of ``size.num_edges``.
    """
    b = _rank_exponent(size.num_nodes, size.max_degree * size.num_nodes / size.num_edges)
    samples = size.num_edges // 2
    for _ in range(2):
        gen = torch.Generator().manual_seed(seed)
        src, dst = _chung_lu_edges(size.num_nodes, samples, b, gen)
        rowptr, col = build_csr(src, dst, size.num_nodes)
        samples = int(samples * size.num_edges / max(col.numel(), 1))
    return rowptr, col


def pubmed_csr(data_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric CSR of the PubMed-Diabetes citation graph (19,717 papers) from ``data_dir``."""
    path = Path(data_dir) / PUBMED_FILE
    if not path.is_file():
        raise FastleadingError(f"{path}: PubMed citation file not found (expected the shared data layout)")
    ids: dict[str, int] = {}
    src, dst = [], []
    with gzip.open(path, "rt") as f:
        for line_no, line in enumerate(f, 1):
            if line_no <= 2:  # "DIRECTED\tcites", "NO_FEATURES"
                continue
            parts = line.split("\t")
            if len(parts) != 4 or not parts[1].startswith("paper:") or not parts[3].startswith("paper:"):
                raise FastleadingError(f"{path}:{line_no}: expected 'id<TAB>paper:A<TAB>|<TAB>paper:B'")
            a, b = parts[1][6:].strip(), parts[3][6:].strip()
            src.append(ids.setdefault(a, len(ids)))
            dst.append(ids.setdefault(b, len(ids)))
    return build_csr(torch.tensor(src), torch.tensor(dst), len(ids))


def induced_prefix(rowptr: torch.Tensor, col: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The subgraph induced by nodes ``0..num_nodes-1`` (toy-sized runs of a real graph)."""
    row = torch.repeat_interleave(torch.arange(rowptr.numel() - 1), rowptr[1:] - rowptr[:-1])
    keep = (row < num_nodes) & (col.long() < num_nodes)
    return build_csr(row[keep], col.long()[keep], num_nodes)
