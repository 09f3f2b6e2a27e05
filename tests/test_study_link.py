"""`fastleading study --task link` on the synthetic TAG with a tiny LM (CPU): AUC / MRR per method
and metric in the results JSON equal to the run folders' numbers, the markdown table, the PNGs,
resume, and the CiteSeer link preset."""

import json
import statistics
from pathlib import Path

import pytest
from test_study import assert_png, pct, run_preset, study_args
from tiny_models import save_tiny_model

from fastleading.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SPLITS = ["10-30-60", "85-5-10"]
RUNS = [f"{m}-{s}-seed{seed}" for seed in (0, 1) for s in SPLITS for m in ("leading", "shallow")]
GROUPS = [f"{m} {s}" for s in ("10/30/60", "85/5/10") for m in ("leading", "shallow")]


def link_args(root: Path, model: str) -> list[str]:
    args = study_args(root, model, "model.link_dim=8", "data.link_eval_negatives=20", "data.synthetic_nodes=150",
                      "data.synthetic_words=10", "data.max_length=12")
    args[args.index("--downstream") + 1] = "gcn"
    return args + ["--task", "link", "--splits", "10/30/60,85/5/10"]


@pytest.fixture(scope="module")
def study(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("study_link")
    model = save_tiny_model(root / "bert", "bert", hidden=16, layers=1)
    assert main(link_args(root, model)) == 0
    return root, model


def test_link_study_writes_auc_mrr_per_method_table_and_plots(study):
    root, _ = study
    out = root / "out"
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "link" and result["metrics"] == {"auc": "AUC", "mrr": "MRR"}
    assert [r["name"] for r in result["runs"]] == RUNS
    for run in result["runs"]:
        cfg = run["config"]
        assert cfg["train"]["task"] == "link" and cfg["train"]["method"] == run["method"]
        assert cfg["train"]["seed"] == run["seed"] == cfg["data"]["link_seed"]
        assert cfg["data"]["link_split"] == run["split"] and run["split"] in ("10/30/60", "85/5/10")
        summary = json.loads((out / run["run_dir"] / "summary.json").read_text())
        assert run["summary"] == summary and summary["task"] == "link"
        gcn = json.loads((out / run["run_dir"] / "downstream-link-gcn.json").read_text())
        assert run["downstream"]["gcn"] == gcn
    # the results: per method and split ratio (two ratios are two tasks: never pooled) and
    # metric, the run folders' numbers, in run order
    assert list(result["results"]) == GROUPS
    for group in GROUPS:
        method, split = group.split()
        mine = [r for r in result["runs"] if r["method"] == method and r["split"] == split]
        summaries = [json.loads((out / r["run_dir"] / "summary.json").read_text()) for r in mine]
        gcns = [json.loads((out / r["run_dir"] / "downstream-link-gcn.json").read_text()) for r in mine]
        entry = result["results"][group]
        assert entry["runs"] == 2 and (entry["method"], entry["split"]) == (method, split)
        for metric in ("auc", "mrr"):
            tests = [s[f"test_{metric}"] for s in summaries]
            assert entry[f"head_{metric}"]["values"] == tests
            assert entry[f"head_{metric}"]["mean"] == pytest.approx(statistics.mean(tests))
            assert entry[f"head_{metric}"]["std"] == pytest.approx(statistics.stdev(tests))
            assert entry[f"head_valid_{metric}"]["values"] == [s[f"best_valid_{metric}"] for s in summaries]
            assert entry[f"gcn_{metric}"]["values"] == [g[f"test_{metric}"] for g in gcns]
    # the table: one column group per metric, mean ± sample std in %
    lines = (out / "table.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| method |"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "method", "runs", "head valid AUC", "head test AUC", "head valid MRR", "head test MRR",
        "gcn test AUC", "gcn test MRR", "train wall s"]
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in GROUPS and len(cells) == 9:
            rows[cells[0]] = cells
    assert list(rows) == GROUPS
    for group, cells in rows.items():
        method, split = group.split()
        mine = [r for r in result["runs"] if r["method"] == method and r["split"] == split]
        assert cells[1] == "2"
        assert cells[2] == pct([r["summary"]["best_valid_auc"] for r in mine])
        assert cells[3] == pct([r["summary"]["test_auc"] for r in mine])
        assert cells[4] == pct([r["summary"]["best_valid_mrr"] for r in mine])
        assert cells[5] == pct([r["summary"]["test_mrr"] for r in mine])
        assert cells[6] == pct([r["downstream"]["gcn"]["test_auc"] for r in mine])
        assert cells[7] == pct([r["downstream"]["gcn"]["test_mrr"] for r in mine])
    # the validation curve: the history's valid_mrr by epoch
    table = (out / "table.md").read_text()
    assert "Validation MRR (%) of the built-in head by epoch" in table
    assert list(result["valid_by_epoch"]) == ["leading 10/30/60", "leading 85/5/10"]  # shallow: no history
    for split in ("10/30/60", "85/5/10"):
        leading = [r for r in result["runs"] if r["method"] == "leading" and r["split"] == split]
        for epoch in (0, 1):  # 0: the head warm-up's best epoch (the frozen LM), 1: after fine-tuning
            curve = result["valid_by_epoch"][f"leading {split}"][str(epoch)]
            assert curve["n"] == 2 and curve["values"] == [
                next(h for h in r["summary"]["history"] if h["epoch"] == epoch)["valid_mrr"] for r in leading]
    for name in ("valid_curves.png", "test_metrics.png"):
        assert_png(out / name)
    assert not (out / "test_acc.png").exists()


def test_link_study_resumes_without_training_again(study, capsys):
    root, model = study
    out = root / "out"
    watched = [p for run in RUNS for p in (out / "runs" / run).glob("*.json")]
    before = {p: p.stat().st_mtime_ns for p in watched}
    first = json.loads((out / "results.json").read_text())
    args = [a for a in link_args(root, model) if a != "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert printed.count("(reused,") == len(RUNS) and "(trained," not in printed
    assert "head test AUC" in printed and "gcn test MRR" in printed
    again = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in again["runs"]] == ["reused"] * len(RUNS)
    assert again["results"] == first["results"]


def test_task_from_the_config_and_bad_link_split(study, capsys):
    root, model = study
    # train.task=link in the overrides, no --task: the same study (every run reused)
    args = [a for a in link_args(root, model) if a not in ("--task", "link")] + ["--override", "train.task=link"]
    assert main(args) == 0
    assert json.loads((root / "out" / "results.json").read_text())["task"] == "link"
    capsys.readouterr()
    bad = link_args(root, model)
    bad[bad.index("--splits") + 1] = "50/50/10"
    assert main(bad) == 2
    assert "link_split" in capsys.readouterr().err


def test_citeseer_link_preset_is_a_call_of_the_study(tmp_path, monkeypatch, capsys):
    base, out_dir, kw = run_preset("study_link_citeseer.py", [
        "--seeds", "2", "--epochs", "7", "--max-length", "32", "--max-steps", "5", "--methods", "leading,shallow",
        "--override", "model.num_iters=10"], tmp_path, monkeypatch)
    assert kw["methods"] == ["leading", "shallow"] and kw["seeds"] == 2 and kw["task"] == "link"
    assert kw["splits"] == ["10/30/60", "85/5/10"] and kw["downstream"] == ["gcn"]
    assert (base.data.dataset, base.data.max_length, base.train.epochs, base.train.max_steps,
            base.model.num_iters, base.train.task) == ("citeseer-tag", 32, 7, 5, 10, "link")
    assert "| method |" in capsys.readouterr().out


def test_the_validation_curve_is_the_metric_that_selects_the_epoch():
    from fastleading.commands.study import aggregate, groups, resolve_task
    from fastleading.config import Config, apply_overrides

    history = [{"epoch": 1, "valid_auc": 0.9, "valid_mrr": 0.3}]
    run = {"method": "leading", "split_pattern": "10/30/60", "downstream": {},
           "summary": {"best_valid_auc": 0.9, "test_auc": 0.8, "best_valid_mrr": 0.3, "test_mrr": 0.2,
                       "history": history}}
    for select, want in (("mrr", 0.3), ("auc", 0.9)):
        task = resolve_task("link", apply_overrides(Config(), [f"train.link_select={select}"]))
        _, curves = aggregate(task, [run], groups(["leading"], ["10/30/60"]), [])
        assert curves["leading"]["1"]["values"] == [want] and task.curve_label == select.upper()
