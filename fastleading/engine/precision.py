"""Device and mixed-precision policy.

``auto`` picks bf16 autocast on GPUs that support it and on CPUs with native bf16 instructions
(:func:`cpu_native_bf16`), fp32 elsewhere; fp16 runs with a gradient scaler. Requests the hardware
cannot honour fail with one clear line.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from fastleading.errors import FastleadingError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FastleadingError(f"config key 'train.device': expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FastleadingError(f"config key 'train.device': {name} requested but no CUDA device is available")
    return device


@dataclass
class Precision:
    """What the training step runs in: the autocast dtype (None = fp32) and the loss scaler."""

    name: str
    device: torch.device
    autocast_dtype: torch.dtype | None
    bank_dtype: torch.dtype

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def make_scaler(self):
        """A GradScaler for fp16 (bf16 and fp32 need none)."""
        if self.name == "fp16":
            return torch.amp.GradScaler(self.device.type)
        return None


# CPU features (torch.cpu.get_capabilities) that run bf16 matrix products natively: x86 AVX512-BF16
# (Cooper Lake, Sapphire Rapids and later Xeons; AMD Zen 4 and later) or AMX-BF16, Arm BF16 (v8.6+).
# Without them oneDNN emulates bf16 by converting to fp32, which is slower than fp32 itself.
NATIVE_BF16_CPU_FEATURES = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_native_bf16() -> bool:
    """Whether this CPU has native bf16 instructions (read from the CPU's feature flags, not guessed)."""
    caps = torch.cpu.get_capabilities()
    return any(bool(caps.get(name, False)) for name in NATIVE_BF16_CPU_FEATURES)


def resolve_precision(precision: str, bank_dtype: str, device: torch.device) -> Precision:
    cuda = device.type == "cuda"
    bf16_ok = torch.cuda.is_bf16_supported() if cuda else cpu_native_bf16()
    if precision == "auto":
        precision = "bf16" if bf16_ok else "fp32"
    if precision == "fp16" and not cuda:
        raise FastleadingError("config key 'train.precision': fp16 needs a CUDA device (this run is on "
                               f"{device.type}); use bf16 or fp32")
    if precision == "bf16" and cuda and not bf16_ok:
        raise FastleadingError("config key 'train.precision': bf16 is not supported by "
                               f"{torch.cuda.get_device_name(device)}; use fp16 or fp32")
    if bank_dtype == "auto":
        bank_dtype = "bf16" if cuda else "fp32"
    if bank_dtype == "fp16" and not cuda:
        raise FastleadingError("config key 'train.bank_dtype': fp16 banks need a CUDA device; use bf16 or fp32")
    return Precision(precision, device, None if precision == "fp32" else DTYPES[precision], DTYPES[bank_dtype])
