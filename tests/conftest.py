"""Test-session environment. These lines run before any test module imports triton or transformers.

TRITON_INTERPRET=1 makes the Triton kernels run on CPU tensors (Triton reads it when a
kernel is defined); a GPU run sets TRITON_INTERPRET=0 beforehand to test compiled kernels.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
