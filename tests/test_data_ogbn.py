"""ogbn-arxiv / ogbn-products loaders on generated folders in OGB's exact layout."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from data_helpers import assert_csr_matches
from fastleading.config import DataConfig
from fastleading.data import load_dataset
from fastleading.errors import FastleadingError
from ogb_fixtures import write_gz, write_ogbn_arxiv, write_ogbn_products


def _cfg(tmp_path, name: str) -> DataConfig:
    return DataConfig(dataset=name, root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))


def _check_against_truth(graph, truth, split_name: str) -> None:
    assert graph.num_nodes == truth["num_nodes"]
    assert_csr_matches(graph, truth["edges"][:, 0], truth["edges"][:, 1])
    assert graph.labels.tolist() == truth["labels"].tolist()
    assert graph.default_split == split_name
    s = graph.split()
    for part in ("train", "valid", "test"):
        assert getattr(s, part).tolist() == truth["split"][part].tolist()
    torch.testing.assert_close(graph.features, torch.from_numpy(truth["features"]), atol=1e-6, rtol=0)
    assert graph.texts(range(graph.num_nodes)) == truth["texts"]
    assert graph.class_names == truth["class_names"]


@pytest.mark.parametrize("text_in_root", [False, True])
def test_arxiv_loads_graph_split_and_texts(tmp_path, text_in_root):
    truth = write_ogbn_arxiv(tmp_path / "data", seed=1, text_in_root=text_in_root)
    graph = load_dataset(_cfg(tmp_path, "ogbn-arxiv"))
    _check_against_truth(graph, truth, "time")
    assert graph.num_classes == 40


@pytest.mark.parametrize("gz", [False, True])
def test_products_loads_graph_split_and_texts(tmp_path, gz):
    truth = write_ogbn_products(tmp_path / "data", seed=2, gz=gz)
    graph = load_dataset(_cfg(tmp_path, "ogbn-products"))
    _check_against_truth(graph, truth, "sales_ranking")
    assert graph.num_classes == 47


def test_fixture_layout_is_the_one_ogb_reads(tmp_path, monkeypatch):
    """ogb's own NodePropPredDataset reads the generated folder and agrees with our loader."""
    from ogb.nodeproppred import NodePropPredDataset

    write_ogbn_arxiv(tmp_path / "data", seed=3)
    ours = load_dataset(_cfg(tmp_path, "ogbn-arxiv"))
    # RELEASE_v1.txt is present, so ogb never prompts; a prompt would read this instead of hanging.
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("ogb prompted on stdin"))
    ds = NodePropPredDataset("ogbn-arxiv", root=str(tmp_path / "data"))
    g, labels = ds[0]
    src, dst = g["edge_index"]
    assert_csr_matches(ours, src, dst)
    assert ours.labels.tolist() == labels[:, 0].tolist()
    split = ds.get_idx_split()
    for part in ("train", "valid", "test"):
        assert getattr(ours.split("time"), part).tolist() == np.sort(split[part]).tolist()
    torch.testing.assert_close(ours.features, torch.from_numpy(g["node_feat"]), atol=1e-6, rtol=0)


def test_missing_folder_names_the_files_to_provide(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(FastleadingError) as e:
        load_dataset(_cfg(tmp_path, "ogbn-arxiv"))
    msg = str(e.value)
    assert "ogbn_arxiv" in msg and "raw/edge.csv.gz" in msg and "titleabs.tsv" in msg
    assert "\n" not in msg


def test_missing_raw_texts(tmp_path):
    write_ogbn_products(tmp_path / "data")
    shutil.rmtree(tmp_path / "data" / "ogbn_products" / "Amazon-3M.raw")
    with pytest.raises(FastleadingError, match=r"Amazon-3M.raw.*trn.json"):
        load_dataset(_cfg(tmp_path, "ogbn-products"))


def test_missing_data_root(tmp_path):
    with pytest.raises(FastleadingError, match="data root .* does not exist"):
        load_dataset(_cfg(tmp_path, "ogbn-arxiv"))


def _rewrite(path, transform) -> None:
    with gzip.open(path, "rt") as f:
        lines = f.read().splitlines()
    write_gz(path, "".join(line + "\n" for line in transform(lines)))


def _set_line(k: int, value: str):
    return lambda lines: lines[:k] + [value] + lines[k + 1:]


@pytest.mark.parametrize("file, k, value, pattern", [
    ("raw/edge.csv.gz", 4, "3,x7", r"edge.csv.gz: line 5: expected 2 comma-separated integers, got '3,x7'"),
    ("raw/edge.csv.gz", 6, "3", r"edge.csv.gz: line 7: expected 2 comma-separated integers"),
    ("raw/edge.csv.gz", 9, "3,50", r"edge.csv.gz: line 10: node ids of edge \[3, 50\] out of range"),
    ("raw/edge.csv.gz", 2, "-1,4", r"edge.csv.gz: line 3: node ids of edge \[-1, 4\] out of range"),
    ("raw/node-label.csv.gz", 11, "40", r"node-label.csv.gz: line 12: label 40 out of range"),
    ("raw/node-label.csv.gz", 0, "ML", r"node-label.csv.gz: line 1: expected 1 comma-separated integer"),
    ("split/time/valid.csv.gz", 1, "77", r"valid.csv.gz: line 2: node index 77 out of range"),
])
def test_bad_ogb_files_are_reported_with_file_and_line(tmp_path, file, k, value, pattern):
    write_ogbn_arxiv(tmp_path / "data")
    _rewrite(tmp_path / "data" / "ogbn_arxiv" / file, _set_line(k, value))
    cfg = _cfg(tmp_path, "ogbn-arxiv")
    with pytest.raises(FastleadingError, match=pattern):
        load_dataset(cfg)
    assert not (tmp_path / "cache" / "graphs").exists() or not any((tmp_path / "cache" / "graphs").iterdir())


def test_node_without_text_is_reported(tmp_path):
    write_ogbn_arxiv(tmp_path / "data")
    path = tmp_path / "data" / "ogbn_arxiv" / "mapping" / "nodeidx2paperid.csv.gz"
    _rewrite(path, _set_line(8, "7,123"))  # node 7 now points at a paper with no text
    with pytest.raises(FastleadingError, match=r"no text for 1 node\(s\), e.g. node 7 \(paper id 123\)"):
        load_dataset(_cfg(tmp_path, "ogbn-arxiv"))


def test_label_count_mismatch(tmp_path):
    write_ogbn_products(tmp_path / "data")
    _rewrite(tmp_path / "data" / "ogbn_products" / "raw" / "node-label.csv.gz", lambda lines: lines[:-1])
    with pytest.raises(FastleadingError, match=r"node-label.csv.gz: expected 50 lines"):
        load_dataset(_cfg(tmp_path, "ogbn-products"))
