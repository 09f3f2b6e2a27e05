"""``fastleading study``: methods x seeds x splits, mean ± std, pictures.

    fastleading study --dataset citeseer-tag --methods leading,supervised,shallow --seeds 3 \\
        --splits 'low-{seed}' --downstream gcn,sage --out runs/study --override train.epochs=20

Every run trains through :func:`fastleading.commands.methods.train_method` into
``OUT/runs/<method>-<split>-seed<seed>/``; then (paper protocol) its node embeddings are
exported (:func:`fastleading.baselines.downstream.export_embeddings`) and each downstream GNN is trained on
them (:func:`fastleading.baselines.downstream.downstream`). The study writes into ``OUT``:

- ``results.json``: every run's config, summary and downstream results, and per method (per
  method and split pattern when the study has several: ``"leading 10/30/60"``, see
  :func:`groups`) the mean, sample std and values of the built-in head's valid / test accuracy
  (at the best valid epoch), of each downstream GNN's test accuracy and of the training wall
  time;
- ``table.md``: those means ± std as a markdown table (and the validation accuracy by epoch);
- ``valid_curves.png``, ``test_acc.png`` (matplotlib, the optional ``plot`` extra).

It is resumable: a run whose ``summary.json`` is complete is not trained again (a run killed
midway continues from its checkpoint), a downstream result already written is kept; a run
folder written with another config stops the study before anything trains.

A task (:data:`TASKS`, a :class:`Task`: which summary keys are its metrics, which history key
is its validation curve) is ``--task`` or the config's ``train.task``:

- node classification: accuracy, as above;
- link prediction (``--task link``): the splits are ``data.link_split`` ratios (``10/30/60``,
  ``85/5/10``; run folders ``<method>-10-30-60-seed<seed>``) and each seed sets
  ``data.link_seed`` too; per method the head's valid / test AUC and MRR (``head_auc``,
  ``head_valid_mrr``, ...) and each downstream GNN's test AUC and MRR (``gcn_auc``, ``gcn_mrr``;
  ``downstream-link-<gnn>.json``); the curve is the validation MRR by epoch (AUC with
  ``train.link_select=auc``: the metric that picks the best epoch); the bars are
  ``test_metrics.png``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import json
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastleading.bench.report import git_commit
from fastleading.config import Config, apply_overrides
from fastleading.errors import FastleadingError
from fastleading.run.io import atomic_write_text

DEFAULT_METHODS = ("leading", "supervised", "pretrained", "shallow")
RESULTS, TABLE, VALID_PNG, TEST_PNG = "results.json", "table.md", "valid_curves.png", "test_acc.png"
EMBEDDINGS = "embeddings.npy"
# config keys that do not change what a run computes (a moved cache is the same run)
IGNORED_KEYS = {("data", "cache_dir")}


# ----------------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class Metric:
    """One reported metric: where the built-in head's valid / test value sit in ``summary.json``,
    where a downstream GNN's test value sits in its result, and the suffix of its keys in
    ``results.json`` (``head<suffix>``, ``head_valid<suffix>``, ``<gnn><suffix>``)."""

    label: str          # in the table's column names ("" for node classification's accuracy)
    valid_key: str      # summary.json: the head's validation value at its best epoch
    test_key: str       # summary.json: the head's test value at that epoch
    downstream_key: str  # downstream-<gnn>.json / downstream-link-<gnn>.json: the GNN's test value
    suffix: str = ""


@dataclass(frozen=True)
class Task:
    """What a study reads and writes for one ``train.task``: its metrics, the history key drawn
    as the validation curve, file names. Training, export and downstream are the same calls for
    every task (the run's config carries ``train.task``)."""

    name: str
    config_task: str        # train.task
    metric: str             # results.json "metric"
    description: str        # the table's header: what the numbers are
    metrics: tuple[Metric, ...]
    curve_key: str          # key of a summary history entry drawn by epoch
    curve_label: str
    split_key: str          # the config key a study's split sets
    test_png: str
    downstream_file: str    # written by fastleading.baselines.downstream.downstream, ``{gnn}`` replaced

    def train(self, cfg: Config, run_dir: Path, resume: bool, quiet: bool = True) -> dict:
        from fastleading.commands.methods import train_method

        # not resumed: whatever an attempt killed before its first checkpoint left is replaced
        return train_method(cfg, run_dir, resume=resume, quiet=quiet, overwrite=not resume)

    def complete(self, summary: dict, cfg: Config) -> bool:
        return (summary.get("method") == cfg.train.method
                and all(isinstance(summary.get(k), (int, float))
                        for m in self.metrics for k in (m.valid_key, m.test_key)))

    def head(self, summary: dict) -> dict:
        """{suffix: {"valid", "test"}} of the built-in head per metric (test at the best valid epoch)."""
        return {m.suffix: {"valid": summary[m.valid_key], "test": summary[m.test_key]} for m in self.metrics}

    def scores(self, result: dict) -> dict:
        """{suffix: test value} of a downstream GNN's result."""
        return {m.suffix: result[m.downstream_key] for m in self.metrics}

    def downstream_done(self, result: dict | None, gnn: str) -> bool:
        return (result is not None and result.get("gnn") == gnn
                and all(isinstance(result.get(m.downstream_key), (int, float)) for m in self.metrics))

    def history(self, summary: dict) -> list[dict]:
        """Per-epoch evaluations ({"epoch", curve_key, ...}); empty for the fixed-feature methods."""
        return summary.get("history") or []

    def export(self, run_dir: Path, path: Path) -> Path:
        from fastleading.baselines.downstream import export_embeddings

        return export_embeddings(run_dir, path, quiet=True)

    def downstream(self, cfg: Config, embeddings: Path, run_dir: Path, gnn: str) -> dict:
        from fastleading.baselines.downstream import downstream

        return downstream(apply_overrides(copy.deepcopy(cfg), [f"model.gnn={gnn}"]), embeddings, run_dir)

    def downstream_path(self, run_dir: Path, gnn: str) -> Path:
        return run_dir / self.downstream_file.format(gnn=gnn)


NODE_CLASSIFICATION = Task(
    "node-classification", "node", "accuracy",
    "Test accuracy (%) of the built-in head at its best validation epoch",
    (Metric("", "best_valid_acc", "test_acc", "test"),), "valid", "accuracy", "data.split", TEST_PNG,
    "downstream-{gnn}.json")
LINK_PREDICTION = Task(
    "link", "link", "auc,mrr",
    "Test AUC and MRR (%) of the built-in head (LM + APPNP + decoder) at its best validation epoch",
    (Metric("AUC", "best_valid_auc", "test_auc", "test_auc", "_auc"),
     Metric("MRR", "best_valid_mrr", "test_mrr", "test_mrr", "_mrr")),
    "valid_mrr", "MRR", "data.link_split", "test_metrics.png", "downstream-link-{gnn}.json")
TASKS = {"node-classification": NODE_CLASSIFICATION, "link": LINK_PREDICTION}
TASK_ALIASES = {"node": "node-classification", "link-prediction": "link"}


def resolve_task(task: str | None, base: Config) -> Task:
    """The study's task: ``task`` (a name of :data:`TASKS` or an alias), or, when None, the one
    of ``base``'s ``train.task``."""
    name = TASK_ALIASES.get(task, task) if task else TASK_ALIASES.get(base.train.task, base.train.task)
    if name not in TASKS:
        raise FastleadingError(f"--task '{task}': expected one of {', '.join([*TASKS, *TASK_ALIASES])}")
    t = TASKS[name]
    if t.config_task == "link" and base.train.link_select == "auc":
        # the curve shows the metric that picks the best epoch
        t = dataclasses.replace(t, curve_key="valid_auc", curve_label="AUC")
    return t


# ------------------------------------------------------------------------------------ plan
@dataclass
class RunSpec:
    method: str
    seed: int
    split: str
    cfg: Config
    pattern: str = ""  # the study's split pattern the split comes from (``low-{seed}``; a link ratio)

    @property
    def name(self) -> str:
        # a link split is a ratio (10/30/60): no slash in a folder name
        return f"{self.method}-{(self.split or 'default').replace('/', '-')}-seed{self.seed}"


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
        seeds = [int(s) for s in text.split(",") if s.strip()] if "," in text else list(range(int(text)))
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


def plan(base: Config, methods: list[str], seeds: list[int], splits: list[str],
         task: Task = NODE_CLASSIFICATION) -> list[RunSpec]:
    """One :class:`RunSpec` per (seed, split, method), in that nesting (so a study stopped
    early has every method at the first seeds). A split sets ``task.split_key`` and may contain
    ``{seed}`` (``low-{seed}``: each seed its own split); for link prediction the seed sets
    ``data.link_seed`` too (each seed its own edge split and evaluation negatives)."""
    if not methods:
        raise FastleadingError("--methods: give at least one method")
    if len(set(methods)) < len(methods):
        raise FastleadingError(f"--methods: repeated method in {','.join(methods)}")
    specs = []
    for seed in seeds:
        for pattern in splits:
            split = pattern.replace("{seed}", str(seed))
            for method in methods:
                seeded = [f"train.seed={seed}"] + ([f"data.link_seed={seed}"] if task.config_task == "link" else [])
                cfg = apply_overrides(copy.deepcopy(base), [f"train.method={method}", *seeded,
                                                            f"{task.split_key}={split}"])
                specs.append(RunSpec(method, seed, split, cfg, pattern))
    names = [s.name for s in specs]
    if len(set(names)) < len(names):
        raise FastleadingError("--splits: the same split is named twice for one seed")
    return specs


def resolve_splits(base: Config, splits: list[str], task: Task = NODE_CLASSIFICATION):
    """(the study's split patterns, none given = ``data.split``, with '' replaced by the
    dataset's default split; the dataset, whose split names :func:`check_splits` checks).
    Link prediction: none given = ``data.link_split`` (its config check checks each ratio)."""
    from fastleading.data import load_dataset

    graph = load_dataset(base.data)
    if task.config_task == "link":
        return splits or [base.data.link_split], graph
    return [s or graph.default_split for s in (splits or [base.data.split])], graph


def check_splits(graph, specs: list[RunSpec], task: Task = NODE_CLASSIFICATION) -> None:
    if task.config_task == "link":
        return  # plan's apply_overrides has checked every data.link_split
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


def config_difference(saved: dict, cfg: Config, run_dir: Path, default_split: str = "") -> str | None:
    """'section.key: saved vs wanted' for the first key where the config.json of the run folder
    ``run_dir`` differs from ``cfg``, both as they are stored there
    (:func:`fastleading.run.folder.stored_config`: paths resolved, also in a config.json written
    before they were, an empty ``data.split`` the dataset's ``default_split``; ignoring
    :data:`IGNORED_KEYS`); None when they agree."""
    from fastleading.config import from_dict
    from fastleading.run.folder import config_changes, stored_config

    with contextlib.suppress(FastleadingError):  # a config this version does not read: compared as it is (it differs)
        saved = stored_config(run_dir, from_dict(saved, source=str(run_dir / "config.json")), default_split).to_dict()
    changes = config_changes(_comparable(saved), _comparable(stored_config(run_dir, cfg, default_split).to_dict()))
    if not changes:
        return None
    key, there, here = changes[0]
    return f"{key}: {there!r} there, {here!r} here"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_run_folders(specs: list[RunSpec], runs_dir: Path, default_split: str = "") -> None:
    """Stop before anything trains if a run folder holds a run of another config
    (``default_split``: the dataset's, what an empty ``data.split`` means)."""
    for spec in specs:
        path = runs_dir / spec.name / "config.json"
        if not path.exists():
            continue
        saved = _read_json(path)
        diff = ("unreadable config.json" if saved is None
                else config_difference(saved, spec.cfg, path.parent, default_split))
        if diff:
            raise FastleadingError(f"{path.parent}: holds a run of another config ({diff}); "
                                   f"use another --out or delete that folder")


# ------------------------------------------------------------------------------------- run
def finished_summary(task, spec: RunSpec, run_dir: Path) -> dict | None:
    """The run's summary when ``summary.json`` exists and is complete, else None."""
    summary = _read_json(run_dir / "summary.json")
    return summary if summary is not None and task.complete(summary, spec.cfg) else None


def run_one(task, spec: RunSpec, run_dir: Path, gnns: list[str], log: Callable[[str], None],
            quiet: bool = True, position: str = "") -> dict:
    """Train (or reuse) one run and its downstream GNNs; returns the run's record. ``log`` gets
    a line when the run starts (``position``: "3/8") and one when it is done; ``quiet`` False
    shows the run's own progress (a bar on a terminal, plain lines when redirected)."""
    start = time.time()
    summary = finished_summary(task, spec, run_dir)
    status = "reused"
    what = f"seed {spec.seed} {spec.split} {spec.method}"
    if summary is None:
        # whatever a previous attempt exported or trained downstream belongs to other weights
        for stale in [run_dir / EMBEDDINGS, *(task.downstream_path(run_dir, g) for g in gnns),
                      *run_dir.glob("downstream-*.json")]:
            stale.unlink(missing_ok=True)
        resume = (run_dir / "checkpoint.pt").exists()
        status = "resumed" if resume else "trained"
        log(f"[{position}] {what}: {'resuming' if resume else 'training'} in {run_dir}")
        summary = task.train(spec.cfg, run_dir, resume, quiet)
    results, fresh = {}, []
    for gnn in gnns:
        done = _read_json(task.downstream_path(run_dir, gnn))
        if task.downstream_done(done, gnn):
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
    scores = "  ".join([f"head test{m.label and ' ' + m.label} {head[m.suffix]['test']:.4f}" for m in task.metrics]
                       + [f"{g} test{m.label and ' ' + m.label} {task.scores(results[g])[m.suffix]:.4f}"
                          for g in gnns for m in task.metrics])
    log(f"[{position}] seed {spec.seed} {spec.split} {spec.method:<11} {scores}  ({status}, "
        f"{time.time() - start:.0f} s)")
    config = _read_json(run_dir / "config.json") or spec.cfg.to_dict()
    return {"name": spec.name, "method": spec.method, "seed": spec.seed, "split": spec.split,
            "split_pattern": spec.pattern, "run_dir": str(Path("runs") / spec.name), "status": status, "config": config,
            "summary": summary, "downstream": results}


# -------------------------------------------------------------------------------- aggregate
def mean_std(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value) and the values."""
    values = [float(v) for v in values]
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def groups(methods: list[str], patterns: list[str]) -> dict[str, tuple[str, str]]:
    """The rows of a study: ``{name: (method, split pattern)}``, pattern by pattern. Runs of one
    pattern are pooled over seeds (``low-{seed}``: each seed its own split of the same kind);
    two patterns are two tasks (10/30/60 and 85/5/10 of the edges) and are never pooled: with
    more than one, a row is named ``"<method> <pattern>"``."""
    return {(m if len(patterns) == 1 else f"{m} {p}"): (m, p) for p in patterns for m in methods}


def aggregate(task, runs: list[dict], rows: dict[str, tuple[str, str]], gnns: list[str]) -> tuple[dict, dict]:
    """(results per row of :func:`groups`, validation by epoch per row) from the run records."""
    results: dict[str, dict] = {}
    valid_by_epoch: dict[str, Any] = {}
    for row, (method, pattern) in rows.items():
        mine = [r for r in runs if r["method"] == method and r["split_pattern"] == pattern]
        heads = [task.head(r["summary"]) for r in mine]
        entry = {"method": method, "split": pattern, "runs": len(mine)}
        for m in task.metrics:
            entry["head" + m.suffix] = mean_std([h[m.suffix]["test"] for h in heads])
            entry["head_valid" + m.suffix] = mean_std([h[m.suffix]["valid"] for h in heads])
        for gnn in gnns:
            for m in task.metrics:
                entry[gnn + m.suffix] = mean_std([task.scores(r["downstream"][gnn])[m.suffix] for r in mine])
        entry["wall_s"] = mean_std([r["summary"].get("wall_time_s", 0.0) for r in mine])
        histories = [task.history(r["summary"]) for r in mine]
        entry["history"] = all(histories)
        results[row] = entry
        if entry["history"]:
            epochs = sorted({h["epoch"] for hist in histories for h in hist})
            valid_by_epoch[row] = {}
            for e in epochs:
                values = [h[task.curve_key] for hist in histories for h in hist if h["epoch"] == e]
                valid_by_epoch[row][str(e)] = {**mean_std(values), "n": len(values)}
    return results, valid_by_epoch


def _pct(ms: dict) -> str:
    return _mean_std_text(ms, 100, 1)


def _mean_std_text(ms: dict, scale: float, digits: int) -> str:
    """``mean ± std``; the mean alone for one run (it has no spread to show)."""
    mean = f"{scale * ms['mean']:.{digits}f}"
    return mean if len(ms["values"]) < 2 else f"{mean} ± {scale * ms['std']:.{digits}f}"


def markdown_table(results: dict, valid_by_epoch: dict, gnns: list[str], header: str,
                   task: Task = NODE_CLASSIFICATION) -> str:
    """The study's markdown: mean ± std (%) per method (one column group per metric of
    ``task``), a note on methods without a history, and the validation curve by epoch."""
    def named(text: str, m: Metric) -> str:
        return f"{text} {m.label}" if m.label else text

    cols = ["method", "runs", *(named(c, m) for m in task.metrics for c in ("head valid", "head test")),
            *(named(f"{g} test", m) for g in gnns for m in task.metrics), "train wall s"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for method, r in results.items():
        row = [method, str(r["runs"]),
               *(_pct(r[k + m.suffix]) for m in task.metrics for k in ("head_valid", "head")),
               *(_pct(r[g + m.suffix]) for g in gnns for m in task.metrics),
               _mean_std_text(r["wall_s"], 1, 0)]
        lines.append("| " + " | ".join(row) + " |")
    no_history = [m for m, r in results.items() if not r["history"]]
    if no_history:
        lines += ["", f"{', '.join(no_history)}: fixed features, no LM trained; the built-in head (MLP + APPNP) "
                      f"trains in one go, so there is no validation {task.curve_label} by epoch (not drawn in "
                      f"{VALID_PNG})."]
    if valid_by_epoch:
        epochs = sorted({int(e) for v in valid_by_epoch.values() for e in v})
        lines += ["", f"Validation {task.curve_label} (%) of the built-in head by epoch, mean over runs:", "",
                  "| epoch | " + " | ".join(map(str, epochs)) + " |", "| --- |" + " --- |" * len(epochs)]
        for method, by_epoch in valid_by_epoch.items():
            cells = [f"{100 * by_epoch[str(e)]['mean']:.1f}" if str(e) in by_epoch else "" for e in epochs]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def device_name(runs: list[dict]) -> str:
    import torch

    devices = sorted({str(r["summary"].get("device", "cpu")) for r in runs})
    if any(d.startswith("cuda") for d in devices) and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return ", ".join(devices) or "cpu"


# ----------------------------------------------------------------------------------- study
def run_study(base: Config, out_dir: str | Path, methods: Iterable[str] = DEFAULT_METHODS,
              seeds: str | int | Iterable[int] = 3, splits: Iterable[str] | None = None,
              downstream: Iterable[str] = ("gcn",), task: str | None = None, name: str = "",
              note: str = "", command: str = "", settings: dict | None = None,
              log: Callable[[str], None] = print, quiet: bool = True) -> StudyOutput:
    """Run (or resume) the study and write ``results.json``, ``table.md`` and, with matplotlib,
    the PNGs into ``out_dir``. ``base`` (with the study's overrides already applied) is every
    run's config; each run sets ``train.method``, ``train.seed`` and the split (``data.split``;
    link prediction: ``data.link_split`` and ``data.link_seed``). ``task`` None: ``base``'s
    ``train.task``; given, it sets ``train.task``. ``log`` gets a line as each run starts and
    ends; ``quiet`` False also shows each run's own training progress."""
    t = resolve_task(task, base)
    base = apply_overrides(copy.deepcopy(base), [f"train.task={t.config_task}"])
    task = t.name
    methods, gnns, seeds = parse_list(methods), parse_list(downstream), parse_seeds(seeds)
    for gnn in gnns:
        apply_overrides(copy.deepcopy(base), [f"model.gnn={gnn}"])  # an unknown GNN stops here, in one line
    if len(set(gnns)) < len(gnns):
        raise FastleadingError(f"--downstream: repeated GNN in {','.join(gnns)}")
    out_dir = Path(out_dir)
    runs_dir = out_dir / "runs"
    patterns, graph = resolve_splits(base, parse_list(splits) if splits is not None else [], t)
    specs = plan(base, methods, seeds, patterns, t)
    check_splits(graph, specs, t)
    check_run_folders(specs, runs_dir, graph.default_split)
    started = time.time()
    runs = [run_one(t, spec, runs_dir / spec.name, gnns, log, quiet, f"{i}/{len(specs)}")
            for i, spec in enumerate(specs, 1)]
    results, valid_by_epoch = aggregate(t, runs, groups(methods, patterns), gnns)
    import torch

    record = {
        "study": name or f"{base.data.dataset} {task}", "task": task, "metric": t.metric,
        **({"metrics": {m.suffix.lstrip("_"): m.label for m in t.metrics}} if t.config_task == "link" else {}),
        "dataset": base.data.dataset, "model": base.model.name, "methods": methods, "seeds": seeds,
        "splits": patterns, "downstream": gnns, "device": device_name(runs), "torch": torch.__version__,
        "date": dt.date.today().isoformat(), "git_commit": git_commit(), "command": command,
        "settings": settings or {}, "note": note,
        "std": "sample standard deviation over runs (0 for one run)",
        "wall_s_this_call": round(time.time() - started, 3),
        "results": results, "valid_by_epoch": valid_by_epoch, "runs": runs,
    }
    results_path = atomic_write_text(out_dir / RESULTS, json.dumps(record, indent=2) + "\n")
    header = (f"# {record['study']}\n\n{t.description}"
              + (" and of each downstream GNN on the run's exported embeddings" if gnns else "")
              + f"; mean ± sample std over {len(seeds)} run(s) per method and split "
              f"(seeds {','.join(map(str, seeds))}; splits {', '.join(patterns)}). "
              f"Model {base.model.name}, dataset {base.data.dataset}.")
    table_path = atomic_write_text(out_dir / TABLE, markdown_table(results, valid_by_epoch, gnns, header, t))
    out = StudyOutput(record, out_dir, results_path, table_path)
    from fastleading.commands import plot

    if not plot.have_matplotlib():
        log(f"plots skipped: {plot.PLOT_HINT}")
        return out
    curves = {m: {int(e): v for e, v in by_epoch.items()} for m, by_epoch in valid_by_epoch.items()}
    no_history = [m for m, r in results.items() if not r["history"]]
    out.plots.append(plot.plot_valid_curves(curves, no_history, out_dir / VALID_PNG,
                                            f"{record['study']}: validation {t.curve_label} (mean ± std over runs)",
                                            ylabel=f"validation {t.curve_label}"))
    columns = {"head" + m.suffix: f"built-in head{m.label and ' ' + m.label}" for m in t.metrics}
    columns.update({g + m.suffix: f"downstream {g}{m.label and ' ' + m.label}" for g in gnns for m in t.metrics})
    what = t.metric if t.config_task != "link" else " / ".join(m.label for m in t.metrics)
    out.plots.append(plot.plot_test_acc(results, columns, out_dir / t.test_png,
                                        f"{record['study']}: test {what} (mean ± std; dots: runs)",
                                        ylabel=f"test {what}"))
    return out


# the presets' data: ../shared/data beside the repository (fastleading/commands/study.py is three
# levels below it), whatever the current directory
PRESET_DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"


def preset_parser(description: str, methods: Iterable[str], runs: str, stem: str):
    """The arguments every benchmark preset (``benchmarks/study_*.py``) shares: data root, seeds,
    the CPU shortenings, methods, overrides, device, study folder, result file and note."""
    import argparse

    methods = ",".join(methods)
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--root", default=str(PRESET_DATA_ROOT))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-length", type=int, default=64)
    # training flags: each sets its config key (PRESET_FLAGS); left out, the config's default holds
    p.add_argument("--epochs", type=int, default=60, help="train.epochs (an upper bound: runs stop on --patience)")
    p.add_argument("--patience", type=int, default=3, help="train.patience (evaluations without a better valid)")
    p.add_argument("--eval-every", type=int, default=None, help="train.eval_every (default: auto)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--refresh-batch-size", type=int, default=None)
    p.add_argument("--lr-lm", type=float, default=None)
    p.add_argument("--head-warmup-epochs", type=int, default=None)
    p.add_argument("--methods", default=methods, help="comma-separated subset of " + methods)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run, e.g. model.num_iters=10 (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", default=runs, help="study folder (results.json, table.md, plots, runs/)")
    p.add_argument("--out", default=None, help=f"copy of results.json; default "
                   f"benchmarks/results/{stem}-<device>-<date>.json")
    p.add_argument("--note", default="", help="free text stored in the result file (e.g. what was shortened and why)")
    return p


# preset flag -> config key (None: not given, the config's default holds)
PRESET_FLAGS = {"max_length": "data.max_length", "epochs": "train.epochs", "patience": "train.patience",
                "eval_every": "train.eval_every", "batch_size": "train.batch_size",
                "refresh_batch_size": "train.refresh_batch_size", "lr_lm": "train.lr_lm",
                "head_warmup_epochs": "train.head_warmup_epochs", "device": "train.device"}


def preset_overrides(args) -> list[str]:
    """The ``section.key=value`` overrides of a preset's flags that were given (:data:`PRESET_FLAGS`)."""
    return [f"{key}={getattr(args, flag)}" for flag, key in PRESET_FLAGS.items()
            if getattr(args, flag, None) is not None]


def run_preset(args, base: Config, all_methods: Iterable[str], *, splits: list[str], name: str, stem: str,
               prog: str, task: str | None = None, dataset_dir: str = "citeseer-tag") -> int:
    """The body of a benchmark preset's ``main()`` (``benchmarks/study_*.py``): check that
    ``<args.root>/<dataset_dir>`` exists and ``args.methods`` are known, run the study with the
    preset's ``base`` config into ``args.runs``, and :func:`publish` it to ``args.out``. Returns
    the exit code; errors are one line on stderr, prefixed with ``prog``."""
    import sys

    if not (Path(args.root) / dataset_dir).is_dir():
        print(f"{prog}: error: {dataset_dir} not found under {args.root}", file=sys.stderr)
        return 2
    methods = args.methods.split(",")
    if unknown := set(methods) - set(all_methods):
        print(f"{prog}: error: --methods: unknown {sorted(unknown)}; expected some of {','.join(all_methods)}",
              file=sys.stderr)
        return 2
    try:
        study = run_study(base, args.runs, methods=methods, seeds=args.seeds, splits=splits, downstream=["gcn"],
                          task=task, name=name, note=args.note, command="python " + " ".join(sys.argv),
                          settings=vars(args), log=lambda line: print(line, flush=True))
    except FastleadingError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    publish(study, args.out, stem)
    return 0


def publish(study: StudyOutput, out: str | Path | None, stem: str) -> Path:
    """For the benchmark presets: copy the study's results.json to ``out`` (default
    ``benchmarks/results/<stem>-<device>-<date>.json``), print the table and where things are."""
    import shutil

    result = study.results
    path = Path(out or f"benchmarks/results/{stem}-{result['device'].replace(' ', '_')}-{result['date']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(study.results_path, path)
    print("\n" + study.table_path.read_text(), end="")
    print(f"\nresults: {path}\nstudy folder: {study.out_dir}")
    return path
