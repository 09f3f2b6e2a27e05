"""ImplicitAPPNP against the exact fixed point and the exact implicit gradient (float64)."""

import math

import pytest
import torch

from fastleading.engine.graph import build_csr
from fastleading.models.appnp import ImplicitAPPNP, propagate


def random_graph(n: int, m: int, gen: torch.Generator):
    src = torch.randint(0, n, (m,), generator=gen)
    dst = torch.randint(0, n, (m,), generator=gen)
    rowptr, col = build_csr(src.numpy(), dst.numpy(), n)
    return rowptr, col


def dense_a_hat(rowptr, col, n):
    """Â = D̃^{-1/2}(A+I)D̃^{-1/2}, built densely and independently of fastleading.engine.ops."""
    a = torch.zeros(n, n, dtype=torch.float64)
    row = torch.repeat_interleave(torch.arange(n), rowptr[1:] - rowptr[:-1])
    a[row, col.long()] = 1.0
    a += torch.eye(n, dtype=torch.float64)
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


def exact(a_hat, alpha, rhs):
    n = a_hat.shape[0]
    return alpha * torch.linalg.solve(torch.eye(n, dtype=torch.float64) - (1 - alpha) * a_hat, rhs)


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_warm_started_forward_and_backward_converge_to_exact_implicit_solution(alpha):
    gen = torch.Generator().manual_seed(1234)
    n, channels, num_global = 60, 5, 150
    rowptr, col = random_graph(n, 150, gen)
    a_hat = dense_a_hat(rowptr, col, n)
    node_ids = torch.randperm(num_global, generator=gen)[:n]  # subgraph nodes are global ids
    x_in = torch.randn(n, channels, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(n, channels, dtype=torch.float64, generator=gen)  # dL/dX* for L = sum(w * X*)

    x_star = exact(a_hat, alpha, x_in.detach())
    grad_star = exact(a_hat.T, alpha, w)  # a (I - (1-a) Â)^{-T} dL/dX*

    layer = ImplicitAPPNP(alpha, num_iters=3, num_nodes=num_global, channels=channels,
                          history_dtype=torch.float64)
    errors = []
    for _ in range(250):
        x_in.grad = None
        out = layer(x_in, rowptr, col, node_ids)
        (out * w).sum().backward()
        errors.append((rel_err(out.detach(), x_star), rel_err(x_in.grad, grad_star)))
    fwd_err, bwd_err = errors[-1]
    assert fwd_err < 1e-6 and bwd_err < 1e-6, errors[-1]
    # The first visit starts from zero histories: with 3 iterations it is far from the solution,
    # so it is the warm start that makes 3 iterations per step enough.
    assert errors[0][0] > 1e-2 and errors[0][1] > 1e-2, errors[0]
    # Histories live at the global ids, nowhere else.
    others = torch.ones(num_global, dtype=torch.bool)
    others[node_ids] = False
    assert layer.x_history[others].abs().max() == 0 and layer.g_history[others].abs().max() == 0
    assert torch.allclose(layer.x_history[node_ids], out.detach())


def test_cold_start_with_few_iterations_is_visibly_worse_than_warm_start():
    gen = torch.Generator().manual_seed(7)
    n, channels, alpha = 80, 4, 0.1
    rowptr, col = random_graph(n, 300, gen)
    a_hat = dense_a_hat(rowptr, col, n)
    x_in = torch.randn(n, channels, dtype=torch.float64, generator=gen)
    x_star = exact(a_hat, alpha, x_in)
    cold = propagate(x_in, rowptr, col, alpha, 2)  # 2 iterations from X_0 = X_in
    warm = ImplicitAPPNP(alpha, 2, n, channels, torch.float64)
    for _ in range(100):
        out = warm(x_in, rowptr, col, torch.arange(n))
    assert rel_err(out, x_star) < 1e-6
    assert rel_err(cold, x_star) > 1e-2


def test_unrolled_propagation_gradient_matches_dense_autograd():
    gen = torch.Generator().manual_seed(99)
    n, channels, alpha, iters = 40, 3, 0.2, 4
    rowptr, col = random_graph(n, 100, gen)
    a_hat = dense_a_hat(rowptr, col, n)
    x_in = torch.randn(n, channels, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(n, channels, dtype=torch.float64, generator=gen)
    (propagate(x_in, rowptr, col, alpha, iters) * w).sum().backward()
    ours = x_in.grad.clone()
    x_ref = x_in.detach().clone().requires_grad_(True)
    x = x_ref
    for _ in range(iters):
        x = (1 - alpha) * a_hat @ x + alpha * x_ref
    (x * w).sum().backward()
    assert rel_err(ours, x_ref.grad) < 1e-6  # dinv is fp32 by design


@pytest.mark.parametrize("warm_start", ["history", "delta", "input"])
def test_forward_initial_point_follows_warm_start(warm_start):
    # One iteration per visit makes the initial point visible: out = (1-a) Â X_0 + a X_in.
    gen = torch.Generator().manual_seed(21)
    n, channels, alpha, num_global = 30, 2, 0.1, 45
    rowptr, col = random_graph(n, 70, gen)
    a_hat = dense_a_hat(rowptr, col, n)
    layer = ImplicitAPPNP(alpha, 1, num_global, channels, torch.float64, warm_start=warm_start)
    node_ids = torch.randperm(num_global, generator=gen)[:n]
    previous_in = previous_out = None
    for visit in range(3):
        x_in = torch.randn(n, channels, dtype=torch.float64, generator=gen)
        out = layer(x_in, rowptr, col, node_ids)
        if warm_start == "input" or (warm_start == "delta" and visit == 0):
            x0 = x_in  # a node never visited starts from its input under delta
        elif warm_start == "history":
            x0 = previous_out if visit else torch.zeros_like(x_in)
        else:
            x0 = previous_out + x_in - previous_in
        assert rel_err(out, (1 - alpha) * a_hat @ x0 + alpha * x_in) < 1e-12, visit
        previous_in, previous_out = x_in, out


def test_the_default_warm_start_follows_a_drifting_input():
    """The mechanism behind LEADING's degradation with longer training (README): when the input
    of the implicit layer moves between visits (the head and the LM learn), the paper's warm
    start X_0 = X_L^{k-1} lags: with L = 2 and a = 0.1, 81% of an output is the previous one.
    The default (delta) start moves with the input and stays close to the current fixed point."""
    from fastleading.config import Config
    from fastleading.trainer.model import warm_start

    default = warm_start(Config())  # what a node classification run uses
    gen = torch.Generator().manual_seed(3)
    n, channels, alpha = 80, 3, 0.1
    rowptr, col = random_graph(n, 240, gen)
    a_hat = dense_a_hat(rowptr, col, n)
    base = torch.randn(n, channels, dtype=torch.float64, generator=gen)
    # a drift shared by the nodes (a head update shifts every logit alike) plus a node-own part
    drift = 0.2 * torch.randn(1, channels, dtype=torch.float64, generator=gen) \
        + 0.05 * torch.randn(n, channels, dtype=torch.float64, generator=gen)
    errors = {}
    for start in (default, "history"):
        layer = ImplicitAPPNP(alpha, 2, n, channels, torch.float64, warm_start=start)
        for k in range(60):
            x_in = base + k * drift
            out = layer(x_in, rowptr, col, torch.arange(n))
        errors[start] = float((out - exact(a_hat, alpha, x_in)).norm() / drift.expand(n, -1).norm())
    # the lag of the paper's start is several drift steps; the default's a small fraction of one
    assert errors["history"] > 2.0, errors
    assert errors[default] < 0.1 * errors["history"], errors


@pytest.mark.parametrize("warm_backward", [True, False])
def test_backward_start_follows_warm_backward(warm_backward):
    # Two steps with different losses: eq. 6 starts the second backward from the first's
    # gradient, G = ((1-a)Â)^L G_prev + a sum_{l<L} ((1-a)Â)^l w; without it G_prev is zero.
    gen = torch.Generator().manual_seed(5)
    n, channels, alpha, iters = 50, 3, 0.1, 2
    rowptr, col = random_graph(n, 120, gen)
    m = (1 - alpha) * dense_a_hat(rowptr, col, n)
    layer = ImplicitAPPNP(alpha, iters, n, channels, torch.float64, warm_backward=warm_backward)
    grads = []
    for _ in range(2):
        x_in = torch.randn(n, channels, dtype=torch.float64, generator=gen, requires_grad=True)
        w = torch.randn(n, channels, dtype=torch.float64, generator=gen)
        (layer(x_in, rowptr, col, torch.arange(n)) * w).sum().backward()
        truncated = alpha * sum(torch.linalg.matrix_power(m, power) @ w for power in range(iters))
        start = torch.linalg.matrix_power(m, iters) @ grads[-1] if grads and warm_backward else 0
        assert rel_err(x_in.grad, truncated + start) < 1e-6
        grads.append(x_in.grad)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_low_precision_histories_through_the_ops_dispatch_track_the_float64_layer(backend, dtype, tol):
    """The layer as training runs it (fp32 inputs, fp32 or bf16 histories, the Triton kernels
    or the PyTorch path of fastleading.engine.ops) against the float64 layer on the same visits:
    outputs, input gradients and both histories after several warm-started visits."""
    import os

    from fastleading.engine import ops

    if backend == "triton" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton kernels on CPU tensors need TRITON_INTERPRET=1 (set by tests/conftest.py)")
    gen = torch.Generator().manual_seed(7)
    n, channels, num_global = 40, 3, 70
    rowptr, col = random_graph(n, 120, gen)
    ref = ImplicitAPPNP(0.2, 2, num_global, channels, history_dtype=torch.float64)
    low = ImplicitAPPNP(0.2, 2, num_global, channels, history_dtype=dtype)
    for visit in range(4):
        node_ids = torch.randperm(num_global, generator=gen)[:n]
        x_in = torch.randn(n, channels, generator=gen)
        w = torch.randn(n, channels, generator=gen)
        outs = []
        for layer, x_dtype in ((ref, torch.float64), (low, torch.float32)):
            x = x_in.to(x_dtype).requires_grad_(True)
            with ops.use_backend(backend if x_dtype != torch.float64 else "torch"):
                out = layer(x, rowptr, col, node_ids)
                (out * w.to(x_dtype)).sum().backward()
            outs.append((out.detach().double(), x.grad.double()))
        for got, want in zip(outs[1], outs[0], strict=True):
            assert rel_err(got, want) < tol, (visit, rel_err(got, want))
        for name in ("x_history", "g_history", "input_history"):
            assert rel_err(getattr(low, name).double(), getattr(ref, name)) < tol, (visit, name)


@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_conjugate_gradient_solves_the_fixed_point_and_a_warm_start_agrees(alpha):
    from fastleading.models.appnp import solve_appnp

    gen = torch.Generator().manual_seed(11)
    n = 120
    rowptr, col = random_graph(n, 400, gen)
    a_hat = dense_a_hat(rowptr, col, n)
    x_in = torch.randn(n, 70, dtype=torch.float64, generator=gen)  # more columns than one block
    want = exact(a_hat, alpha, x_in)
    cold, cold_iters = solve_appnp(x_in, rowptr, col, alpha, tol=1e-10, max_iters=500, column_block=32)
    assert rel_err(cold, want) < 1e-8 and 0 < cold_iters < 500
    # far fewer iterations than the fixed-point iteration needs for the same accuracy
    assert cold_iters < 0.5 * math.log(1e-10) / math.log(1 - alpha)
    # warm start from a nearby solution (the previous evaluation's): same answer, fewer iterations
    nearby = exact(a_hat, alpha, x_in + 0.01 * torch.randn(n, 70, dtype=torch.float64, generator=gen))
    warm, warm_iters = solve_appnp(x_in, rowptr, col, alpha, tol=1e-10, max_iters=500, x0=nearby, column_block=32)
    assert rel_err(warm, want) < 1e-8 and warm_iters < cold_iters
    # the tolerance bounds the error (condition number (2-a)/a times the relative residual)
    loose, _ = solve_appnp(x_in.float(), rowptr, col, alpha, tol=1e-4, max_iters=500)
    assert loose.dtype == torch.float32 and rel_err(loose.double(), want) < (2 - alpha) / alpha * 1e-4


@pytest.mark.parametrize("warm_start", ["history", "delta", "input"])
def test_only_the_first_num_written_nodes_have_their_histories_written(warm_start):
    """A training step passes its targets (the first rows of its subgraph) as ``num_written``:
    their output, input and gradient are written back, every other node's stored rows stay as
    they were (their sampled rows were truncated; writing them would drift from the fixed point).
    The returned output and gradient are those of the whole subgraph either way."""
    gen = torch.Generator().manual_seed(5)
    n, k, channels, alpha, num_global = 30, 7, 3, 0.1, 50
    rowptr, col = random_graph(n, 80, gen)
    node_ids = torch.randperm(num_global, generator=gen)[:n]
    layers = [ImplicitAPPNP(alpha, 3, num_global, channels, torch.float64, warm_start=warm_start) for _ in range(2)]
    for layer in layers:  # the same stored state in both
        for table in layer.histories_state().values():
            table.copy_(torch.randn(table.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9)))
    before = {key: table.clone() for key, table in layers[0].histories_state().items()}
    x_in = torch.randn(n, channels, dtype=torch.float64, generator=gen)
    outs, grads = [], []
    for layer, written in zip(layers, (k, None), strict=True):
        x = x_in.clone().requires_grad_()
        out = layer(x, rowptr, col, node_ids, num_written=written)
        (out * torch.linspace(-1, 1, channels, dtype=torch.float64)).sum().backward()
        outs.append(out.detach())
        grads.append(x.grad)
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
    kept, all_rows = layers[0].histories_state(), layers[1].histories_state()
    rest = torch.ones(num_global, dtype=torch.bool)
    rest[node_ids[:k]] = False
    for key in kept:
        assert torch.equal(kept[key][rest], before[key][rest]), key  # nobody else's rows moved
        assert torch.equal(kept[key][node_ids[:k]], all_rows[key][node_ids[:k]]), key  # the targets' as before
    assert not torch.equal(all_rows["g_history"][node_ids[k:]], before["g_history"][node_ids[k:]])
