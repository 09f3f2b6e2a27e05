"""The kernel benchmark runs end to end under the interpreter (no performance claim on CPU)."""

import json

import pytest

from fastleading.bench.kernels import main


def test_kernel_benchmark_toy_measures_every_requested_row(tmp_path):
    """The measured rows themselves (the old check found "gather" and "scatter" in the constant
    bandwidth-model text): one APPNP row for the one graph, width and dtype asked for, equal to
    the CSR reference, its rates the compulsory bytes over its own times; one gather row equal to
    index_select and one scatter row."""
    argv = ["--toy", "--graphs", "arxiv", "--widths", "40", "--dtypes", "fp32", "--bank-widths", "40",
            "--bank-rows", "16", "--skip-pyg", "--out-dir", str(tmp_path)]
    assert main(argv) in (0, None)
    (path,) = list(tmp_path.glob("*.json"))
    result = json.loads(path.read_text())
    assert result["interpreter"] is True
    (graph,) = result["graphs"]
    assert (graph["graph"], graph["num_nodes"]) == ("arxiv-like", 300) and "skipped" not in graph
    (row,) = result["appnp"]
    assert (row["graph"], row["width"], row["dtype"]) == ("arxiv-like", 40, "fp32")
    assert row["max_abs_diff_vs_csr"] <= 1e-5 * max(1.0, row["max_abs_value"]) and row["max_abs_value"] > 0
    for timing in (row["ours"], row["csr"]):
        assert timing["ms"] > 0 and timing["GBps"] == pytest.approx(row["compulsory_bytes"] / (timing["ms"] * 1e6))
    assert row["speedup_vs_csr"] == pytest.approx(row["csr"]["ms"] / row["ours"]["ms"])
    gather, scatter = result["bank"]
    assert [(r["op"], r["rows"], r["width"], r["bank_rows"]) for r in (gather, scatter)] == \
        [("gather", 16, 40, gather["bank_rows"]), ("scatter", 16, 40, gather["bank_rows"])]
    assert gather["matches_index_select"] is True
    moved = 2 * 16 * 40 * 2  # bf16 rows read and written
    assert gather["ours"]["GBps"] == pytest.approx((8 * 16 + moved) / (gather["ours"]["ms"] * 1e6))
    assert scatter["ours"]["GBps"] == pytest.approx((16 * 16 + moved) / (scatter["ours"]["ms"] * 1e6))


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
    assert rec["iterate_layout_bitwise_equal_to_native"] is True
    assert rec["speedup_iterate_layout_vs_csr_sparse_mm_axpy"] > 0
