"""Training-step benchmark: ``python benchmarks/bench_step.py [--toy] [...]``.

Same as ``fastleading bench step``; the logic and the options live in
:mod:`fastleading.bench.step`.
"""

import sys

from fastleading.bench.step import main

if __name__ == "__main__":
    sys.exit(main())
