"""The native CPU APPNP step (``fastleading._native.appnp_step``, kernels/appnp*.cpp) and its dispatch.

Graphs come from tests/test_ops_appnp.py (isolated nodes, empty rows, one hub linked to
about half the nodes). The native step runs the PyTorch reference's arithmetic in the same
order, so besides matching the dense float64 ``Â`` it is bitwise equal to
``ops.appnp_step_reference``, for every instruction-set build and every thread count.
"""

import pytest
import torch
from test_ops_appnp import DTYPES, assert_close, expected_step, make_case, skewed_edges

from fastleading import _native
from fastleading.engine import ops
from fastleading.engine.graph import build_csr
from fastleading.errors import FastleadingError

ISAS = _native.appnp_isas()


def native_step(rowptr, col, x, x_in, alpha, dinv=None, num_threads=1, isa="auto", prefetch=-1, passes=0):
    out = torch.full_like(x, float("nan"))  # unwritten entries would stay NaN
    threads, used_passes = _native.appnp_step(rowptr, col, x, x_in, alpha, out, dinv, num_threads, isa, prefetch,
                                              passes)
    assert used_passes == passes or passes == 0 or used_passes == x.shape[0]  # at most one pass per row
    return out, threads


def large_skewed_graph(n: int, m: int, seed: int):
    """A graph too large for a dense Â but large enough for the step to use several threads."""
    gen = torch.Generator().manual_seed(seed)
    src, dst = skewed_edges(n, m, gen)
    rowptr, col = build_csr(src.numpy(), dst.numpy(), n)
    return rowptr, col, gen


def test_isas_list_the_portable_build_last():
    assert ISAS[-1] == "generic" and set(ISAS) <= {"avx512", "avx2", "generic"}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("col_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("width", [1, 40, 47, 128, 300])
@pytest.mark.parametrize("dtype", DTYPES)
def test_native_step_matches_dense_float64_and_the_reference(dtype, width, col_dtype, isa):
    seed = 2000 + 7 * width + DTYPES.index(dtype) + (col_dtype == torch.int64)
    (rowptr, col), x, x_in, a_hat = make_case(300, 600, width, dtype, col_dtype, "cpu", seed)
    deg = rowptr[1:] - rowptr[:-1]
    assert int(deg.max()) >= 140 and int((deg == 0).sum()) >= 10
    got, _ = native_step(rowptr, col, x, x_in, 0.15, isa=isa)
    assert got.dtype == dtype
    assert_close(got, expected_step(a_hat, x, x_in, 0.15), dtype)
    assert torch.equal(got, ops.appnp_step_reference(rowptr, col, x, x_in, 0.15))


@pytest.mark.parametrize("col_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_for_every_thread_count_isa_prefetch_distance_and_passes(dtype, col_dtype):
    rowptr, col, gen = large_skewed_graph(20_000, 200_000, seed=11 + DTYPES.index(dtype))
    col = col.to(col_dtype)
    x = torch.randn(20_000, 47, generator=gen).to(dtype)
    x_in = torch.randn(20_000, 47, generator=gen).to(dtype)
    dinv = ops.gcn_dinv(rowptr)
    first, threads = native_step(rowptr, col, x, x_in, 0.1, dinv, num_threads=1)
    assert threads == 1 and not torch.isnan(first).any()
    for num_threads in (2, 3, 7):
        got, threads = native_step(rowptr, col, x, x_in, 0.1, dinv, num_threads=num_threads)
        assert threads == num_threads  # the graph is large enough for all of them
        assert torch.equal(got, first)
    for isa in ISAS:
        for prefetch in (0, 1, 16, 1000):
            assert torch.equal(native_step(rowptr, col, x, x_in, 0.1, None, 2, isa, prefetch)[0], first)
        for passes in (2, 3, 5):  # column passes keep each row's CSR summation order
            assert torch.equal(native_step(rowptr, col, x, x_in, 0.1, dinv, 3, isa, -1, passes)[0], first)
    assert torch.equal(first, ops.appnp_step_reference(rowptr, col, x, x_in, 0.1, dinv))


@pytest.mark.parametrize("dtype", DTYPES)
def test_column_passes_on_rows_with_unsorted_columns(dtype):
    """Passes stop a row at its first neighbour past the pass's id range; the last pass takes
    the rest, so rows whose columns are not sorted still sum every neighbour once, in CSR order."""
    (rowptr, col), x, x_in, a_hat = make_case(300, 900, 47, dtype, torch.int64, "cpu", 21)
    gen = torch.Generator().manual_seed(1)
    shuffled = col.clone()
    for r in range(300):
        lo, hi = int(rowptr[r]), int(rowptr[r + 1])
        shuffled[lo:hi] = col[lo:hi][torch.randperm(hi - lo, generator=gen)]
    assert not torch.equal(shuffled, col)
    want = ops.appnp_step_reference(rowptr, shuffled, x, x_in, 0.25)
    for isa in ISAS:
        for passes in (1, 2, 4, 300, 1000):
            got, _ = native_step(rowptr, shuffled, x, x_in, 0.25, isa=isa, passes=passes)
            assert torch.equal(got, want)
    assert_close(want, expected_step(a_hat, x, x_in, 0.25), dtype)


@pytest.mark.parametrize("width", [200, 513])
def test_wide_features_span_several_blocks(width):
    """Blocks of 256 features: 200 is one partial block, 513 two full ones and one of a single lane."""
    (rowptr, col), x, x_in, a_hat = make_case(160, 300, width, torch.bfloat16, torch.int32, "cpu", 5 + width)
    for isa, passes in [(isa, passes) for isa in ISAS for passes in (1, 3)]:
        got, _ = native_step(rowptr, col, x, x_in, 0.2, isa=isa, passes=passes)
        assert_close(got, expected_step(a_hat, x, x_in, 0.2), torch.bfloat16)
        assert torch.equal(got, ops.appnp_step_reference(rowptr, col, x, x_in, 0.2))


def test_strided_rows_and_given_dinv():
    (rowptr, col), x, x_in, a_hat = make_case(200, 400, 33, torch.float32, torch.int64, "cpu", 8)
    wide_x = torch.randn(200, 50)
    wide_x[:, 5:38] = x
    wide_out = torch.full((200, 64), float("nan"))
    for passes in (1, 3):  # fp32 passes keep their sums in out, here a strided view
        wide_out.fill_(float("nan"))
        _native.appnp_step(rowptr, col, wide_x[:, 5:38], x_in, 0.3, wide_out[:, 10:43], ops.gcn_dinv(rowptr), 2,
                           passes=passes)
        assert_close(wide_out[:, 10:43], expected_step(a_hat, x, x_in, 0.3), torch.float32)
        assert torch.isnan(wide_out[:, :10]).all() and torch.isnan(wide_out[:, 43:]).all()


def test_empty_graphs_and_shapes():
    x = torch.randn(16, 9)
    x_in = torch.randn(16, 9)
    got, _ = native_step(torch.zeros(17, dtype=torch.int64), torch.zeros(0, dtype=torch.int32), x, x_in, 0.25)
    torch.testing.assert_close(got, 0.75 * x + 0.25 * x_in)
    for shape in [(0, 5), (4, 0)]:
        empty = torch.empty(shape)
        rowptr = torch.zeros(shape[0] + 1, dtype=torch.int64)
        assert native_step(rowptr, torch.zeros(0, dtype=torch.int64), empty, empty, 0.5)[0].shape == shape


def test_bad_inputs_are_rejected():
    rowptr = torch.tensor([0, 1, 2], dtype=torch.int64)
    x = torch.ones(2, 3)
    out = torch.empty(2, 3)
    for col_dtype in (torch.int32, torch.int64):
        with pytest.raises(IndexError, match="col"):
            _native.appnp_step(rowptr, torch.tensor([1, 2], dtype=col_dtype), x, x, 0.5, out)
        with pytest.raises(IndexError, match="col"):
            _native.appnp_step(rowptr, torch.tensor([1, -1], dtype=col_dtype), x, x, 0.5, out)
        with pytest.raises(IndexError, match="col"):  # left by the first passes, caught by the last
            _native.appnp_step(rowptr, torch.tensor([1, 2], dtype=col_dtype), x, x, 0.5, out, passes=2)
    col = torch.tensor([1, 0])
    with pytest.raises(ValueError, match="rowptr"):
        _native.appnp_step(torch.tensor([0, 2, 1]), col, x, x, 0.5, out)
    with pytest.raises(ValueError, match="rowptr"):
        _native.appnp_step(torch.tensor([0, 1, 3]), col, x, x, 0.5, out)
    with pytest.raises(ValueError, match="dtype"):
        _native.appnp_step(rowptr, col, x, x.bfloat16(), 0.5, out)
    with pytest.raises(ValueError, match="unit stride"):
        _native.appnp_step(rowptr, col, torch.ones(3, 2).t(), x, 0.5, out)
    with pytest.raises(ValueError, match="isa"):
        _native.appnp_step(rowptr, col, x, x, 0.5, out, isa="sse9")


@pytest.mark.parametrize("dtype", DTYPES)
def test_iterate_on_native_matches_dense_and_the_reference(dtype):
    (rowptr, col), x0, x_in, a_hat = make_case(120, 240, 40, dtype, torch.int32, "cpu", 99)
    want = x0.double()
    for _ in range(5):
        want = expected_step(a_hat, want, x_in, 0.3)
    with ops.use_backend("native"):
        got = ops.appnp_iterate(rowptr, col, x0, x_in, 0.3, 5)
    with ops.use_backend("torch"):
        ref = ops.appnp_iterate(rowptr, col, x0, x_in, 0.3, 5)
    assert_close(got, want, dtype)
    assert torch.equal(got, ref)
    assert got.stride() == (48, 1)  # the native iterates live in rows padded to whole vectors


def test_empty_rows_pads_cpu_rows_to_whole_vectors():
    for dtype in (torch.float32, torch.bfloat16):
        for width, stride in [(47, 48), (1, 16), (16, 16), (128, 128), (130, 144)]:
            t = ops.empty_rows(1000, width, dtype, "cpu")
            assert t.shape == (1000, width) and t.dtype == dtype
            assert t.stride() == (stride, 1)
            assert t.data_ptr() % 64 == 0  # every fp32 row starts a cache line
    assert ops.empty_rows(0, 47, torch.float32, "cpu").shape == (0, 47)


def vm_flags_of(address: int) -> list[str] | None:
    """The VmFlags of this process's mapping that holds ``address`` (None when none does)."""
    inside = False
    with open("/proc/self/smaps") as f:
        lines = f.readlines()
    for line in lines:
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "VmFlags:":
            return line.split()[1:]
    return None


def test_large_feature_matrices_are_advised_onto_huge_pages(monkeypatch):
    import mmap
    import os

    if not hasattr(mmap, "MADV_HUGEPAGE") or not os.path.exists("/proc/self/smaps"):
        pytest.skip("no MADV_HUGEPAGE or /proc/self/smaps on this platform: empty_rows uses PyTorch's allocator")
    t = ops.empty_rows(ops.HUGE_PAGE_MIN_BYTES // (48 * 4) + 1, 47, torch.float32, "cpu")
    assert t.data_ptr() % ops.HUGE_PAGE_BYTES == 0
    t.fill_(2.0)
    address = t.data_ptr()
    assert "hg" in vm_flags_of(address)  # the region carries MADV_HUGEPAGE
    assert float(t.sum()) == 2.0 * t.numel()
    del t
    assert vm_flags_of(address) is None  # unmapped with the last tensor that viewed it
    # A small matrix stays with PyTorch's allocator. (Not checked through VmFlags: the malloc heap
    # it comes from may already carry "hg" from another library's advice: seen in CI.)
    advised = []
    real = ops.huge_page_empty
    monkeypatch.setattr(ops, "huge_page_empty", lambda *a: advised.append(a) or real(*a))
    small = ops.empty_rows(ops.HUGE_PAGE_MIN_BYTES // (48 * 4), 47, torch.float32, "cpu")
    assert advised == [] and small.untyped_storage().nbytes() == small.shape[0] * 48 * 4
    large = ops.empty_rows(ops.HUGE_PAGE_MIN_BYTES // (48 * 4) + 1, 47, torch.float32, "cpu")
    assert len(advised) == 1 and "hg" in vm_flags_of(large.data_ptr())


@pytest.mark.parametrize("huge_pages", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_padded_rows_give_the_same_bits(dtype, huge_pages, monkeypatch):
    if huge_pages:  # every matrix on the huge-page path
        monkeypatch.setattr(ops, "HUGE_PAGE_MIN_BYTES", 1)
    (rowptr, col), x, x_in, a_hat = make_case(300, 900, 47, dtype, torch.int32, "cpu", 12)
    padded_x = ops.empty_rows(300, 47, dtype, "cpu").copy_(x)
    for passes in (1, 3):
        want, _ = native_step(rowptr, col, x, x_in, 0.2, passes=passes)
        out = ops.empty_rows(300, 47, dtype, "cpu").fill_(float("nan"))
        _native.appnp_step(rowptr, col, padded_x, x_in, 0.2, out, None, 2, passes=passes)
        assert torch.equal(out, want)
        assert_close(out, expected_step(a_hat, x, x_in, 0.2), dtype)


def test_iterate_converges_to_the_fixed_point():
    alpha, steps = 0.7, 14
    (rowptr, col), x0, x_in, a_hat = make_case(120, 240, 40, torch.float32, torch.int64, "cpu", 98)
    fixed_point = alpha * torch.linalg.solve(torch.eye(120, dtype=torch.float64) - (1 - alpha) * a_hat,
                                             x_in.double())
    x0_before = x0.clone()
    with ops.use_backend("native"):
        got = ops.appnp_iterate(rowptr, col, x0, x_in, alpha, steps)
    assert torch.equal(x0, x0_before)
    assert (got.double() - fixed_point).norm() < 1e-6 * fixed_point.norm()


class Spy:
    """Stands in for ``_native.appnp_step`` and records its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return _native.appnp_step(*args)


@pytest.fixture
def spy(monkeypatch):
    s = Spy()
    monkeypatch.setattr(ops, "_native_appnp", lambda: s)
    return s


@pytest.mark.parametrize("backend", ["auto", "native"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dispatch_picks_native_for_cpu_tensors(spy, dtype, backend):
    (rowptr, col), x, x_in, _ = make_case(100, 200, 16, dtype, torch.int32, "cpu", 3)
    with ops.use_backend(backend):
        step = ops.appnp_step(rowptr, col, x, x_in, 0.2)
        assert spy.calls == 1
        ops.appnp_iterate(rowptr, col, x, x_in, 0.2, 3)
        assert spy.calls == 4
    assert torch.equal(step, ops.appnp_step_reference(rowptr, col, x, x_in, 0.2))


def test_dispatch_keeps_the_reference_where_native_does_not_apply(spy):
    (rowptr, col), x, x_in, _ = make_case(100, 200, 16, torch.float32, torch.int64, "cpu", 4)
    with ops.use_backend("torch"):
        ops.appnp_step(rowptr, col, x, x_in, 0.2)
        ops.appnp_iterate(rowptr, col, x, x_in, 0.2, 2)
    for backend in ("auto", "native"):
        with ops.use_backend(backend):
            ops.appnp_step(rowptr, col, x.double(), x_in.double(), 0.2)  # float64: exact-gradient tests
            ops.appnp_iterate(rowptr, col, x.double(), x_in.double(), 0.2, 2)
            # bf16 x with an fp32 x_in: casting x_in to bf16 would change the reference's result
            ops.appnp_step(rowptr, col, x.bfloat16(), x_in, 0.2)
    assert spy.calls == 0
    # fp32 x with a bf16 x_in: the reference casts x_in to fp32 too, so native takes it.
    got = ops.appnp_step(rowptr, col, x, x_in.bfloat16(), 0.2)
    assert spy.calls == 1
    assert torch.equal(got, ops.appnp_step_reference(rowptr, col, x, x_in.bfloat16(), 0.2))


def test_dispatch_checks_and_errors(spy, monkeypatch):
    rowptr = torch.tensor([0, 1, 2], dtype=torch.int64)
    x = torch.ones(2, 3)
    with ops.use_backend("auto"):
        with pytest.raises(IndexError, match="col"):  # checked in the kernel, not by a separate pass
            ops.appnp_step(rowptr, torch.tensor([1, 2]), x, x, 0.5)
        assert spy.calls == 1
        with pytest.raises(ValueError, match="share memory"):
            ops.appnp_step(rowptr, torch.tensor([1, 0]), x, x, 0.5, out=x)
    meta = torch.empty(2, 3, device="meta")
    with ops.use_backend("native"), pytest.raises(FastleadingError, match="CPU tensors"):
        ops.appnp_step(rowptr.to("meta"), torch.tensor([1, 0], device="meta"), meta, meta, 0.5)
    # Bank ops have no native kernel: "native" runs their references.
    bank = torch.zeros(4, 3)
    with ops.use_backend("native"):
        ops.bank_scatter(bank, torch.tensor([2]), torch.ones(1, 3))
        assert torch.equal(ops.bank_gather(bank, torch.tensor([2, 0])), torch.tensor([[1.0] * 3, [0.0] * 3]))
    # A module built before the native step: "auto" falls back to the reference, "native" says why.
    monkeypatch.setattr(ops, "_native_appnp", lambda: None)
    col = torch.tensor([1, 0])
    with ops.use_backend("auto"):
        torch.testing.assert_close(ops.appnp_step(rowptr, col, x, x, 0.5), x)
    with ops.use_backend("native"), pytest.raises(FastleadingError, match="rebuild"):
        ops.appnp_step(rowptr, col, x, x, 0.5)
    assert spy.calls == 1


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_an_out_that_overlaps_an_input_through_another_storage_is_refused(backend):
    """``out`` as a numpy round trip of x's rows 1..N (another storage object over the same memory)
    passed the check that compared storage base pointers; the step then read rows it had already
    overwritten."""
    (rowptr, col), x, x_in, _ = make_case(64, 200, 8, torch.float32, torch.int32, "cpu", 5)
    padded_x, padded_in = torch.cat([x, torch.zeros(1, 8)]), torch.cat([x_in, torch.zeros(1, 8)])
    x, x_in = padded_x[:64], padded_in[:64]
    with ops.use_backend(backend):
        for base in (padded_x, padded_in):
            out = torch.from_numpy(base[1:].numpy())  # rows 1..64 of an input, through another storage
            assert out.untyped_storage().data_ptr() != base.untyped_storage().data_ptr()
            with pytest.raises(ValueError, match="share memory"):
                ops.appnp_step(rowptr, col, x, x_in, 0.3, out=out)
        ok = ops.empty_rows(64, 8, torch.float32, "cpu")  # disjoint memory: accepted
        assert torch.equal(ops.appnp_step(rowptr, col, x, x_in, 0.3, out=ok),
                           ops.appnp_step_reference(rowptr, col, x, x_in, 0.3))


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_an_out_whose_rows_share_memory_is_refused(backend):
    """An expanded (stride-0) out has unit column stride, so it passed; the native step's threads
    then all wrote the one row at once."""
    (rowptr, col), x, x_in, _ = make_case(64, 200, 8, torch.float32, torch.int32, "cpu", 6)
    with ops.use_backend(backend):
        for out in (torch.empty(1, 8).expand(64, 8), torch.empty(64 * 4 + 4).as_strided((64, 8), (4, 1))):
            with pytest.raises(ValueError, match="rows overlap"):
                ops.appnp_step(rowptr, col, x, x_in, 0.3, out=out)
    bank = torch.zeros(1, 8).expand(10, 8)
    with pytest.raises(ValueError, match="rows overlap"):
        ops.bank_scatter(bank, torch.tensor([1, 2]), torch.ones(2, 8))
    with pytest.raises(ValueError, match="rows overlap"):
        ops.bank_gather(torch.randn(10, 8), torch.tensor([1, 2]), out=torch.empty(1, 8).expand(4, 8))


def test_huge_pages_fall_back_to_ordinary_memory_when_madvise_refuses(monkeypatch):
    """A kernel built without transparent huge pages answers MADV_HUGEPAGE with EINVAL, which
    ended every large propagation with OSError."""
    import errno
    import mmap

    if not hasattr(mmap, "MADV_HUGEPAGE"):
        pytest.skip("no MADV_HUGEPAGE on this platform: empty_rows never asks for huge pages")

    class NoTransparentHugePages(mmap.mmap):
        def madvise(self, *args):
            raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(mmap, "mmap", NoTransparentHugePages)
    assert ops.huge_page_empty(ops.HUGE_PAGE_MIN_BYTES, torch.float32) is None
    rows = ops.HUGE_PAGE_MIN_BYTES // (48 * 4) + 1
    t = ops.empty_rows(rows, 47, torch.float32, "cpu")
    assert t.shape == (rows, 47) and t.stride() == (48, 1)
    t.fill_(3.0)
    assert float(t.sum()) == 3.0 * t.numel()
