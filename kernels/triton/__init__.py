"""Triton kernels of fastleading, installed as ``fastleading.kernels``.

- :mod:`fastleading.kernels.appnp`: the fused sparse-dense APPNP step
  ``out = (1-a) Â x + a x_in`` in one pass over the CSR graph, load-balanced for skewed
  degree distributions.
- :mod:`fastleading.kernels.bank`: wide gather/scatter of memory-bank rows, with the
  staleness stamp written in the scatter pass.

Nothing here validates inputs or picks a backend: :mod:`fastleading.engine.ops` does both and
keeps the PyTorch reference of every kernel. Import the submodules only after
``TRITON_INTERPRET`` has its final value: Triton decides at ``@triton.jit`` time whether
a kernel is compiled or interpreted on CPU.
"""
