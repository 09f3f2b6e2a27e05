"""``fastleading bench scale --toy`` runs end to end and writes every field (no timing asserted)."""

import json

from fastleading.bench.scale import PRODUCTS_CLASSES, PRODUCTS_NODES, evaluation_tables, node_tables
from fastleading.cli import main as cli_main


def test_scale_benchmark_toy_writes_every_field(tmp_path):
    out = tmp_path / "scale.json"
    assert cli_main(["bench", "scale", "--toy", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    r = json.loads(out.read_text())
    assert r["benchmark"] == "scale" and r["toy"] is True
    for key in ("date", "command", "git_commit", "machine", "versions", "stand_in_lm", "config_overrides",
                "prepare", "train", "per_node_tables_of_this_run", "memory_table_products", "peak_rss_bytes",
                "total_wall_s"):
        assert key in r, key
    assert {"cpu", "cores", "memory_gib", "load_avg_1m_at_start", "load_avg_1m_at_end"} <= set(r["machine"])
    prep = r["prepare"]
    assert prep["graph_cache_hit"] is False and prep["token_cache_hit"] is False  # a fresh cache
    assert prep["graph_s"] >= 0 and prep["tokens_s"] >= 0 and prep["peak_rss_bytes"] > 0
    g = prep["graph"]
    assert g["nodes"] == 3000 and g["classes"] == PRODUCTS_CLASSES and g["split"] == "products"
    assert g["directed_edges"] > 0 and sum(g["split_sizes"].values()) == 3000

    t = r["train"]
    assert t["steps"] == 4 and t["steady_steps"] == 3 and t["steps_per_s"] > 0
    assert {"sample", "encode-grad", "encode-refresh", "backward", "optimizer"} <= set(t["phase_time_s"])
    assert set(t["phase_table"]) == set(t["phase_time_s"])
    assert {"grad", "nograd", "fill", "eval"} <= set(t["encodes_per_graph_node_per_epoch"])
    # 4 steps of 16 targets with gradient; one evaluation encodes every node once
    assert t["encode_totals"]["grad"] == 64 and t["encode_totals"]["eval"] == 3000
    ev = t["evaluation"]
    assert ev["evaluations"] == 1
    # the benchmark times the loop by wrapping its calls: every one of them must have been seen
    names = {e["name"] for e in t["events"]}
    assert {"build_trainer", "encode_graph:eval", "evaluate", "full_graph_logits", "propagate",
            "save_checkpoint", "save_best"} <= names, names
    assert ev["propagation_iters"] >= 1
    for key in ("total_s", "encode_s", "propagation_s", "head_s", "peak_rss_gib"):
        assert ev[key] is not None and ev[key] >= 0, key
    assert t["checkpoint"]["calls"] == 1 and t["checkpoint"]["bytes"] > 0 and t["checkpoint"]["total_s"] >= 0
    assert t["best"]["bytes"] > 0
    assert t["peak_rss_bytes"] > 0 and r["peak_rss_bytes"] >= t["peak_rss_bytes"]

    # the per-node tables computed from shapes and dtypes are what the run allocated
    for row in r["per_node_tables_of_this_run"]:
        assert row["bytes_live"] == row["bytes"], row
    assert len(r["memory_table_products"]) == 8


def test_node_tables_at_products_size():
    n, e = PRODUCTS_NODES, 123_718_280
    rows = {t["table"]: t["bytes"] for t in node_tables(n, e, hidden=768, classes=47, max_length=128)}
    assert rows["memory bank: emb"] == n * 768 * 4
    assert rows["implicit history x_history"] == rows["implicit history g_history"] == n * 47 * 4
    assert rows["implicit history input_history"] == n * 47 * 4  # model.warm_start=delta (the default)
    assert rows["token cache: input_ids"] == n * 128 * 4
    assert rows["CSR col"] == e * 4 and rows["CSR rowptr"] == (n + 1) * 8
    bf16 = {t["table"]: t["bytes"] for t in node_tables(n, e, hidden=768, classes=47, max_length=128, float_bytes=2)}
    assert bf16["memory bank: emb"] == n * 768 * 2 and bf16["token cache: input_ids"] == rows["token cache: input_ids"]
    assert rows["last evaluation's solution (warm start)"] == n * 47 * 4
    # embeddings, head logits and six conjugate-gradient work arrays of one 47-column block
    assert sum(t["bytes"] for t in evaluation_tables(n, 384, 47)) == n * (384 + 7 * 47) * 4
