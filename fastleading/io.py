"""Atomic file output: write to a temporary file in the same folder, then rename.

A reader (or a run resumed after SIGKILL) therefore sees either the old file or the
complete new one, never a half-written one.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, write: Callable[[Any], None], binary: bool = True) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files that :func:`atomic_write` leaves when its process is killed mid-write
    (``.<name>.<random>.tmp`` beside the target). Call it only when no writer can be running,
    e.g. when a run resumes. Returns what was removed."""
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch

    def write(f: io.BufferedWriter) -> None:
        torch.save(obj, f)

    return atomic_write(path, write)


def atomic_numpy_save(path: str | Path, array) -> Path:
    """np.save to ``path`` (which should end in .npy) atomically."""
    import numpy as np

    return atomic_write(path, lambda f: np.save(f, array))
