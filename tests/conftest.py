"""Test-session environment. These lines run before any test module imports triton or transformers.

TRITON_INTERPRET=1 makes the Triton kernels run on CPU tensors (Triton reads it when a
kernel is defined); a GPU run sets TRITON_INTERPRET=0 beforehand to test compiled kernels.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _kernel_backend_per_test():
    """Each test starts on the default kernel backend and leaves it as it found it: a test that
    builds a trainer with train.kernels=triton (tests/test_host_sync.py) otherwise left every
    later test's propagation in Triton's CPU interpreter."""
    from fastleading.engine import ops

    with ops.use_backend("auto"):
        yield
