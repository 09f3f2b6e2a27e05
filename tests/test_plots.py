"""Pictures a user reads: the study's test-score bars keep their legend off the title, and a run
shorter than train.log_every still has a loss curve."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from custom_graph import train_args, write_custom_graph  # noqa: E402
from tiny_models import save_tiny_model  # noqa: E402

from fastleading.cli import main  # noqa: E402
from fastleading.commands import plot  # noqa: E402


def drawn(monkeypatch, call):
    """The figure ``call()`` saves, drawn on an Agg canvas (for text extents)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figures = []
    real_save = plot._save
    monkeypatch.setattr(plot, "_save", lambda fig, path: (figures.append(fig), real_save(fig, path))[1])
    call()
    fig = figures[-1]
    FigureCanvasAgg(fig).draw()
    return fig


@pytest.mark.parametrize("methods, columns", [(2, 2), (4, 1), (2, 6)])  # (2, 2): a two-method study, one GNN
def test_the_test_score_legend_covers_neither_the_title_nor_the_bars(monkeypatch, tmp_path, methods, columns):
    results = {m: {f"k{j}": {"mean": 0.8 - 0.05 * j, "std": 0.01, "values": [0.79, 0.81]} for j in range(columns)}
               for m in ("leading", "supervised", "pretrained", "shallow")[:methods]}
    labels = {f"k{j}": f"downstream gnn-{j}" for j in range(columns)}
    title = "citeseer-tag node-classification: test accuracy (mean ± std; dots: runs)"
    fig = drawn(monkeypatch, lambda: plot.plot_test_acc(results, labels, tmp_path / "t.png", title))
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    titles = [t for t in fig.findobj(lambda a: getattr(a, "get_text", None) and a.get_text() == title)]
    assert len(titles) == 1
    box = titles[0].get_window_extent(renderer)
    assert not legend.overlaps(box)  # failed before: the legend sat on the title's right end
    assert box.x0 >= 0 and box.x1 <= fig.bbox.x1  # the title is inside the picture (it was cut off on the left)
    assert not legend.overlaps(fig.axes[0].get_window_extent(renderer))


def test_a_run_shorter_than_log_every_has_a_loss_curve(monkeypatch, tmp_path):
    write_custom_graph(tmp_path / "data")
    model = save_tiny_model(tmp_path / "bert", "bert", hidden=16, layers=1)
    run = tmp_path / "run"
    assert main(["train", "--quiet", "--out", str(run),
                 *train_args(tmp_path / "data", tmp_path / "cache", model, "train.log_every=10")]) == 0
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 6]  # the first and the last step (failed before: step 1 only)
    fig = drawn(monkeypatch, lambda: plot.plot_runs([run]))
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [1, 6]
    # one logged step alone is drawn as a marker, not as an invisible line of one point
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "epoch": 0, "loss": 1.0}) + "\n")
    fig = drawn(monkeypatch, lambda: plot.plot_runs([run]))
    (line,) = fig.axes[0].get_lines()
    assert line.get_marker() not in (None, "None", "", " ")
