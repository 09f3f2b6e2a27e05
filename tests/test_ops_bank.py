"""fastleading.engine.ops bank_gather / bank_scatter (Triton and PyTorch backends) against Python loops.

Copies are exact (a cast at most), so results are compared bit for bit. Ids repeat, and
rows the ops must not touch are checked to be unchanged (NaN-poisoned for the gather).
"""

import os
import subprocess
import sys

import pytest
import torch

from fastleading.engine import ops

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def skip_unless_runnable(backend: str, device: str) -> None:
    if backend == "triton" and device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton kernels on CPU tensors need TRITON_INTERPRET=1 (GPU runs test them on cuda)")


def ids_with_duplicates(num_rows: int, m: int, gen: torch.Generator) -> torch.Tensor:
    ids = torch.randint(0, num_rows, (m,), generator=gen)
    ids[m // 2 :: 5] = ids[: len(ids[m // 2 :: 5])]  # every 5th id of the second half repeats an earlier one
    ids[-1] = ids[0]
    assert ids.unique().numel() < m
    return ids


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("width", [40, 47, 128, 384])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_into_offset_rows_of_out(dtype, width, backend, device):
    skip_unless_runnable(backend, device)
    gen = torch.Generator().manual_seed(2000 + width + DTYPES.index(dtype))
    bank = torch.randn(500, width, generator=gen).to(dtype).to(device)
    ids = ids_with_duplicates(500, 70, gen).to(device)
    offset = 13
    out = torch.full((offset + 70 + 5, width), float("nan"), dtype=torch.float32, device=device)
    with ops.use_backend(backend):
        got = ops.bank_gather(bank, ids, out=out, out_offset=offset)
        fresh = ops.bank_gather(bank, ids)
    expected = torch.stack([bank[i] for i in ids.tolist()])
    assert got is out
    assert torch.equal(out[offset : offset + 70], expected.float())  # bank dtype -> fp32 is exact
    assert torch.isnan(out[:offset]).all() and torch.isnan(out[offset + 70 :]).all()
    assert fresh.dtype == dtype and torch.equal(fresh, expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("width", [40, 47, 128, 384])
@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_last_duplicate_wins_and_stamps(dtype, width, backend, device):
    skip_unless_runnable(backend, device)
    gen = torch.Generator().manual_seed(3000 + width + DTYPES.index(dtype))
    bank = torch.randn(400, width, generator=gen).to(dtype).to(device)
    stamps = torch.randint(0, 5, (400,), generator=gen).to(device)
    ids = ids_with_duplicates(400, 90, gen).to(device)
    rows = torch.randn(90, width, generator=gen).to(device)  # fp32 rows into a low-precision bank
    expected_bank, expected_stamps = bank.clone(), stamps.clone()
    for m, i in enumerate(ids.tolist()):  # sequential semantics: later positions overwrite earlier ones
        expected_bank[i] = rows[m].to(dtype)
        expected_stamps[i] = 17
    with ops.use_backend(backend):
        ops.bank_scatter(bank, ids, rows, stamps, step=17)
    assert torch.equal(bank, expected_bank)
    assert torch.equal(stamps, expected_stamps)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_scatter_without_stamps_then_gather_round_trip(backend, device):
    skip_unless_runnable(backend, device)
    gen = torch.Generator().manual_seed(11)
    bank = torch.zeros(300, 64, dtype=torch.bfloat16, device=device)
    ids = torch.randperm(300, generator=gen)[:120].to(device)
    rows = torch.randn(120, 64, generator=gen).to(torch.bfloat16).to(device)
    with ops.use_backend(backend):
        ops.bank_scatter(bank, ids, rows)
        back = ops.bank_gather(bank, ids)
    assert torch.equal(back, rows)
    untouched = torch.ones(300, dtype=torch.bool, device=device)
    untouched[ids] = False
    assert (bank[untouched] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_scatter_rounds_fp32_to_bf16_like_torch(device):
    """fp32 -> bf16 in the kernels is round-to-nearest-even (the interpreter's own cast truncates):
    ties, values rounding up to inf, inf, NaN, subnormals and random values match torch bit for bit."""
    skip_unless_runnable("triton", device)
    gen = torch.Generator().manual_seed(5)
    ties = (torch.randint(0, 1 << 15, (24,), generator=gen, dtype=torch.int32) << 16) | 0x8000
    special = torch.tensor([float("inf"), -float("inf"), float("nan"), 3.3961e38, -3.3961e38, 1e-40, -1e-41, 0.0])
    rows = torch.cat([ties.view(torch.float32), special, torch.randn(32, generator=gen)]).reshape(8, 8).to(device)
    bank = torch.zeros(8, 8, dtype=torch.bfloat16, device=device)
    with ops.use_backend("triton"):
        ops.bank_scatter(bank, torch.arange(8, device=device), rows)
    expected = rows.to(torch.bfloat16)
    assert torch.equal(bank.isnan(), expected.isnan())
    keep = ~expected.isnan()
    assert torch.equal(bank[keep].view(torch.int16), expected[keep].view(torch.int16))


@pytest.mark.parametrize("device", DEVICES)
def test_last_occurrence_marks_the_winning_position_of_every_id(device):
    """The scatter kernel writes position m only if last[m]: that must be the last m of each id,
    and exactly one position per id. (The interpreter runs programs in order, so the scatter
    test alone cannot tell a race from a rule.)"""
    from fastleading.kernels.bank import last_occurrence

    gen = torch.Generator().manual_seed(8)
    ids = ids_with_duplicates(50, 200, gen)
    expected = sorted({i: m for m, i in enumerate(ids.tolist())}.values())
    last = last_occurrence(ids.to(device)).cpu()
    assert last.dtype == torch.bool and last.shape == ids.shape
    assert last.nonzero().flatten().tolist() == expected


def test_bad_bank_inputs_are_rejected():
    bank = torch.zeros(10, 4)
    with pytest.raises(IndexError, match="ids"):
        ops.bank_gather(bank, torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="int64"):
        ops.bank_gather(bank, torch.tensor([1], dtype=torch.int32))
    with pytest.raises(ValueError, match="cannot take 2 rows"):
        ops.bank_gather(bank, torch.tensor([1, 2]), out=torch.empty(3, 4), out_offset=2)
    with pytest.raises(ValueError, match="rows must be"):
        ops.bank_scatter(bank, torch.tensor([1, 2]), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="stamps"):
        ops.bank_scatter(bank, torch.tensor([1]), torch.zeros(1, 4), stamps=torch.zeros(10))


COMPILE_FOR_HOPPER = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fastleading.kernels import bank

def compile_(fn, args, consts):
    # Mimic a launch's specialisation: pointers and ints divisible by 16 get tt.divisibility=16.
    sig = {k: t for k, (t, _) in args.items()} | {k: "constexpr" for k in consts}
    attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k, (t, v) in args.items()
             if t.startswith("*") or (isinstance(v, int) and v % 16 == 0)}
    return triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
                          target=GPUTarget("cuda", 90, 32))

for width, bank_t, rows_t in [(384, "bf16", "bf16"), (47, "bf16", "fp32")]:
    rows, block_d = bank._tiles(width, aligned=width % 16 == 0)
    gather = compile_(bank._bank_gather_kernel, {"bank_ptr": (f"*{bank_t}", 0), "ids_ptr": ("*i64", 0),
                      "out_ptr": (f"*{rows_t}", 0), "n_ids": ("i32", 1000), "n_cols": ("i32", width),
                      "stride_bank": ("i32", width), "stride_out": ("i32", width)}, {"ROWS": rows, "BLOCK_D": block_d})
    scatter = compile_(bank._bank_scatter_kernel, {"bank_ptr": (f"*{bank_t}", 0), "ids_ptr": ("*i64", 0),
                       "last_ptr": ("*i1", 0), "rows_ptr": (f"*{rows_t}", 0), "stamps_ptr": ("*i64", 0),
                       "step": ("i32", 3), "n_ids": ("i32", 1000), "n_cols": ("i32", width),
                       "stride_bank": ("i32", width), "stride_rows": ("i32", width)},
                       {"HAS_STAMPS": True, "ROWS": rows, "BLOCK_D": block_d})
    if width % 16 == 0:  # aligned rows: every feature access is a 16-byte vector
        for kernel in (gather, scatter):
            ptx = kernel.asm["ptx"]
            assert "ld.global.v4.b32" in ptx and "st.global.v4.b32" in ptx, "no 16-byte accesses"
print("compiled")
"""


def test_kernels_compile_for_hopper_with_16_byte_accesses():
    """The interpreter never runs Triton's compiler: compile gather/scatter to sm_90 (Triton's bundled
    ptxas, no GPU needed) and check that aligned bf16 rows move as 16-byte vectors."""
    pytest.importorskip("triton.backends.nvidia", reason="this Triton build has no NVIDIA backend")
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, "-c", COMPILE_FOR_HOPPER], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]
