"""fastleading.engine.ops APPNP step/iterate (Triton and PyTorch backends) against a dense float64 Â.

Graphs have isolated nodes, degree-0 rows and one hub touching about half the nodes, so
the Triton path runs both its light-row tiles and its split heavy-row chunks. Under
TRITON_INTERPRET=1 (tests/conftest.py) the Triton kernels run on CPU tensors.
"""

import os
import subprocess
import sys

import pytest
import torch

from fastleading.engine import ops
from fastleading.engine.graph import build_csr
from fastleading.errors import FastleadingError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def skip_unless_runnable(backend: str, device: str) -> None:
    if backend == "triton" and device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton kernels on CPU tensors need TRITON_INTERPRET=1 (GPU runs test them on cuda)")


def skewed_edges(n: int, m: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """m random edges among nodes 0..n-11 (the last 10 nodes stay isolated) plus a hub (node 3)
    linked to about half of the nodes."""
    src = torch.randint(0, n - 10, (m,), generator=gen)
    dst = torch.randint(0, n - 10, (m,), generator=gen)
    spokes = torch.randperm(n - 10, generator=gen)[: n // 2]
    return torch.cat([src, torch.full_like(spokes, 3)]), torch.cat([dst, spokes])


def dense_a_hat(src: torch.Tensor, dst: torch.Tensor, n: int) -> torch.Tensor:
    """Â = D̃^{-1/2}(A+I)D̃^{-1/2} in float64 from the raw edge list (symmetrised, self loops dropped)."""
    a = torch.zeros(n, n, dtype=torch.float64)
    a[src, dst] = 1.0
    a[dst, src] = 1.0
    a.fill_diagonal_(0.0)
    a += torch.eye(n, dtype=torch.float64)
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


def make_case(n: int, m: int, width: int, dtype: torch.dtype, col_dtype: torch.dtype, device: str, seed: int):
    gen = torch.Generator().manual_seed(seed)
    src, dst = skewed_edges(n, m, gen)
    rowptr, col = build_csr(src.numpy(), dst.numpy(), n)
    x = torch.randn(n, width, generator=gen).to(dtype)
    x_in = torch.randn(n, width, generator=gen).to(dtype)
    graph = (rowptr.to(device), col.to(col_dtype).to(device))
    return graph, x.to(device), x_in.to(device), dense_a_hat(src, dst, n)


def expected_step(a_hat, x, x_in, alpha):
    return (1 - alpha) * a_hat @ x.double().cpu() + alpha * x_in.double().cpu()


def assert_close(actual, expected, dtype):
    torch.testing.assert_close(actual.double().cpu(), expected, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("col_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("width", [40, 47, 128])
@pytest.mark.parametrize("dtype", DTYPES)
def test_appnp_step_matches_dense_float64(dtype, width, col_dtype, backend, device):
    skip_unless_runnable(backend, device)
    seed = 1000 + 7 * width + DTYPES.index(dtype) + (col_dtype == torch.int64)
    (rowptr, col), x, x_in, a_hat = make_case(300, 600, width, dtype, col_dtype, device, seed)
    assert int((rowptr[1:] - rowptr[:-1]).max()) >= 140 and int((rowptr[1:] == rowptr[:-1]).sum()) >= 10
    if backend == "triton":  # the hub takes the split heavy-row path of the default plan
        from fastleading.kernels.appnp import build_appnp_plan

        assert build_appnp_plan(rowptr).heavy_rows.numel() >= 1
    out = torch.full_like(x, float("nan"))  # unwritten rows would stay NaN
    with ops.use_backend(backend):
        got = ops.appnp_step(rowptr, col, x, x_in, 0.15, out=out)
    assert got is out and got.dtype == dtype
    assert_close(got, expected_step(a_hat, x, x_in, 0.15), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_appnp_step_wide_features_span_several_tiles(dtype, backend, device):
    """Width 300: three 128-wide feature tiles, the last one masked."""
    skip_unless_runnable(backend, device)
    (rowptr, col), x, x_in, a_hat = make_case(160, 300, 300, dtype, torch.int32, device, 77 + DTYPES.index(dtype))
    out = torch.full_like(x, float("nan"))
    with ops.use_backend(backend):
        ops.appnp_step(rowptr, col, x, x_in, 0.1, out=out)
    assert_close(out, expected_step(a_hat, x, x_in, 0.1), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_appnp_step_strided_views_and_given_dinv(backend, device):
    """Row-strided x, x_in and out (column slices of wider buffers), out allocated or given."""
    skip_unless_runnable(backend, device)
    (rowptr, col), x, x_in, a_hat = make_case(200, 400, 33, torch.float32, torch.int32, device, 7)
    wide_x = torch.randn(200, 50, device=device)
    wide_x[:, 5:38] = x
    wide_out = torch.full((200, 64), float("nan"), device=device)
    with ops.use_backend(backend):
        dinv = ops.gcn_dinv(rowptr)
        fresh = ops.appnp_step(rowptr, col, wide_x[:, 5:38], x_in, 0.3, dinv=dinv)
        given = ops.appnp_step(rowptr, col, wide_x[:, 5:38], x_in, 0.3, out=wide_out[:, 10:43])
    expected = expected_step(a_hat, x, x_in, 0.3)
    assert_close(fresh, expected, torch.float32)
    assert_close(given, expected, torch.float32)
    assert torch.isnan(wide_out[:, :10]).all() and torch.isnan(wide_out[:, 43:]).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_graph_without_edges_keeps_self_loops_only(backend, device):
    skip_unless_runnable(backend, device)
    rowptr = torch.zeros(17, dtype=torch.int64, device=device)
    col = torch.zeros(0, dtype=torch.int32, device=device)
    x = torch.randn(16, 9, device=device)
    x_in = torch.randn(16, 9, device=device)
    with ops.use_backend(backend):
        got = ops.appnp_step(rowptr, col, x, x_in, 0.25)
    torch.testing.assert_close(got, 0.75 * x + 0.25 * x_in)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("split", [(0, 16), (4, 8), (9, 3)])
def test_split_heavy_rows_cover_every_nonzero(split, device):
    """Kernel-level: plans that send most rows to the chunked heavy path give the same step."""
    skip_unless_runnable("triton", device)
    from fastleading.kernels.appnp import build_appnp_plan, fused_appnp_step

    threshold, chunk = split
    (rowptr, col), x, x_in, a_hat = make_case(150, 300, 47, torch.float32, torch.int64, device, 31 + threshold)
    plan = build_appnp_plan(rowptr, heavy_threshold=threshold, chunk_size=chunk)
    assert (plan.chunk_ptr.diff() > 1).any()  # some heavy row spans several chunks
    deg = (rowptr[1:] - rowptr[:-1]).cpu()
    # The plan partitions the rows; light rows come by degree, descending; chunks tile heavy rows.
    rows = torch.cat([plan.heavy_rows.cpu(), plan.light_order.long().cpu()])
    assert torch.equal(rows.sort().values, torch.arange(150))
    assert (deg[plan.heavy_rows.cpu()] > threshold).all() and (deg[plan.light_order.long().cpu()] <= threshold).all()
    assert (deg[plan.light_order.long().cpu()].diff() <= 0).all()
    rowptr_cpu = rowptr.cpu()
    for h, row in enumerate(plan.heavy_rows.cpu().tolist()):
        k0, k1 = plan.chunk_ptr[h : h + 2].cpu().tolist()
        starts, ends = plan.chunk_start[k0:k1].cpu(), plan.chunk_end[k0:k1].cpu()
        assert starts[0] == rowptr_cpu[row] and ends[-1] == rowptr_cpu[row + 1] and torch.equal(starts[1:], ends[:-1])
        assert ((ends - starts) <= chunk).all() and ((ends - starts) > 0).all()
    out = torch.full_like(x, float("nan"))
    fused_appnp_step(plan, rowptr, col, ops.gcn_dinv(rowptr), x, x_in, 0.2, out)
    assert_close(out, expected_step(a_hat, x, x_in, 0.2), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_appnp_iterate_converges_to_exact_fixed_point(backend, device):
    """x* = a (I - (1-a) Â)^{-1} x_in, solved densely in float64; error shrinks by (1-a) per step."""
    skip_unless_runnable(backend, device)
    alpha, steps = 0.7, 14  # (1-a)^steps = 5e-8
    (rowptr, col), x0, x_in, a_hat = make_case(120, 240, 40, torch.float32, torch.int32, device, 99)
    eye = torch.eye(120, dtype=torch.float64)
    fixed_point = alpha * torch.linalg.solve(eye - (1 - alpha) * a_hat, x_in.double().cpu())
    x0_before = x0.clone()
    with ops.use_backend(backend):
        got = ops.appnp_iterate(rowptr, col, x0, x_in, alpha, steps)
        one = ops.appnp_iterate(rowptr, col, x0, x_in, alpha, 1)
        zero = ops.appnp_iterate(rowptr, col, x0, x_in, alpha, 0)
    assert got.data_ptr() != x0.data_ptr() and torch.equal(x0, x0_before)
    assert_close(got, fixed_point, torch.float32)
    assert (got.double().cpu() - fixed_point).norm() < 1e-6 * fixed_point.norm()
    assert_close(one, expected_step(a_hat, x0, x_in, alpha), torch.float32)
    assert torch.equal(zero, x0) and zero.data_ptr() != x0.data_ptr()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_and_torch_backends_agree(dtype, device):
    """One step: both accumulate in fp32, so results differ by at most one final rounding (1 ulp);
    fp32 iterates stay within fp32 noise."""
    skip_unless_runnable("triton", device)
    (rowptr, col), x0, x_in, _ = make_case(160, 320, 128, dtype, torch.int64, device, 5 + DTYPES.index(dtype))
    steps, iterates = {}, {}
    for backend in ("triton", "torch"):
        with ops.use_backend(backend):
            steps[backend] = ops.appnp_step(rowptr, col, x0, x_in, 0.1)
            if dtype == torch.float32:
                iterates[backend] = ops.appnp_iterate(rowptr, col, x0, x_in, 0.1, 4)
    ulp = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}[dtype]
    torch.testing.assert_close(steps["triton"].float(), steps["torch"].float(), rtol=ulp, atol=1e-5)
    if iterates:
        torch.testing.assert_close(iterates["triton"], iterates["torch"], rtol=1e-5, atol=1e-6)


def test_backend_selection_and_errors(monkeypatch):
    before = ops.get_backend()
    with pytest.raises(FastleadingError, match="one of auto, triton, torch"):
        ops.set_backend("cuda")
    with pytest.raises(RuntimeError, match="boom"), ops.use_backend("torch"):
        assert ops.get_backend() == "torch"
        raise RuntimeError("boom")
    assert ops.get_backend() == before

    rowptr = torch.tensor([0, 1, 2], dtype=torch.int64)
    col = torch.tensor([1, 0], dtype=torch.int32)
    x = torch.ones(2, 3)
    # "auto" keeps CPU tensors on the PyTorch reference, even with the interpreter on.
    import fastleading.kernels.appnp as kernels

    monkeypatch.setattr(kernels, "fused_appnp_step", lambda *a, **k: pytest.fail("Triton ran under auto on CPU"))
    with ops.use_backend("auto"):
        torch.testing.assert_close(ops.appnp_step(rowptr, col, x, x, 0.5), x)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(FastleadingError, match="TRITON_INTERPRET=1"), ops.use_backend("triton"):
        ops.appnp_step(rowptr, col, x, x, 0.5)


def test_bad_inputs_are_rejected():
    rowptr = torch.tensor([0, 1, 2], dtype=torch.int64)
    x = torch.ones(2, 3)
    with pytest.raises(IndexError, match="col"):
        ops.appnp_step(rowptr, torch.tensor([1, 2]), x, x, 0.5)
    col = torch.tensor([1, 0])
    with pytest.raises(ValueError, match="share memory"):
        ops.appnp_step(rowptr, col, x, x, 0.5, out=x)
    with pytest.raises(ValueError, match="out must be"):
        ops.appnp_step(rowptr, col, x, x, 0.5, out=torch.empty(2, 3, dtype=torch.float16))
    with pytest.raises(ValueError, match="rowptr"):
        ops.appnp_step(rowptr[:2], col, x, x, 0.5)
    with pytest.raises(ValueError, match="fp32/bf16/fp16"):
        ops.appnp_step(rowptr, col, x.to(torch.int32), x, 0.5)


COMPILE_FOR_HOPPER = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fastleading.kernels import appnp

def compile_(fn, args, consts):
    # Mimic a launch's specialisation: pointers and ints divisible by 16 get tt.divisibility=16.
    sig = {k: t for k, (t, _) in args.items()} | {k: "constexpr" for k in consts}
    attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k, (t, v) in args.items()
             if t.startswith("*") or (isinstance(v, int) and v % 16 == 0)}
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs), target=GPUTarget("cuda", 90, 32))

# Unaligned fp32/int32, aligned narrow fp16 (broke Triton 3.6 with 1-D row vectors), aligned wide bf16/int64.
for width, dtype, col, rows, block_c in [(47, "fp32", "i32", 16, 64), (64, "fp16", "i32", 32, 64),
                                         (768, "bf16", "i64", 16, 128)]:
    f = {k: ("i32", width) for k in ("n_cols", "stride_x", "stride_xin", "stride_out")}
    ptrs = {"x_ptr": (f"*{dtype}", 0), "xin_ptr": (f"*{dtype}", 0), "out_ptr": (f"*{dtype}", 0)}
    compile_(appnp._appnp_light_kernel, {"rowptr_ptr": ("*i64", 0), "col_ptr": (f"*{col}", 0),
             "dinv_ptr": ("*fp32", 0), "order_ptr": ("*i32", 0), **ptrs, "n_rows": ("i32", 1000),
             "n_cols": f["n_cols"], "stride_x": f["stride_x"], "stride_xin": f["stride_xin"],
             "stride_out": f["stride_out"], "alpha": ("fp32", 0.1)},
             {"ROWS": rows, "BLOCK_C": block_c})
    compile_(appnp._appnp_heavy_partial_kernel, {"col_ptr": (f"*{col}", 0), "dinv_ptr": ("*fp32", 0),
             "x_ptr": ptrs["x_ptr"], "chunk_start_ptr": ("*i64", 0), "chunk_end_ptr": ("*i64", 0),
             "partial_ptr": ("*fp32", 0), "n_cols": f["n_cols"], "stride_x": f["stride_x"]},
             {"BLOCK_E": 32, "BLOCK_C": block_c})
    compile_(appnp._appnp_heavy_finish_kernel, {"heavy_rows_ptr": ("*i64", 0), "chunk_ptr_ptr": ("*i64", 0),
             "partial_ptr": ("*fp32", 0), "dinv_ptr": ("*fp32", 0), **ptrs, "n_cols": f["n_cols"],
             "stride_x": f["stride_x"], "stride_xin": f["stride_xin"], "stride_out": f["stride_out"],
             "alpha": ("fp32", 0.1)}, {"BLOCK_C": block_c})
print("compiled")
"""


def test_kernels_compile_for_hopper_without_a_gpu():
    """The interpreter never runs Triton's compiler: compile the APPNP kernels to sm_90 cubins
    (Triton's bundled ptxas, no GPU needed) for the launch configurations of three widths."""
    pytest.importorskip("triton.backends.nvidia", reason="this Triton build has no NVIDIA backend")
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, "-c", COMPILE_FOR_HOPPER], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]


def test_float64_inputs_get_float64_normalisation():
    # float64 end to end: the normalisation too (an fp32 dinv would leave ~3e-8 relative error)
    (rowptr, col), x, x_in, a_hat = make_case(300, 1500, 5, torch.float64, torch.int64, "cpu", seed=7)
    want_step = expected_step(a_hat, x, x_in, 0.1)
    got_step = ops.appnp_step(rowptr, col, x, x_in, 0.1)
    assert got_step.dtype == torch.float64 and ops.gcn_dinv(rowptr, torch.float64).dtype == torch.float64
    assert ((got_step - want_step).norm() / want_step.norm()).item() < 1e-12
    want = x.clone()
    for _ in range(4):
        want = expected_step(a_hat, want, x_in, 0.1)
    got = ops.appnp_iterate(rowptr, col, x, x_in, 0.1, 4)
    assert ((got - want).norm() / want.norm()).item() < 1e-12
