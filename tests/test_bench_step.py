"""The step benchmark runs end to end at toy size (no performance claim on CPU)."""

import json

from fastleading.bench.step import main


def test_step_benchmark_toy_runs_every_method(tmp_path):
    out = tmp_path / "step.json"
    assert main(["--toy", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["toy"] is True and result["matmul_tflops_measured"] > 0
    (row,) = result["rows"]
    assert set(row["results"]) == {"supervised", "leading-sequential", "leading-overlapped", "coupled"}
    leading = row["results"]["leading-sequential"]
    # equal batch sizes: one no-gradient encode per gradient encode; coupled encodes far more
    assert leading["grad_encodes_per_step"] == leading["nograd_encodes_per_step"] == 8
    assert row["results"]["coupled"]["grad_encodes_per_step"] > 8
    assert 1.0 < row["flop_floor_vs_supervised"] < 1.5
