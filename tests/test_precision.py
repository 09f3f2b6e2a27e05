"""Mixed-precision policy: what runs where, and one-line errors for impossible requests."""

import pytest
import torch

from fastleading.errors import FastleadingError
from fastleading.precision import resolve_device, resolve_precision


def test_auto_on_cpu_is_fp32_everywhere():
    p = resolve_precision("auto", "auto", torch.device("cpu"))
    assert p.name == "fp32" and p.autocast_dtype is None and p.bank_dtype == torch.float32
    assert p.make_scaler() is None


def test_bf16_on_cpu_autocasts_to_bf16():
    p = resolve_precision("bf16", "bf16", torch.device("cpu"))
    assert p.autocast_dtype == torch.bfloat16 and p.bank_dtype == torch.bfloat16
    with p.autocast():
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16


@pytest.mark.parametrize("precision, bank, fragment", [
    ("fp16", "auto", "'train.precision': fp16 needs a CUDA device"),
    ("fp32", "fp16", "'train.bank_dtype': fp16 banks need a CUDA device"),
])
def test_unsupported_precision_is_one_clear_line(precision, bank, fragment):
    with pytest.raises(FastleadingError) as e:
        resolve_precision(precision, bank, torch.device("cpu"))
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised on a machine without CUDA")
def test_cuda_requested_without_a_gpu():
    with pytest.raises(FastleadingError, match="no CUDA device is available"):
        resolve_device("cuda")
    with pytest.raises(FastleadingError, match="expected auto, cpu, cuda"):
        resolve_device("tpu:0")
