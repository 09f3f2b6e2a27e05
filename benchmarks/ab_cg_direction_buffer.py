"""A/B: ``solve_appnp`` at ogbn-products size, the CG direction buffer from ``ops.empty_rows``
(rows padded to 64 bytes, transparent huge pages) vs a plain ``torch.empty``, alternated in one
process (2 threads, 47 columns, alpha 0.1, tol 1e-3, at most 12 iterations).

Uses the graph of a ``fastleading bench scale`` run (its cache and the ``data.*`` overrides of
its result file):

    OMP_NUM_THREADS=2 python benchmarks/ab_cg_direction_buffer.py \\
        benchmarks/results/scale-cpu-2026-12-01-2threads-rerun.json
"""

import json
import sys
import time
from pathlib import Path

import torch

from fastleading.config import Config, apply_overrides
from fastleading.data import load_dataset
from fastleading.engine import ops
from fastleading.models import appnp as fnn


def main(scale_json: str) -> None:
    torch.set_num_threads(2)
    overrides = json.loads(Path(scale_json).read_text())["config_overrides"]
    graph = load_dataset(apply_overrides(Config(), [o for o in overrides if o.startswith("data.")]).data)
    x_in = torch.randn(graph.num_nodes, 47, generator=torch.Generator().manual_seed(0))
    layouts = {"empty_rows": ops.empty_rows,
               "plain": lambda rows, cols, dtype, device: torch.empty(rows, cols, dtype=dtype, device=device)}
    results = {}
    for rep in range(2):
        for name, empty in layouts.items():
            ops.empty_rows = empty
            start = time.perf_counter()
            _, iters = fnn.solve_appnp(x_in, graph.rowptr, graph.col, 0.1, 1e-3, 12)
            results.setdefault(name, []).append([round(time.perf_counter() - start, 2), iters])
            print(name, rep, *results[name][-1], flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
