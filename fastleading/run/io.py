"""Atomic file output: write to a temporary file in the same folder, then rename.

A reader (or a run resumed after SIGKILL) therefore sees either the old file or the
complete new one, never a half-written one: the data are fsynced before the rename and the
folder after it, so the rename itself survives a crash. New files get the usual permissions
(``0666`` less the process's umask, as ``open`` gives), not the ``0600`` of a bare temp file.

A write that fails for lack of space (``ENOSPC``, ``EDQUOT``) or over the file size limit
(``EFBIG``), or any other operating-system error, stops with one line naming the path and the
cause (:class:`fastleading.errors.FastleadingError`); the previous file stays as it was and no
temporary file is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from fastleading.errors import FastleadingError

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_error(path: str | Path, error: OSError, action: str = "cannot write") -> FastleadingError:
    """The one line that says why writing ``path`` failed (disk full / file size limit spelled out)."""
    code = errno.errorcode.get(error.errno, str(error.errno)) if error.errno is not None else "?"
    reason = error.strerror or str(error)
    if error.errno in FULL:
        reason += ": the disk is full (or the quota or the file size limit is reached)"
    return FastleadingError(f"{path}: {action}: {reason} [{code}]; the previous file, if any, is unchanged")


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not fsync folders
    finally:
        os.close(fd)


class _RecordingFile:
    """A file object that remembers the first OS error of its writes: a writer such as
    ``torch.save`` reports it as its own ``RuntimeError`` ("unexpected pos ...")."""

    def __init__(self, f: IO[Any]):
        self._f = f
        self.error: OSError | None = None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def _os_cause(exc: BaseException, recorded: OSError | None) -> OSError | None:
    """The OS error behind ``exc``: itself, one it was raised while handling, or ``recorded``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__context__
    return recorded


def atomic_write(path: str | Path, write: Callable[[Any], None], binary: bool = True) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, rename over ``path``, fsync
    the folder. An OS error (disk full included) becomes one line naming ``path``; the previous
    file is untouched and the temp file removed."""
    path = Path(path)
    tmp, recorder = None, None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            recorder = _RecordingFile(f)
            write(recorder)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        cause = _os_cause(e, recorder.error if recorder is not None else None)
        if cause is not None and not isinstance(e, FastleadingError) and isinstance(e, Exception):
            raise write_error(path, cause) from None
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
