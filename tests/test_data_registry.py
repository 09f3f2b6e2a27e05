"""The dataset registry, the processed-graph cache, prepare() and info()."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fastleading.config import Config, DataConfig  # noqa: E402
from fastleading.data import DATASETS, DatasetEntry, dataset_info, format_info, graph_dir, info, load_dataset, prepare  # noqa: E402
from fastleading.errors import FastleadingError  # noqa: E402


def _config(tmp_path, **data) -> Config:
    cfg = Config()
    cfg.data.cache_dir = str(tmp_path)
    cfg.data.synthetic_nodes, cfg.data.synthetic_classes = 200, 4
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(FastleadingError, match=r"unknown dataset 'cora' \(known: synthetic, citeseer-tag, "):
        load_dataset(DataConfig(dataset="cora", cache_dir=str(tmp_path)))


def test_second_load_opens_the_cache_without_building(tmp_path, monkeypatch):
    cfg = _config(tmp_path).data
    first = load_dataset(cfg)

    def fail(cfg):
        raise AssertionError("built again")

    entry = DATASETS["synthetic"]
    monkeypatch.setitem(DATASETS, "synthetic", DatasetEntry(entry.options, fail, entry.description))
    second = load_dataset(cfg)
    assert second.path == first.path and np.array_equal(second.col.numpy(), first.col.numpy())
    cfg.synthetic_homophily = 0.5
    with pytest.raises(AssertionError, match="built again"):
        load_dataset(cfg)


def test_cache_key_covers_only_options_that_change_the_graph(tmp_path):
    cfg = _config(tmp_path).data
    key = graph_dir(cfg)
    cfg.max_length, cfg.split = 128, "high-1"
    assert graph_dir(cfg) == key
    cfg.synthetic_words = 30
    assert graph_dir(cfg) != key


def test_missing_data_root(tmp_path):
    cfg = DataConfig(dataset="citeseer-tag", root=str(tmp_path / "nowhere"), cache_dir=str(tmp_path))
    with pytest.raises(FastleadingError, match=r"data root '.*nowhere' does not exist \(set data.root"):
        load_dataset(cfg)


def test_prepare_checks_the_split_and_skips_tokens_for_shallow(tmp_path):
    cfg = _config(tmp_path, split="high-2", max_length=16)
    graph, tokens = prepare(cfg)
    assert tokens is not None and tokens.input_ids.shape == (200, 16)
    cfg.train.method = "shallow"
    assert prepare(cfg)[1] is None
    cfg.data.split = "nope"
    with pytest.raises(FastleadingError, match="unknown split 'nope'"):
        prepare(cfg)


def test_info_numbers_match_brute_force(tmp_path):
    cfg = _config(tmp_path / "cache", max_length=16)
    fresh = dataset_info(cfg)  # nothing cached yet: the graph built and the tokens counted in memory
    assert not (tmp_path / "cache").exists()
    graph, tokens = prepare(cfg)
    d = info(graph, tokens)
    shown = dataset_info(cfg)  # from the caches prepare wrote
    assert (shown.pop("cached"), shown["tokens"].pop("cached"), shown["tokens"].pop("prepared_lengths")) == \
        (True, True, [16])
    assert d == shown
    assert (fresh.pop("cached"), fresh["tokens"].pop("cached"), fresh["tokens"].pop("prepared_lengths")) == \
        (False, False, [])
    fresh["tokens"]["path"] = d["tokens"]["path"]
    assert fresh == d  # the same numbers, computed without writing anything
    neighbours = [set() for _ in range(graph.num_nodes)]
    for r in range(graph.num_nodes):
        neighbours[r] = set(graph.col[graph.rowptr[r]:graph.rowptr[r + 1]].tolist())
    deg = np.array([len(s) for s in neighbours])
    assert d["nodes"] == 200 and d["edges"] == deg.sum() // 2 == graph.num_edges // 2
    assert d["degree"]["max"] == deg.max() and d["degree"]["p50"] == np.percentile(deg, 50)
    assert d["degree"]["isolated"] == int((deg == 0).sum())
    labels = graph.labels.numpy()
    assert d["class_sizes"] == {f"class-{c}": int((labels == c).sum()) for c in range(4)}
    assert d["splits"]["low-0"] == {"train": 80, "valid": 60, "test": 60}  # 20 per class, half the rest
    lengths = tokens.lengths.numpy()
    assert d["tokens"]["length"]["p90"] == np.percentile(lengths, 90)
    assert d["tokens"]["truncated"] == int((lengths == 16).sum())
    text = format_info(d)
    assert "nodes        200" in text and "split        low-0 (default): train 80" in text
    assert "token length" in text
