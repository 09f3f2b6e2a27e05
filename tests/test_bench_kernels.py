"""The kernel benchmark runs end to end under the interpreter (no performance claim on CPU)."""

import json

from fastleading.bench.kernels import main


def test_kernel_benchmark_toy_runs_end_to_end(tmp_path):
    argv = ["--toy", "--graphs", "pubmed", "--widths", "40", "--dtypes", "fp32", "--bank-widths", "40",
            "--bank-rows", "16", "--skip-pyg", "--out-dir", str(tmp_path)]
    assert main(argv) in (0, None)
    (path,) = list(tmp_path.glob("*.json"))
    result = json.loads(path.read_text())
    assert result["interpreter"] is True
    text = json.dumps(result)
    assert "appnp" in text and "gather" in text and "scatter" in text
