"""Did fine-tuning make the LM's embeddings better or worse? A probe of a LEADING run's LM.

Encodes every node with the frozen LM (the run's ``model.name``) and with the LM of the run's
``checkpoint.pt`` (or ``best.pt``), and scores both the same way, full batch on the graph:

* ``probe``: a fresh head (linear, full batch, Adam, weight decay) on the embeddings propagated
  to the APPNP fixed point (alpha = ``model.alpha``), the best validation epoch kept: how much a
  new head can get out of each set of embeddings (no head trained in the loop involved);
* ``run head``: the run's own head at the evaluation operator (the fixed point), on the
  frozen embeddings and on the fine-tuned ones: how much the head trained in the loop fits each;
* drift: the cosine of each node's two embeddings, and their norms.

    nice -n 10 python benchmarks/embedding_probe.py runs/study-arxiv/runs/leading-upstream-seed0 \
        --out benchmarks/results/arxiv-embedding-probe-cpu-2026-12-07.json

Settings are chosen on validation only; test is reported beside.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fastleading.data import prepare
from fastleading.engine.precision import resolve_device, resolve_precision
from fastleading.models.appnp import solve_appnp
from fastleading.models.encode import encode_all
from fastleading.models.lm import LMEncoder
from fastleading.run import checkpoint
from fastleading.run.folder import read_run_config
from fastleading.trainer.evaluate import full_graph_logits
from fastleading.trainer.model import build_model


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def encode(cfg, encoder, tokens, n, device, precision) -> torch.Tensor:
    return encode_all(encoder, tokens, n, device, precision, cfg.train.eval_batch_size, True,
                      token_budget=cfg.train.encode_token_budget, backend="eager").float().cpu()


def probe(z: torch.Tensor, labels: torch.Tensor, split, epochs: int, lr: float, wd: float, seed: int) -> dict:
    """A linear head on ``z`` trained full batch on the training nodes; best validation kept."""
    torch.manual_seed(seed)
    mean, std = z[split.train].mean(0), z[split.train].std(0) + 1e-6
    z = (z - mean) / std
    head = torch.nn.Linear(z.shape[1], int(labels.max()) + 1)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=wd)
    best = {"valid": -1.0}
    for epoch in range(1, epochs + 1):
        head.train()
        opt.zero_grad()
        F.cross_entropy(head(z[split.train]), labels[split.train]).backward()
        opt.step()
        with torch.no_grad():
            pred = head(z).argmax(1)
        acc = {k: float((pred[ids] == labels[ids]).float().mean()) for k, ids in
               (("train", split.train), ("valid", split.valid), ("test", split.test))}
        if acc["valid"] > best["valid"]:
            best = {"epoch": epoch, **acc}
    return best


def run_head(cfg, state: dict, emb: torch.Tensor, graph, split, precision) -> dict:
    model = build_model(cfg, graph.num_nodes, graph.num_classes, precision.bank_dtype)
    model.load_state_dict(state, strict=False)
    logits, _, _ = full_graph_logits(model, emb, graph.rowptr, graph.col, cfg, precision)
    pred = logits.argmax(1)
    return {k: float((pred[ids] == graph.labels[ids]).float().mean()) for k, ids in
            (("train", split.train), ("valid", split.valid), ("test", split.test))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--weights", choices=["checkpoint", "best"], default="checkpoint")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--out", type=Path)
    p.add_argument("--cache", type=Path, help="folder to keep the two encodings in (reused when there)")
    p.add_argument("--probe", default="frozen,tuned", help="which embeddings get the fresh-head probe")
    args = p.parse_args()
    args.probe = args.probe.split(",")
    start = time.time()
    cfg = read_run_config(args.run)
    graph, tokens = prepare(cfg)
    split = graph.split(cfg.data.split)
    device = resolve_device("cpu")
    precision = resolve_precision(cfg.train.precision, cfg.train.bank_dtype, device)
    state = checkpoint.load(args.run / (checkpoint.CHECKPOINT if args.weights == "checkpoint" else checkpoint.BEST))
    step = state.get("step")
    model_state = state["model"]
    best_state = checkpoint.load(args.run / checkpoint.BEST)["model"]

    cache = args.cache / f"embeddings-step{step}.pt" if args.cache else None
    if cache is not None and cache.is_file():
        emb = torch.load(cache)
    else:
        emb = {"frozen": encode(cfg, LMEncoder(cfg.model), tokens, graph.num_nodes, device, precision)}
        tuned = LMEncoder(cfg.model)
        tuned.load_state_dict({k[len("encoder."):]: v for k, v in model_state.items() if k.startswith("encoder.")})
        emb["tuned"] = encode(cfg, tuned, tokens, graph.num_nodes, device, precision)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(emb, cache)
    # What does the run's head miss in the tuned embeddings: their norms, or a move shared by all?
    frozen, tuned = emb["frozen"], emb["tuned"]
    emb["tuned_at_frozen_norm"] = tuned * (frozen.norm(dim=1, keepdim=True) / tuned.norm(dim=1, keepdim=True))
    emb["tuned_shared_shift_removed"] = tuned - tuned.mean(0) + frozen.mean(0)
    emb["tuned_at_frozen_mean_and_scale"] = (tuned - tuned.mean(0)) / tuned.std(0) * frozen.std(0) + frozen.mean(0)

    result = {"study": "embedding probe", "date": time.strftime("%Y-%m-%d"), "device": "cpu",
              "torch": torch.__version__, "git_commit": git_commit(), "command": " ".join(sys.argv),
              "run": str(args.run), "weights": args.weights, "step": step, "probe": {}, "run_head": {},
              "probe_settings": {}}
    labels = graph.labels
    for name, e in emb.items():
        result["run_head"][name] = {"epoch0_head": run_head(cfg, best_state, e, graph, split, precision),
                                    f"{args.weights}_head": run_head(cfg, model_state, e, graph, split, precision)}
        if name not in args.probe:
            continue
        z, _ = solve_appnp(e, graph.rowptr, graph.col, cfg.model.alpha, cfg.model.eval_tol, cfg.model.eval_iters)
        # the probe's rate and weight decay chosen on validation, for each embedding alike
        trials = {f"lr={lr},wd={wd}": probe(z, labels, split, args.epochs, lr, wd, cfg.train.seed)
                  for lr in (0.01, 0.003) for wd in (0.0, 1e-4)}
        key = max(trials, key=lambda k: trials[k]["valid"])
        result["probe"][name] = trials[key]
        result["probe_settings"][name] = {"chosen": key, "trials": trials}
    cos = F.cosine_similarity(frozen, tuned, dim=1)
    move = tuned - frozen
    result["drift"] = {"cosine_mean": float(cos.mean()), "cosine_p10": float(cos.quantile(0.1)),
                       "shared_shift_fraction": float(move.mean(0).norm() ** 2 / (move.norm(dim=1) ** 2).mean()),
                       "norm_frozen": float(emb["frozen"].norm(dim=1).mean()),
                       "norm_tuned": float(emb["tuned"].norm(dim=1).mean())}
    result["wall_time_s"] = round(time.time() - start, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
