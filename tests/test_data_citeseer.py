"""CiteSeer TAG (real data from ../shared/data) and Planetoid, plus bad-input reports."""

from __future__ import annotations

import gzip
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import assert_csr_matches

from fastleading.config import Config, DataConfig
from fastleading.data import load_dataset, prepare
from fastleading.errors import FastleadingError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "citeseer-tag").is_dir(),
                                  reason=f"real data folder {SHARED} is absent")


@pytest.fixture(scope="module")
def citeseer(tmp_path_factory):
    return load_dataset(DataConfig(dataset="citeseer-tag", root=str(SHARED),
                                   cache_dir=str(tmp_path_factory.mktemp("cache"))))


@needs_shared
def test_citeseer_nodes_labels_texts(citeseer):
    with gzip.open(SHARED / "citeseer-tag" / "citeseer_texts.txt.gz", "rt") as f:
        lines = f.read().split("\n")
    ids, texts, labels = lines[0::3][:3186], lines[1::3][:3186], lines[2::3][:3186]
    assert citeseer.num_nodes == 3186 and citeseer.num_classes == 6
    assert citeseer.class_names == ["Agents", "AI", "DB", "IR", "ML", "HCI"]
    assert [citeseer.class_names[c] for c in citeseer.labels.tolist()] == labels
    assert citeseer.texts([0, 1000, 3185]) == [texts[0].strip(), texts[1000].strip(), texts[3185].strip()]
    assert citeseer.metadata["paper_ids"] == ids


@needs_shared
def test_citeseer_edges_are_the_citations_between_papers_with_text(citeseer):
    index = {pid: i for i, pid in enumerate(citeseer.metadata["paper_ids"])}
    src, dst = [], []
    with gzip.open(SHARED / "citeseer-tag" / "citeseer.cites.gz", "rt") as f:
        for line in f:
            a, b = line.rstrip("\n").split("\t")
            if a in index and b in index:
                src.append(index[a])
                dst.append(index[b])
    assert_csr_matches(citeseer, src, dst)
    assert citeseer.num_edges == 2 * 4225


@needs_shared
def test_citeseer_splits_and_features(citeseer):
    assert citeseer.default_split == "low-0"
    assert {f"low-{s}" for s in range(10)} | {f"high-{s}" for s in range(10)} == set(citeseer.split_names)
    low = citeseer.split()
    assert (len(low.train), len(low.valid), len(low.test)) == (120, 500, 1000)
    assert Counter(citeseer.labels[low.train].tolist()) == {c: 20 for c in range(6)}
    high = citeseer.split("high-3")
    assert len(high.train) + len(high.valid) + len(high.test) == 3186
    x = citeseer.features
    assert x.shape == (3186, 3000) and x.dtype == torch.float32
    norms = x.norm(dim=1)
    assert torch.all(((norms - 1).abs() < 1e-4) | (norms == 0)) and (norms > 0).float().mean() > 0.99


def _planetoid_reference(name: str, prefix: str):
    raw = SHARED / "planetoid" / name / "raw"
    with open(raw / f"ind.{prefix}.graph", "rb") as f:
        adjacency = pickle.load(f, encoding="latin1")
    src = [a for a, nbrs in adjacency.items() for b in nbrs]
    dst = [b for a, nbrs in adjacency.items() for b in nbrs]
    return src, dst


@needs_shared
@pytest.mark.parametrize("name, folder, prefix, nodes, train, classes, unlabelled", [
    ("planetoid-cora", "Cora", "cora", 2708, 140, 7, 0),
    ("planetoid-citeseer", "CiteSeer", "citeseer", 3327, 120, 6, 15),
])
def test_planetoid(tmp_path, name, folder, prefix, nodes, train, classes, unlabelled):
    cfg = Config()
    cfg.data.dataset, cfg.data.root, cfg.data.cache_dir = name, str(SHARED), str(tmp_path)
    cfg.train.method = "shallow"
    graph, tokens = prepare(cfg)
    assert tokens is None and not graph.has_text
    assert graph.num_nodes == nodes and graph.num_classes == classes
    assert int((graph.labels < 0).sum()) == unlabelled
    src, dst = _planetoid_reference(folder, prefix)
    keep = [(a, b) for a, b in zip(src, dst, strict=True) if a < nodes and b < nodes]
    assert_csr_matches(graph, [a for a, _ in keep], [b for _, b in keep])
    public = graph.split()
    assert graph.default_split == "public"
    assert (len(public.train), len(public.valid), len(public.test)) == (train, 500, 1000)
    assert public.train.tolist() == list(range(train))
    assert (graph.labels[public.test] >= 0).all()
    assert graph.features.shape[0] == nodes and set(graph.features.unique().tolist()) <= {0.0, 1.0}
    cfg.train.method = "leading"
    with pytest.raises(FastleadingError, match=f"dataset '{name}' has no node texts; LM methods need"):
        prepare(cfg)


def _write_citeseer(root: Path, papers: list[tuple[str, str, str]], cites: list[str]) -> DataConfig:
    folder = root / "citeseer-tag"
    folder.mkdir(parents=True)
    with gzip.open(folder / "citeseer_texts.txt.gz", "wt") as f:
        f.write("".join(f"{a}\n{b}\n{c}\n" for a, b, c in papers))
    with gzip.open(folder / "citeseer.cites.gz", "wt") as f:
        f.write("".join(line + "\n" for line in cites))
    return DataConfig(dataset="citeseer-tag", root=str(root), cache_dir=str(root / "cache"))


GOOD = [("p1", "A paper on agents", "Agents"), ("p2", "Databases", "DB"), ("p3", "Retrieval", "IR")]


def test_small_citeseer_folder_loads(tmp_path):
    cfg = _write_citeseer(tmp_path, GOOD, ["p1\tp2", "p2\tp2", "p3\tunknown", "p2\tp1"])
    graph = load_dataset(cfg)
    assert graph.num_nodes == 3 and graph.labels.tolist() == [0, 2, 3]
    assert graph.rowptr.tolist() == [0, 1, 2, 2] and graph.col.tolist() == [1, 0]


@pytest.mark.parametrize("papers, cites, pattern", [
    (GOOD + [("p4", "x", "Biology")], [], r"citeseer_texts.txt.gz: line 12: unknown class 'Biology'"),
    (GOOD + [("p2", "again", "DB")], [], r"line 10: duplicate paper id 'p2' \(first on line 4\)"),
    (GOOD + [("p4", "   ", "AI")], [], r"line 11: empty text for paper 'p4'"),
    (GOOD, ["p1\tp2\tp3"], r"citeseer.cites.gz: line 1: expected '<cited id>\\t<citing id>'"),
])
def test_bad_citeseer_files(tmp_path, papers, cites, pattern):
    cfg = _write_citeseer(tmp_path, papers, cites)
    with pytest.raises(FastleadingError, match=pattern):
        load_dataset(cfg)
    assert not (tmp_path / "cache").exists()


def test_citeseer_line_count_not_multiple_of_three(tmp_path):
    cfg = _write_citeseer(tmp_path, GOOD, [])
    path = tmp_path / "citeseer-tag" / "citeseer_texts.txt.gz"
    with gzip.open(path, "at") as f:
        f.write("p9\n")
    with pytest.raises(FastleadingError, match="expected 3 lines per paper .* got 10 lines"):
        load_dataset(cfg)


def test_missing_citeseer_folder(tmp_path):
    cfg = DataConfig(dataset="citeseer-tag", root=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FastleadingError, match=r"citeseer-tag texts: file not found; expected .*citeseer_texts"):
        load_dataset(cfg)


def test_tfidf_matches_a_brute_force_computation():
    from fastleading.data.features import tfidf_features

    texts = ["alpha beta beta", "beta gamma", "gamma gamma delta alpha", "epsilon", "alpha beta"]
    x, vocab = tfidf_features(texts, max_features=10, min_df=2, max_df=0.7)
    # df: alpha 3, beta 3, gamma 2 (delta/epsilon df 1 < min_df; nothing above 0.7 * 5)
    assert vocab == ["alpha", "beta", "gamma"]
    n, df = 5, np.array([3, 3, 2])
    counts = np.array([[1, 2, 0], [0, 1, 1], [1, 0, 2], [0, 0, 0], [1, 1, 0]], dtype=np.float64)
    ref = counts * (np.log((1 + n) / (1 + df)) + 1)
    norms = np.linalg.norm(ref, axis=1, keepdims=True)
    ref = np.divide(ref, norms, out=np.zeros_like(ref), where=norms > 0)
    np.testing.assert_allclose(x.numpy(), ref, atol=1e-6)
