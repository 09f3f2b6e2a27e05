"""Kernel microbenchmarks: ``python benchmarks/bench_kernels.py [--toy] [--out-dir DIR] ...``.

Same as ``fastleading bench kernels``; the logic and the options live in
:mod:`fastleading.bench.kernels`.
"""

import sys

from fastleading.bench.kernels import main

if __name__ == "__main__":
    sys.exit(main())
