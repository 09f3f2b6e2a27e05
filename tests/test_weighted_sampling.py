"""Importance-weighted sampled propagation (model.subgraph_norm=weighted).

A node that drew k_i of its deg_i neighbours weights each drawn message by deg_i / k_i with the
full graph's D̃^{-1/2}: the sampled operator Ã is an unbiased estimate of the full-graph rows of
its expanded nodes, exact when every neighbour was drawn, and not symmetric (the backward
passes apply Ãᵀ)."""

import pytest
import torch
from test_host_sync import device_run, run_steps
from test_train import small_config

from fastleading.engine import ops
from fastleading.engine.graph import build_csr
from fastleading.engine.sampler import NeighborSampler
from fastleading.models.appnp import ImplicitAPPNP, ImportanceNorm, propagate, weighted_iterate
from fastleading.trainer.loop import build_trainer
from fastleading.trainer.steps import coupled_step

BACKENDS = ["native", "torch"]


def hub_graph(num_nodes: int = 200, num_edges: int = 900, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric CSR (no self loops) with power-law degrees: hubs far above the fanouts, leaves,
    isolated nodes."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.arange(1, num_nodes + 1, dtype=torch.float64) ** -0.7
    weight[-num_nodes // 20:] = 0
    src = torch.multinomial(weight, num_edges, replacement=True, generator=g)
    dst = torch.multinomial(weight, num_edges, replacement=True, generator=g)
    return build_csr(src, dst, num_nodes)


def degree(rowptr: torch.Tensor) -> torch.Tensor:
    return rowptr[1:] - rowptr[:-1]


def norm_of(sub, graph_rowptr: torch.Tensor, dtype=torch.float64) -> ImportanceNorm:
    d = sub.draws
    return ImportanceNorm(ops.gcn_dinv(graph_rowptr, dtype)[sub.node_ids], d.weight.to(dtype), d.rowptr_t, d.col_t)


def apply_op(sub, graph_rowptr: torch.Tensor, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """Ã x (Ãᵀ x) over the subgraph's nodes: one iteration with a = 0."""
    d = sub.draws
    return weighted_iterate(d.rowptr, d.col, norm_of(sub, graph_rowptr, x.dtype), x, torch.zeros_like(x), 0.0, 1,
                            transpose=transpose)


def dense_op(sub, graph_rowptr: torch.Tensor) -> torch.Tensor:
    """Ã as a dense float64 [n, n] matrix, straight from its definition."""
    n, d = sub.num_nodes, sub.draws
    dinv = ops.gcn_dinv(graph_rowptr, torch.float64)[sub.node_ids]
    a = torch.diag(dinv.square())
    for i in range(n):
        for j in d.col[d.rowptr[i]:d.rowptr[i + 1]].tolist():
            a[i, j] += d.weight[i] * dinv[i] * dinv[j]
    return a


def full_rows(rowptr: torch.Tensor, col: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Â x of the full graph (float64)."""
    return ops.appnp_step(rowptr, col, x, torch.zeros_like(x), 0.0)


# -- the sampler's draws ----------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_draws_say_who_drew_whom(backend):
    rowptr, col = hub_graph()
    deg = degree(rowptr)
    fanouts = [3, 2]
    targets = torch.tensor([0, 1, 2, 5, 40, 150, 199])  # hubs, ordinary nodes, an isolated node
    for seed in range(5):
        sub = NeighborSampler(rowptr, col, fanouts, backend=backend, draws=True).sample(targets, seed=seed)
        plain = NeighborSampler(rowptr, col, fanouts, backend=backend).sample(targets, seed=seed)
        assert torch.equal(sub.node_ids, plain.node_ids) and torch.equal(sub.col, plain.col)  # same sample
        d, n, ids = sub.draws, sub.num_nodes, sub.node_ids
        expanded = n - sub.nodes_per_hop[-1]
        rows = [d.col[d.rowptr[i]:d.rowptr[i + 1]].tolist() for i in range(n)]
        sym = {(i, j) for i in range(n) for j in sub.col[sub.rowptr[i]:sub.rowptr[i + 1]].tolist()}
        drawn = {(i, j) for i in range(n) for j in rows[i]}
        assert drawn <= sym and all((i, j) in drawn or (j, i) in drawn for i, j in sym)
        hop_of = torch.repeat_interleave(torch.arange(len(sub.nodes_per_hop)), torch.tensor(sub.nodes_per_hop))
        for i in range(n):
            assert rows[i] == sorted(rows[i]) and len(set(rows[i])) == len(rows[i])
            g = int(ids[i])
            if i < expanded:  # its own draws: min(degree, fanout) of its neighbours
                assert len(rows[i]) == min(int(deg[g]), fanouts[hop_of[i]])
                assert set(ids[rows[i]].tolist()) <= set(col[rowptr[g]:rowptr[g + 1]].tolist())
                want = int(deg[g]) / len(rows[i]) if rows[i] else 0.0
            else:  # the last hop's nodes draw nothing: self loop only
                assert rows[i] == [] and any(i in rows[j] for j in range(expanded))
                want = 0.0
            assert d.weight[i] == pytest.approx(float(want), rel=1e-15)
        transposed = {(j, i) for i in range(n) for j in d.col_t[d.rowptr_t[i]:d.rowptr_t[i + 1]].tolist()}
        assert transposed == drawn and d.rowptr_t[-1] == d.rowptr[-1]
        for i in range(n):  # the transpose's rows sorted as well (natively by construction, not by a sort)
            row_t = d.col_t[d.rowptr_t[i]:d.rowptr_t[i + 1]].tolist()
            assert row_t == sorted(row_t)


def test_native_draws_are_independent_of_thread_count():
    rowptr, col = hub_graph(3000, 40000)
    targets = torch.arange(0, 3000, 3)
    subs = [NeighborSampler(rowptr, col, [25, 10], backend="native", num_threads=t, draws=True).sample(targets, seed=9)
            for t in (1, 4)]
    for f in ("rowptr", "col", "rowptr_t", "col_t", "weight"):
        assert torch.equal(getattr(subs[0].draws, f), getattr(subs[1].draws, f)), f


# -- unbiasedness -----------------------------------------------------------------------------

@pytest.mark.parametrize("backend,samples", [("native", 3000), ("torch", 1000)])
def test_monte_carlo_mean_of_the_sampled_rows_is_the_full_graph_row(backend, samples):
    """Mean of Ã x over many samples: the full-graph row Â x for every target, and for every node
    expanded at hop 1 (given that it was reached), within 5 standard errors estimated from the
    samples themselves; the unweighted full-graph normalisation misses it (the test has power)."""
    rowptr, col = hub_graph()
    deg = degree(rowptr)
    targets = torch.tensor([0, 1, 2, 3, 7, 20, 60, 120, 180, 199])
    assert (deg[targets] > 3).sum() >= 5  # most targets draw only some of their neighbours
    x = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    full = full_rows(rowptr, col, x)
    dinv = ops.gcn_dinv(rowptr, torch.float64)
    sampler = NeighborSampler(rowptr, col, [3, 2], backend=backend, draws=True)
    b = len(targets)
    s1, s2 = torch.zeros(b, 3, dtype=torch.float64), torch.zeros(b, 3, dtype=torch.float64)
    f1, f2 = torch.zeros_like(s1), torch.zeros_like(s2)
    h1, h2, hn = torch.zeros_like(x), torch.zeros_like(x), torch.zeros(200, dtype=torch.float64)
    for seed in range(samples):
        sub = sampler.sample(targets, seed=seed)
        ids = sub.node_ids
        y = apply_op(sub, rowptr, x[ids])
        s1 += y[:b]
        s2 += y[:b].square()
        plain = ops.appnp_step(sub.rowptr, sub.col, x[ids], torch.zeros_like(x[ids]), 0.0, dinv[ids])[:b]
        f1 += plain
        f2 += plain.square()
        hop1 = slice(b, b + sub.nodes_per_hop[1])
        h1.index_add_(0, ids[hop1], y[hop1])
        h2.index_add_(0, ids[hop1], y[hop1].square())
        hn.index_add_(0, ids[hop1], torch.ones(sub.nodes_per_hop[1], dtype=torch.float64))

    def within(sum1, sum2, count, want, k=5.0):
        mean = sum1 / count
        var = (sum2 / count - mean.square()).clamp(min=0) * count / (count - 1)
        return (mean - want).abs() <= k * (var / count).sqrt() + 1e-9

    assert within(s1, s2, samples, full[targets]).all()
    assert not within(f1, f2, samples, full[targets]).all()  # row mass lost without the weights
    seen = hn >= 100
    assert seen.sum() >= 10
    assert within(h1[seen], h2[seen], hn[seen, None], full[seen]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_are_exact_when_the_fanout_covers_the_degree(backend):
    rowptr, col = hub_graph()
    targets = torch.arange(0, 200, 9)
    x = torch.randn(200, 4, dtype=torch.float64)
    full = full_rows(rowptr, col, x)
    for fanouts in ([1000], [1000, 2], [-1, 1]):
        sub = NeighborSampler(rowptr, col, fanouts, backend=backend, draws=True).sample(targets, seed=3)
        assert torch.equal(sub.draws.weight[:len(targets)], (degree(rowptr)[targets] > 0).double())
        got = apply_op(sub, rowptr, x[sub.node_ids])[:len(targets)]
        torch.testing.assert_close(got, full[targets], rtol=1e-12, atol=1e-12)


# -- the non-symmetric operator in the layers -------------------------------------------------

def sampled_case(fanouts=(2, 2), seed=4):
    rowptr, col = hub_graph()
    sub = NeighborSampler(rowptr, col, list(fanouts), draws=True).sample(torch.tensor([0, 1, 3, 9, 30]), seed=seed)
    return rowptr, sub, dense_op(sub, rowptr)


def test_the_operator_and_its_transpose_match_the_dense_matrix():
    rowptr, sub, a = sampled_case()
    assert (a - a.T).abs().max() > 0.1  # really not symmetric
    x = torch.randn(sub.num_nodes, 3, dtype=torch.float64)
    torch.testing.assert_close(apply_op(sub, rowptr, x), a @ x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(apply_op(sub, rowptr, x, transpose=True), a.T @ x, rtol=1e-12, atol=1e-12)
    # D^{-1/2} Ã D^{1/2} is sub-stochastic (each expanded row's weights restore its full degree,
    # the last hop keeps its self loop), so the spectral radius of Ã is at most 1 like Â's
    dinv = ops.gcn_dinv(rowptr, torch.float64)[sub.node_ids]
    q = dinv[:, None] * a / dinv[None, :]  # D^{-1/2} = diag(dinv)
    assert (q >= 0).all()
    expanded = sub.num_nodes - sub.nodes_per_hop[-1]
    want = torch.cat([torch.ones(expanded, dtype=torch.float64), dinv[expanded:].square()])
    torch.testing.assert_close(q.sum(1), want, rtol=1e-12, atol=1e-12)
    assert torch.linalg.eigvals(a).abs().max() <= 1 + 1e-9


@pytest.mark.parametrize("warm", [False, True])
def test_implicit_forward_and_gradient_match_the_exact_nonsymmetric_solve(warm):
    """float64: the implicit layer's output and its gradient converge to a (I-(1-a)Ã)^{-1} X_in
    and a (I-(1-a)Ã)^{-T} dL/dX; with Ã in place of Ãᵀ the gradient would be visibly wrong."""
    rowptr, sub, a_op = sampled_case()
    n, alpha = sub.num_nodes, 0.3
    m = torch.eye(n, dtype=torch.float64) - (1 - alpha) * a_op
    assert torch.linalg.eigvals((1 - alpha) * a_op).abs().max() < 0.95  # the iteration converges
    gen = torch.Generator().manual_seed(5)
    x_in = torch.randn(n, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    g = torch.randn(n, 3, dtype=torch.float64, generator=gen)
    want_x = alpha * torch.linalg.solve(m, x_in.detach())
    want_g = alpha * torch.linalg.solve(m.T, g)
    wrong_g = alpha * torch.linalg.solve(m, g)
    assert (wrong_g - want_g).abs().max() > 1e-2  # so a missing transpose fails the test
    d, norm = sub.draws, norm_of(sub, rowptr)
    # cold: many iterations in one call; warm: few per call, warm-started from the histories (eqs. 4-7)
    iters, calls = (5, 60) if warm else (150, 1)
    layer = ImplicitAPPNP(alpha, iters, 200, 3, torch.float64, warm_backward=warm)
    for _ in range(calls):
        x_in.grad = None
        out = layer(x_in, d.rowptr, d.col, sub.node_ids, norm)
        (out * g).sum().backward()
    torch.testing.assert_close(out.detach(), want_x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x_in.grad, want_g, rtol=1e-9, atol=1e-9)


def test_unrolled_propagation_applies_the_transpose():
    rowptr, sub, a_op = sampled_case()
    d, norm, alpha = sub.draws, norm_of(sub, rowptr), 0.1
    x_in = torch.randn(sub.num_nodes, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: propagate(x, d.rowptr, d.col, alpha, 3, norm), (x_in,))
    want = x_in.detach()
    for _ in range(3):
        want = (1 - alpha) * a_op @ want + alpha * x_in.detach()
    torch.testing.assert_close(propagate(x_in, d.rowptr, d.col, alpha, 3, norm), want, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(propagate(x_in, d.rowptr, d.col, alpha, 3, norm), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["native", "triton"])
@pytest.mark.parametrize("transpose", [False, True])
def test_fp32_kernels_match_the_float64_operator(backend, transpose):
    """The fused kernels (native C++, Triton through the interpreter) with the per-row scales,
    on random inputs, against the float64 reference."""
    rowptr, sub, _ = sampled_case(fanouts=(4, 3), seed=11)
    d = sub.draws
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(sub.num_nodes, 19, generator=gen)
    x_in = torch.randn(sub.num_nodes, 19, generator=gen)
    want = weighted_iterate(d.rowptr, d.col, norm_of(sub, rowptr), x0.double(), x_in.double(), 0.2, 3, transpose)
    with ops.use_backend(backend):
        got = weighted_iterate(d.rowptr, d.col, norm_of(sub, rowptr, torch.float32), x0, x_in, 0.2, 3, transpose)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


# -- in the trainer ---------------------------------------------------------------------------

def test_trainer_samples_weighted_subgraphs(tiny_bert, tmp_path):
    # every neighbour sampled at the first hop: each target's row of Ã is its full-graph row
    tr = build_trainer(small_config(tiny_bert, tmp_path / "c", "train.fanouts=[1000,2]",
                                    "model.subgraph_norm=weighted"), tmp_path / "run")
    targets = tr.split.train[:16]
    sub = tr.run.sample(targets)
    assert isinstance(sub.dinv, ImportanceNorm)
    assert torch.equal(sub.dinv.dinv, ops.gcn_dinv(tr.graph.rowptr)[sub.ids])
    x = torch.randn(tr.graph.num_nodes, 3, dtype=torch.float64)
    norm = ImportanceNorm(ops.gcn_dinv(tr.graph.rowptr, torch.float64)[sub.ids], sub.dinv.weight.double(),
                          sub.dinv.rowptr_t, sub.dinv.col_t)
    got = weighted_iterate(sub.rowptr, sub.col, norm, x[sub.ids], torch.zeros_like(x[sub.ids]), 0.0, 1)
    full = full_rows(tr.graph.rowptr, tr.graph.col, x)
    torch.testing.assert_close(got[:len(targets)], full[targets], rtol=1e-12, atol=1e-12)


def test_coupled_step_with_weighted_subgraphs_matches_the_dense_operator(tiny_bert, tmp_path):
    """The coupled baseline's step on a weighted subgraph: its loss and head gradients equal a
    float64 reference that applies the dense Ã (built from its definition) to the head's logits
    for model.num_iters unrolled steps; the symmetric Â of the same subgraph would give another
    loss."""
    import copy

    import torch.nn.functional as F

    tr = build_trainer(small_config(tiny_bert, tmp_path / "c", "train.method=coupled", "model.subgraph_norm=weighted",
                                    "model.head_dropout=0", "model.num_iters=3"), tmp_path / "run")
    run, targets = tr.run, tr.split.train[:16]
    head64 = copy.deepcopy(run.model.head).double()
    seen = {}
    sample, encode = run.sample, run.encode
    run.sample = lambda t: seen.setdefault("sub", sample(t))
    run.encode = lambda ids: seen.setdefault("x_in", encode(ids))
    loss = coupled_step(run, targets)
    sub, x_in = seen["sub"], seen["x_in"].detach().double()
    n, alpha = len(sub.ids), run.model.appnp.alpha
    dinv = ops.gcn_dinv(tr.graph.rowptr, torch.float64)[sub.ids]
    a_op = torch.diag(dinv.square())
    for i in range(n):
        for j in sub.col[sub.rowptr[i]:sub.rowptr[i + 1]].tolist():
            a_op[i, j] += sub.dinv.weight[i].double() * dinv[i] * dinv[j]
    assert (a_op - a_op.T).abs().max() > 1e-3  # a really importance-weighted, non-symmetric operator

    def reference(op):
        logits = head64(x_in)
        x = logits
        for _ in range(3):
            x = (1 - alpha) * op @ x + alpha * logits
        return F.cross_entropy(x[:len(targets)], tr.graph.labels[targets])

    want = reference(a_op)
    want.backward()
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    sym = (a_op + a_op.T) / 2
    assert abs(float(reference(sym)) - float(want)) > 1e-4  # the test tells the operators apart
    for p, p64 in zip(run.model.head.parameters(), head64.parameters(), strict=True):
        torch.testing.assert_close(p.grad.double(), p64.grad, rtol=1e-4, atol=1e-6)


def test_weighted_leading_steps_read_nothing_back_from_the_device(tiny_bert, tmp_path, guard):
    tr = device_run(tiny_bert, tmp_path, guard, "model.subgraph_norm=weighted")
    run_steps(tr, guard)
    assert guard.reads == [], "\n".join(guard.reads)
    assert guard.is_device(tr.run.model.appnp.g_history)


def test_weighted_is_rejected_for_link_prediction():
    from fastleading.config import Config, apply_overrides
    from fastleading.errors import FastleadingError

    with pytest.raises(FastleadingError, match="subgraph_norm"):
        apply_overrides(Config(), ["train.task=link", "model.subgraph_norm=weighted"])
    assert apply_overrides(Config(), ["model.subgraph_norm=weighted"]).model.subgraph_norm == "weighted"
