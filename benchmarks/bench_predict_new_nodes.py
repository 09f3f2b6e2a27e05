"""``predict`` with new nodes: today's full re-encode against the run's embeddings cache.

    python benchmarks/bench_predict_new_nodes.py --json benchmarks/results/predict-new-nodes-cpu-<date>.json

A LEADING run on the built-in synthetic graph in scale mode (``data.synthetic_tokens=true``,
``--nodes`` nodes, token ids without strings) with a small random-init BERT (the stand-in of
``fastleading bench scale``), trained for ``--steps`` steps so that it has a ``best.pt``. Then
``--new`` new nodes (texts of random words, each linked to ``--new-degree`` random existing
nodes) are predicted, side by side in one process, alternating round by round (median of
``--rounds``):

- ``before``: every node encoded again, then the new texts, then the propagation (the path
  before the cache; :class:`fastleading.commands.predict.TrainedRun` with its cache turned off);
- ``after``: the existing nodes' embeddings read from ``best-embeddings.npy`` (written by the
  first prediction), the new texts encoded, the propagation.

Reported: seconds per prediction, the ratio, and the LM's encodes of each (the run's
:class:`fastleading.models.encode.EncodeCounter`). A benchmark, not a test: it times things.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fastleading.bench.report import git_commit, write_result
from fastleading.bench.sampler import machine
from fastleading.bench.scale import stand_in_model
from fastleading.commands.methods import train_method
from fastleading.commands.predict import TrainedRun
from fastleading.config import Config, apply_overrides


class ReEncoding(TrainedRun):
    """The path before the cache: every prediction encodes every node again."""

    def cached_embeddings(self):
        return None

    def write_cache(self, emb) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=100_000)
    p.add_argument("--new", type=int, default=100, help="new nodes per prediction")
    p.add_argument("--new-degree", type=int, default=3, help="edges from each new node to existing nodes")
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help="training steps of the run that is predicted from")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work", default=None, help="folder for the run and its token cache (default: a temp folder)")
    p.add_argument("--set", nargs="*", default=[], help="more config overrides (key=value)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="fastleading-predict-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = stand_in_model(work, args.hidden, args.layers, 2)
    cfg = apply_overrides(Config(), [
        "data.dataset=synthetic", f"data.synthetic_nodes={args.nodes}", "data.synthetic_tokens=true",
        f"data.max_length={args.max_length}", f"data.cache_dir={work / 'cache'}", f"model.name={model}",
        "model.random_init=true", "train.method=leading", "train.device=cpu", "train.epochs=1",
        f"train.max_steps={args.steps}", "train.head_warmup_epochs=0", "train.fill_bank=false",
        "train.precision=fp32", *args.set])
    run_dir = work / "run"
    start = time.perf_counter()
    train_method(cfg, run_dir, quiet=True)
    train_s = time.perf_counter() - start

    rng = np.random.default_rng(0)
    words = [f"word{i}" for i in range(500)]
    new_nodes, new_edges = work / "new_nodes.csv", work / "new_edges.csv"
    new_nodes.write_text("id,text\n" + "".join(f"new{i},{' '.join(rng.choice(words, 20))}\n" for i in range(args.new)))
    targets = rng.integers(0, args.nodes, (args.new, args.new_degree))
    new_edges.write_text("src,dst\n" + "".join(f"new{i},{int(t)}\n" for i in range(args.new) for t in targets[i]))

    before, after = ReEncoding(run_dir, quiet=True), TrainedRun(run_dir, quiet=True)
    start = time.perf_counter()
    after.outputs(new_nodes, new_edges)       # the first prediction: every node once, then cached
    first_s = time.perf_counter() - start
    first_encodes = after.counter.totals["eval"]
    seconds = {"before": [], "after": []}
    logits = {}
    for _ in range(args.rounds):
        for name, run in (("before", before), ("after", after)):
            run.counter.totals["eval"] = 0
            t = time.perf_counter()
            logits[name] = run.outputs(new_nodes, new_edges)[0]
            seconds[name].append(time.perf_counter() - t)
    encodes = {"before": before.counter.totals["eval"], "after": after.counter.totals["eval"]}
    b, a = statistics.median(seconds["before"]), statistics.median(seconds["after"])
    result = {
        "benchmark": "predict-new-nodes", "date": datetime.date.today().isoformat(), "commit": git_commit(),
        "machine": machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "nodes": args.nodes, "new_nodes": args.new, "new_edges": args.new * args.new_degree,
        "max_length": args.max_length, "model": f"random-init BERT, {args.layers} layers, hidden {args.hidden}",
        "encode_backend": cfg.train.encode_backend, "train_s": round(train_s, 1),
        "first_prediction_s": round(first_s, 2), "first_prediction_encodes": first_encodes,
        "before_s": round(b, 3), "after_s": round(a, 3), "speedup": round(b / a, 2),
        "encodes_per_prediction": encodes,
        "max_abs_logit_difference": float((logits["before"] - logits["after"]).abs().max()),
        "seconds": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
        "load_avg_1m_after": os.getloadavg()[0],
        "note": "before = every node re-encoded per prediction (the path before the cache); after = the run's "
                "best-embeddings.npy, new texts encoded, propagated; median of alternating rounds",
    }
    print({k: v for k, v in result.items() if k not in ("seconds", "machine")}, flush=True)
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
