"""End-to-end training-step benchmark (``fastleading bench step``).

On an ogbn-arxiv-sized synthetic TAG (169,343 nodes, ~2.3M directed edges; token ids
written straight to the cache) with randomly initialised models of real configurations
(weights do not change FLOPs or memory), it measures per method (``supervised``,
``leading`` sequential, ``leading`` overlapped, ``coupled``), sequence length and target
batch: step time, tokens per second, model FLOP utilisation against the bf16 matmul rate
measured in the same run, peak memory, and the FLOP floor of LEADING over supervised.
``--memory-sweep`` adds the paper's Table 6 shape: peak memory of ``leading`` and
``coupled`` as hops go 2..5 and propagation iterations 2..10.

``--toy`` runs tiny sizes end to end on CPU to prove the pipeline (no performance claim).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fastleading.config import Config, apply_overrides
from fastleading.trainer.batches import refresh_batch
from fastleading.trainer.loop import build_trainer
from fastleading.trainer.steps import STEPS

MODEL_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    # name: (transformers config class, kwargs): the published configurations.
    "bert-base-uncased": ("BertConfig", {}),
    "deberta-v3-base": ("DebertaV2Config", {"vocab_size": 128100, "relative_attention": True,
                                            "max_relative_positions": -1, "position_buckets": 256,
                                            "norm_rel_ebd": "layer_norm", "share_att_key": True,
                                            "pos_att_type": ["p2c", "c2p"], "position_biased_input": False,
                                            "max_position_embeddings": 512}),
    "gpt2": ("GPT2Config", {"architectures": ["GPT2LMHeadModel"]}),
    "gpt2-medium": ("GPT2Config", {"n_embd": 1024, "n_layer": 24, "n_head": 16, "architectures": ["GPT2LMHeadModel"]}),
    "gpt2-large": ("GPT2Config", {"n_embd": 1280, "n_layer": 36, "n_head": 20, "architectures": ["GPT2LMHeadModel"]}),
    "gpt2-xl": ("GPT2Config", {"n_embd": 1600, "n_layer": 48, "n_head": 25, "architectures": ["GPT2LMHeadModel"]}),
    "toy-bert": ("BertConfig", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                "intermediate_size": 64}),
    "toy-gpt2": ("GPT2Config", {"n_embd": 32, "n_layer": 2, "n_head": 2, "architectures": ["GPT2LMHeadModel"]}),
}


def model_dir(name: str, root: Path, tokenizer: str | None = None) -> Path:
    """A folder with ``name``'s config (random weights are made from it) and a fast tokenizer
    (all-MiniLM-L6-v2's uncased WordPiece: its ids are valid for every config here), read from
    ``tokenizer`` (a folder) when given, else from the offline MiniLM package."""
    import transformers
    from transformers import AutoTokenizer

    from fastleading.models.hub import resolve_model_path

    cls, kwargs = MODEL_CONFIGS[name]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    getattr(transformers, cls)(**kwargs).save_pretrained(folder)
    source = tokenizer or resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def matmul_tflops(device: torch.device) -> float:
    """Measured bf16 (CUDA) / fp32 (CPU) dense matmul rate, the MFU denominator."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (512, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 3
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lm_flops_per_token(model, seq: int, train: bool) -> float:
    """6N (train) or 2N (inference) per token plus attention (PaLM appendix B)."""
    n = sum(p.numel() for n_, p in model.named_parameters() if "embeddings" not in n_ and ".wte" not in n_)
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
    attn = 12 * layers * hidden * seq
    return (6 * n + attn) if train else (2 * n + attn / 3)


def measure(cfg: Config, steps: int, warmup: int) -> dict:
    """Time ``steps`` optimizer steps of ``cfg`` after ``warmup`` ones."""
    with tempfile.TemporaryDirectory() as out:
        tr = build_trainer(cfg, Path(out))
        run = tr.run
        device = run.device
        step_fn = STEPS[cfg.train.method]
        g = torch.Generator().manual_seed(0)
        train_ids = tr.split.train
        grad_tokens = nograd_tokens = 0

        def one() -> None:
            nonlocal grad_tokens, nograd_tokens
            targets = train_ids[torch.randint(len(train_ids), (cfg.train.batch_size,), generator=g)]
            refresh = refresh_batch(tr.refresh_order, cfg.train.batch_size, 0, 1) if tr.refresh_order else None
            before = run.counter.totals["grad"], run.counter.totals["refresh"]
            step_fn(run, targets, refresh)
            run.overlap.join()
            run.optim.step()
            run.step += 1
            grad_tokens += run.counter.totals["grad"] - before[0]
            nograd_tokens += run.counter.totals["refresh"] - before[1]

        for _ in range(warmup):
            one()
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        grad_tokens = nograd_tokens = 0
        start = time.perf_counter()
        for _ in range(steps):
            one()
        sync(device)
        elapsed = (time.perf_counter() - start) / steps
        seq = cfg.data.max_length
        lm = run.model.encoder.model
        grad_flops = grad_tokens * lm_flops_per_token(lm, seq, True) * seq / steps
        nograd_flops = nograd_tokens * lm_flops_per_token(lm, seq, False) * seq / steps
        return {"step_s": elapsed, "tokens_per_s": (grad_tokens + nograd_tokens) * seq / steps / elapsed,
                "grad_encodes_per_step": grad_tokens / steps, "nograd_encodes_per_step": nograd_tokens / steps,
                "flops_per_step": grad_flops + nograd_flops, "refresh_flops_per_step": nograd_flops,
                "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None}


def base_config(args, model_path: Path, seq: int, batch: int, method: str, overlap: bool, cache: str) -> Config:
    return apply_overrides(Config(), [
        "data.dataset=synthetic", f"data.synthetic_nodes={args.nodes}", f"data.synthetic_avg_degree={args.avg_degree}",
        "data.synthetic_tokens=true", f"data.synthetic_words={seq}", f"data.max_length={seq}",
        f"data.cache_dir={cache}", "data.split=high-0",
        f"model.name={model_path}", "model.random_init=true",
        f"train.method={method}", f"train.batch_size={batch}", f"train.overlap={str(overlap).lower()}",
        "train.fill_bank=false", "train.head_warmup_epochs=0", f"train.device={args.device}",
        f"train.precision={args.precision}",
    ])


def environment(device: torch.device) -> dict:
    import transformers

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    from fastleading.bench.report import git_commit

    commit = git_commit()
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "triton": triton_version, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "git_commit": commit, "date": _dt.date.today().isoformat()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastleading bench step", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="bert-base-uncased,deberta-v3-base,gpt2")
    p.add_argument("--seqs", default="128,256")
    p.add_argument("--batches", default="32,128")
    p.add_argument("--nodes", type=int, default=169_343)
    p.add_argument("--avg-degree", type=float, default=13.7)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--memory-sweep", action="store_true", help="also the Table 6 sweep (hops, iterations)")
    p.add_argument("--sweep-hops", default="2,3,4,5", help="--memory-sweep: hop counts (fanouts 10,5,3,3,3 cut)")
    p.add_argument("--sweep-iters", default="2,4,6,8,10", help="--memory-sweep: propagation iterations")
    p.add_argument("--tokenizer", default=None, help="folder of the fast tokenizer saved with the random models "
                                                     "(default: the offline all-MiniLM-L6-v2 package)")
    p.add_argument("--toy", action="store_true", help="tiny sizes on CPU, to check the pipeline end to end")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/step-<device>-<date>.json "
                                                "on CUDA, a temporary file on CPU)")
    args = p.parse_args(argv)
    if args.toy:
        args.models, args.seqs, args.batches, args.nodes, args.steps, args.warmup = "toy-bert", "16", "8", 300, 2, 1
    from fastleading.engine.precision import resolve_device

    device = resolve_device(args.device)
    root = Path(tempfile.mkdtemp(prefix="fastleading-bench-"))
    cache = str(root / "cache")
    peak = matmul_tflops(device)
    rows, sweep = [], []
    for name in args.models.split(","):
        path = model_dir(name, root, args.tokenizer)
        for seq in map(int, args.seqs.split(",")):
            for batch in map(int, args.batches.split(",")):
                results = {}
                for label, method, overlap in (("supervised", "supervised", False),
                                               ("leading-sequential", "leading", False),
                                               ("leading-overlapped", "leading", True),
                                               ("coupled", "coupled", False)):
                    try:
                        r = measure(base_config(args, path, seq, batch, method, overlap, cache), args.steps,
                                    args.warmup)
                    except torch.cuda.OutOfMemoryError:
                        r = {"oom": True}
                        torch.cuda.empty_cache()
                    r["mfu"] = r["flops_per_step"] / r["step_s"] / (peak * 1e12) if "step_s" in r else None
                    results[label] = r
                    print(f"{name} seq={seq} batch={batch} {label}: "
                          + (f"{r['step_s'] * 1e3:.1f} ms/step, {r['tokens_per_s']:.0f} tok/s, mfu {r['mfu']:.3f}"
                             if "step_s" in r else "OOM"))
                sup, seqr, ovl = results["supervised"], results["leading-sequential"], results["leading-overlapped"]
                floor = seqr["flops_per_step"] / (seqr["flops_per_step"] - seqr["refresh_flops_per_step"])
                rows.append({"model": name, "seq": seq, "batch": batch, "results": results,
                             "flop_floor_vs_supervised": floor,
                             "leading_overlapped_vs_supervised": ovl["step_s"] / sup["step_s"],
                             "leading_sequential_vs_supervised": seqr["step_s"] / sup["step_s"],
                             "overlap_speedup": seqr["step_s"] / ovl["step_s"]})
        if args.memory_sweep:
            seq, batch = int(args.seqs.split(",")[0]), int(args.batches.split(",")[0])
            for method in ("leading", "coupled"):
                for hops in map(int, args.sweep_hops.split(",")):
                    fan = ",".join(str(f) for f in [10, 5, 3, 3, 3][:hops])
                    sweep.append(_sweep_point(args, path, seq, batch, method, cache, f"train.fanouts={fan}",
                                              {"model": name, "method": method, "hops": hops}))
                for iters in map(int, args.sweep_iters.split(",")):
                    sweep.append(_sweep_point(args, path, seq, batch, method, cache, f"model.num_iters={iters}",
                                              {"model": name, "method": method, "iters": iters}))
    result = {"benchmark": "step", **environment(device), "command": "fastleading bench step " + " ".join(argv or []),
              "toy": bool(args.toy), "matmul_tflops_measured": peak, "graph_nodes": args.nodes,
              "rows": rows, "memory_sweep": sweep}
    out = Path(args.out) if args.out else (
        Path("benchmarks/results") / f"step-{result['device'].replace(' ', '_')}-{result['date']}.json"
        if device.type == "cuda" else root / "step-toy.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out}")
    return 0


def _sweep_point(args, path, seq, batch, method, cache, override, label) -> dict:
    cfg = apply_overrides(base_config(args, path, seq, batch, method, False, cache), [override])
    try:
        r = measure(cfg, max(2, args.steps // 2), 1)
    except torch.cuda.OutOfMemoryError:
        r = {"oom": True}
        torch.cuda.empty_cache()
    print(f"memory sweep {label}: {r.get('peak_memory_bytes', 'OOM')}")
    return {**label, **r}
