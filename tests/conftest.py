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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for the module: on tiny tensors, on 2 shared cores, intra-op threads spin
    against other jobs (3x slower). The study tests use it (``pytestmark``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny random BERT (hidden 32) saved with its tokenizer: the LM of the trainer's tests."""
    from tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "bert", "bert", hidden=32)


@pytest.fixture
def guard(monkeypatch):
    """Marks would-be device tensors and records every host read of one (tests/device_reads.py)."""
    from device_reads import watch

    return watch(monkeypatch)
