"""The LM's gradient step on the CPU: eager PyTorch against ``torch.compile`` (inductor).

    python benchmarks/bench_cpu_step_compile.py --json benchmarks/results/cpu-step-compile-<date>.json

What dominates a LEADING step on a CPU is the LM's forward and backward over the step's
targets (pipeline 1). Two copies of all-MiniLM-L6-v2 with the same weights, one eager and one
wrapped in ``torch.compile(dynamic=True)`` (the widths of real batches vary), take the same
steps side by side on real CiteSeer-TAG texts (``--batch-size`` targets a step, a new batch each
step, fp32, AdamW): forward, a loss, backward, optimizer step. Dropout is off (eval mode) so
that both copies compute the same function and their losses can be compared step by step.
Reported: the compile time (the first compiled steps), the median step time of each after
warm-up, their ratio, and the largest loss difference. A benchmark, not a test: it times things.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import statistics
import sys
import time

import torch

from fastleading.bench.report import git_commit, write_result
from fastleading.bench.sampler import machine
from fastleading.config import Config, apply_overrides
from fastleading.engine.precision import resolve_precision
from fastleading.models.encode import encode_nodes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32, help="targets of a step")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each (the compile happens here)")
    p.add_argument("--steps", type=int, default=8, help="timed steps of each")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from fastleading.data import prepare
    from fastleading.models.lm import LMEncoder
    from fastleading.run import console

    cfg = apply_overrides(Config(), ["data.dataset=citeseer-tag", f"data.max_length={args.max_length}"])
    with console.output(quiet=True):
        graph, tokens = prepare(cfg)
        eager = LMEncoder(cfg.model).eval()
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, dynamic=True)
    cpu = torch.device("cpu")
    fp32 = resolve_precision("fp32", "fp32", cpu)
    optims = {"eager": torch.optim.AdamW(eager.parameters(), lr=1e-5),
              "compile": torch.optim.AdamW(compiled_model.parameters(), lr=1e-5)}
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randperm(graph.num_nodes, generator=gen)[:args.batch_size]
               for _ in range(args.warmup + args.steps)]

    def step(name, module, ids):
        x = encode_nodes(module, tokens, ids, cpu, fp32)
        loss = x.square().mean()  # a loss of the embeddings: the LM's backward is the cost
        loss.backward()
        optims[name].step()
        optims[name].zero_grad(set_to_none=True)
        return float(loss)

    times = {"eager": [], "compile": []}
    losses = {"eager": [], "compile": []}
    warm = {"eager": 0.0, "compile": 0.0}
    for k, ids in enumerate(batches):
        for name, module in (("eager", eager), ("compile", compiled)):
            start = time.perf_counter()
            losses[name].append(step(name, module, ids))
            seconds = time.perf_counter() - start
            if k < args.warmup:
                warm[name] += seconds
            else:
                times[name].append(seconds)
    e, c = statistics.median(times["eager"]), statistics.median(times["compile"])
    diff = max(abs(a - b) for a, b in zip(losses["eager"], losses["compile"], strict=True))
    result = {
        "benchmark": "cpu-step-compile", "date": datetime.date.today().isoformat(), "commit": git_commit(),
        "machine": machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "model": cfg.model.name, "dataset": "citeseer-tag", "max_length": args.max_length,
        "batch_size": args.batch_size, "warmup_steps": args.warmup, "timed_steps": args.steps,
        "warmup_s": {k: round(v, 2) for k, v in warm.items()},
        "eager_step_s": round(e, 3), "compiled_step_s": round(c, 3), "speedup": round(e / c, 3),
        "max_loss_difference": diff, "losses": losses,
        "seconds": {k: [round(s, 3) for s in v] for k, v in times.items()},
        "load_avg_1m_after": os.getloadavg()[0],
    }
    print({k: v for k, v in result.items() if k not in ("machine", "losses", "seconds")}, flush=True)
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
