"""Mixed-precision policy: what runs where, and one-line errors for impossible requests."""

import pytest
import torch

from fastleading.engine.precision import resolve_device, resolve_precision
from fastleading.errors import FastleadingError


def fake_cpu(monkeypatch, **features):
    """Make torch.cpu.get_capabilities() report exactly ``features`` (the x86 flags of a CPU)."""
    caps = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bf16": False, "amx_bf16": False,
            **features}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)


def test_auto_on_a_cpu_without_native_bf16_is_fp32_everywhere(monkeypatch):
    fake_cpu(monkeypatch)  # AVX-512 without its BF16 extension: oneDNN would emulate bf16
    p = resolve_precision("auto", "auto", torch.device("cpu"))
    assert p.name == "fp32" and p.autocast_dtype is None and p.bank_dtype == torch.float32
    assert p.make_scaler() is None


@pytest.mark.parametrize("feature", ["avx512_bf16", "amx_bf16", "bf16"])
def test_auto_on_a_cpu_with_native_bf16_autocasts_to_bf16(monkeypatch, feature):
    fake_cpu(monkeypatch, **{feature: True})
    p = resolve_precision("auto", "auto", torch.device("cpu"))
    assert p.name == "bf16" and p.autocast_dtype == torch.bfloat16
    assert p.bank_dtype == torch.float32  # the bank stays fp32 on the CPU
    assert p.make_scaler() is None


def test_native_bf16_is_read_from_this_cpu():
    from fastleading.engine.precision import cpu_native_bf16

    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line for line in f if line.startswith(("flags", "Features"))), ":").split(":")[1].split())
    except OSError:
        pytest.skip("no /proc/cpuinfo to compare with")
    if not flags:
        pytest.skip("/proc/cpuinfo lists no CPU flags")
    assert cpu_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


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
