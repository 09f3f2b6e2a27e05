"""The installed package: native module and Triton kernels importable, and not stale.

Tests run from the repository root, where the source folder fastleading/ (without the
compiled module or the kernels) can shadow the installed package; these checks fail when
that happens.
"""

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRITON_SOURCES = sorted((REPO / "kernels" / "triton").glob("*.py"))


def test_native_module_imports_and_computes():
    """The installed extension answers: its CSR build of a small edge list (a duplicate, a self
    loop, both directions) is the hand-computed one, and its APPNP step equals the reference."""
    import numpy as np
    import torch

    native = importlib.import_module("fastleading._native")
    src, dst = np.array([0, 1, 2, 2, 3], dtype=np.int64), np.array([1, 0, 2, 3, 1], dtype=np.int64)
    rowptr, col = native.build_csr(src, dst, 4, 1)
    assert rowptr.tolist() == [0, 1, 3, 4, 6] and col.tolist() == [1, 0, 3, 3, 1, 2]
    from fastleading.engine import ops

    rowptr, col = torch.from_numpy(rowptr), torch.from_numpy(col)
    x, x_in = torch.randn(4, 16), torch.randn(4, 16)
    out = torch.empty(4, 16)
    native.appnp_step(rowptr, col, x, x_in, 0.3, out, None, 1)
    assert torch.equal(out, ops.appnp_step_reference(rowptr, col, x, x_in, 0.3))


def test_kernels_package_imports():
    kernels = importlib.import_module("fastleading.kernels")
    assert kernels.__name__ == "fastleading.kernels"


@pytest.mark.parametrize("source", TRITON_SOURCES, ids=lambda p: p.name)
def test_kernels_are_the_checkout_sources(source):
    # An install that copied kernels/triton earlier and missed later edits fails here.
    if source.stem == "__init__":
        installed = importlib.import_module("fastleading.kernels").__file__
    else:
        spec = importlib.util.find_spec(f"fastleading.kernels.{source.stem}")
        assert spec is not None, f"fastleading.kernels.{source.stem} is not importable"
        installed = spec.origin
    assert Path(installed).read_bytes() == source.read_bytes()


def test_imports_from_the_repository_root():
    # `python -m pytest` / `python -c` put the current directory first on sys.path.
    code = "import fastleading._native, fastleading.kernels; print(fastleading._native.__name__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fastleading._native"
