"""A LEADING training run at ogbn-products size on CPU: ``python benchmarks/bench_scale.py [--toy] [...]``.

Same as ``fastleading bench scale``; the logic and the options live in
:mod:`fastleading.bench.scale`.
"""

import sys

from fastleading.bench.scale import main

if __name__ == "__main__":
    sys.exit(main())
