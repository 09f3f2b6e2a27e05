"""The ``fastleading`` command line.

    fastleading prepare  --dataset citeseer-tag --model sentence-transformers/all-MiniLM-L6-v2 --max-length 128
    fastleading info     --dataset citeseer-tag
    fastleading train    --config run.yaml --out runs/x [section.key=value ...]
    fastleading train    --resume runs/x
    fastleading export   --run runs/x --out runs/x/embeddings.npy
    fastleading downstream --dataset citeseer-tag --embeddings runs/x/embeddings.npy --gnn gcn
    fastleading bench    kernels|sampler|step [...]

Every option is a field of :mod:`fastleading.config`; the short flags below are aliases of
the most used ones, and ``section.key=value`` sets any other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fastleading.config import Config, apply_overrides, from_dict, load_config
from fastleading.errors import FastleadingError

# short flag -> config key
ALIASES = {
    "dataset": "data.dataset", "root": "data.root", "split": "data.split", "max_length": "data.max_length",
    "cache_dir": "data.cache_dir", "model": "model.name", "method": "train.method", "epochs": "train.epochs",
    "batch_size": "train.batch_size", "device": "train.device", "precision": "train.precision",
    "seed": "train.seed", "deepspeed": "train.deepspeed", "gnn": "model.gnn",
}


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML, TOML or JSON config file with sections data, model, train")
    for flag, key in ALIASES.items():
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, default=None, help=f"sets {key}")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="any other config field")


def _config(args: argparse.Namespace, base: Config | None = None) -> Config:
    cfg = base if base is not None else (load_config(args.config) if args.config else Config())
    overrides = [f"{key}={getattr(args, flag)}" for flag, key in ALIASES.items()
                 if getattr(args, flag, None) is not None]
    return apply_overrides(cfg, overrides + list(args.overrides))


def cmd_prepare(args) -> int:
    from fastleading.data import format_info, info, prepare

    graph, tokens = prepare(_config(args))
    print(format_info(info(graph, tokens)))
    return 0


def cmd_info(args) -> int:
    from fastleading.data import DATASETS, dataset_info, format_info

    if args.list:
        for name, entry in DATASETS.items():
            print(f"{name:<20} {entry.description}")
        return 0
    print(format_info(dataset_info(_config(args))))
    return 0


def cmd_train(args) -> int:
    from fastleading.methods import train_method

    if args.resume:
        run_dir = Path(args.resume)
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():
            raise FastleadingError(f"{cfg_path}: cannot resume (expected the config.json of a run folder)")
        cfg = from_dict(json.loads(cfg_path.read_text()), source=str(cfg_path))
        out = run_dir
    else:
        cfg = _config(args)
        out = Path(args.out)
    if args.profile:
        cfg.train.profile = True
    if cfg.train.deepspeed:
        from fastleading.distributed import require_deepspeed

        require_deepspeed()
    summary = train_method(cfg, out, resume=bool(args.resume), quiet=args.quiet)
    print(f"{summary['method']} on {summary['dataset']}: best valid {summary['best_valid_acc']:.4f}, "
          f"test {summary['test_acc']:.4f}")
    print(f"summary: {out / 'summary.json'}")
    return 0


def cmd_export(args) -> int:
    from fastleading.downstream import export_embeddings

    path = export_embeddings(args.run, args.out, quiet=args.quiet)
    print(f"embeddings: {path}")
    return 0


def cmd_downstream(args) -> int:
    from fastleading.downstream import downstream

    cfg = _config(args)
    result = downstream(cfg, args.embeddings, args.out, quiet=args.quiet)
    print(json.dumps(result, indent=2))
    return 0


def cmd_bench(args) -> int:
    if args.what == "kernels":
        from fastleading.bench.kernels import main as bench_main
    elif args.what == "step":
        from fastleading.bench.step import main as bench_main
    else:
        from fastleading.bench.sampler import main as bench_main
    return int(bench_main(args.rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastleading", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="build the dataset cache and tokenize every node text")
    _config_args(p)
    p.set_defaults(fn=cmd_prepare)

    p = sub.add_parser("info", help="dataset statistics")
    _config_args(p)
    p.add_argument("--list", action="store_true", help="list the dataset names")
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("train", help="train (LEADING or a baseline) and write a run folder")
    _config_args(p)
    p.add_argument("--out", default="runs/default", help="run folder (config, metrics, checkpoints, summary)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--profile", action="store_true", help="write a torch.profiler trace and a phase table")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("export", help="write a run's fine-tuned node embeddings (.npy)")
    p.add_argument("--run", required=True, help="run folder written by `fastleading train`")
    p.add_argument("--out", required=True, help="output .npy file")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("downstream", help="train a GNN (model.gnn) on exported embeddings")
    _config_args(p)
    p.add_argument("--embeddings", required=True, help=".npy file written by `fastleading export`")
    p.add_argument("--out", default=None, help="folder for downstream-<gnn>.json")
    p.set_defaults(fn=cmd_downstream)

    p = sub.add_parser("bench", help="microbenchmarks (kernels, sampler, step)")
    p.add_argument("what", choices=["kernels", "sampler", "step"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the benchmark")
    p.set_defaults(fn=cmd_bench)
    for p in sub.choices.values():
        if p.prog.split()[-1] != "bench":
            p.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def quiet_transformers() -> None:
    """Silence transformers' own progress bars ("Loading weights") for --quiet."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "quiet", False):
        quiet_transformers()
    try:
        return args.fn(args)
    except FastleadingError as e:
        print(f"fastleading: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
