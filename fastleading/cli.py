"""The ``fastleading`` command line.

    fastleading prepare  --dataset citeseer-tag --model sentence-transformers/all-MiniLM-L6-v2 --max-length 128
    fastleading info     --dataset citeseer-tag
    fastleading train    --config run.yaml --out runs/x [section.key=value ...]
    fastleading train    --resume runs/x [--epochs 5 ...]
    fastleading clean    runs/x [runs/y ...]
    fastleading export   --run runs/x --out runs/x/embeddings.npy
    fastleading export   --run runs/x --lm runs/x/lm [--lora-adapter]
    fastleading predict  --run runs/x [--out predictions.csv] [--nodes ids.txt] [--new-nodes n.csv --new-edges e.csv]
    fastleading downstream --embeddings runs/x/embeddings.npy --gnn gcn
    fastleading bench    kernels|sampler|step|scale [...]
    fastleading study    --dataset citeseer-tag --methods leading,shallow --seeds 3 --downstream gcn --out runs/s
    fastleading plot     runs/x [runs/y ...] [--out curves.png]

Every option is a field of :mod:`fastleading.config`; the short flags below are aliases of
the most used ones, and ``section.key=value`` sets any other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fastleading.config import Config, apply_overrides, load_config
from fastleading.errors import FastleadingError

if TYPE_CHECKING:
    from fastleading.commands.predict import LinkScores, Predictions

# short flag -> config key
ALIASES = {
    "dataset": "data.dataset", "root": "data.root", "split": "data.split", "max_length": "data.max_length",
    "cache_dir": "data.cache_dir", "model": "model.name", "method": "train.method", "epochs": "train.epochs",
    "batch_size": "train.batch_size", "device": "train.device", "precision": "train.precision",
    "seed": "train.seed", "deepspeed": "train.deepspeed", "gnn": "model.gnn", "task": "train.task",
}


# the short flags of the commands that only prepare or describe a dataset
DATA_FLAGS = ("dataset", "root", "max_length", "cache_dir", "model")
# those of study (its splits are --splits, several)
STUDY_FLAGS = (*DATA_FLAGS, "epochs", "device")
DESCRIPTION = "fastleading: end-to-end fine-tuning of a language model with a graph neural network on " \
              "text-attributed graphs (LEADING)."


def _config_args(p: argparse.ArgumentParser, flags: tuple[str, ...] = tuple(ALIASES),
                 overrides: str = "any other config field") -> None:
    p.add_argument("--config", help="YAML, TOML or JSON config file with sections data, model, train (a study: "
                   "the base of every run)")
    for flag in flags:
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, default=None, help=f"sets {ALIASES[flag]}")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help=overrides)


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
    from fastleading.commands.methods import train_method
    from fastleading.data import dataset_entry

    if args.resume:
        from fastleading.run.folder import read_run_config

        if args.config or args.out:
            raise FastleadingError("train --resume DIR continues the run in DIR with its own config.json: give changes "
                                   "as flags or section.key=value, not --config or --out")
        out = Path(args.resume)
        cfg = _config(args, read_run_config(out, "cannot resume"))  # the run's settings, then the changes asked
    else:
        cfg = _config(args)
        out = Path(args.out or "runs/default")
    dataset_entry(cfg.data.dataset)  # a misspelt dataset is named before the run folder is looked at
    if args.profile:
        cfg.train.profile = True
    if cfg.train.deepspeed:
        from fastleading.engine.distributed import require_deepspeed

        require_deepspeed()
    summary = train_method(cfg, out, resume=bool(args.resume), quiet=args.quiet, overwrite=args.overwrite)
    from fastleading.engine.distributed import get_rank, shutdown

    rank = get_rank()
    shutdown()  # under torchrun: every rank leaves the group together (a no-op alone)
    if rank == 0:
        print("\n".join(result_lines(summary, out)))
    return 0


def result_lines(summary: dict, out: Path) -> list[str]:
    """What ``train`` prints at the end: the best validation and its test score, a note when
    the best epoch is the head warm-up's (the LM of ``best.pt`` is then the pretrained one),
    and where the summary is."""
    if summary.get("task") == "link":
        lines = [f"{summary['method']} link prediction on {summary['dataset']}: best valid AUC "
                 f"{summary['best_valid_auc']:.4f} MRR {summary['best_valid_mrr']:.4f}, test AUC "
                 f"{summary['test_auc']:.4f} MRR {summary['test_mrr']:.4f}"]
    else:
        lines = [f"{summary['method']} on {summary['dataset']}: best valid {summary['best_valid_acc']:.4f}, "
                 f"test {summary['test_acc']:.4f}"]
    if summary.get("best_epoch") == 0 and summary.get("head_warmup_epochs", 0) > 0:
        lines.append("best epoch: 0, the head warm-up on the frozen LM (fine-tuning did not beat it): best.pt holds "
                     "the pretrained LM unchanged, and so does `export --lm`")
    return lines + [f"summary: {out / 'summary.json'}"]


def run_overrides(args: argparse.Namespace) -> list[str]:
    """``--root`` / ``--device`` of a command that reads a run, as overrides of its config."""
    return [f"{ALIASES[flag]}={getattr(args, flag)}" for flag in ("root", "device") if getattr(args, flag) is not None]


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=None, help="where the run's data is now (sets data.root; default: the run's)")
    p.add_argument("--device", default=None, help="device to use (sets train.device; default: the run's, e.g. cpu "
                   "for a run trained on cuda)")


def cmd_export(args) -> int:
    if args.out is None and args.lm is None:
        raise FastleadingError("export: give --out FILE.npy (node embeddings), --lm DIR (the fine-tuned LM) or both")
    if args.lora_adapter and args.lm is None:
        raise FastleadingError("export: --lora-adapter applies to --lm DIR")
    from fastleading.commands.export import check_export

    check_export(Path(args.run), args.out and Path(args.out), args.lm and Path(args.lm), args.lora_adapter)
    if args.out is not None:
        from fastleading.baselines.downstream import export_embeddings

        path = export_embeddings(args.run, args.out, quiet=args.quiet, overrides=run_overrides(args))
        print(f"embeddings: {path}")
    if args.lm is not None:
        from fastleading.commands.export import export_lm

        path = export_lm(args.run, args.lm, lora_adapter=args.lora_adapter, quiet=args.quiet)
        print(f"lm: {path}")
    return 0


def cmd_predict(args) -> int:
    from fastleading.commands.predict import TrainedRun, read_id_list

    run = TrainedRun(args.run, quiet=args.quiet, overrides=run_overrides(args))
    new = {"new_nodes": args.new_nodes, "new_edges": args.new_edges, "embeddings": args.embeddings}
    result: LinkScores | Predictions
    if args.pairs is not None:
        result = run.score_pairs(args.pairs, **new)
    else:
        result = run.predict(read_id_list(args.nodes) if args.nodes else None, **new)
    out = Path(args.out) if args.out else Path(args.run) / ("link-scores.csv" if args.pairs else "predictions.csv")
    print(f"{'scores' if args.pairs else 'predictions'}: {result.write(out)}")
    return 0


def cmd_downstream(args) -> int:
    from fastleading.baselines.downstream import downstream
    from fastleading.run.folder import settings_for_embeddings

    # the run's settings (dataset, root, split, max_length...) unless a config file is given
    cfg = _config(args, None if args.config else settings_for_embeddings(args.run, args.embeddings))
    result = downstream(cfg, args.embeddings, args.out, quiet=args.quiet)
    print(json.dumps(result, indent=2))
    return 0


def cmd_bench(args) -> int:
    if args.what == "kernels":
        from fastleading.bench.kernels import main as bench_main
    elif args.what == "step":
        from fastleading.bench.step import main as bench_main
    elif args.what == "scale":
        from fastleading.bench.scale import main as bench_main
    else:
        from fastleading.bench.sampler import main as bench_main
    return int(bench_main(args.rest) or 0)


def cmd_study(args) -> int:
    from fastleading.commands.study import run_study

    base = load_config(args.config) if args.config else Config()
    shortcuts = [f"{ALIASES[flag]}={getattr(args, flag)}" for flag in STUDY_FLAGS if getattr(args, flag) is not None]
    base = apply_overrides(base, shortcuts + list(args.override) + list(args.overrides))
    settings = {k: v for k, v in vars(args).items() if k != "fn"}
    log = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    out = run_study(base, args.out, methods=args.methods, seeds=args.seeds,
                    splits=args.splits.split(",") if args.splits is not None else None, downstream=args.downstream,
                    task=args.task, name=args.name, note=args.note,
                    command="fastleading " + " ".join(sys.argv[1:]), settings=settings, log=log,
                    quiet=args.quiet)
    print(out.table_path.read_text(), end="")
    print(f"\nresults: {out.results_path}\ntable: {out.table_path}")
    for path in out.plots:
        print(f"plot: {path}")
    return 0


def cmd_clean(args) -> int:
    from fastleading.run.folder import drop_checkpoint

    for run in args.runs:
        freed = drop_checkpoint(Path(run))
        print(f"{run}: " + (f"removed its checkpoint ({freed / 2**20:.1f} MiB)" if freed
                            else "no checkpoint to remove"))
    return 0


def cmd_plot(args) -> int:
    from fastleading.commands.plot import plot_runs

    print(f"curves: {plot_runs(args.runs, args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from fastleading import __version__

    parser = argparse.ArgumentParser(prog="fastleading", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"fastleading {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="build the dataset cache and tokenize every node text")
    _config_args(p, DATA_FLAGS, "any other data.* field (e.g. data.synthetic_nodes=500)")
    p.set_defaults(fn=cmd_prepare)

    p = sub.add_parser("info", help="dataset statistics (writes no cache)")
    _config_args(p, DATA_FLAGS, "any other data.* field (e.g. data.synthetic_nodes=500)")
    p.add_argument("--list", action="store_true", help="list the dataset names")
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("train", help="train (LEADING or a baseline) and write a run folder")
    _config_args(p)
    p.add_argument("--out", default=None, help="run folder (config, metrics, checkpoints, summary); default "
                   "runs/default; a folder that holds a run is refused without --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (its run files are removed "
                   "first)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint; train.epochs, "
                   "max_steps, patience and the eval / log / checkpoint intervals may be changed (more epochs extend "
                   "a finished run), any other setting is the run's")
    p.add_argument("--profile", action="store_true", help="write a torch.profiler trace and a phase table")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("export", help="write a run's fine-tuned node embeddings (.npy) and/or its fine-tuned LM")
    p.add_argument("--run", required=True, help="run folder written by `fastleading train`")
    p.add_argument("--out", default=None, help="output .npy file (node embeddings)")
    p.add_argument("--lm", metavar="DIR", default=None,
                   help="write the best checkpoint's LM and tokenizer as a Hugging Face folder (a new or empty DIR)")
    p.add_argument("--lora-adapter", action="store_true",
                   help="LoRA runs: write the peft adapter alone instead of merging it into the base weights")
    _run_flags(p)
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("predict", help="class probabilities per node (existing and new nodes), or link scores")
    p.add_argument("--run", required=True, help="run folder written by `fastleading train` (uses its best.pt)")
    p.add_argument("--out", default=None, help="output .csv or .parquet (default RUN/predictions.csv, "
                   "RUN/link-scores.csv with --pairs)")
    p.add_argument("--nodes", default=None, help="file of node ids to report, one per line (default: every node, "
                   "or the new nodes)")
    p.add_argument("--new-nodes", default=None, help="new nodes: CSV with header id,text (or JSONL)")
    p.add_argument("--new-edges", default=None, help="their edges: CSV with header src,dst (existing or new ids)")
    p.add_argument("--embeddings", default=None,
                   help="existing nodes' embeddings from `fastleading export` (default: encode every node afresh)")
    p.add_argument("--pairs", default=None, help="link runs: CSV src,dst of the node pairs to score")
    _run_flags(p)
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("downstream", help="train a GNN (model.gnn) on exported embeddings")
    _config_args(p)
    p.add_argument("--embeddings", required=True, help=".npy file written by `fastleading export`")
    p.add_argument("--run", default=None, help="the run the embeddings come from: its config.json gives the dataset, "
                   "split and other settings (default: the run folder the .npy file is in, if it is in one); "
                   "flags and section.key=value change them")
    p.add_argument("--out", default=None, help="folder for downstream-<gnn>.json")
    p.set_defaults(fn=cmd_downstream)

    p = sub.add_parser("bench", help="benchmarks (kernels, sampler, step; scale: a training run at ogbn-products size)")
    p.add_argument("what", choices=["kernels", "sampler", "step", "scale"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the benchmark")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("study", help="methods x seeds x splits: results JSON, mean ± std table, plots")
    _config_args(p, STUDY_FLAGS, "more overrides for every run")
    p.add_argument("--methods", default="leading,supervised,pretrained,shallow",
                   help="comma-separated train.method values (default: %(default)s)")
    p.add_argument("--seeds", default="3",
                   help="a count (3 = seeds 0,1,2) or a comma list (0,2,5; one seed: 5,); sets train.seed")
    p.add_argument("--splits", default=None,
                   help="comma-separated data.split values (--task link: data.link_split ratios); '{seed}' is "
                        "replaced by the seed (low-{seed}: one split per seed); default: data.split (the dataset's "
                        "default split) or data.link_split")
    p.add_argument("--downstream", default="gcn",
                   help="comma-separated GNNs (model.gnn) trained on each run's exported embeddings; 'none' for none")
    p.add_argument("--task", default=None, choices=["node-classification", "node", "link"],
                   help="sets train.task; link: AUC / MRR, --splits are data.link_split ratios (10/30/60,85/5/10) "
                        "and each seed sets data.link_seed too; default: train.task of the config / overrides")
    p.add_argument("--override", action="append", default=[], metavar="section.key=value",
                   help="config override for every run (repeatable)")
    p.add_argument("--out", default="runs/study", help="study folder: results.json, table.md, PNGs, runs/")
    p.add_argument("--name", default="", help="title of the study in the table and the plots")
    p.add_argument("--note", default="", help="free text stored in results.json")
    p.set_defaults(fn=cmd_study)

    p = sub.add_parser("clean", help="remove the checkpoint.pt of finished runs (keeps best.pt, metrics, summary; "
                       "the runs can then no longer be resumed or extended)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by `fastleading train`")
    p.set_defaults(fn=cmd_clean)

    p = sub.add_parser("plot", help="loss and accuracy curves of run folders (PNG)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by `fastleading train`")
    p.add_argument("--out", default=None, help="PNG path (default RUN_DIR/curves.png for one run; .png is added "
                   "when the path has no extension)")
    p.set_defaults(fn=cmd_plot)
    for p in sub.choices.values():
        if p.prog.split()[-1] != "bench":
            p.add_argument("--quiet", action="store_true", help="nothing on the terminal but errors and the "
                           "command's result (no progress, no notices, no library warnings)")
    return parser


def quiet_transformers() -> None:
    """Silence transformers' own progress bars ("Loading weights") for --quiet."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, with ``section.key=value`` overrides taken on both sides of flags
    (argparse fills a ``*`` positional once: ``train a.b=1 --epochs 2 c.d=3`` would leave
    ``c.d=3`` "unrecognized"). Anything else unknown is still refused."""
    args, extra = parser.parse_known_args(argv)
    overrides = [a for a in extra if not a.startswith("-") and "=" in a and "." in a.split("=", 1)[0]]
    if extra and (len(overrides) < len(extra) or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if overrides:
        args.overrides = list(args.overrides) + overrides
    return args


def main(argv: list[str] | None = None) -> int:
    from fastleading.run import console

    parser = build_parser()
    args = parse_args(parser, argv)
    try:
        with console.output(getattr(args, "quiet", False)):
            return args.fn(args)
    except FastleadingError as e:
        print(f"fastleading: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return closed_pipe()


def closed_pipe() -> int:
    """The reader of stdout went away (``fastleading info --list | head -1``): end quietly, as
    command-line tools do (exit 128 + SIGPIPE); stdout goes to /dev/null so that the flush at
    exit does not fail again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


if __name__ == "__main__":
    sys.exit(main())
