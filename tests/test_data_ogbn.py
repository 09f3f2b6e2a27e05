"""ogbn-arxiv / ogbn-products loaders on generated folders in OGB's exact layout."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch
from data_helpers import assert_csr_matches
from ogb_fixtures import EXTRA_FIRST_PAPER, write_gz, write_ogbn_arxiv, write_ogbn_products

from fastleading.config import DataConfig
from fastleading.data import format_info, info, load_dataset
from fastleading.errors import FastleadingError


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


@pytest.mark.parametrize("text_in_root, tar", [(False, True), (True, True), (False, False)])
def test_arxiv_loads_graph_split_and_texts(tmp_path, text_in_root, tar):
    truth = write_ogbn_arxiv(tmp_path / "data", seed=1, text_in_root=text_in_root, tar=tar)
    graph = load_dataset(_cfg(tmp_path, "ogbn-arxiv"))
    _check_against_truth(graph, truth, "time")
    assert graph.num_classes == 40
    assert info(graph)["empty_texts"] == 0


def test_titleabs_fixture_is_a_tar_inside_a_gzip_like_the_real_file(tmp_path):
    write_ogbn_arxiv(tmp_path / "data")
    raw = gzip.decompress((tmp_path / "data" / "ogbn_arxiv" / "titleabs.tsv.gz").read_bytes())
    header = raw[:512]
    assert header[:100].rstrip(b"\0") == b"titleabs.tsv" and header[100:108] == b"0000644\0"
    assert header[257:265] == b"ustar  \0"  # GNU tar
    size = int(header[124:136].rstrip(b"\0 "), 8)
    body = raw[512:512 + size]
    assert body.startswith(f"{EXTRA_FIRST_PAPER}\t".encode()) and b"paper id" not in raw  # no header row
    assert body.endswith(b"\n") and body.count(b"\n") == 50 + 20 + 1  # more records than nodes
    assert len(raw) % 512 == 0 and len(raw) >= 512 + size + 1024 and not raw[512 + size:].strip(b"\0")


@pytest.mark.parametrize("first_is_node, final_newline", [(False, True), (True, True), (False, False)])
def test_arxiv_titleabs_tar_quirks(tmp_path, first_is_node, final_newline):
    """The tar header glued to the first record, NUL padding after the last one: every node
    gets exactly its own paper's text and the extra paper 200971 is ignored."""
    truth = write_ogbn_arxiv(tmp_path / "data", seed=4, first_is_node=first_is_node, final_newline=final_newline)
    graph = load_dataset(_cfg(tmp_path, "ogbn-arxiv"))
    texts = graph.texts(range(graph.num_nodes))
    assert texts == truth["texts"]
    if first_is_node:
        assert texts[truth["first_record_node"]] == truth["texts"][truth["first_record_node"]]
    assert texts[truth["last_record_node"]].endswith("unicode: é.")  # no NUL padding glued on
    assert not any("\0" in t or "extra paper" in t for t in texts)


def test_arxiv_titleabs_gunzipped_is_still_a_tar(tmp_path):
    truth = write_ogbn_arxiv(tmp_path / "data", seed=5, first_is_node=True, final_newline=False)
    gz_file = tmp_path / "data" / "ogbn_arxiv" / "titleabs.tsv.gz"
    (gz_file.parent / "titleabs.tsv").write_bytes(gzip.decompress(gz_file.read_bytes()))
    gz_file.unlink()
    assert load_dataset(_cfg(tmp_path, "ogbn-arxiv")).texts(range(50)) == truth["texts"]


@pytest.mark.parametrize("gz", [False, True])
def test_products_loads_graph_split_and_texts(tmp_path, gz):
    """Some ASINs have no record and some records are empty: those nodes get an empty text."""
    truth = write_ogbn_products(tmp_path / "data", seed=2, gz=gz)
    graph = load_dataset(_cfg(tmp_path, "ogbn-products"))
    _check_against_truth(graph, truth, "sales_ranking")
    assert graph.num_classes == 47
    empty = [i for i in range(50) if graph.text(i) == ""]
    assert empty == sorted({*range(3, 50, 11), 5})
    d = info(graph)
    assert d["empty_texts"] == truth["empty_texts"] == len(empty) == 6
    assert "6 empty" in format_info(d)


def test_products_half_the_nodes_without_text_still_load(tmp_path):
    truth = write_ogbn_products(tmp_path / "data", no_record=range(25))
    graph = load_dataset(_cfg(tmp_path, "ogbn-products"))
    assert graph.texts(range(50)) == truth["texts"]
    assert info(graph)["empty_texts"] == 25


def test_products_most_nodes_without_text_is_an_error(tmp_path):
    write_ogbn_products(tmp_path / "data", no_record=range(1, 27))  # 26 + node 5's empty record
    with pytest.raises(FastleadingError) as e:
        load_dataset(_cfg(tmp_path, "ogbn-products"))
    msg = str(e.value)
    assert "Amazon-3M.raw/trn.json" in msg and "Amazon-3M.raw/tst.json" in msg
    assert "no text for 26 of 50 nodes" in msg and "node 1 (asin B" in msg
    assert "\n" not in msg


def test_arxiv_most_nodes_without_text_is_an_error(tmp_path):
    write_ogbn_arxiv(tmp_path / "data")
    path = tmp_path / "data" / "ogbn_arxiv" / "mapping" / "nodeidx2paperid.csv.gz"
    _rewrite(path, lambda lines: lines[:1] + [f"{i},{i + 1}" for i in range(50)])  # ids of another file
    with pytest.raises(FastleadingError, match=r"titleabs.tsv.gz: no text for 50 of 50 nodes, "
                                               r"e.g. node 0 \(paper id 1\)"):
        load_dataset(_cfg(tmp_path, "ogbn-arxiv"))


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


def test_node_without_text_gets_an_empty_text(tmp_path):
    truth = write_ogbn_arxiv(tmp_path / "data")
    path = tmp_path / "data" / "ogbn_arxiv" / "mapping" / "nodeidx2paperid.csv.gz"
    _rewrite(path, _set_line(8, "7,123"))  # node 7 now points at a paper with no text
    graph = load_dataset(_cfg(tmp_path, "ogbn-arxiv"))
    assert graph.texts(range(50)) == truth["texts"][:7] + [""] + truth["texts"][8:]
    assert info(graph)["empty_texts"] == 1


def test_label_count_mismatch(tmp_path):
    write_ogbn_products(tmp_path / "data")
    _rewrite(tmp_path / "data" / "ogbn_products" / "raw" / "node-label.csv.gz", lambda lines: lines[:-1])
    with pytest.raises(FastleadingError, match=r"node-label.csv.gz: expected 50 lines"):
        load_dataset(_cfg(tmp_path, "ogbn-products"))
