"""Helpers shared by the dataset loaders: locating raw files and reporting bad ones."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import IO, Sequence

from fastleading.errors import FastleadingError


def data_root(root: str | None) -> Path:
    """The data root folder (``data.root``, else $FASTLEADING_DATA, else ../shared/data)."""
    from fastleading.config import default_data_root

    path = Path(root if root else default_data_root()).expanduser()
    if not path.is_dir():
        raise FastleadingError(f"data root '{path}' does not exist (set data.root or $FASTLEADING_DATA "
                               f"to the folder that holds the datasets)")
    return path


def find_file(candidates: Sequence[Path], what: str) -> Path:
    """The first existing path of ``candidates``, else an error naming them all."""
    for p in candidates:
        if p.is_file():
            return p
    names = " or ".join(f"'{p}'" for p in candidates)
    raise FastleadingError(f"{what}: file not found; expected {names}")


def open_text(path: Path) -> IO[str]:
    """Open a text file for reading, transparently decompressing ``.gz``."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def fingerprint(paths: Sequence[Path]) -> list[list]:
    """(path, size, mtime) of each input file: a cache key that changes when the data does."""
    out = []
    for p in paths:
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out
