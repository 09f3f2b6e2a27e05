"""ogbl-citation2 in OGB's layout (generated fixtures): graph, texts, the official link split
loaded with weights_only=True, errors naming the file, and a LEADING link run on it."""

import pickle

import numpy as np
import pytest
import torch
from ogbl_fixtures import write_ogbl_citation2
from test_link_train import edge_set

from fastleading.config import Config, apply_overrides
from fastleading.data import link_view, load_dataset
from fastleading.errors import FastleadingError


def cfg_for(root, cache, *extra):
    return apply_overrides(Config(), [f"data.root={root}", f"data.cache_dir={cache}", "data.dataset=ogbl-citation2",
                                      "train.task=link", *extra])


def undirected(pairs):
    return {(int(u), int(v)) for u, v in pairs} | {(int(v), int(u)) for u, v in pairs}


@pytest.mark.parametrize("numpy_arrays", [True, False])
def test_graph_texts_features_and_official_split(tmp_path, numpy_arrays):
    truth = write_ogbl_citation2(tmp_path / "data", numpy_arrays=numpy_arrays, num_neg=7, text_in_root=numpy_arrays)
    cfg = cfg_for(tmp_path / "data", tmp_path / "cache")
    graph = load_dataset(cfg.data)
    assert graph.num_nodes == truth["num_nodes"]
    assert edge_set(graph.rowptr, graph.col) == undirected(truth["train"])
    assert graph.texts(range(graph.num_nodes)) == truth["texts"]
    np.testing.assert_allclose(graph.features.numpy(), truth["features"], atol=1e-6)
    view, split = link_view(cfg, graph)
    assert split.name == "official"
    for name in ("train", "valid", "test"):
        assert getattr(split, name).tolist() == truth[name].T.tolist()
    assert split.valid_neg.tolist() == truth["valid_neg"].tolist()
    assert split.test_neg.shape == (len(truth["test"]), 7)
    held_out = undirected(np.concatenate([truth["valid"], truth["test"]]))
    assert not edge_set(view.rowptr, view.col) & held_out


def test_valid_and_test_edges_in_the_edge_file_are_still_removed(tmp_path):
    truth = write_ogbl_citation2(tmp_path / "data", num_neg=3)
    from ogb_fixtures import _rows, write_gz

    everything = np.concatenate([truth["train"], truth["valid"], truth["test"]])
    write_gz(tmp_path / "data" / "ogbl_citation2" / "raw" / "edge.csv.gz", _rows(everything))
    cfg = cfg_for(tmp_path / "data", tmp_path / "cache")
    view, _ = link_view(cfg, load_dataset(cfg.data))
    assert edge_set(view.rowptr, view.col) == undirected(truth["train"]) - undirected(
        np.concatenate([truth["valid"], truth["test"]]))


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_bad_split_files_are_one_line_errors_naming_the_file(tmp_path):
    write_ogbl_citation2(tmp_path / "data", num_neg=3)
    split_dir = tmp_path / "data" / "ogbl_citation2" / "split" / "time"
    cfg = cfg_for(tmp_path / "data", tmp_path / "cache")
    graph = load_dataset(cfg.data)
    good = torch.load(split_dir / "valid.pt", weights_only=False)
    cases = [
        ({"source_node": good["source_node"]}, "expected a dict with keys"),
        ({**good, "target_node_neg": good["target_node_neg"][:, 0]}, "'target_node_neg' must be 2-dimensional"),
        ({**good, "target_node": np.asarray(good["target_node"], dtype=np.float32)}, "must be an integer array"),
        ({**good, "target_node": np.asarray(good["target_node"]) + 10_000}, "node ids outside"),
        ({**good, "source_node": np.asarray(good["source_node"])[:-1]}, "one row per edge"),
    ]
    for data, message in cases:
        torch.save(data, split_dir / "valid.pt")
        with pytest.raises(FastleadingError, match=message) as e:
            link_view(cfg, graph)
        assert str(split_dir / "valid.pt") in str(e.value) and "\n" not in str(e.value)
    # arbitrary pickled code is refused, not run
    with open(split_dir / "valid.pt", "wb") as f:
        pickle.dump({"source_node": Evil()}, f)
    with pytest.raises(FastleadingError, match="weights_only=True"):
        link_view(cfg, graph)


def test_missing_files_and_node_task(tmp_path):
    write_ogbl_citation2(tmp_path / "data")
    (tmp_path / "data" / "ogbl_citation2" / "titleabs.tsv.gz").unlink()
    with pytest.raises(FastleadingError, match="titleabs.tsv.gz"):
        load_dataset(cfg_for(tmp_path / "data", tmp_path / "cache").data)
    (tmp_path / "data" / "ogbl_citation2" / "split" / "time" / "test.pt").unlink()
    with pytest.raises(FastleadingError, match="split/time/test.pt"):
        load_dataset(cfg_for(tmp_path / "data", tmp_path / "cache").data)
    write_ogbl_citation2(tmp_path / "d2")
    with pytest.raises(FastleadingError, match="data.link_split"):
        link_view(cfg_for(tmp_path / "d2", tmp_path / "c2", "data.dataset=synthetic", "data.link_split=official"),
                  load_dataset(cfg_for(tmp_path / "d2", tmp_path / "c2", "data.dataset=synthetic").data))
    cfg = cfg_for(tmp_path / "d2", tmp_path / "c2", "train.task=node")
    with pytest.raises(FastleadingError, match="no splits"):
        load_dataset(cfg.data).split("")
    from fastleading.data import prepare

    with pytest.raises(FastleadingError, match="set train.task=link"):
        prepare(cfg)


def test_leading_and_shallow_link_runs_on_the_fixture(tiny_bert, tmp_path):
    from fastleading.commands.methods import train_method

    write_ogbl_citation2(tmp_path / "data", num_neg=20)
    common = ["train.epochs=1", "train.batch_size=32", "data.max_length=12", "model.head_hidden=16",
              "model.link_dim=8", f"model.name={tiny_bert}", "train.downstream_epochs=3"]
    leading = train_method(cfg_for(tmp_path / "data", tmp_path / "cache", *common), tmp_path / "leading", quiet=True)
    assert leading["split"] == "official" and leading["link_split"]["negatives_per_positive"] == 20
    assert 0 <= leading["test_mrr"] <= 1
    shallow = train_method(cfg_for(tmp_path / "data", tmp_path / "cache", *common, "train.method=shallow"),
                           tmp_path / "shallow", quiet=True)
    assert shallow["task"] == "link" and 0 <= shallow["test_auc"] <= 1
