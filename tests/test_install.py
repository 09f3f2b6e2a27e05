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


def test_native_module_imports():
    native = importlib.import_module("fastleading._native")
    assert callable(native.build_csr) and callable(native.sample)


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
