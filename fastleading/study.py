"""``fastleading study``: methods x seeds x splits, mean ± std, pictures.

    fastleading study --dataset citeseer-tag --methods leading,supervised,shallow --seeds 3 \\
        --splits 'low-{seed}' --downstream gcn,sage --out runs/study --override train.epochs=20

Every run trains through :func:`fastleading.methods.train_method` into
``OUT/runs/<method>-<split>-seed<seed>/``; then (paper protocol) its node embeddings are
exported (:func:`fastleading.downstream.export_embeddings`) and each downstream GNN is trained on
them (:func:`fastleading.downstream.downstream`). The study writes into ``OUT``:

- ``results.json``: every run's config, summary and downstream results, and per method the
  mean, sample std and values of the built-in head's valid / test accuracy (at the best valid
  epoch), of each downstream GNN's test accuracy and of the training wall time;
- ``table.md``: those means ± std as a markdown table (and the validation accuracy by epoch);
- ``valid_curves.png``, ``test_acc.png`` (matplotlib, the optional ``plot`` extra).

It is resumable: a run whose ``summary.json`` is complete is not trained again (a run killed
midway continues from its checkpoint), a downstream result already written is kept; a run
folder written with another config stops the study before anything trains.

A task is a parameter (:data:`TASKS`); node classification is the only one so far.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from fastleading.config import Config, apply_overrides
from fastleading.errors import FastleadingError
from fastleading.io import atomic_write_text

DEFAULT_METHODS = ("leading", "supervised", "pretrained", "shallow")
RESULTS, TABLE, VALID_PNG, TEST_PNG = "results.json", "table.md", "valid_curves.png", "test_acc.png"
EMBEDDINGS = "embeddings.npy"
# config keys that do not change what a run computes (a moved cache is the same run)
IGNORED_KEYS = {("data", "cache_dir")}


# ----------------------------------------------------------------------------------- tasks
class NodeClassification:
    """Node classification: accuracy of the built-in head at its best valid epoch (from
    ``summary.json``) and of downstream GNNs on the run's exported embeddings."""

    name = "node-classification"
    metric = "accuracy"

    def train(self, cfg: Config, run_dir: Path, resume: bool) -> dict:
        from fastleading.methods import train_method

        return train_method(cfg, run_dir, resume=resume, quiet=True)

    def complete(self, summary: dict, cfg: Config) -> bool:
        return (summary.get("method") == cfg.train.method
                and all(isinstance(summary.get(k), (int, float)) for k in ("best_valid_acc", "test_acc")))

    def head(self, summary: dict) -> dict:
        """{"valid", "test"} of the built-in head (test at the best valid epoch)."""
        return {"valid": summary["best_valid_acc"], "test": summary["test_acc"]}

    def history(self, summary: dict) -> list[dict]:
        """Per-epoch evaluations ({"epoch", "valid", ...}); empty for the fixed-feature methods."""
        return summary.get("history") or []

    def export(self, run_dir: Path, path: Path) -> Path:
        from fastleading.downstream import export_embeddings

        return export_embeddings(run_dir, path, quiet=True)

    def downstream(self, cfg: Config, embeddings: Path, run_dir: Path, gnn: str) -> dict:
        from fastleading.downstream import downstream

        return downstream(apply_overrides(copy.deepcopy(cfg), [f"model.gnn={gnn}"]), embeddings, run_dir)

    def downstream_path(self, run_dir: Path, gnn: str) -> Path:
        return run_dir / f"downstream-{gnn}.json"  # where fastleading.downstream.downstream writes


TASKS = {"node-classification": NodeClassification()}


# ------------------------------------------------------------------------------------ plan
@dataclass
class RunSpec:
    method: str
    seed: int
    split: str
    cfg: Config

    @property
    def name(self) -> str:
        return f"{self.method}-{self.split}-seed{self.seed}"


@dataclass
class StudyOutput:
    results: dict
    out_dir: Path
    results_path: Path
    table_path: Path
    plots: list[Path] = field(default_factory=list)


def parse_seeds(text: str | int | Iterable[int]) -> list[int]:
    """``3`` -> seeds 0, 1, 2; ``0,2,5`` (any comma) -> those seeds."""
    if isinstance(text, int):
        return list(range(text))
    if not isinstance(text, str):
        return [int(s) for s in text]
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise FastleadingError(f"--seeds '{text}': expected a count (3 = seeds 0,1,2) or a list (0,2,5)") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise FastleadingError(f"--seeds '{text}': expected at least one seed, non-negative, no repeats")
    return seeds


def parse_list(text: str | Iterable[str] | None) -> list[str]:
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    return [s.strip() for s in items if s.strip() and s.strip().lower() != "none"]


def plan(base: Config, methods: list[str], seeds: list[int], splits: list[str]) -> list[RunSpec]:
    """One :class:`RunSpec` per (seed, split, method), in that nesting (so a study stopped
    early has every method at the first seeds). A split may contain ``{seed}``
    (``low-{seed}``: each seed its own split)."""
    if not methods:
        raise FastleadingError("--methods: give at least one method")
    if len(set(methods)) < len(methods):
        raise FastleadingError(f"--methods: repeated method in {','.join(methods)}")
    specs = []
    for seed in seeds:
        for pattern in splits:
            split = pattern.replace("{seed}", str(seed))
            for method in methods:
                cfg = apply_overrides(copy.deepcopy(base), [f"train.method={method}", f"train.seed={seed}",
                                                            f"data.split={split}"])
                specs.append(RunSpec(method, seed, split, cfg))
    names = [s.name for s in specs]
    if len(set(names)) < len(names):
        raise FastleadingError("--splits: the same split is named twice for one seed")
    return specs


def resolve_splits(base: Config, splits: list[str]):
    """(the study's split patterns, none given = ``data.split``, with '' replaced by the
    dataset's default split; the dataset, whose split names :func:`check_splits` checks)."""
    from fastleading.data import load_dataset

    graph = load_dataset(base.data)
    return [s or graph.default_split for s in (splits or [base.data.split])], graph


def check_splits(graph, specs: list[RunSpec]) -> None:
    known = list(graph.split_names)
    for split in dict.fromkeys(s.split for s in specs):
        if split not in known:
            raise FastleadingError(f"dataset '{graph.name}': unknown split '{split}' "
                                   f"(known: {', '.join(known) or 'none'})")


def _comparable(d: dict) -> dict:
    d = json.loads(json.dumps(d))
    for section, key in IGNORED_KEYS:
        d.get(section, {}).pop(key, None)
    return d


def config_difference(saved: dict, cfg: Config) -> str | None:
    """'section.key: saved vs wanted' for the first key where a run folder's config.json
    differs from ``cfg`` (ignoring :data:`IGNORED_KEYS`); None when they agree."""
    a, b = _comparable(saved), _comparable(cfg.to_dict())
    for section in sorted(set(a) | set(b)):
        sa, sb = a.get(section, {}), b.get(section, {})
        for key in sorted(set(sa) | set(sb)):
            if sa.get(key, "<missing>") != sb.get(key, "<missing>"):
                return f"{section}.{key}: {sa.get(key, '<missing>')!r} there, {sb.get(key, '<missing>')!r} here"
    return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_run_folders(specs: list[RunSpec], runs_dir: Path) -> None:
    """Stop before anything trains if a run folder holds a run of another config."""
    for spec in specs:
        path = runs_dir / spec.name / "config.json"
        if not path.exists():
            continue
        saved = _read_json(path)
        diff = "unreadable config.json" if saved is None else config_difference(saved, spec.cfg)
        if diff:
            raise FastleadingError(f"{path.parent}: holds a run of another config ({diff}); "
                                   f"use another --out or delete that folder")


# ------------------------------------------------------------------------------------- run
def finished_summary(task, spec: RunSpec, run_dir: Path) -> dict | None:
    """The run's summary when ``summary.json`` exists and is complete, else None."""
    summary = _read_json(run_dir / "summary.json")
    return summary if summary is not None and task.complete(summary, spec.cfg) else None


def run_one(task, spec: RunSpec, run_dir: Path, gnns: list[str], log: Callable[[str], None]) -> dict:
    """Train (or reuse) one run and its downstream GNNs; returns the run's record."""
    start = time.time()
    summary = finished_summary(task, spec, run_dir)
    status = "reused"
    if summary is None:
        # whatever a previous attempt exported or trained downstream belongs to other weights
        for stale in [run_dir / EMBEDDINGS, *(task.downstream_path(run_dir, g) for g in gnns),
                      *run_dir.glob("downstream-*.json")]:
            stale.unlink(missing_ok=True)
        resume = (run_dir / "checkpoint.pt").exists()
        status = "resumed" if resume else "trained"
        summary = task.train(spec.cfg, run_dir, resume)
    results, fresh = {}, []
    for gnn in gnns:
        done = _read_json(task.downstream_path(run_dir, gnn))
        if done is not None and isinstance(done.get("test"), (int, float)) and done.get("gnn") == gnn:
            results[gnn] = done
        else:
            fresh.append(gnn)
    if fresh:
        emb = run_dir / EMBEDDINGS
        if not emb.exists():
            task.export(run_dir, emb)
        for gnn in fresh:
            results[gnn] = task.downstream(spec.cfg, emb, run_dir, gnn)
    head = task.head(summary)
    scores = "  ".join([f"head test {head['test']:.4f}"] + [f"{g} test {results[g]['test']:.4f}" for g in gnns])
    log(f"seed {spec.seed} {spec.split} {spec.method:<11} {scores}  ({status}, {time.time() - start:.0f} s)")
    config = _read_json(run_dir / "config.json") or spec.cfg.to_dict()
    return {"name": spec.name, "method": spec.method, "seed": spec.seed, "split": spec.split,
            "run_dir": str(Path("runs") / spec.name), "status": status, "config": config,
            "summary": summary, "downstream": results}


# -------------------------------------------------------------------------------- aggregate
def mean_std(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value) and the values."""
    values = [float(v) for v in values]
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def aggregate(task, runs: list[dict], methods: list[str], gnns: list[str]) -> tuple[dict, dict]:
    """(per-method results, per-method validation by epoch) from the run records."""
    results, valid_by_epoch = {}, {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        heads = [task.head(r["summary"]) for r in mine]
        entry = {"runs": len(mine),
                 "head": mean_std([h["test"] for h in heads]),
                 "head_valid": mean_std([h["valid"] for h in heads])}
        for gnn in gnns:
            entry[gnn] = mean_std([r["downstream"][gnn]["test"] for r in mine])
        entry["wall_s"] = mean_std([r["summary"].get("wall_time_s", 0.0) for r in mine])
        histories = [task.history(r["summary"]) for r in mine]
        entry["history"] = all(histories)
        results[method] = entry
        if entry["history"]:
            epochs = sorted({h["epoch"] for hist in histories for h in hist})
            valid_by_epoch[method] = {}
            for e in epochs:
                values = [h["valid"] for hist in histories for h in hist if h["epoch"] == e]
                valid_by_epoch[method][str(e)] = {**mean_std(values), "n": len(values)}
    return results, valid_by_epoch


def _pct(ms: dict) -> str:
    return f"{100 * ms['mean']:.1f} ± {100 * ms['std']:.1f}"


def markdown_table(results: dict, valid_by_epoch: dict, gnns: list[str], header: str) -> str:
    """The study's markdown: mean ± std (%) per method, a note on methods without a history,
    and the validation accuracy by epoch."""
    cols = ["method", "runs", "head valid", "head test", *(f"{g} test" for g in gnns), "train wall s"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for method, r in results.items():
        row = [method, str(r["runs"]), _pct(r["head_valid"]), _pct(r["head"]), *(_pct(r[g]) for g in gnns),
               f"{r['wall_s']['mean']:.0f} ± {r['wall_s']['std']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    no_history = [m for m, r in results.items() if not r["history"]]
    if no_history:
        lines += ["", f"{', '.join(no_history)}: fixed features, no LM trained; the built-in head (MLP + APPNP) "
                      "trains in one go, so there is no validation accuracy by epoch (not drawn in "
                      f"{VALID_PNG})."]
    if valid_by_epoch:
        epochs = sorted({int(e) for v in valid_by_epoch.values() for e in v})
        lines += ["", "Validation accuracy (%) of the built-in head by epoch, mean over runs:", "",
                  "| epoch | " + " | ".join(map(str, epochs)) + " |", "| --- |" + " --- |" * len(epochs)]
        for method, by_epoch in valid_by_epoch.items():
            cells = [f"{100 * by_epoch[str(e)]['mean']:.1f}" if str(e) in by_epoch else "" for e in epochs]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def device_name(runs: list[dict]) -> str:
    import torch

    devices = sorted({str(r["summary"].get("device", "cpu")) for r in runs})
    if any(d.startswith("cuda") for d in devices) and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return ", ".join(devices) or "cpu"


# ----------------------------------------------------------------------------------- study
def run_study(base: Config, out_dir: str | Path, methods: Iterable[str] = DEFAULT_METHODS,
              seeds: str | int | Iterable[int] = 3, splits: Iterable[str] | None = None,
              downstream: Iterable[str] = ("gcn",), task: str = "node-classification", name: str = "",
              note: str = "", command: str = "", settings: dict | None = None,
              log: Callable[[str], None] = print) -> StudyOutput:
    """Run (or resume) the study and write ``results.json``, ``table.md`` and, with matplotlib,
    the PNGs into ``out_dir``. ``base`` (with the study's overrides already applied) is every
    run's config; each run sets ``train.method``, ``train.seed`` and ``data.split``."""
    if task not in TASKS:
        raise FastleadingError(f"--task '{task}': expected one of {', '.join(TASKS)}")
    t = TASKS[task]
    methods, gnns, seeds = parse_list(methods), parse_list(downstream), parse_seeds(seeds)
    for gnn in gnns:
        apply_overrides(copy.deepcopy(base), [f"model.gnn={gnn}"])  # an unknown GNN stops here, in one line
    if len(set(gnns)) < len(gnns):
        raise FastleadingError(f"--downstream: repeated GNN in {','.join(gnns)}")
    out_dir = Path(out_dir)
    runs_dir = out_dir / "runs"
    patterns, graph = resolve_splits(base, parse_list(splits) if splits is not None else [])
    specs = plan(base, methods, seeds, patterns)
    check_splits(graph, specs)
    check_run_folders(specs, runs_dir)
    started = time.time()
    runs = [run_one(t, spec, runs_dir / spec.name, gnns, log) for spec in specs]
    results, valid_by_epoch = aggregate(t, runs, methods, gnns)
    import torch

    record = {
        "study": name or f"{base.data.dataset} {task}", "task": task, "metric": t.metric,
        "dataset": base.data.dataset, "model": base.model.name, "methods": methods, "seeds": seeds,
        "splits": patterns, "downstream": gnns, "device": device_name(runs), "torch": torch.__version__,
        "date": dt.date.today().isoformat(), "git_commit": _git_commit(), "command": command,
        "settings": settings or {}, "note": note,
        "std": "sample standard deviation over runs (0 for one run)",
        "wall_s_this_call": round(time.time() - started, 3),
        "results": results, "valid_by_epoch": valid_by_epoch, "runs": runs,
    }
    results_path = atomic_write_text(out_dir / RESULTS, json.dumps(record, indent=2) + "\n")
    n = len(seeds) * len(patterns)
    header = (f"# {record['study']}\n\nTest accuracy (%) of the built-in head at its best validation epoch"
              + (" and of each downstream GNN on the run's exported embeddings" if gnns else "")
              + f"; mean ± sample std over {n} run(s) per method (seeds {','.join(map(str, seeds))}; "
              f"splits {', '.join(patterns)}). Model {base.model.name}, dataset {base.data.dataset}.")
    table_path = atomic_write_text(out_dir / TABLE, markdown_table(results, valid_by_epoch, gnns, header))
    out = StudyOutput(record, out_dir, results_path, table_path)
    from fastleading import plot

    if not plot.have_matplotlib():
        log(f"plots skipped: {plot.PLOT_HINT}")
        return out
    curves = {m: {int(e): v for e, v in by_epoch.items()} for m, by_epoch in valid_by_epoch.items()}
    no_history = [m for m, r in results.items() if not r["history"]]
    out.plots.append(plot.plot_valid_curves(curves, no_history, out_dir / VALID_PNG,
                                            f"{record['study']}: validation accuracy (mean ± std over runs)"))
    columns = {"head": "built-in head", **{g: f"downstream {g}" for g in gnns}}
    out.plots.append(plot.plot_test_acc(results, columns, out_dir / TEST_PNG,
                                        f"{record['study']}: test accuracy (mean ± std; dots: runs)"))
    return out
