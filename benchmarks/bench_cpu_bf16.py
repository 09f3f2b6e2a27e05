"""bf16 autocast against fp32 on this CPU: LM encodes without gradient and training steps.

What ``train.precision=auto`` picks on a CPU with native bf16 (:func:`fastleading.engine.precision.cpu_native_bf16`:
AVX512-BF16, AMX-BF16 or Arm BF16), measured side by side in one process on real text
(CiteSeer-TAG, all-MiniLM-L6-v2): the two precisions alternate round by round on the same
nodes, so load from other jobs hits both alike; reported are the median seconds per round and
their ratio, and how far the bf16 embeddings are from the fp32 ones (mean relative L2 error per
node). A benchmark, not a test: it times things.

    python benchmarks/bench_cpu_bf16.py --json benchmarks/results/cpu-bf16-<date>.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from fastleading.bench.report import git_commit, write_result
from fastleading.bench.sampler import machine
from fastleading.config import Config, apply_overrides
from fastleading.engine.precision import NATIVE_BF16_CPU_FEATURES, Precision, cpu_native_bf16
from fastleading.models.encode import encode_eval, encode_nodes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--nodes", type=int, default=256, help="nodes encoded without gradient per round")
    p.add_argument("--batch-size", type=int, default=32, help="targets of a training step")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", default=None)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    from fastleading.data import prepare
    from fastleading.models.lm import LMEncoder
    from fastleading.run import console

    cfg = apply_overrides(Config(), ["data.dataset=citeseer-tag", f"data.max_length={args.max_length}",
                                     *args.override])
    with console.output(quiet=True):
        graph, tokens = prepare(cfg)
        encoder = LMEncoder(cfg.model)
    cpu = torch.device("cpu")
    precisions = {"fp32": Precision("fp32", cpu, None, torch.float32),
                  "bf16": Precision("bf16", cpu, torch.bfloat16, torch.float32)}
    ids = torch.randperm(graph.num_nodes, generator=torch.Generator().manual_seed(0))[:args.nodes]
    step_ids = ids[:args.batch_size]
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=0.0)  # the step's cost, weights unchanged

    def nograd(precision):
        return encode_eval(encoder, tokens, ids, cpu, precision)

    def step(precision):
        encoder.train()
        x = encode_nodes(encoder, tokens, step_ids, cpu, precision)
        x.float().square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for precision in precisions.values():  # warm-up: first calls pay for oneDNN's kernel creation
        nograd(precision)
        step(precision)
    times = {f"{kind}_{name}": [] for kind in ("nograd", "step") for name in precisions}
    for _ in range(args.rounds):
        for name, precision in precisions.items():
            for kind, fn in (("nograd", nograd), ("step", step)):
                start = time.perf_counter()
                fn(precision)
                times[f"{kind}_{name}"].append(time.perf_counter() - start)
    fp32, bf16 = nograd(precisions["fp32"]), nograd(precisions["bf16"])
    rel = ((bf16 - fp32).norm(dim=1) / fp32.norm(dim=1)).mean()
    median = {k: statistics.median(v) for k, v in times.items()}
    caps = torch.cpu.get_capabilities()
    result = {
        "benchmark": "cpu-bf16", "date": datetime.date.today().isoformat(), "git_commit": git_commit(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
        "cpu_native_bf16": cpu_native_bf16(),
        "cpu_features": {name: bool(caps.get(name, False)) for name in NATIVE_BF16_CPU_FEATURES},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torch_num_threads": torch.get_num_threads()},
        "config": {"model": cfg.model.name, "dataset": "citeseer-tag", **vars(args)},
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "median_s": {k: round(v, 3) for k, v in median.items()},
        "speedup_nograd_encode": round(median["nograd_fp32"] / median["nograd_bf16"], 2),
        "speedup_training_step": round(median["step_fp32"] / median["step_bf16"], 2),
        "bf16_embedding_mean_relative_error": float(rel),
        "load_avg_1m_at_end": os.getloadavg()[0],
    }
    print(json.dumps({k: result[k] for k in ("cpu_native_bf16", "median_s", "speedup_nograd_encode",
                                             "speedup_training_step", "bf16_embedding_mean_relative_error")},
                     indent=1))
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
