"""Dtype conversion shared by the kernels: round-to-nearest-even into bf16 on every backend.

Compiled Triton rounds fp32 -> bf16 to nearest even, but the CPU interpreter truncates.
Doing the rounding with integer ops gives the same bits on both (and the same bits as
``torch.Tensor.to(torch.bfloat16)``), so interpreter tests can compare exactly; on a GPU
it costs four integer ops per element in memory-bound kernels.
"""

import triton
import triton.language as tl


@triton.jit
def _fp32_to_bf16_rne(v):
    bits = v.to(tl.uint32, bitcast=True)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    quiet_nan = tl.full(v.shape, 0x7FC0, tl.uint32)
    return tl.where(v != v, quiet_nan, rounded).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def cast_to(v, dtype: tl.constexpr):
    """``v`` converted to ``dtype``; into bf16 through fp32 with round-to-nearest-even."""
    if v.dtype == dtype:
        out = v
    elif dtype == tl.bfloat16:
        out = _fp32_to_bf16_rne(v.to(tl.float32))
    else:
        out = v.to(dtype)
    return out
