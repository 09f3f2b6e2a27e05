"""The native CSR builder against the PyTorch reference and a brute-force edge set."""

import numpy as np
import pytest
import torch

from fastleading.engine.graph import build_csr, build_csr_reference, degree_percentiles, degrees
from fastleading.errors import FastleadingError


def random_edges(num_nodes: int, num_edges: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Power-law-ish edge list with self loops, repeated edges and isolated nodes."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.arange(1, num_nodes + 1, dtype=torch.float64) ** -0.8
    weight[torch.randperm(num_nodes, generator=g)[: num_nodes // 10]] = 0  # isolated nodes
    src = torch.multinomial(weight, num_edges, replacement=True, generator=g)
    dst = torch.multinomial(weight, num_edges, replacement=True, generator=g)
    dst[: num_edges // 50] = src[: num_edges // 50]  # self loops
    return src, dst


def brute_force_rows(src, dst, num_nodes: int) -> list[list[int]]:
    """Sorted neighbour list of every node, from Python sets."""
    rows = [set() for _ in range(num_nodes)]
    for u, v in zip(src.tolist(), dst.tolist(), strict=True):
        if u != v:
            rows[u].add(v)
            rows[v].add(u)
    return [sorted(r) for r in rows]


def csr_rows(rowptr: torch.Tensor, col: torch.Tensor) -> list[list[int]]:
    return [col[rowptr[i]:rowptr[i + 1]].tolist() for i in range(rowptr.numel() - 1)]


def test_build_csr_matches_brute_force():
    src, dst = random_edges(300, 2000, seed=1)
    rowptr, col = build_csr(src, dst, 300)
    assert rowptr.dtype == torch.int64 and col.dtype == torch.int32
    assert csr_rows(rowptr, col) == brute_force_rows(src, dst, 300)


def test_reference_matches_brute_force():
    src, dst = random_edges(200, 1500, seed=2)
    rowptr, col = build_csr_reference(src, dst, 200)
    assert rowptr.dtype == torch.int64 and col.dtype == torch.int64
    assert csr_rows(rowptr, col) == brute_force_rows(src, dst, 200)


@pytest.fixture(scope="module")
def large_graph():
    """800k edges: enough for the builder to split the rows over 3 threads (>= 256k edges
    each); the reference CSR is computed once."""
    src, dst = random_edges(20_000, 800_000, seed=3)
    return src, dst, build_csr_reference(src, dst, 20_000)


@pytest.mark.parametrize("num_threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_build_csr_matches_reference_on_many_threads(large_graph, num_threads, dtype):
    src, dst, (ref_rowptr, ref_col) = large_graph
    rowptr, col = build_csr(src.to(dtype), dst.to(dtype), 20_000, num_threads=num_threads)
    assert torch.equal(rowptr, ref_rowptr)
    assert torch.equal(col.long(), ref_col)


def test_build_csr_accepts_numpy_lists_and_other_int_dtypes():
    src, dst = random_edges(50, 300, seed=5)
    expected = build_csr_reference(src, dst, 50)
    for s, d in [(src.numpy(), dst.numpy()), (src.tolist(), dst.tolist()),
                 (src.numpy().astype(np.uint16), dst.numpy().astype(np.int16)),
                 (src.numpy()[::-1].copy()[::-1], dst.numpy())]:  # negative strides
        rowptr, col = build_csr(s, d, 50)
        assert torch.equal(rowptr, expected[0]) and torch.equal(col.long(), expected[1])


def test_build_csr_empty_and_isolated():
    rowptr, col = build_csr([], [], 4)
    assert rowptr.tolist() == [0, 0, 0, 0, 0] and col.numel() == 0
    rowptr, col = build_csr([2, 2], [2, 2], 3)  # only self loops
    assert rowptr.tolist() == [0, 0, 0, 0] and col.numel() == 0
    rowptr, col = build_csr([], [], 0)
    assert rowptr.tolist() == [0] and col.numel() == 0


@pytest.mark.parametrize("src,dst,num_nodes", [([0, 5], [1, 2], 5), ([0, -1], [1, 2], 5), ([0, 1], [1, 9], 3)])
def test_build_csr_rejects_out_of_range_ids(src, dst, num_nodes):
    with pytest.raises(FastleadingError, match="outside"):
        build_csr(src, dst, num_nodes)


def test_build_csr_rejects_bad_shapes_and_dtypes():
    with pytest.raises(FastleadingError, match="differ in length"):
        build_csr([0, 1], [1], 3)
    with pytest.raises(FastleadingError, match="integer"):
        build_csr(np.array([0.0, 1.0]), np.array([1.0, 2.0]), 3)
    with pytest.raises(FastleadingError, match="1-D"):
        build_csr(np.zeros((2, 2), dtype=np.int64), np.zeros((2, 2), dtype=np.int64), 3)


def test_degrees_and_percentiles():
    src, dst = random_edges(500, 3000, seed=6)
    rowptr, col = build_csr(src, dst, 500)
    deg = degrees(rowptr)
    assert deg.tolist() == [len(r) for r in brute_force_rows(src, dst, 500)]
    qs = [0, 25, 50, 90, 99, 100]
    assert degree_percentiles(rowptr, qs) == pytest.approx(np.percentile(deg.numpy(), qs))
    assert degree_percentiles(rowptr, [100]) == [float(deg.max())]
    with pytest.raises(FastleadingError, match=r"\[0, 100\]"):
        degree_percentiles(rowptr, [101])


@pytest.mark.parametrize("hops", [0, 1, 2, 3])
def test_k_hop_nodes_matches_breadth_first_search(hops):
    from fastleading.engine.graph import k_hop_nodes

    src, dst = random_edges(300, 500, seed=hops)
    rowptr, col = build_csr(src, dst, 300)
    rows = csr_rows(rowptr, col)
    seeds = torch.tensor([0, 7, 7, 150, 299])
    want, frontier = set(seeds.tolist()), set(seeds.tolist())
    for _ in range(hops):
        frontier = {v for u in frontier for v in rows[u]} - want
        want |= frontier
    got = k_hop_nodes(rowptr, col, seeds, hops)
    assert got.dtype == torch.int64 and got.tolist() == sorted(want)
    assert hops < 2 or len(want) > 3 * len(set(seeds.tolist()))  # the test can tell hops apart


def test_every_sampled_subgraph_lies_within_the_k_hop_nodes():
    from fastleading.engine.graph import k_hop_nodes
    from fastleading.engine.sampler import NeighborSampler

    src, dst = random_edges(400, 900, seed=5)
    rowptr, col = build_csr(src, dst, 400)
    targets = torch.arange(0, 400, 37)
    reach = set(k_hop_nodes(rowptr, col, targets, 2).tolist())
    sampler = NeighborSampler(rowptr, col, [10, 5])
    for seed in range(5):
        assert set(sampler.sample(targets, seed=seed).node_ids.tolist()) <= reach
    everything = NeighborSampler(rowptr, col, [-1, -1]).sample(targets, seed=0).node_ids
    assert set(everything.tolist()) == reach  # all neighbours at every hop: exactly the k-hop set
