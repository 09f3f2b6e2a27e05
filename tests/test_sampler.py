"""Neighbour sampling: both backends against brute-force references and the output contract."""

import math
from collections import Counter
from itertools import combinations

import pytest
import torch

from fastleading.engine.graph import build_csr, build_csr_reference
from fastleading.engine.sampler import NeighborSampler, SampledSubgraph
from fastleading.errors import FastleadingError

BACKENDS = ["native", "torch"]


# -- graphs ---------------------------------------------------------------------------------

def power_law_graph(num_nodes: int, num_edges: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric CSR with hubs far above any fanout, degree-1 and isolated nodes, self loops."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.arange(1, num_nodes + 1, dtype=torch.float64) ** -0.9
    weight[torch.randperm(num_nodes, generator=g)[: num_nodes // 20]] = 0
    src = torch.multinomial(weight, num_edges, replacement=True, generator=g)
    dst = torch.multinomial(weight, num_edges, replacement=True, generator=g)
    rowptr, col = build_csr(src, dst, num_nodes)
    # Put self loops back into a few rows: the sampler must not turn them into edges.
    loops = torch.arange(0, num_nodes, 7)
    return build_csr_directed(torch.cat([csr_src(rowptr), loops]), torch.cat([col.long(), loops]), num_nodes)


def csr_src(rowptr: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(rowptr.numel() - 1), rowptr[1:] - rowptr[:-1])


def build_csr_directed(src: torch.Tensor, dst: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR (int64 rowptr, int32 col) of the directed edges src -> dst as given, rows sorted."""
    order = torch.argsort(src * num_nodes + dst)
    rowptr = torch.zeros(num_nodes + 1, dtype=torch.int64)
    rowptr[1:] = torch.cumsum(torch.bincount(src, minlength=num_nodes), 0)
    return rowptr, dst[order].int()


def layered_dag(degrees_per_layer: list[list[int]], seed: int) -> tuple[torch.Tensor, torch.Tensor, list[range]]:
    """Directed graph of layers L0 -> L1 -> ...: node i of layer h has degrees_per_layer[h][i]
    distinct out-neighbours, all in layer h + 1 (shared between parents). Sampling from L0
    reaches layer h exactly at hop h, and a node's sampled edges into the next layer are
    exactly its own draws: fanouts and distinctness become exactly checkable."""
    g = torch.Generator().manual_seed(seed)
    sizes = [len(d) for d in degrees_per_layer]
    sizes.append(max(max(degrees_per_layer[-1], default=1), 1) * 3)
    starts = [sum(sizes[:h]) for h in range(len(sizes))]
    src, dst = [], []
    for h, degs in enumerate(degrees_per_layer):
        assert max(degs, default=0) <= sizes[h + 1]
        for i, d in enumerate(degs):
            children = torch.randperm(sizes[h + 1], generator=g)[:d] + starts[h + 1]
            src += [starts[h] + i] * d
            dst += children.tolist()
    num_nodes = sum(sizes)
    rowptr, col = build_csr_directed(torch.tensor(src, dtype=torch.int64), torch.tensor(dst, dtype=torch.int64),
                                     num_nodes)
    return rowptr, col, [range(starts[h], starts[h] + sizes[h]) for h in range(len(sizes))]


def adjacency(rowptr: torch.Tensor, col: torch.Tensor) -> list[set[int]]:
    return [set(col[rowptr[i]:rowptr[i + 1]].tolist()) for i in range(rowptr.numel() - 1)]


# -- the contract -----------------------------------------------------------------------------

def sub_edges(sub: SampledSubgraph) -> set[tuple[int, int]]:
    """The subgraph's edges as (global, global) pairs."""
    rows = csr_src(sub.rowptr)
    ids = sub.node_ids
    return set(zip(ids[rows].tolist(), ids[sub.col].tolist(), strict=True))


def check_contract(sub: SampledSubgraph, adj: list[set[int]], targets: torch.Tensor, num_hops: int) -> None:
    """Everything a SampledSubgraph promises, checked against the graph's adjacency sets."""
    n = sub.num_nodes
    assert sub.node_ids.dtype == sub.rowptr.dtype == sub.col.dtype == torch.int64
    assert sub.num_targets == targets.numel()
    assert torch.equal(sub.node_ids[: sub.num_targets], targets)
    assert torch.unique(sub.node_ids).numel() == n
    assert len(sub.nodes_per_hop) == num_hops + 1 and sub.nodes_per_hop[0] == targets.numel()
    assert sum(sub.nodes_per_hop) == n
    # A valid CSR over local ids: sorted distinct columns, no self loops, symmetric.
    assert sub.rowptr.numel() == n + 1 and sub.rowptr[0] == 0 and sub.rowptr[-1] == sub.col.numel()
    rows = csr_src(sub.rowptr)
    assert bool((sub.col >= 0).all() and (sub.col < n).all())
    key = rows * n + sub.col
    assert bool((key[1:] > key[:-1]).all())  # sorted within rows, no duplicates
    assert not bool((rows == sub.col).any())
    edges = set(zip(rows.tolist(), sub.col.tolist(), strict=True))
    assert edges == {(v, u) for u, v in edges}
    # Every sampled edge is an edge of the graph (in one direction: the graph may be directed).
    for a, b in sub_edges(sub):
        assert b in adj[a] or a in adj[b]
    # Hop structure: a node first reached at hop h has an edge to a node of hop h - 1, and no
    # edge joins two nodes of the last hop (they are never expanded).
    hop_of = torch.repeat_interleave(torch.arange(num_hops + 1), torch.tensor(sub.nodes_per_hop))
    for v in range(sub.num_targets, n):
        assert bool((hop_of[sub.col[sub.rowptr[v]:sub.rowptr[v + 1]]] == hop_of[v] - 1).any())
    assert not bool(((hop_of[rows] == num_hops) & (hop_of[sub.col] == num_hops)).any())


def bfs_reference(adj: list[set[int]], targets: list[int],
                  num_hops: int) -> tuple[list[set[int]], set[tuple[int, int]]]:
    """Brute force for unlimited fanouts: the nodes first reached at each hop, and every edge
    between an expanded node and its neighbours (both directions, no self loops)."""
    hops = [set(targets)]
    seen = set(targets)
    edges = set()
    for _ in range(num_hops):
        new = set()
        for u in hops[-1]:
            for v in adj[u] - {u}:
                edges |= {(u, v), (v, u)}
                if v not in seen:
                    new.add(v)
        seen |= new
        hops.append(new)
    return hops, edges


# -- tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fanouts", [[5, 3], [2, 2, 2], [1], [12, -1]])
def test_contract_on_power_law_graph(backend, fanouts):
    rowptr, col = power_law_graph(400, 3000, seed=10)
    adj = adjacency(rowptr, col)
    sampler = NeighborSampler(rowptr, col, fanouts, backend=backend)
    for seed in range(3):
        targets = torch.randperm(400, generator=torch.Generator().manual_seed(seed))[:24]
        check_contract(sampler.sample(targets, seed=seed), adj, targets, len(fanouts))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fanouts", [[-1, -1], [10_000, 10_000, 10_000]])
def test_unlimited_fanouts_give_the_exact_neighbourhood(backend, fanouts):
    rowptr, col = power_law_graph(300, 900, seed=11)
    adj = adjacency(rowptr, col)
    targets = torch.tensor([5, 0, 77, 123, 299])
    sub = NeighborSampler(rowptr, col, fanouts, backend=backend).sample(targets, seed=0)
    check_contract(sub, adj, targets, len(fanouts))
    hops, edges = bfs_reference(adj, targets.tolist(), len(fanouts))
    begin = 0
    for h, count in enumerate(sub.nodes_per_hop):
        assert set(sub.node_ids[begin:begin + count].tolist()) == hops[h]
        begin += count
    assert sub_edges(sub) == edges


@pytest.mark.parametrize("backend", BACKENDS)
def test_fanouts_are_exact_and_draws_distinct(backend):
    # Degrees 0, 1, exactly the fanout, one above, far above; the middle layer also hits the
    # hash-set path of the native sampler (fanout 40 > 32).
    f1, f2 = 4, 40
    degrees = [[0, 1, f1, f1 + 1, 60, 3, f1, 200], [0, 1, f2, f2 + 1, 300, 7, 39, 120] * 25]
    rowptr, col, layers = layered_dag(degrees, seed=12)
    adj = adjacency(rowptr, col)
    sampler = NeighborSampler(rowptr, col, [f1, f2], backend=backend)
    for seed in range(4):
        targets = torch.tensor(list(layers[0]))
        sub = sampler.sample(targets, seed=seed)
        check_contract(sub, adj, targets, 2)
        ids = sub.node_ids.tolist()
        begin = 0
        for h, count in enumerate(sub.nodes_per_hop):
            assert all(ids[i] in layers[h] for i in range(begin, begin + count))
            begin += count
        drawn_per_hop = [set(), set()]
        for local, u in enumerate(ids[: sub.nodes_per_hop[0] + sub.nodes_per_hop[1]]):
            h = 0 if local < sub.nodes_per_hop[0] else 1
            nbrs = {ids[v] for v in sub.col[sub.rowptr[local]:sub.rowptr[local + 1]].tolist()}
            draws = nbrs & set(layers[h + 1])
            assert len(draws) == min(len(adj[u]), [f1, f2][h])
            assert draws <= adj[u]
            drawn_per_hop[h] |= draws
        assert sub.nodes_per_hop[1:] == [len(drawn_per_hop[0]), len(drawn_per_hop[1])]


def star_forest(num_stars: int, degree: int) -> tuple[torch.Tensor, torch.Tensor]:
    """num_stars disjoint stars: centre i has leaves num_stars + i*degree + (0..degree-1)."""
    centres = torch.arange(num_stars).repeat_interleave(degree)
    leaves = num_stars + torch.arange(num_stars * degree)
    rowptr, col = build_csr(centres, leaves, num_stars * (degree + 1))
    return rowptr, col


@pytest.mark.parametrize("backend", BACKENDS)
def test_draws_are_uniform_over_subsets(backend):
    # 3000 stars of degree 6, fanout 2: each of the 15 leaf pairs should come up ~200 times.
    stars, degree = 3000, 6
    rowptr, col = star_forest(stars, degree)
    sub = NeighborSampler(rowptr, col, [2], backend=backend).sample(torch.arange(stars), seed=123)
    counts = Counter()
    for centre in range(stars):
        leaves = sub.node_ids[sub.col[sub.rowptr[centre]:sub.rowptr[centre + 1]]]
        counts[tuple(sorted(((leaves - stars) % degree).tolist()))] += 1
    pairs = list(combinations(range(degree), 2))
    assert set(counts) == set(pairs)
    expected = stars / len(pairs)
    chi2 = sum((counts[p] - expected) ** 2 / expected for p in pairs)
    assert chi2 < 36.1  # 14 degrees of freedom, p = 0.001


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_fanout_inclusion_is_uniform(backend):
    # Fanout 35 of 40 (the native hash-set path): every leaf is drawn with probability 7/8.
    stars, degree, fanout = 1000, 40, 35
    rowptr, col = star_forest(stars, degree)
    sub = NeighborSampler(rowptr, col, [fanout], backend=backend).sample(torch.arange(stars), seed=7)
    assert sub.nodes_per_hop == [stars, stars * fanout]
    leaf_position = (sub.node_ids[stars:] - stars) % degree
    counts = torch.bincount(leaf_position, minlength=degree).double()
    p = fanout / degree
    sd = math.sqrt(stars * p * (1 - p))
    assert bool(((counts - stars * p).abs() < 5 * sd).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_sample_and_seeds_differ(backend):
    rowptr, col = power_law_graph(500, 5000, seed=13)
    sampler = NeighborSampler(rowptr, col, [6, 4], backend=backend)
    targets = torch.arange(0, 500, 9)
    a, b, c = (sampler.sample(targets, seed=s) for s in (5, 5, 6))
    for x, y in [(a.node_ids, b.node_ids), (a.rowptr, b.rowptr), (a.col, b.col)]:
        assert torch.equal(x, y)
    assert a.nodes_per_hop == b.nodes_per_hop
    assert not torch.equal(a.node_ids, c.node_ids)


def test_native_sample_is_independent_of_thread_count():
    # ~26k draws at hop 1 and ~55k at hop 2: enough for the sampler to start 3 threads (8k+ each).
    rowptr, col = power_law_graph(20_000, 200_000, seed=14)
    targets = torch.randperm(20_000, generator=torch.Generator().manual_seed(0))[:3000]
    subs = [NeighborSampler(rowptr, col, [25, 10], backend="native", num_threads=t).sample(targets, seed=99)
            for t in (1, 2, 3)]
    for sub in subs[1:]:
        assert torch.equal(sub.node_ids, subs[0].node_ids)
        assert torch.equal(sub.rowptr, subs[0].rowptr) and torch.equal(sub.col, subs[0].col)


def test_int64_columns_give_the_same_sample():
    rowptr, col = power_law_graph(300, 2000, seed=15)
    targets = torch.tensor([3, 1, 4, 15, 92])
    a = NeighborSampler(rowptr, col, [4, 3], backend="native").sample(targets, seed=1)
    b = NeighborSampler(rowptr, col.long(), [4, 3], backend="native").sample(targets, seed=1)
    assert torch.equal(a.node_ids, b.node_ids) and torch.equal(a.col, b.col)


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_index_lists_the_csr(backend):
    rowptr, col = power_law_graph(200, 1000, seed=16)
    sub = NeighborSampler(rowptr, col, [3, 3], backend=backend).sample(torch.tensor([0, 1, 2]), seed=0)
    edge_index = sub.edge_index()
    ref_rowptr, ref_col = build_csr_reference(edge_index[0], edge_index[1], sub.num_nodes)
    assert torch.equal(ref_rowptr, sub.rowptr) and torch.equal(ref_col, sub.col)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_targets_are_rejected(backend):
    rowptr, col = power_law_graph(50, 200, seed=17)
    sampler = NeighborSampler(rowptr, col, [2], backend=backend)
    with pytest.raises(FastleadingError, match="twice"):
        sampler.sample(torch.tensor([1, 2, 1]), seed=0)
    with pytest.raises(FastleadingError, match=r"\[0, 50\)"):
        sampler.sample(torch.tensor([1, 50]), seed=0)
    with pytest.raises(FastleadingError, match=r"\[0, 50\)"):
        sampler.sample(torch.tensor([-1]), seed=0)
    with pytest.raises(FastleadingError, match="at least one"):
        sampler.sample(torch.tensor([], dtype=torch.int64), seed=0)


def test_bad_arguments_are_rejected():
    rowptr, col = power_law_graph(50, 200, seed=18)
    with pytest.raises(FastleadingError, match="fanouts"):
        NeighborSampler(rowptr, col, [])
    with pytest.raises(FastleadingError, match="fanouts"):
        NeighborSampler(rowptr, col, [3, 0])
    with pytest.raises(FastleadingError, match="backend"):
        NeighborSampler(rowptr, col, [3], backend="cuda")
    with pytest.raises(FastleadingError, match="rowptr"):
        NeighborSampler(rowptr.int(), col, [3])
    with pytest.raises(FastleadingError, match="col"):
        NeighborSampler(rowptr, col.float(), [3])
    bad = col.clone()
    bad[0] = 50
    with pytest.raises(FastleadingError, match=r"\[0, 50\)"):
        NeighborSampler(rowptr, bad, [3])
    short = rowptr.clone()
    short[-1] -= 1
    with pytest.raises(FastleadingError, match="rowptr"):
        NeighborSampler(short, col, [3])
