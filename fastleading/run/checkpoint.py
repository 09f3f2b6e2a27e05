"""Checkpoint files: written atomically (temp file + rename), read without running code.

A run killed at any point (SIGKILL included) leaves either the previous complete
checkpoint or the new complete one, never a torn file; ``--resume DIR`` continues from it.

Files hold only tensors and plain containers (dicts, lists, tuples, numbers, strings), and
are read with ``torch.load(weights_only=True)``: a run folder someone shared cannot run code
on ``--resume``, ``export`` or ``downstream``. Anything else is refused with one line.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from fastleading.errors import FastleadingError
from fastleading.run.io import atomic_torch_save

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
BEST_PENDING = "best.pending.pt"  # a new best's weights until a checkpoint records them (trainer/state.py)
# set in a finished run's checkpoint.pt whose optimizer moments were dropped (drop_optimizer_state)
OPTIMIZER_STATE_DROPPED = "optimizer_state_dropped"


def save(path: str | Path, state: dict) -> Path:
    return atomic_torch_save(state, path)


def load(path: str | Path, map_location="cpu", mmap: bool = False) -> dict:
    """The dict saved at ``path``, its tensors on ``map_location`` (default: the CPU); with
    ``mmap`` the tensors stay in the file's pages until read (cheap for reading a small field)."""
    path = Path(path)
    if not path.is_file():
        raise FastleadingError(f"{path}: no checkpoint here (expected a file written by `fastleading train`)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise refused(path, e) from None
    except Exception as e:
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else ""
        raise FastleadingError(f"{path}: cannot read checkpoint ({type(e).__name__}: {first})") from None


def refused(where: str | Path, e: pickle.UnpicklingError, what: str = "holds") -> FastleadingError:
    """The one line for a weights-only load of ``where`` that met an object it does not allow
    (``what``: the verb, e.g. "holds" for a file, "has a file holding" for a folder)."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    named = f"it names {found.group(1)}" if found else first
    return FastleadingError(f"{where}: refused: {what} objects other than tensors and plain containers, which "
                            f"could run code when loaded ({named})")


def drop_optimizer_state(path: str | Path) -> int:
    """Rewrite the checkpoint at ``path`` (atomically) without the optimizer's per-parameter
    state (AdamW's two moments per weight) and mark it :data:`OPTIMIZER_STATE_DROPPED`; the
    bytes freed (0 when already dropped). The optimizer's parameter groups, the schedule, the
    scaler and everything else stay: a resume loads them and starts the moments afresh."""
    path = Path(path)
    state = load(path)
    if state.get(OPTIMIZER_STATE_DROPPED):
        return 0
    optimizer = state.get("optim", {}).get("optimizer") if isinstance(state.get("optim"), dict) else None
    if not isinstance(optimizer, dict) or "state" not in optimizer:
        raise FastleadingError(f"{path}: no optimizer state where a checkpoint written by `fastleading train` has it")
    before = path.stat().st_size
    optimizer["state"] = {}
    state[OPTIMIZER_STATE_DROPPED] = True
    save(path, state)
    return before - path.stat().st_size
