"""Host-to-device copies that never block the host.

Every tensor the training step moves from the host to the device (token rows, sampled
subgraphs, node ids) goes through :func:`to_device`: staged in pinned memory and copied with
``non_blocking=True``, so the CPU keeps enqueueing work while the copy runs. (A
``non_blocking`` copy from pageable memory is synchronous.) One function for all of them also
gives tests one place to mark what lives on the device.
"""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``: itself when it is there already; from pinned host memory without
    blocking when it goes from the CPU to a GPU."""
    device = torch.device(device)
    if t.device == device or (device.type == "cuda" and t.device.type == "cuda" and device.index is None):
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
