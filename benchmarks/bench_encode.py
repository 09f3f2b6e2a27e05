"""Evaluation-encode throughput before / after length-aware batching, on real text.

    python benchmarks/bench_encode.py --json benchmarks/results/encode-cpu-2026-12-01.json

For each ``--max-lengths`` value: the dataset's token cache (``fastleading prepare`` makes it on
first use, under ``data.cache_dir``), a fixed random subset of nodes (``--subset``, seeded; 0 =
every node), and the same LM encoded twice without gradient, one pass each, side by side:

- before: id order, fixed batches of ``--eval-batch-size`` nodes padded to each batch's longest
  text (what ``encode_all`` did; ``train.encode_token_budget=0``);
- after: longest first, micro-batches of at most ``--token-budget`` token positions and
  ``--eval-batch-size`` nodes (what ``encode_all`` does now on one rank; the same
  ``encode_eval`` call pipeline 2 makes).

Reported: padded-token ratio (share of computed positions that are padding), forwards, wall
seconds, nodes/s and the speed-up, and the largest difference between the two passes'
embeddings. ``--sweep-budgets`` adds after-passes with other budgets at the largest max length
(on the first ``--sweep-subset`` nodes of the subset) to choose the default. A benchmark, not a
test: it times things; run it once on a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fastleading.bench.report import git_commit, write_result
from fastleading.bench.sampler import machine
from fastleading.config import Config, TrainConfig, apply_overrides
from fastleading.engine.precision import resolve_precision
from fastleading.models.encode import DEFAULT_TOKEN_BUDGET, budget_chunks, encode_eval, length_order, padding_ratio

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def plan_lengths(lengths: torch.Tensor, budget: int, max_rows: int) -> list[torch.Tensor]:
    """The lengths of each forward's rows, as :func:`encode_eval` cuts ``lengths``."""
    order = length_order(lengths) if budget else torch.arange(len(lengths))
    return [lengths[order[a:b]] for a, b in budget_chunks(lengths[order], budget, max_rows)]


def one_pass(encoder, tokens, ids: torch.Tensor, budget: int, max_rows: int, precision) -> tuple[dict, torch.Tensor]:
    lengths = tokens.lengths[ids].long()
    forwards = plan_lengths(lengths, budget, max_rows)
    start, cpu_start = time.perf_counter(), time.process_time()
    emb = encode_eval(encoder, tokens, ids, torch.device("cpu"), precision, token_budget=budget, max_rows=max_rows)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    computed = sum(len(f) * int(f.max()) for f in forwards)
    return {"token_budget": budget, "max_rows": max_rows, "forwards": len(forwards),
            "real_tokens": int(lengths.sum()), "computed_positions": computed,
            "padded_token_ratio": round(padding_ratio(forwards), 4),
            "largest_forward_positions": max(len(f) * int(f.max()) for f in forwards),
            "seconds": round(seconds, 2), "nodes_per_s": round(len(ids) / seconds, 2),
            "real_tokens_per_s": round(int(lengths.sum()) / seconds, 1),
            # CPU time of this process (all its threads): less sensitive than wall time to other
            # jobs sharing the cores
            "cpu_seconds": round(cpu_seconds, 2), "nodes_per_cpu_s": round(len(ids) / cpu_seconds, 3),
            "load_avg_1m_after": os.getloadavg()[0]}, emb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="citeseer-tag")
    p.add_argument("--model", default=MINILM)
    p.add_argument("--max-lengths", default="256,512", help="comma-separated data.max_length values")
    p.add_argument("--subset", type=int, default=600, help="fixed random subset of nodes (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset")
    p.add_argument("--eval-batch-size", type=int, default=TrainConfig.eval_batch_size)
    p.add_argument("--token-budget", type=int, default=DEFAULT_TOKEN_BUDGET)
    p.add_argument("--sweep-budgets", default="", help="comma-separated extra budgets (largest max length only)")
    p.add_argument("--sweep-subset", type=int, default=300, help="nodes of the subset used by the sweep")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--note", default="")
    p.add_argument("--override", action="append", default=[], help="section.key=value (e.g. data.root=...)")
    args = p.parse_args(argv)

    from fastleading.cli import quiet_transformers
    from fastleading.data import prepare
    from fastleading.models.lm import LMEncoder

    quiet_transformers()
    started = datetime.datetime.now()
    result = {"benchmark": "encode", "date": started.date().isoformat(),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "git_commit": git_commit(),
              "machine": machine(), "note": args.note,
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "numpy": np.__version__, "torch_num_threads": torch.get_num_threads()},
              "config": {k: v for k, v in vars(args).items()}, "runs": []}
    precision = resolve_precision("fp32", "fp32", torch.device("cpu"))
    lengths_list = [int(x) for x in args.max_lengths.split(",") if x]
    encoder = None
    for max_length in lengths_list:
        cfg = apply_overrides(Config(), [f"data.dataset={args.dataset}", f"data.max_length={max_length}",
                                         f"model.name={args.model}", *args.override])
        graph, tokens = prepare(cfg)
        if encoder is None:
            encoder = LMEncoder(cfg.model).eval()
        n = graph.num_nodes
        if args.subset and args.subset < n:
            ids = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed))[:args.subset].sort().values
        else:
            ids = torch.arange(n)
        all_lengths = tokens.lengths.numpy()
        encode_eval(encoder, tokens, ids[:4], torch.device("cpu"), precision, token_budget=0)  # warm-up
        before, emb_before = one_pass(encoder, tokens, ids, 0, args.eval_batch_size, precision)
        after, emb_after = one_pass(encoder, tokens, ids, args.token_budget, args.eval_batch_size, precision)
        run = {"max_length": max_length, "nodes": len(ids), "graph_nodes": n,
               "subset": f"fixed random subset, seed {args.seed}, in id order" if len(ids) < n else "every node",
               "token_length_graph": {q: float(np.percentile(all_lengths, p)) for q, p in
                                      (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
               "token_length_subset": {q: float(np.percentile(tokens.lengths[ids].numpy(), p)) for q, p in
                                       (("p50", 50), ("p90", 90), ("max", 100))},
               "before_id_order_fixed_batch": before, "after_length_sorted_budget": after,
               "speedup_nodes_per_s": round(after["nodes_per_s"] / before["nodes_per_s"], 2),
               "speedup_nodes_per_cpu_s": round(after["nodes_per_cpu_s"] / before["nodes_per_cpu_s"], 2),
               "max_abs_diff_embeddings": float((emb_before - emb_after).abs().max())}
        print(json.dumps(run, indent=1), flush=True)
        if max_length == max(lengths_list) and args.sweep_budgets:
            sweep_ids = ids[:args.sweep_subset]
            run["budget_sweep"] = {"nodes": len(sweep_ids), "passes": []}
            for budget in [int(b) for b in args.sweep_budgets.split(",") if b]:
                stats, _ = one_pass(encoder, tokens, sweep_ids, budget, args.eval_batch_size, precision)
                run["budget_sweep"]["passes"].append(stats)
                print(json.dumps(stats), flush=True)
        result["runs"].append(run)
    result["load_avg_1m_at_end"] = os.getloadavg()[0]
    result["wall_s"] = round((datetime.datetime.now() - started).total_seconds(), 1)
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
