"""Checkpoint files and resume: RNG states load on the CPU whatever the run's device, files
that hold code are refused without running it, and a run stopped by max_steps ends with a
checkpoint while best.pt holds weights only."""

import json
import os
import pickle

import pytest
import torch
from test_train import small_config

from fastleading.errors import FastleadingError
from fastleading.run import checkpoint
from fastleading.trainer import state as state_mod
from fastleading.trainer.loop import build_trainer, train
from fastleading.trainer.state import Progress, load_checkpoint, save_checkpoint


def test_resume_loads_rng_states_on_the_cpu_whatever_the_run_device(tiny_bert, tmp_path, monkeypatch):
    tr = build_trainer(small_config(tiny_bert, tmp_path / "cache", "data.split=high-0"), tmp_path / "run")
    (tmp_path / "run").mkdir()
    save_checkpoint(tr.run, tr.progress, tr.refresh_order, tmp_path / "run")
    # A GPU run: whatever the loader is asked to map to the run's device lands on another
    # device type ("meta" stands in for cuda here), where torch.set_rng_state refuses it.
    tr.run.device = torch.device("cuda", 0)
    real_load = torch.load

    def load_like_a_gpu(path, map_location=None, **kwargs):
        obj = real_load(path, map_location="cpu", **kwargs)
        if map_location is None or torch.device(map_location).type == "cpu":
            return obj

        def to_other(x):
            if isinstance(x, torch.Tensor):
                return x.to("meta")
            if isinstance(x, dict):
                return {k: to_other(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return type(x)(to_other(v) for v in x)
            return x
        return to_other(obj)

    monkeypatch.setattr(checkpoint.torch, "load", load_like_a_gpu)
    expected = torch.get_rng_state()
    torch.manual_seed(1234)  # the resumed process starts with other RNG states
    assert load_checkpoint(tr.run, Progress(), tr.refresh_order, tmp_path / "run")
    assert torch.equal(torch.get_rng_state(), expected)


class SideEffect:
    """Unpickling this object creates a file: the kind of code a shared checkpoint could run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("where", ["top", "inside the run state"])
def test_a_checkpoint_that_carries_code_is_refused_and_the_code_never_runs(tmp_path, where):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    evil = SideEffect(marker)
    obj = evil if where == "top" else {"model": {}, "progress": {"history": [evil]}}
    torch.save(obj, path)
    assert not marker.exists()
    with pytest.raises(FastleadingError) as err:
        checkpoint.load(path)
    assert str(path) in str(err.value) and "refused" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists(), "loading ran the pickled code"


def test_rng_state_is_plain_tensors_and_round_trips(tmp_path):
    import random

    import numpy as np

    state = state_mod.rng_state()
    path = tmp_path / "rng.pt"
    torch.save(state, path)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    state_mod.set_rng_state(checkpoint.load(path))  # weights_only=True accepts it
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and (got[1] == expected[1]).all() and got[2] == expected[2]


def test_a_run_stopped_by_max_steps_ends_with_a_checkpoint_and_best_holds_weights_only(tiny_bert, tmp_path):
    # 240 nodes at batch 16: 15 steps an epoch; stop at 5, far from checkpoint_every
    cfg = small_config(tiny_bert, tmp_path / "cache", "data.split=high-0", "train.max_steps=5",
                       "train.checkpoint_every=200")
    train(cfg, tmp_path / "run", quiet=True)
    state = checkpoint.load(tmp_path / "run" / checkpoint.CHECKPOINT)
    assert state["step"] == 5 and state["progress"]["batch_in_epoch"] == 5
    # the evaluation that ends a max_steps run is logged like any other
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "eval" in line] == [5] and "propagation_iters" in lines[-1]
    best = checkpoint.load(tmp_path / "run" / checkpoint.BEST)["model"]
    assert best and not [k for k in best if "history" in k], [k for k in best if "history" in k]
    assert any(k.startswith("encoder.") for k in best) and any(k.startswith("head.") for k in best)
    run = tmp_path / "run"
    assert os.path.getsize(run / checkpoint.BEST) < os.path.getsize(run / checkpoint.CHECKPOINT)


def test_resume_of_a_max_steps_run_continues_to_the_end(tiny_bert, tmp_path):
    common = ("data.split=high-0", "train.epochs=1", "train.checkpoint_every=200", "model.head_dropout=0")
    straight = train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "a", quiet=True)
    train(small_config(tiny_bert, tmp_path / "cache", *common, "train.max_steps=7"), tmp_path / "b", quiet=True)
    resumed = train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "b", resume=True, quiet=True)
    assert resumed["steps"] == straight["steps"]
    assert resumed["history"][-1] == pytest.approx(straight["history"][-1])


@pytest.fixture
def minute_steps(monkeypatch):
    """The loop's clock injected: every LEADING step takes one minute of it."""
    from fastleading.trainer import loop

    now = {"s": 0.0}
    real_step = loop.STEPS["leading"]

    def one_minute_step(*args):
        now["s"] += 60.0
        return real_step(*args)
    monkeypatch.setitem(loop.STEPS, "leading", one_minute_step)
    monkeypatch.setattr(loop, "clock", lambda: now["s"])


def test_a_resumed_runs_wall_time_counts_its_earlier_attempts(tiny_bert, tmp_path, minute_steps):
    """The clock is injected: every step takes one minute. A run stopped after 7 steps and resumed
    to the end reports the wall time of all its steps, as the run trained in one go does (it
    reported only the last attempt's: 2 minutes)."""
    common = ("data.split=high-0", "train.epochs=1", "train.checkpoint_every=200")
    straight = train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "a", quiet=True)
    train(small_config(tiny_bert, tmp_path / "cache", *common, "train.max_steps=7"), tmp_path / "b", quiet=True)
    resumed = train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "b", resume=True, quiet=True)
    assert straight["wall_time_s"] == pytest.approx(60.0 * straight["steps"])
    assert resumed["wall_time_s"] == pytest.approx(straight["wall_time_s"])


def test_pickle_protocol_error_is_one_line(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(pickle.dumps({"a": 1})[:5])
    with pytest.raises(FastleadingError) as err:
        checkpoint.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_resume_removes_the_temp_files_of_a_write_that_was_killed(tiny_bert, tmp_path):
    # a run killed inside an atomic write leaves its temp file (".<name>.<random>.tmp") behind
    common = ("data.split=high-0", "train.epochs=1")
    train(small_config(tiny_bert, tmp_path / "cache", *common, "train.max_steps=3"), tmp_path / "run", quiet=True)
    stale = [tmp_path / "run" / ".checkpoint.pt.k1ll3d.tmp", tmp_path / "run" / ".summary.json.x9.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    keep = tmp_path / "run" / "notes.tmp"  # not one of ours: left alone
    keep.write_text("mine")
    train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "run", resume=True, quiet=True)
    assert not any(path.exists() for path in stale) and keep.exists()


def test_resume_drops_a_torn_last_metrics_line_and_says_so(tiny_bert, tmp_path, capsys):
    """A kill (or a full disk) inside the write of a metrics line left half a JSON object at the
    end of metrics.jsonl, and --resume stopped with JSONDecodeError."""
    common = ("data.split=high-0", "train.epochs=1", "train.checkpoint_every=200")
    straight = train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "a", quiet=True)
    train(small_config(tiny_bert, tmp_path / "cache", *common, "train.max_steps=7"), tmp_path / "b", quiet=True)
    metrics = tmp_path / "b" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 8, "epoch": 0, "lo')
    capsys.readouterr()
    resumed = train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "b", resume=True, quiet=True)
    (line,) = [text for text in capsys.readouterr().err.splitlines() if str(metrics) in text]
    assert line.startswith("fastleading: ") and "dropped its torn last line 9" in line
    assert resumed["history"][-1] == pytest.approx(straight["history"][-1])
    # the max_steps run's closing evaluation (logged after its last checkpoint) is not kept either
    assert metrics.read_text() == (tmp_path / "a" / "metrics.jsonl").read_text()


def test_a_damaged_metrics_line_before_the_last_is_one_line_naming_it(tiny_bert, tmp_path):
    common = ("data.split=high-0", "train.epochs=1")
    train(small_config(tiny_bert, tmp_path / "cache", *common, "train.max_steps=3"), tmp_path / "run", quiet=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "{garbage", *lines[1:]]) + "\n")
    with pytest.raises(FastleadingError, match=f"^{metrics}: line 2 is not a JSON object"):
        train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "run", resume=True, quiet=True)


class Killed(BaseException):
    """Stands in for SIGKILL inside the process: nothing of the run's own code handles it."""


def every_epoch_a_new_best(monkeypatch):
    """Each evaluation's selection metric is its epoch: every epoch writes a new best."""
    from fastleading.trainer import loop

    real = loop.evaluate

    def evaluate(tr):
        acc, iters = real(tr)
        return {**acc, "valid": float(tr.progress.epoch)}, iters
    monkeypatch.setattr(loop, "evaluate", evaluate)


def best_epoch_on_disk(run):
    return checkpoint.load(run / checkpoint.BEST)["epoch"]


def test_a_kill_at_the_epoch_end_never_leaves_best_pt_ahead_of_the_checkpoint(tiny_bert, tmp_path, monkeypatch):
    """best.pt was written before the checkpoint that records its epoch: killed in between, the
    folder held epoch 2's best.pt beside a checkpoint whose best was epoch 1 (and epoch 1's weights
    were gone)."""
    every_epoch_a_new_best(monkeypatch)
    common = ("data.split=high-0", "train.epochs=2", "model.head_dropout=0")
    straight = train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "a", quiet=True)
    real_save = checkpoint.save
    armed = {"on": True}

    def save(path, state):
        if armed["on"] and path.name == checkpoint.CHECKPOINT and state["progress"]["epoch"] == 2:
            raise Killed
        return real_save(path, state)
    monkeypatch.setattr(checkpoint, "save", save)
    run = tmp_path / "b"
    with pytest.raises(Killed):
        train(small_config(tiny_bert, tmp_path / "cache", *common), run, quiet=True)
    recorded = checkpoint.load(run / checkpoint.CHECKPOINT)["progress"]["best_epoch"]
    assert recorded == 1 and best_epoch_on_disk(run) == 1
    armed["on"] = False
    resumed = train(small_config(tiny_bert, tmp_path / "cache", *common), run, resume=True, quiet=True)
    assert resumed["best_epoch"] == straight["best_epoch"] == best_epoch_on_disk(run) == 2
    assert not (run / checkpoint.BEST_PENDING).exists()
    a, b = (checkpoint.load(d / checkpoint.BEST)["model"] for d in (tmp_path / "a", run))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_kill_after_the_checkpoint_leaves_the_pending_best_that_resume_puts_in_place(tiny_bert, tmp_path,
                                                                                       monkeypatch):
    every_epoch_a_new_best(monkeypatch)
    common = ("data.split=high-0", "train.epochs=2", "model.head_dropout=0")
    run = tmp_path / "run"
    real_replace = os.replace

    def replace(src, dst):
        if str(src).endswith(checkpoint.BEST_PENDING) and (run / checkpoint.BEST).exists():
            raise Killed  # epoch 2's checkpoint is written, its best not yet in place
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        train(small_config(tiny_bert, tmp_path / "cache", *common), run, quiet=True)
    state = checkpoint.load(run / checkpoint.CHECKPOINT)
    assert state["progress"]["best_epoch"] == 2 and best_epoch_on_disk(run) == 1
    monkeypatch.setattr(os, "replace", real_replace)
    summary = train(small_config(tiny_bert, tmp_path / "cache", *common), run, resume=True, quiet=True)
    assert summary["best_epoch"] == 2 == best_epoch_on_disk(run) and not (run / checkpoint.BEST_PENDING).exists()
    best = checkpoint.load(run / checkpoint.BEST)["model"]
    assert all(torch.equal(best[k], v) for k, v in state["model"].items() if k in best)  # epoch 2's weights


def test_checkpoint_minutes_checkpoints_on_the_wall_clock(tiny_bert, tmp_path, monkeypatch, minute_steps):
    """The clock is injected: every step takes one minute of it. high-0 on 240 nodes at batch 16
    is 9 steps an epoch; with train.checkpoint_minutes=4 the clock checkpoints at steps 4 and 8
    (logging points), then the epoch end at 9; without it only the epoch end."""
    from fastleading.trainer import loop

    saved = []
    real_save = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda run, *a: saved.append(run.step) or real_save(run, *a))
    for minutes, expected in ((4, [4, 8, 9]), (0, [9])):
        saved.clear()
        cfg = small_config(tiny_bert, tmp_path / "cache", "data.split=high-0", "train.epochs=1",
                           f"train.checkpoint_minutes={minutes}")
        train(cfg, tmp_path / f"run{minutes}", quiet=True)
        assert saved == expected, (minutes, saved)


def test_a_run_killed_before_its_first_checkpoint_starts_its_metrics_over(tiny_bert, tmp_path, monkeypatch):
    """Resumed without a checkpoint the run starts over, and appended its metrics to the killed
    run's lines: steps 1 and 2 twice."""
    from fastleading.trainer import loop

    common = ("data.split=high-0", "train.epochs=1", "train.checkpoint_every=5")
    train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "a", quiet=True)
    real_step = loop.STEPS["leading"]

    def step(run, *args):
        if run.step == 2:
            raise Killed
        return real_step(run, *args)
    monkeypatch.setitem(loop.STEPS, "leading", step)
    with pytest.raises(Killed):
        train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "b", quiet=True)
    assert not (tmp_path / "b" / checkpoint.CHECKPOINT).exists() and (tmp_path / "b" / "metrics.jsonl").read_text()
    monkeypatch.setitem(loop.STEPS, "leading", real_step)
    train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "b", resume=True, quiet=True)
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == (tmp_path / "a" / "metrics.jsonl").read_text()


def test_a_kill_before_a_steps_metrics_line_loses_no_line(tiny_bert, tmp_path, monkeypatch):
    """The checkpoint of a step was written before the step's metrics line: killed in between,
    the resumed run continued after that step and its line was never written."""
    from fastleading.trainer import metrics

    common = ("data.split=high-0", "train.epochs=1", "train.checkpoint_every=2")
    train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "a", quiet=True)
    real_write = metrics.MetricsLog.write

    def write(self, record):
        if record.get("step") == 4 and "loss" in record:
            raise Killed
        return real_write(self, record)
    monkeypatch.setattr(metrics.MetricsLog, "write", write)
    with pytest.raises(Killed):
        train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "b", quiet=True)
    monkeypatch.setattr(metrics.MetricsLog, "write", real_write)
    train(small_config(tiny_bert, tmp_path / "cache", *common), tmp_path / "b", resume=True, quiet=True)
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == (tmp_path / "a" / "metrics.jsonl").read_text()
