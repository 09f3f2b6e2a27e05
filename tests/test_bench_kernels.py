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


def test_cpu_benchmark_toy_runs_end_to_end(tmp_path):
    """--cpu: the native step side by side with torch.sparse.mm, addmm and the reference (tiny graph)."""
    argv = ["--cpu", "--toy", "--widths", "47", "--threads", "2", "--reps", "2", "--out-dir", str(tmp_path)]
    assert main(argv) in (0, None)
    (path,) = list(tmp_path.glob("appnp-cpu-toy-*.json"))
    result = json.loads(path.read_text())
    assert result["benchmark"] == "appnp-cpu" and result["toy"] is True and result["interpreter"] is False
    assert result["env"]["torch_threads"] == 2 and "--cpu" in result["env"]["command"]
    (rec,) = result["appnp"]
    assert rec["width"] == 47 and rec["dtype"] == "fp32" and rec["native_passes"] == 1 and rec["native_threads"] >= 1
    for key in ("native", "native_iterate_layout", "native_new_out", "csr_sparse_mm_axpy", "csr_addmm", "reference"):
        assert len(rec[key]["samples_ms"]) == (1 if key == "reference" else 2) and rec[key]["GBps"] > 0
    assert "ms" in rec["torch_sparse_matmul_axpy"] or "error" in rec["torch_sparse_matmul_axpy"]
    assert rec["speedup_vs_csr_sparse_mm_axpy"] > 0 and rec["bitwise_equal_to_reference"] is True
    assert rec["max_abs_diff_vs_csr_sparse_mm_axpy"] < 1e-4
    assert rec["iterate_layout_bitwise_equal_to_native"] is True and rec["speedup_iterate_layout_vs_csr_sparse_mm_axpy"] > 0
