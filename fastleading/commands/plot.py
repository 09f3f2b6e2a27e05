"""PNG pictures of runs and studies (matplotlib, the optional ``plot`` extra).

``plot_runs`` draws run folders' training loss (``metrics.jsonl`` lines with ``"loss"``) and
accuracy (lines with ``"eval"``); ``plot_valid_curves`` and ``plot_test_acc`` draw a study's
validation curves (mean ± std band over runs) and test accuracies (error bars).

Figures are built with ``matplotlib.figure.Figure`` and its Agg canvas, never pyplot: no
global state, no display. Without matplotlib every function raises one line naming the extra.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from fastleading.errors import FastleadingError
from fastleading.run.io import atomic_write

PLOT_HINT = "plots need matplotlib: pip install 'fastleading[plot]'"


def have_matplotlib() -> bool:
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(**kwargs):
    """A fresh ``Figure`` (Agg canvas); one line naming the extra when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise FastleadingError(PLOT_HINT) from None
    return Figure(**kwargs)


def _integer_ticks(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        axis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, path: str | Path) -> Path:
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


# ---------------------------------------------------------------------------------- runs
def read_metrics(run_dir: str | Path) -> tuple[list[tuple[int, float]], list[dict]]:
    """(``[(step, loss)]``, ``[{"step", "epoch", "train"/"valid"/"test"...}]``) of a run's metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    losses, evals = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise FastleadingError(f"{path}:{n}: not a JSON line") from None
        if "loss" in rec:
            losses.append((int(rec["step"]), float(rec["loss"])))
        if "eval" in rec:
            evals.append({"step": rec.get("step"), "epoch": rec.get("epoch"), **rec["eval"]})
    return losses, evals


def _read_json(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def reference_scores(run_dir: Path) -> tuple[float, float] | None:
    """``(valid, test)`` of a fixed-feature run (``pretrained`` / ``shallow``: no per-step metrics)
    from its ``summary.json``: accuracy at its best epoch, or for ``train.task=link`` the metric
    that selected it (``train.link_select``, MRR by default); None for any other folder."""
    from fastleading.baselines.downstream import FIXED_FEATURE_METHODS

    summary = _read_json(run_dir / "summary.json")
    if summary is None or summary.get("method") not in FIXED_FEATURE_METHODS:
        return None
    if "best_valid_acc" in summary:
        return float(summary["best_valid_acc"]), float(summary["test_acc"])
    config = _read_json(run_dir / "config.json") or {}
    select = config.get("train", {}).get("link_select", "mrr")
    if "best_valid" in summary and f"test_{select}" in summary:
        return float(summary["best_valid"]), float(summary[f"test_{select}"])
    return None


def runs_figure(run_dirs: Sequence[str | Path]):
    """The figure of :func:`plot_runs` (a ``matplotlib.figure.Figure``: loss axes, then accuracy axes).

    An LM run draws its loss by step and valid / test accuracy by evaluation epoch from
    ``metrics.jsonl``. A fixed-feature run (``pretrained``, ``shallow``) logs no per-step
    metrics and no evaluation curve: its summary's valid and test scores are drawn as
    horizontal reference lines across the accuracy axes, so a fine-tuning curve is seen against
    the frozen baseline. A folder with neither is named in the title; if no folder has anything
    to draw, that is an error."""
    runs = [Path(r) for r in run_dirs]
    if not runs:
        raise FastleadingError("plot: give at least one run folder")
    for run in runs:
        if not run.is_dir():
            raise FastleadingError(f"{run}: not a run folder")
    curves, references, missing = [], [], []
    for run in runs:
        if (run / "metrics.jsonl").is_file():
            curves.append((run, *read_metrics(run)))
        elif (scores := reference_scores(run)) is not None:
            references.append((run, scores))
        else:
            missing.append(f"{run.name} (no metrics.jsonl, no fixed-feature summary.json)")
    if not curves and not references:
        raise FastleadingError(f"plot: nothing to draw: {'; '.join(missing)}")
    named = [run for run, *_ in curves] + [run for run, _ in references]
    labels = [run.name for run in named]
    if len(set(labels)) < len(labels):  # same folder names under different parents
        labels = [str(run) for run in named]
    fig = _figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, (label, (_, losses, evals)) in enumerate(zip(labels[:len(curves)], curves, strict=True)):
        color = f"C{i % 10}"
        if losses:
            steps, values = zip(*losses, strict=True)
            # markers too: a run of one or two logged steps is otherwise an invisible line
            ax_loss.plot(steps, values, color=color, lw=1.2, label=label, marker="o" if len(steps) < 3 else None,
                         ms=3)
        if evals:
            epochs = [e["epoch"] for e in evals]
            ax_acc.plot(epochs, [e["valid"] for e in evals], color=color, marker="o", ms=3, label=f"{label} valid")
            ax_acc.plot(epochs, [e["test"] for e in evals], color=color, ls="--", marker="x", ms=3,
                        label=f"{label} test")
    for i, (label, (_, (valid, test))) in enumerate(zip(labels[len(curves):], references, strict=True), len(curves)):
        color = f"C{i % 10}"
        ax_acc.axhline(valid, color=color, lw=1.2, label=f"{label} valid (fixed features)")
        ax_acc.axhline(test, color=color, lw=1.2, ls="--", label=f"{label} test (fixed features)")
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (valid solid, test dashed)")
    _integer_ticks(ax_loss.xaxis, ax_acc.xaxis)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if missing:
        fig.suptitle("not drawn: " + "; ".join(missing), fontsize=8)
    return fig


def png_path(out: str | Path) -> Path:
    """``out``, with ``.png`` added when it has no extension (``--out plot`` writes ``plot.png``)."""
    out = Path(out)
    return out if out.suffix else out.with_name(out.name + ".png")


def plot_runs(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """Loss by step and valid / test accuracy by epoch of one or more run folders, in one PNG
    (:func:`runs_figure`). ``out`` defaults to ``RUN_DIR/curves.png`` for one run; ``.png`` is
    added to an ``out`` without an extension."""
    runs = [Path(r) for r in run_dirs]
    if out is None:
        if len(runs) > 1:
            raise FastleadingError("plot: several runs need --out PATH.png")
        if runs and runs[0].is_dir():
            out = runs[0] / "curves.png"
    fig = runs_figure(runs)
    assert out is not None  # runs_figure refused a lone path that is no run folder
    return _save(fig, png_path(out))


# -------------------------------------------------------------------------------- studies
def plot_valid_curves(curves: dict[str, dict[int, dict]], no_history: list[str], path: str | Path,
                      title: str = "", ylabel: str = "validation accuracy") -> Path:
    """Validation accuracy (or ``ylabel``) by epoch per method: ``curves[method][epoch] = {"mean", "std", "n"}``,
    drawn as the mean with a ± std band; methods in ``no_history`` are named, not drawn."""
    fig = _figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (method, by_epoch) in enumerate(curves.items()):
        epochs = sorted(by_epoch)
        mean = [by_epoch[e]["mean"] for e in epochs]
        std = [by_epoch[e]["std"] for e in epochs]
        n = max(by_epoch[e]["n"] for e in epochs)
        color = f"C{i % 10}"
        ax.plot(epochs, mean, color=color, marker="o", ms=3, label=f"{method} (n={n})")
        low = [m - s for m, s in zip(mean, std, strict=True)]
        high = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(epochs, low, high, color=color, alpha=0.2, lw=0)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title or f"{ylabel} (mean ± std over runs)")
    _integer_ticks(ax.xaxis)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.6, "no method has a per-epoch validation history", ha="center", va="center",
                transform=ax.transAxes)
    if no_history:
        ax.text(0.01, 0.01, "no history (fixed features, trained in one go): " + ", ".join(no_history),
                ha="left", va="bottom", fontsize=8, transform=ax.transAxes)
    return _save(fig, path)


def plot_test_acc(results: dict[str, dict[str, dict]], columns: dict[str, str], path: str | Path,
                  title: str = "", ylabel: str = "test accuracy") -> Path:
    """Grouped bars of test accuracy (or ``ylabel``: AUC, MRR) per method with ± std error bars:
    ``results[method][key] = {"mean", "std", "values"}`` for each ``key`` of ``columns``
    (key -> legend label); each run's value is drawn as a dot on its bar (:func:`scores_figure`)."""
    return _save(scores_figure(results, columns, title, ylabel), path)


def scores_figure(results: dict[str, dict[str, dict]], columns: dict[str, str], title: str = "",
                    ylabel: str = "test accuracy"):
    """The figure of :func:`plot_test_acc`: the title above the axes (wrapped to the figure's
    width), the legend below them, so neither covers the other or the bars."""
    fig = _figure(figsize=(max(6.0, 1.6 * len(results) * max(1, len(columns)) ** 0.5 + 2), 4.5),
                  layout="constrained")
    ax = fig.subplots()
    methods = list(results)
    width = 0.8 / max(1, len(columns))
    for j, (key, label) in enumerate(columns.items()):
        xs, means, stds = [], [], []
        for i, method in enumerate(methods):
            ms = results[method].get(key)
            if ms is None:
                continue
            x = i - 0.4 + width * (j + 0.5)
            xs.append(x)
            means.append(ms["mean"])
            stds.append(ms["std"])
            ax.plot([x] * len(ms["values"]), ms["values"], "k.", ms=4, alpha=0.7, zorder=3)
        ax.bar(xs, means, width * 0.9, yerr=stds, capsize=3, color=f"C{j % 10}", label=label, zorder=2)
    ax.set_xticks(range(len(methods)), methods)
    ax.set(ylabel=ylabel)
    fig.suptitle(title or f"{ylabel} (mean ± std over runs; dots: runs)", wrap=True)
    ax.grid(alpha=0.3, axis="y")
    if columns:
        fig.legend(fontsize=8, loc="outside lower center", ncols=min(len(columns), 3))
    return fig
