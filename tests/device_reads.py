"""The device-read guard of the host-synchronisation tests (tests/test_host_sync.py): every tensor
that would live on the GPU is marked as a device tensor, and any host read of one is recorded.

:class:`DeviceReads` is a dispatch mode that propagates the mark to everything computed from a
marked tensor; :func:`watch` routes the host-to-device copies and the host reads of tensors through
it (the ``guard`` fixture of tests/conftest.py). The Triton interpreter's own reads stand for
device-side work and are allowed.
"""

import sys

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakTensorKeyDictionary

from fastleading.engine import ops, transfer

aten = torch.ops.aten
READS = {aten._local_scalar_dense.default, aten.equal.default, aten.is_nonzero.default}
HOST_METHODS = ("tolist", "numpy", "cpu", "__array__")


def _from_triton_interpreter() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("triton"):
            return True
        frame = frame.f_back
    return False


class DeviceReads(TorchDispatchMode):
    """Marks device tensors (and whatever is computed from them) and records host reads of them."""

    def __init__(self):
        super().__init__()
        self.device = WeakTensorKeyDictionary()
        self.reads: list[str] = []

    def mark(self, t: torch.Tensor) -> torch.Tensor:
        self.device[t] = True
        return t

    def is_device(self, t) -> bool:
        return isinstance(t, torch.Tensor) and t in self.device

    def read(self, what: str) -> None:
        if not _from_triton_interpreter():
            import traceback

            where = [f"{f.filename.split('/')[-1]}:{f.lineno} {f.name}" for f in traceback.extract_stack()[-8:-2]]
            self.reads.append(f"{what} at {' <- '.join(reversed(where))}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = pytree.tree_leaves((args, kwargs))
        on_device = any(self.is_device(a) for a in flat)
        if on_device and func in READS:
            self.read(str(func))
        out = func(*args, **kwargs)
        if on_device:
            for t in pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.mark(t)
            # written in place (copy_, index_put_...); the schema also lists the arguments left to their defaults
            for arg, schema in zip(args, func._schema.arguments, strict=False):
                if isinstance(arg, torch.Tensor) and schema.alias_info is not None and schema.alias_info.is_write:
                    self.mark(arg)
                    if arg._base is not None:
                        self.mark(arg._base)
        return out


def watch(monkeypatch) -> DeviceReads:
    """A :class:`DeviceReads` mode with the host-to-device copies, the ops' index checks and the host
    reads of tensors (``tolist``, ``numpy``, ``cpu``, ``__array__``) routed through it (the ``guard``
    fixture of tests/conftest.py)."""
    mode = DeviceReads()
    real_to_device = transfer.to_device
    # what crosses to the device is a device tensor (a copy: on the CPU `to` would return itself)
    monkeypatch.setattr(transfer, "to_device", lambda t, device: mode.mark(real_to_device(t, device).clone()))
    # on a GPU the ops trust index values instead of reading them back
    monkeypatch.setattr(ops, "_checks_index_values", lambda t: not mode.is_device(t))
    for name in HOST_METHODS:
        real = getattr(torch.Tensor, name)

        def wrapper(self, *args, _real=real, _name=name, **kwargs):
            if mode.is_device(self):
                mode.read(f"Tensor.{_name}")
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return mode
