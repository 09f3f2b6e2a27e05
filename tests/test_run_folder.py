"""Run folders: a new run never lands on an old one, --overwrite starts clean, --resume takes the
run's settings and the changes that may apply (a finished run extended), train.keep and
`fastleading clean` keep less on disk (tiny runs on a small custom dataset, CLI in process)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from custom_graph import custom_graph_and_model, train_args

from fastleading.cli import main
from fastleading.config import Config, apply_overrides
from fastleading.run import folder as runfolder
from fastleading.trainer.optim import build_optimization, lr_lambda

STEPS_PER_EPOCH = 3  # 36 training nodes of write_custom_graph(60) in batches of 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return custom_graph_and_model(tmp_path_factory.mktemp("run-folder"))


def train(setup, out: Path, *extra: str) -> int:
    root, model = setup
    return main(["train", "--quiet", "--out", str(out), *train_args(root / "data", root / "cache", model, *extra)])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_run_folder_is_refused_unless_resumed_or_overwritten(setup, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(setup, run) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert train(setup, run) == 2  # failed before: exit 0, the run started over and appended to metrics.jsonl
    line = one_error_line(capsys)
    assert str(run) in line and "--resume" in line and "--overwrite" in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched
    # made from the old run by predict, plot and its trackers: stale beside a new run (issue 25)
    derived = ["curves.png", "predictions.csv", "link-scores.csv", "wandb-run-id", "tensorboard/events.out.1",
               "wandb/offline-run-1/run.wandb"]
    for name in derived + ["notes.txt"]:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(b"of the old run")
    assert main(["export", "--quiet", "--run", str(run), "--out", str(run / "emb.npy")]) == 0
    capsys.readouterr()
    root, model = setup  # not --quiet: the notice is on stderr
    assert main(["train", "--out", str(run), *train_args(root / "data", root / "cache", model, "--overwrite",
                                                            "--epochs", "1")]) == 0
    # exports you named stay, but a line says they are the old run's (they went unmentioned)
    assert "emb.npy kept, made from the best.pt of the run before it was replaced" in capsys.readouterr().err
    steps = [r["step"] for r in metrics(run) if "loss" in r]
    assert steps == list(range(1, STEPS_PER_EPOCH + 1))  # a new file: the old run's lines are gone
    assert json.loads((run / "summary.json").read_text())["steps"] == STEPS_PER_EPOCH
    assert not any((run / name.split("/")[0]).exists() for name in derived)
    assert (run / "notes.txt").read_bytes() == b"of the old run"  # a file no run command makes stays


def test_make_train_overwrites_its_default_folder():
    recipe = re.search(r"^train:.*\n\t(.*)$", (Path(__file__).parents[1] / "Makefile").read_text(), re.M).group(1)
    assert "train --out runs/default" in recipe and "--overwrite" in recipe.split()  # run twice, it replaces it


def test_resume_extends_a_finished_run_on_the_schedule_of_its_new_length(setup, tmp_path, capsys):
    run, straight = tmp_path / "run", tmp_path / "straight"
    assert train(setup, run, "--epochs", "1") == 0
    assert main(["train", "--quiet", "--resume", str(run), "--epochs", "2"]) == 0  # failed before: --epochs ignored
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 * STEPS_PER_EPOCH and [h["epoch"] for h in summary["history"]] == [1, 2]
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 2
    assert [r["step"] for r in metrics(run) if "loss" in r] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    # after the resume, the rates are those of a run started with 2 epochs (the schedule follows train.epochs)
    assert train(setup, straight) == 0
    rates = {r["step"]: r["lr_lm"] for r in metrics(straight) if "lr_lm" in r}
    extended = {r["step"]: r["lr_lm"] for r in metrics(run) if "lr_lm" in r and r["step"] > STEPS_PER_EPOCH}
    assert extended and all(rates[s] == pytest.approx(lr, rel=1e-12) for s, lr in extended.items())


def test_resume_refuses_a_setting_that_changes_the_run_in_one_line(setup, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(setup, run, "--epochs", "1") == 0
    config = (run / "config.json").read_bytes()
    capsys.readouterr()
    assert main(["train", "--quiet", "--resume", str(run), "--batch-size", "8"]) == 2  # failed before: exit 0
    line = one_error_line(capsys)
    assert "train.batch_size=8" in line and "train.batch_size=16" in line and "train.epochs" in line
    assert (run / "config.json").read_bytes() == config
    assert main(["train", "--quiet", "--resume", str(run), "--out", str(tmp_path / "other")]) == 2


def test_the_schedule_follows_the_new_length_from_the_first_step_after_a_resume():
    model = torch.nn.ModuleDict({"encoder": torch.nn.Linear(3, 3), "head": torch.nn.Linear(3, 2)})
    short, long = (apply_overrides(Config(), [f"train.epochs={e}", "train.lr_lm=0.1"]) for e in (1, 3))
    optim = build_optimization(model, short, 10, torch.device("cpu"), _fp32(), None)
    for _ in range(10):  # the whole short schedule: linear decay to 0
        optim.optimizer.step()
        optim.scheduler.step()
    assert optim.optimizer.param_groups[0]["lr"] == 0.0
    resumed = build_optimization(model, long, 30, torch.device("cpu"), _fp32(), None)
    resumed.load_state_dict(optim.state_dict())
    assert resumed.optimizer.param_groups[0]["lr"] == 0.0  # the saved rate: the next step would not move
    resumed.follow_schedule()
    expected = 0.1 * lr_lambda(long, 30)(10)
    assert expected > 0 and resumed.optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)


def _fp32():
    from fastleading.engine.precision import resolve_precision

    return resolve_precision("fp32", "fp32", torch.device("cpu"))


def test_keep_best_removes_the_checkpoint_and_a_resume_says_why(setup, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(setup, run, "--epochs", "1", "train.keep=best") == 0
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "metrics.jsonl", "summary.json"]
    capsys.readouterr()
    assert main(["train", "--quiet", "--resume", str(run), "--epochs", "2"]) == 2
    assert "cannot be resumed or extended" in one_error_line(capsys)


def test_a_finished_run_drops_its_optimizer_state_unless_asked_and_still_predicts_exports_and_extends(
        setup, tmp_path, capsys):
    """A finished run kept AdamW's two moments per weight in checkpoint.pt (two thirds of it)
    for good. Now they go once the run has finished (train.keep_optimizer_state=false), stay when
    asked and in a run that train.max_steps stopped (its resume continues exactly); the run still
    predicts and exports, and a resume that extends it says in one line that the moments start
    afresh."""
    from fastleading.run import checkpoint

    def optimizer_state(run: Path) -> dict:
        return checkpoint.load(run / "checkpoint.pt")["optim"]["optimizer"]["state"]

    dropped, kept, stopped = tmp_path / "dropped", tmp_path / "kept", tmp_path / "stopped"
    assert train(setup, dropped, "--epochs", "1") == 0
    assert train(setup, kept, "--epochs", "1", "train.keep_optimizer_state=true") == 0
    assert train(setup, stopped, "--epochs", "1", "train.max_steps=2") == 0
    assert optimizer_state(dropped) == {}  # failed before: the moments of every weight
    assert checkpoint.load(dropped / "checkpoint.pt")[checkpoint.OPTIMIZER_STATE_DROPPED] is True
    moments = optimizer_state(kept)
    assert moments and all(set(s) >= {"exp_avg", "exp_avg_sq"} for s in moments.values())
    assert checkpoint.OPTIMIZER_STATE_DROPPED not in checkpoint.load(kept / "checkpoint.pt")
    assert json.loads((stopped / "summary.json").read_text())["stopped"] == "max_steps" and optimizer_state(stopped)
    moment_bytes = sum(t.numel() * t.element_size() for s in moments.values() for t in s.values()
                       if isinstance(t, torch.Tensor))
    saved = (kept / "checkpoint.pt").stat().st_size - (dropped / "checkpoint.pt").stat().st_size
    assert saved >= moment_bytes
    # the rest of the checkpoint is the kept one's: weights, bank, schedule
    a, b = (checkpoint.load(r / "checkpoint.pt") for r in (dropped, kept))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert a["optim"]["scheduler"] == b["optim"]["scheduler"]

    assert main(["predict", "--quiet", "--run", str(dropped)]) == 0
    assert main(["export", "--quiet", "--run", str(dropped), "--out", str(tmp_path / "emb.npy")]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(dropped), "--epochs", "2"]) == 0  # not --quiet: the notice shows
    notices = [line for line in capsys.readouterr().err.splitlines() if "optimizer state" in line]
    assert len(notices) == 1 and "dropped" in notices[0] and "afresh" in notices[0], notices
    assert json.loads((dropped / "summary.json").read_text())["steps"] == 2 * STEPS_PER_EPOCH
    assert optimizer_state(dropped) == {}  # finished again: dropped again


def test_clean_removes_the_checkpoint_of_finished_runs_only(setup, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(setup, run, "--epochs", "1") == 0
    size = (run / "checkpoint.pt").stat().st_size
    best = (run / "best.pt").read_bytes()
    capsys.readouterr()
    assert main(["clean", str(run)]) == 0
    assert f"{size / 2**20:.1f} MiB" in capsys.readouterr().out
    assert not (run / "checkpoint.pt").exists() and (run / "best.pt").read_bytes() == best
    assert main(["clean", str(run)]) == 0 and "no checkpoint" in capsys.readouterr().out
    (run / "summary.json").unlink()  # an unfinished run: its checkpoint is what --resume needs
    assert main(["clean", str(run)]) == 2
    assert "has not finished" in one_error_line(capsys)


def test_a_run_killed_before_its_first_checkpoint_starts_over_with_a_new_metrics_file(setup, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(setup, run, "--epochs", "1") == 0
    (run / "checkpoint.pt").unlink()
    (run / "summary.json").unlink()
    with open(run / "metrics.jsonl", "a") as f:  # what the killed attempt logged
        f.write(json.dumps({"step": 99, "epoch": 0, "loss": 9.0}) + "\n")
    (run / "tensorboard").mkdir()  # and its trackers: a run that starts over must not mix their events in
    (run / "tensorboard" / "events.out.tfevents.1").write_bytes(b"the killed attempt")
    (run / "predictions.csv").write_text("id\n")
    assert main(["train", "--resume", str(run)]) == 0
    assert "starting it over" in capsys.readouterr().err
    assert not (run / "tensorboard").exists() and not (run / "predictions.csv").exists()
    assert [r["step"] for r in metrics(run) if "loss" in r] == list(range(1, STEPS_PER_EPOCH + 1))  # failed before


def test_config_changes_lists_every_differing_key():
    a = Config().to_dict()
    b = apply_overrides(Config(), ["train.epochs=5", "model.alpha=0.2"]).to_dict()
    assert runfolder.config_changes(a, b) == [("model.alpha", 0.1, 0.2), ("train.epochs", 3, 5)]
    assert runfolder.config_changes(a, b, ignore=("model.alpha",)) == [("train.epochs", 3, 5)]


def test_a_resume_that_changes_a_setting_writes_it_and_drops_the_old_summary_once_under_way(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    runfolder.start_run_folder(run, apply_overrides(Config(), ["train.epochs=1"]))
    config = (run / "config.json").read_bytes()
    (run / "checkpoint.pt").write_bytes(b"")
    (run / "summary.json").write_text("{}")
    (run / "predictions.csv").write_text("id\n")
    runfolder.check_resume(run, apply_overrides(Config(), ["train.epochs=1"]))  # nothing changes: nothing written
    assert (run / "summary.json").exists() and capsys.readouterr().err == ""
    runfolder.check_resume(run, apply_overrides(Config(), ["train.epochs=2"]))
    assert "resuming with train.epochs 1 -> 2" in capsys.readouterr().err
    assert (run / "config.json").read_bytes() == config and (run / "summary.json").exists()  # not yet
    runfolder.resume_run_folder(run, apply_overrides(Config(), ["train.epochs=2"]))  # the run is under way
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 2
    assert not (run / "summary.json").exists()  # until the resumed run ends, it is not finished (clean keeps it)
    assert not (run / "predictions.csv").exists()  # made from the old best.pt


def test_a_resume_that_fails_leaves_the_finished_run_as_it_was(setup, tmp_path, capsys):
    """`--resume R --epochs 3 data.cache_dir=/proc/forbidden` wrote the new config.json and
    deleted summary.json before failing with a raw traceback: the finished run was lost."""
    from fastleading.api import load_run

    run = tmp_path / "run"
    assert train(setup, run, "--epochs", "1") == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--quiet", "--resume", str(run), "--epochs", "3", "data.cache_dir=/proc/forbidden"]) == 2
    line = one_error_line(capsys)
    assert "/proc/forbidden" in line and "data.cache_dir" in line, line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert load_run(run).summary["steps"] == STEPS_PER_EPOCH


def test_a_run_folder_works_from_any_directory_after_a_move_and_takes_root(setup, tmp_path, monkeypatch, capsys):
    """config.json stored data.root as given ('data', relative to where train ran): predict,
    export and --resume from another directory failed ("data.root 'data' is not a folder"), and
    predict had no --root for data that moved."""
    import shutil

    root, model = setup
    made = tmp_path / "made"
    shutil.copytree(root / "data", made / "data")
    monkeypatch.chdir(made)
    assert main(["train", "--quiet", "--out", "runs/x", *train_args(Path("data"), Path("cache"), model,
                                                                      "--epochs", "1")]) == 0
    shutil.move(made / "runs" / "x", tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    run = "../moved"
    assert main(["predict", "--quiet", "--run", run]) == 0
    assert main(["export", "--quiet", "--run", run, "--out", "emb.npy"]) == 0
    assert main(["train", "--quiet", "--resume", run, "--epochs", "2"]) == 0
    assert json.loads((tmp_path / "moved" / "summary.json").read_text())["steps"] == 2 * STEPS_PER_EPOCH
    # the data moved too: one line naming data.root, then --root says where it is now
    shutil.move(made / "data", tmp_path / "data-now")
    capsys.readouterr()
    assert main(["predict", "--quiet", "--run", run]) == 2
    assert "data.root" in one_error_line(capsys)
    assert main(["predict", "--quiet", "--run", run, "--root", "../data-now", "--device", "cpu"]) == 0
    assert main(["export", "--quiet", "--run", run, "--root", "../data-now", "--out", "emb2.npy"]) == 0
    assert main(["train", "--quiet", "--resume", run, "--root", "../data-now", "--epochs", "3"]) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="the case of a machine without a GPU")
def test_a_run_trained_on_cuda_predicts_and_exports_on_a_cpu_machine_with_device_cpu(setup, tmp_path, capsys):
    """A run whose config.json says cuda could not be used on a machine without a GPU short of
    editing config.json. A copied run folder, its device set to cuda: without an override,
    predict, export and the Python API stop in one line saying how to choose the device (before
    any dataset or model loads); with --device cpu (device='cpu') they work."""
    import shutil

    from fastleading import FastleadingError, load_run

    made, run = tmp_path / "made", tmp_path / "gpu-run"
    assert train(setup, made, "--epochs", "1") == 0
    shutil.copytree(made, run)
    config = json.loads((run / "config.json").read_text())
    config["train"]["device"] = "cuda"
    (run / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    for argv in (["predict", "--quiet", "--run", str(run)],
                 ["export", "--quiet", "--run", str(run), "--out", str(tmp_path / "emb.npy")]):
        assert main(argv) == 2
        line = one_error_line(capsys)
        assert str(run) in line and "cuda" in line and "--device cpu" in line, line
        assert main([*argv, "--device", "cpu"]) == 0
    assert (run / "predictions.csv").is_file() and (tmp_path / "emb.npy").is_file()
    with pytest.raises(FastleadingError, match="device='cpu'"):
        load_run(run).predict()
    probs = load_run(run, device="cpu").predict().probs
    assert probs.shape[0] == 60 and torch.allclose(torch.as_tensor(probs).sum(1), torch.ones(60), atol=1e-5)


def test_config_json_stores_the_split_the_run_used_so_a_resume_may_name_it(setup, tmp_path, capsys):
    """config.json stored data.split '' while summary.json said 'given': `--resume R --split given`
    was refused as a change of data.split."""
    run = tmp_path / "run"
    assert train(setup, run, "--epochs", "1") == 0
    split = json.loads((run / "summary.json").read_text())["split"]
    assert split and json.loads((run / "config.json").read_text())["data"]["split"] == split
    assert main(["train", "--quiet", "--resume", str(run), "--split", split, "--epochs", "2"]) == 0


def test_a_resume_from_python_with_the_split_left_out_takes_the_runs_own(tmp_path):
    """config.json stores the split the run used; a resume given a config made anew (data.split
    '' = the dataset's default) was refused as a change of data.split."""
    run = tmp_path / "run"
    run.mkdir()
    runfolder.start_run_folder(run, apply_overrides(Config(), ["train.epochs=1"]), default_split="low-0")
    (run / "checkpoint.pt").write_bytes(b"")
    again = apply_overrides(Config(), ["train.epochs=1"])
    runfolder.check_resume(run, again)
    assert again.data.split == "low-0"
    with pytest.raises(runfolder.FastleadingError, match="cannot resume with data.split='high-0'"):
        runfolder.check_resume(run, apply_overrides(Config(), ["train.epochs=1", "data.split=high-0"]))
