"""CSR build and neighbour sampling at ogbn-products size: ``python benchmarks/bench_sampler.py [...]``.

Same as ``fastleading bench sampler``; the logic and the options live in
:mod:`fastleading.bench.sampler`.
"""

import sys

from fastleading.bench.sampler import main

if __name__ == "__main__":
    sys.exit(main())
