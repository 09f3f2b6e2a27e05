"""`fastleading study` and `fastleading plot` on the synthetic TAG with a tiny LM (CPU):
results JSON, markdown table, PNGs, resume, the missing-matplotlib path, and the CiteSeer preset."""

import importlib.util
import json
import re
import statistics
import sys
from pathlib import Path

import pytest
from tiny_models import save_tiny_model

from fastleading.cli import main
from fastleading.commands import study as study_module
from fastleading.commands.plot import PLOT_HINT
from fastleading.commands.study import StudyOutput

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# tiny tensors: one intra-op thread for the whole module (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

RUNS = ["leading-low-0-seed0", "shallow-low-0-seed0", "leading-low-0-seed1", "shallow-low-0-seed1"]


def study_args(root: Path, model: str, *extra: str) -> list[str]:
    # tests/test_train.py's small_config, shortened: 1 epoch, few propagation / GNN iterations
    return ["study", "--dataset", "synthetic", "--methods", "leading,shallow", "--seeds", "2",
            "--downstream", "gcn,sage", "--out", str(root / "out"), "--model", model, "--epochs", "1",
            "--device", "cpu", "--quiet",
            "--override", f"data.cache_dir={root / 'cache'}", "--override", "data.synthetic_nodes=240",
            "data.synthetic_classes=3", "data.synthetic_words=12", "data.max_length=16", "train.batch_size=20",
            "train.eval_batch_size=240", "train.log_every=1", "model.head_hidden=16", "model.eval_iters=5",
            # the bank fill stays on: LEADING's head warm-up (auto) trains on it
            "train.downstream_epochs=5", *extra]


@pytest.fixture(scope="module")
def study(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("study")
    model = save_tiny_model(root / "bert", "bert", hidden=16, layers=1)
    assert main(study_args(root, model)) == 0
    return root, model


def assert_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and 300 <= im.width <= 3000 and 200 <= im.height <= 3000, (path, im.size)


def pct(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * std:.1f}"


def test_study_writes_results_json_table_and_plots(study):
    root, _ = study
    out = root / "out"
    result = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in result["runs"]] == RUNS
    for run in result["runs"]:
        assert run["config"]["train"]["method"] == run["method"]
        assert run["config"]["train"]["seed"] == run["seed"] and run["config"]["data"]["split"] == "low-0"
        assert run["summary"] == json.loads((out / run["run_dir"] / "summary.json").read_text())
        assert set(run["downstream"]) == {"gcn", "sage"}
        for gnn, d in run["downstream"].items():
            assert d["gnn"] == gnn and 0.0 <= d["test"] <= 1.0
    assert bool(result["runs"][0]["summary"].get("history")) and not result["runs"][1]["summary"].get("history")
    # the table's numbers are mean ± sample std of the runs in the JSON
    rows = {}
    for line in (out / "table.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("leading", "shallow") and len(cells) == 7:
            rows[cells[0]] = cells
    assert set(rows) == {"leading", "shallow"}
    for method, cells in rows.items():
        mine = [r for r in result["runs"] if r["method"] == method]
        assert cells[1] == "2"
        assert cells[2] == pct([r["summary"]["best_valid_acc"] for r in mine])
        assert cells[3] == pct([r["summary"]["test_acc"] for r in mine])
        assert cells[4] == pct([r["downstream"]["gcn"]["test"] for r in mine])
        assert cells[5] == pct([r["downstream"]["sage"]["test"] for r in mine])
        assert result["results"][method]["head"]["values"] == [r["summary"]["test_acc"] for r in mine]
    # the fixed-feature method has no history: said in the table, not an error
    table = (out / "table.md").read_text()
    assert re.search(r"^shallow: fixed features.*no validation accuracy by epoch", table, re.M)
    assert "| leading |" in table.split("by epoch, mean over runs")[1]
    assert result["results"]["shallow"]["history"] is False and "shallow" not in result["valid_by_epoch"]
    assert result["valid_by_epoch"]["leading"]["1"]["n"] == 2
    for name in ("valid_curves.png", "test_acc.png"):
        assert_png(out / name)


def test_resume_skips_finished_runs_and_without_matplotlib_writes_json_and_table(study, monkeypatch, capsys):
    root, model = study
    out = root / "out"
    watched = [p for run in RUNS for p in (out / "runs" / run).glob("*.json")]
    before = {p: p.stat().st_mtime_ns for p in watched}
    for name in ("valid_curves.png", "test_acc.png", "results.json", "table.md"):
        (out / name).unlink()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib...` raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    args = [a for a in study_args(root, model) if a != "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in watched} == before  # summaries, configs, downstream results untouched
    assert printed.count("(reused,") == 4 and "(trained," not in printed
    assert [line for line in printed.splitlines() if "matplotlib" in line] == [f"plots skipped: {PLOT_HINT}"]
    assert (out / "results.json").is_file() and (out / "table.md").is_file()
    assert not (out / "valid_curves.png").exists() and not (out / "test_acc.png").exists()
    assert [r["status"] for r in json.loads((out / "results.json").read_text())["runs"]] == ["reused"] * 4


def test_a_run_killed_before_its_summary_continues_from_its_checkpoint(study, capsys):
    root, model = study
    run = root / "out" / "runs" / RUNS[0]
    history = json.loads((run / "summary.json").read_text())["history"]
    (run / "summary.json").unlink()
    stale = (run / "downstream-gcn.json").stat().st_mtime_ns
    untouched = {p: p.stat().st_mtime_ns for name in RUNS[1:] for p in (root / "out" / "runs" / name).glob("*.json")}
    assert main(study_args(root, model)) == 0
    capsys.readouterr()
    record = json.loads((root / "out" / "results.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["resumed", "reused", "reused", "reused"]
    assert record["runs"][0]["summary"]["history"] == history  # no step trained again
    assert (run / "downstream-gcn.json").stat().st_mtime_ns != stale  # downstream results of a re-run are redone
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched


def test_a_run_folder_of_another_config_stops_the_study_before_training(study, capsys):
    root, model = study
    assert main(study_args(root, model, "model.alpha=0.2")) == 2
    err = capsys.readouterr().err
    assert "leading-low-0-seed0: holds a run of another config (model.alpha: 0.1 there, 0.2 here)" in err
    assert len(err.strip().splitlines()) == 1


def test_plot_draws_run_curves(study, tmp_path, monkeypatch, capsys):
    root, _ = study
    runs = root / "out" / "runs"
    assert main(["plot", str(runs / RUNS[0])]) == 0
    assert_png(runs / RUNS[0] / "curves.png")
    both = tmp_path / "both.png"
    assert main(["plot", str(runs / RUNS[0]), str(runs / RUNS[2]), str(runs / RUNS[1]), "--out", str(both)]) == 0
    assert_png(both)
    capsys.readouterr()
    # a folder with neither metrics.jsonl nor a fixed-feature summary: one line, no traceback
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert "nothing to draw: empty (no metrics.jsonl, no fixed-feature summary.json)" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["plot", str(runs / RUNS[0]), "--out", str(tmp_path / "no.png")]) == 2
    assert capsys.readouterr().err.strip() == f"fastleading: error: {PLOT_HINT}"
    assert not (tmp_path / "no.png").exists()


def test_plot_draws_a_leading_run_and_a_pretrained_run_together(study, tmp_path, capsys):
    """A fixed-feature run writes no per-step metrics: its summary's valid / test accuracy are
    drawn as reference lines beside the LEADING run's curves; ``--out plot`` writes plot.png."""
    from fastleading.commands.plot import read_metrics, runs_figure

    root, model = study
    leading = root / "out" / "runs" / RUNS[0]
    pretrained = tmp_path / "pretrained"
    args = study_args(root, model)
    overrides = [a for a in args[args.index("--quiet") + 1:] if a != "--override"]
    assert main(["train", "--method", "pretrained", "--dataset", "synthetic", "--model", model, "--device", "cpu",
                 "--quiet", "--out", str(pretrained), *overrides]) == 0
    assert not (pretrained / "metrics.jsonl").exists()
    summary = json.loads((pretrained / "summary.json").read_text())

    fig = runs_figure([leading, pretrained])
    _, ax_acc = fig.axes
    lines = {line.get_label(): list(line.get_ydata()) for line in ax_acc.get_lines()}
    _, evals = read_metrics(leading)
    assert lines[f"{RUNS[0]} valid"] == [e["valid"] for e in evals]
    assert lines[f"{RUNS[0]} test"] == [e["test"] for e in evals]
    assert set(lines["pretrained valid (fixed features)"]) == {summary["best_valid_acc"]}
    assert set(lines["pretrained test (fixed features)"]) == {summary["test_acc"]}

    capsys.readouterr()
    assert main(["plot", str(leading), str(pretrained), "--out", str(tmp_path / "plot")]) == 0
    assert capsys.readouterr().out.strip() == f"curves: {tmp_path / 'plot.png'}"
    assert_png(tmp_path / "plot.png")
    assert not (tmp_path / "plot").exists()


def run_preset(script: str, argv: list[str], tmp_path: Path, monkeypatch) -> tuple:
    """Run ``benchmarks/<script>`` with ``argv`` (plus --root, --runs, --out under ``tmp_path``) and
    a stand-in for run_study; returns run_study's (base, out_dir, kwargs)."""
    spec = importlib.util.spec_from_file_location(
        Path(script).stem, Path(__file__).resolve().parents[1] / "benchmarks" / script)
    preset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preset)
    (tmp_path / "data" / "citeseer-tag").mkdir(parents=True)
    calls = []

    def fake_run_study(base, out_dir, **kw):
        calls.append((base, out_dir, kw))
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "results.json").write_text('{"device": "cpu", "date": "2026-01-01"}\n')
        (Path(out_dir) / "table.md").write_text("| method |\n")
        return StudyOutput({"device": "cpu", "date": "2026-01-01"}, Path(out_dir), Path(out_dir) / "results.json",
                           Path(out_dir) / "table.md")

    monkeypatch.setattr(study_module, "run_study", fake_run_study)
    monkeypatch.setattr(sys, "argv", [script, "--root", str(tmp_path / "data"), *argv, "--runs", str(tmp_path / "runs"),
                                      "--out", str(tmp_path / "r.json")])
    assert preset.main() == 0
    (base, out_dir, kw), = calls
    assert out_dir == str(tmp_path / "runs")
    assert (tmp_path / "r.json").read_text() == (tmp_path / "runs" / "results.json").read_text()
    return base, out_dir, kw


def test_citeseer_preset_is_a_call_of_the_study(tmp_path, monkeypatch, capsys):
    base, out_dir, kw = run_preset("study_citeseer.py", ["--seeds", "2", "--epochs", "7", "--max-length", "32",
                                                         "--methods", "leading,shallow", "--override",
                                                         "model.num_iters=4"], tmp_path, monkeypatch)
    assert kw["methods"] == ["leading", "shallow"] and kw["seeds"] == 2
    assert kw["splits"] == ["low-{seed}"] and kw["downstream"] == ["gcn"]
    assert (base.data.dataset, base.data.max_length, base.train.epochs, base.model.num_iters) == \
        ("citeseer-tag", 32, 7, 4)
    # runs stop on patience; a training flag left out keeps the config's default
    from fastleading.config import Config

    assert base.train.patience == 3
    assert (base.train.eval_every, base.train.lr_lm, base.train.head_warmup_epochs) == \
        (Config().train.eval_every, Config().train.lr_lm, Config().train.head_warmup_epochs)
    assert "| method |" in capsys.readouterr().out


def test_one_run_shows_its_value_without_a_spread():
    from fastleading.commands.study import markdown_table, mean_std

    def entry(values):
        return {"runs": len(values), "head": mean_std(values), "head_valid": mean_std(values),
                "wall_s": mean_std([12.0 * v for v in values]), "history": True}

    table = markdown_table({"leading": entry([0.71]), "shallow": entry([0.70, 0.74])}, {}, [], "header")
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "±" not in rows["leading"] and "| 71.0 | 71.0 | 9 |" in rows["leading"]
    assert "| 72.0 ± 2.8 | 72.0 ± 2.8 | 9 ± 0 |" in rows["shallow"]


def test_study_takes_the_data_flags_train_has(monkeypatch):
    """`study --root`, `--max-length` and `--cache-dir` were unknown flags (train has them)."""
    from fastleading.errors import FastleadingError

    seen = {}

    def fake_run_study(base, out, **kw):
        seen["base"] = base
        raise FastleadingError("stop here")

    monkeypatch.setattr(study_module, "run_study", fake_run_study)
    assert main(["study", "--quiet", "--dataset", "custom", "--root", "mydata", "--max-length", "24",
                 "--cache-dir", "cache", "train.batch_size=8"]) == 2
    data = seen["base"].data
    assert (data.dataset, data.root, data.max_length, data.cache_dir) == ("custom", "mydata", 24, "cache")
    assert seen["base"].train.batch_size == 8


def test_the_presets_default_data_root_is_shared_data_beside_the_repository(tmp_path, monkeypatch):
    """benchmarks/study_*.py read ../shared/data beside the repository from any directory (the
    package's move into commands/ had left the default one level too shallow: <repo>/shared/data)."""
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    args = study_module.preset_parser("x", ["leading"], runs="r", stem="s").parse_args([])
    assert Path(args.root) == repo.parent / "shared" / "data"
