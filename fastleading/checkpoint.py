"""Checkpoints: one file per run folder, written atomically (temp file + rename).

A run killed at any point (SIGKILL included) leaves either the previous complete
checkpoint or the new complete one, never a torn file; ``--resume DIR`` continues from it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fastleading.errors import FastleadingError
from fastleading.io import atomic_torch_save

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


def save(path: str | Path, state: dict) -> Path:
    return atomic_torch_save(state, path)


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FastleadingError(f"{path}: no checkpoint here (expected a file written by `fastleading train`)")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise FastleadingError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
