"""Atomic writes (fastleading/run/io.py): the usual permissions, durable renames, and a full disk
reported in one line with the previous file intact (the disk is filled with RLIMIT_FSIZE in a
child process: no privileges needed)."""

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fastleading.errors import FastleadingError
from fastleading.run import io as io_mod
from fastleading.run.io import atomic_numpy_save, atomic_torch_save, atomic_write_text

WRITERS = {"text": lambda p: atomic_write_text(p, "hello\n"),
           "torch": lambda p: atomic_torch_save({"w": torch.arange(4)}, p),
           "numpy": lambda p: atomic_numpy_save(p, np.arange(4))}


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_new_files_get_the_permissions_open_gives_them(tmp_path, kind, mask):
    """mkstemp makes 0600 files: every checkpoint, config, summary and export was private."""
    old = os.umask(mask)
    try:
        WRITERS[kind](tmp_path / "out")
        with open(tmp_path / "reference", "w"):
            pass
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "reference").stat().st_mode)
    assert want == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == want


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode)))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace",)) or real_replace(a, b))
    atomic_write_text(tmp_path / "x.json", "{}")
    assert events == [("fsync", False), ("replace",), ("fsync", True)]


def run_with_file_size_limit(limit: int, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a child Python whose files cannot grow past ``limit`` bytes (EFBIG, as a
    full disk fails a write; SIGXFSZ ignored so that the write fails instead of killing it)."""
    import resource
    import signal

    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], preexec_fn=limit_files, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kind", ["torch", "numpy", "text"])
def test_a_full_disk_is_one_line_naming_the_file_and_the_previous_file_stays(tmp_path, kind):
    """torch.save ended with "RuntimeError [enforce fail at inline_container.cc:672] unexpected
    pos ..." which never says what went wrong."""
    target = tmp_path / "state.bin"
    target.write_bytes(b"previous")
    payload = {"torch": "atomic_torch_save({'w': torch.zeros(100_000)}, path)",
               "numpy": "atomic_numpy_save(path, np.zeros(100_000))",
               "text": "atomic_write_text(path, 'x' * 400_000)"}[kind]
    proc = run_with_file_size_limit(100_000, f"""
        import sys
        import numpy as np, torch
        from fastleading.errors import FastleadingError
        from fastleading.run.io import atomic_numpy_save, atomic_torch_save, atomic_write_text
        path = {str(target)!r}
        try:
            {payload}
        except FastleadingError as e:
            print(e, file=sys.stderr)
            sys.exit(2)
        """)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"{target}: cannot write: File too large") and "disk is full" in line and "EFBIG" in line
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]  # no temp file left


def test_any_os_error_is_one_line_naming_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FastleadingError, match=f"^{blocker / 'x.json'}: cannot write: ") as err:
        atomic_write_text(blocker / "x.json", "{}")  # its folder is a file
    assert "\n" not in str(err.value)


def test_an_error_of_the_writer_itself_is_not_mistaken_for_the_disk(tmp_path):
    def write(f):
        f.write(b"partial")
        raise ValueError("not serialisable")

    with pytest.raises(ValueError, match="not serialisable"):
        io_mod.atomic_write(tmp_path / "x.bin", write)
    assert list(Path(tmp_path).iterdir()) == []
