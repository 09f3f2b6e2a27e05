"""TextAttributedGraph: save/load round trip, memory mapping, atomic writes, texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_helpers import assert_csr_matches

from fastleading.data.tag import NodeTexts, Split, TextAttributedGraph, load_npy, require_text
from fastleading.engine.graph import build_csr
from fastleading.errors import FastleadingError


def _random_graph(seed: int, n: int = 40, with_text: bool = True, num_edges: int = 120) -> tuple:
    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, n, num_edges), rng.integers(0, n, num_edges)
    rowptr, col = build_csr(src, dst, n)
    labels = torch.from_numpy(rng.integers(-1, 3, n))
    texts = [f"node {i} — ünïcode {'x' * int(rng.integers(1, 9))}" for i in range(n)]
    perm = torch.from_numpy(rng.permutation(n))
    splits = {"a": Split(perm[:10].sort().values, perm[10:20].sort().values, perm[20:].sort().values),
              "b b": Split(perm[:5].sort().values, perm[5:6].sort().values, perm[6:9].sort().values)}
    feats = torch.from_numpy(rng.standard_normal((n, 7)).astype(np.float32))
    graph = TextAttributedGraph(rowptr, col, labels, ["x", "y", "z"], splits, "b b",
                                NodeTexts.from_strings(texts) if with_text else None, feats,
                                {"name": "toy", "extra": [1, 2]})
    return graph, texts, (src, dst)


def test_round_trip_keeps_every_field(tmp_path):
    graph, texts, (src, dst) = _random_graph(0)
    loaded = TextAttributedGraph.load(graph.save(tmp_path / "g"))
    assert_csr_matches(loaded, src, dst)
    assert torch.equal(loaded.labels, graph.labels)
    assert torch.equal(loaded.features, graph.features)
    assert loaded.texts(range(loaded.num_nodes)) == texts
    assert loaded.text(17) == texts[17]
    assert loaded.class_names == ["x", "y", "z"] and loaded.num_classes == 3
    assert loaded.split_names == ["a", "b b"] and loaded.default_split == "b b"
    for name in ("a", "b b"):
        for part in ("train", "valid", "test"):
            assert torch.equal(getattr(loaded.split(name), part), getattr(graph.split(name), part))
    assert torch.equal(loaded.split().train, graph.split("b b").train)
    assert loaded.metadata == {"name": "toy", "extra": [1, 2]}
    assert loaded.cache_key == "g" and loaded.num_edges == len(graph.col)


def test_arrays_are_memory_mapped_copy_on_write(tmp_path):
    graph, _, _ = _random_graph(1)
    path = graph.save(tmp_path / "g")
    assert isinstance(load_npy(path / "col.npy"), np.memmap)
    loaded = TextAttributedGraph.load(path)
    before = loaded.col.clone()
    loaded.col.zero_()  # writable in memory ...
    assert torch.equal(TextAttributedGraph.load(path).col, before)  # ... the file is untouched


def test_graph_without_text_or_edges(tmp_path):
    graph, _, _ = _random_graph(2, with_text=False, num_edges=0)
    loaded = TextAttributedGraph.load(graph.save(tmp_path / "g"))
    assert not loaded.has_text and loaded.num_edges == 0
    assert loaded.rowptr.tolist() == [0] * (loaded.num_nodes + 1)
    with pytest.raises(FastleadingError, match="has no node texts"):
        loaded.text(0)
    with pytest.raises(FastleadingError, match="'toy' has no node texts; LM methods need"):
        require_text(loaded)


def test_failed_save_leaves_nothing_and_keeps_the_old_folder(tmp_path, monkeypatch):
    old, _, _ = _random_graph(3)
    old.save(tmp_path / "g")
    new, _, _ = _random_graph(4)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        new.save(tmp_path / "g")
    with pytest.raises(OSError):
        new.save(tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # no temp folder, no "other"
    assert torch.equal(TextAttributedGraph.load(tmp_path / "g").labels, old.labels)
    monkeypatch.undo()
    new.save(tmp_path / "g")  # replacing a complete folder
    assert torch.equal(TextAttributedGraph.load(tmp_path / "g").labels, new.labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_unknown_split_and_incomplete_folder(tmp_path):
    graph, _, _ = _random_graph(5)
    with pytest.raises(FastleadingError, match=r"unknown split 'c' \(known: a, b b\)"):
        graph.split("c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FastleadingError, match="meta.json missing"):
        TextAttributedGraph.load(tmp_path / "empty")


def test_inconsistent_sizes_are_refused():
    graph, _, _ = _random_graph(6)
    with pytest.raises(FastleadingError, match="expected 40 labels"):
        TextAttributedGraph(graph.rowptr, graph.col, graph.labels[:-1], ["x"], {}, "")
    with pytest.raises(FastleadingError, match="expected 40 texts"):
        TextAttributedGraph(graph.rowptr, graph.col, graph.labels, ["x"], {}, "",
                            texts=NodeTexts.from_strings(["a"]))


def test_node_texts_offsets_match_utf8_lengths():
    texts = ["", "a", "é€", "x" * 300]
    nt = NodeTexts.from_strings(texts)
    assert nt.byte_lengths().tolist() == [len(t.encode()) for t in texts]
    assert nt.take([3, 0, 2]) == [texts[3], "", texts[2]]


def test_save_without_overwrite_keeps_a_complete_folder(tmp_path):
    """What two processes building the same cache entry rely on: the first one published wins."""
    first, _, _ = _random_graph(7)
    second, _, _ = _random_graph(8)
    first.save(tmp_path / "g", overwrite=False)
    second.save(tmp_path / "g", overwrite=False)
    assert torch.equal(TextAttributedGraph.load(tmp_path / "g").labels, first.labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_graph_without_labelled_nodes_has_no_splits():
    graph, _, _ = _random_graph(9)
    unlabelled = TextAttributedGraph(graph.rowptr, graph.col, torch.full((40,), -1), [], {}, "",
                                     metadata={"name": "bare"})
    with pytest.raises(FastleadingError, match="'bare' has no splits"):
        unlabelled.split()
