"""``train.report_to``: the TensorBoard event files hold what metrics.jsonl holds, at the same
steps, plus the encodes per node and the phase times; a missing tracker package stops the run
with one line before anything is written."""

import json
import sys

import pytest
from test_train import small_config

from fastleading.commands.methods import train_method
from fastleading.config import apply_overrides
from fastleading.errors import FastleadingError
from fastleading.run.tracking import HINTS, TENSORBOARD_DIR, WARMUP_DIR, flatten


def event_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files under ``log_dir``, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()[SCALARS]}


def test_tensorboard_event_files_hold_every_logged_step(tiny_bert, tmp_path):
    cfg = small_config(tiny_bert, tmp_path / "cache", "train.report_to=tensorboard", "train.fill_bank=false")
    summary = train_method(cfg, tmp_path / "run", quiet=True)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scalars = event_scalars(tmp_path / "run" / TENSORBOARD_DIR)

    # every number of every metrics.jsonl line, at its step, in order (float32 in the event file)
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for tag, value in flatten(record).items():
            expected.setdefault(tag, []).append((record["step"], value))
    assert {"loss", "grad_norm", "lr_lm", "epoch", "eval/valid", "eval/test", "propagation_iters"} <= set(expected)
    for tag, points in expected.items():
        assert [s for s, _ in scalars[tag]] == [s for s, _ in points], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-7), tag

    # encodes per node and phase times at the same points: one value per record
    steps = [r["step"] for r in records]
    n = 240
    for kind in ("grad", "refresh", "fill", "eval"):
        points = scalars[f"encodes_per_node/{kind}"]
        assert [s for s, _ in points] == steps
        assert points[-1][1] == pytest.approx(summary["encodes_total"][kind] / n, rel=1e-6)
        values = [v for _, v in points]
        assert values == sorted(values)  # running totals
    assert summary["encodes_total"]["grad"] > 0 and summary["encodes_total"]["eval"] == 2 * n
    for phase in ("sample", "encode-grad", "propagate", "backward", "optimizer"):
        points = scalars[f"phase_time_s/{phase}"]
        assert [s for s, _ in points] == steps, phase
        assert points[-1][1] == pytest.approx(summary["phase_time_s"][phase], rel=1e-5, abs=1e-6), phase


def test_flatten_keeps_numbers_and_joins_nested_keys():
    record = {"step": 7, "epoch": 1, "loss": 0.5, "eval": {"valid": 0.25, "test_hits@10": 0.1, "name": "x"},
              "skipped": True}
    assert flatten(record) == {"epoch": 1.0, "loss": 0.5, "eval/valid": 0.25, "eval/test_hits@10": 0.1}


def test_missing_tensorboard_stops_before_anything_is_written(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    cfg = small_config(tiny_bert, tmp_path / "cache", "train.report_to=tensorboard")
    with pytest.raises(FastleadingError) as err:
        train_method(cfg, tmp_path / "run", quiet=True)
    assert str(err.value) == HINTS["tensorboard"]
    assert not (tmp_path / "run").exists()


class FakeWandbRun:
    def __init__(self, kwargs):
        self.kwargs, self.logged, self.finished = kwargs, [], False

    def log(self, scalars, step):
        self.logged.append((step, dict(scalars)))

    def finish(self):
        self.finished = True


def test_wandb_gets_the_same_records_offline_and_a_resumed_run_keeps_its_id(tiny_bert, tmp_path, monkeypatch):
    """wandb itself is not installed by `make` (an optional extra); a stand-in module records the
    calls of the wandb API that fastleading.run.tracking makes (init, log with step, finish)."""
    import types

    runs = []
    fake = types.SimpleNamespace(init=lambda **kw: runs.append(FakeWandbRun(kw)) or runs[-1])
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = small_config(tiny_bert, tmp_path / "cache", "train.report_to=wandb", "train.fill_bank=false",
                       "train.max_steps=3")
    train_method(cfg, tmp_path / "run", quiet=True)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (first,) = runs
    assert first.kwargs["mode"] == "offline" and first.kwargs["dir"] == str(tmp_path / "run")
    assert first.kwargs["config"] == cfg.to_dict() and first.finished
    assert [step for step, _ in first.logged] == [r["step"] for r in records]
    for (_, scalars), record in zip(first.logged, records, strict=True):
        assert flatten(record).items() <= scalars.items()
        assert {"encodes_per_node/grad", "phase_time_s/sample"} <= set(scalars)

    resumed = small_config(tiny_bert, tmp_path / "cache", "train.report_to=wandb", "train.fill_bank=false")
    train_method(resumed, tmp_path / "run", resume=True, quiet=True)
    assert runs[1].kwargs["id"] == first.kwargs["id"] and runs[1].kwargs["resume"] == "allow"
    assert [step for step, _ in runs[1].logged][:2] == [4, 4]  # step 4 and the first evaluation


def test_the_head_warmups_evaluations_are_on_an_axis_of_their_own(tiny_bert, tmp_path):
    """Every warm-up evaluation was logged at step 0 (up to 200 points on one step, under
    warmup_eval/...); they are now on the warm-up epoch's axis: TensorBoard's warmup/ run, and in
    wandb one table and one chart against the warm-up epoch. The training axis keeps the
    training's records only."""
    import types

    cfg = small_config(tiny_bert, tmp_path / "cache", "train.report_to=tensorboard", "train.head_warmup_epochs=4",
                       "train.max_steps=2")
    train_method(cfg, tmp_path / "run", quiet=True)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    warmup = [r for r in records if "warmup_epoch" in r]
    assert [r["warmup_epoch"] for r in warmup] == [1, 2, 3, 4]

    steps = event_scalars(tmp_path / "run" / TENSORBOARD_DIR)
    assert not [tag for tag in steps if tag.startswith("warmup")], sorted(steps)  # failed before: warmup_eval/...
    for tag, points in steps.items():  # no tag holds several points of one step (before: 5 at step 0)
        assert len({s for s, _ in points}) == len(points), (tag, points)
    by_epoch = event_scalars(tmp_path / "run" / TENSORBOARD_DIR / WARMUP_DIR)
    for key in ("train", "valid", "test"):
        assert [s for s, _ in by_epoch[f"warmup/{key}"]] == [1, 2, 3, 4], key
        assert [v for _, v in by_epoch[f"warmup/{key}"]] == pytest.approx([r["warmup_eval"][key] for r in warmup],
                                                                          rel=1e-6), key
    assert [v for _, v in by_epoch["warmup/propagation_iters"]] == [r["propagation_iters"] for r in warmup]

    # wandb (a stand-in module, as above): one table and one chart, with the first record after the warm-up
    runs, charts = [], []
    fake = types.SimpleNamespace(
        init=lambda **kw: runs.append(FakeWandbRun(kw)) or runs[-1],
        Table=lambda columns, data: {"columns": columns, "data": data},
        plot=types.SimpleNamespace(line_series=lambda **kw: charts.append(kw) or "chart"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "wandb", fake)
        train_method(apply_overrides(cfg, ["train.report_to=wandb"]), tmp_path / "wandb-run", quiet=True)
    records = [json.loads(line) for line in (tmp_path / "wandb-run" / "metrics.jsonl").read_text().splitlines()]
    (run,) = runs
    assert [step for step, _ in run.logged] == [r["step"] for r in records if "warmup_epoch" not in r]
    first = run.logged[0][1]
    table = first["warmup/evaluations"]
    assert table["columns"][0] == "epoch" and [row[0] for row in table["data"]] == [1, 2, 3, 4]
    valid = table["columns"].index("valid")
    assert [row[valid] for row in table["data"]] == [r["warmup_eval"]["valid"] for r in records if "warmup_epoch" in r]
    (chart,) = charts
    assert chart["xs"] == [1, 2, 3, 4] and "valid" in chart["keys"] and "propagation_iters" not in chart["keys"]
    assert not [k for _, scalars in run.logged for k in scalars if k.startswith("warmup_eval")]
    assert not [k for _, scalars in run.logged[1:] for k in scalars if k.startswith("warmup/")]
