"""arXiv-2023 (real data from ../shared/data/arxiv-2023), and its loader's bad-input reports
on small folders in the same layout."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from fastleading.config import Config, DataConfig
from fastleading.data import dataset_info, load_dataset
from fastleading.errors import FastleadingError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "arxiv-2023").is_dir(),
                                  reason=f"real data folder {SHARED / 'arxiv-2023'} is absent")


def column(path: Path) -> list[str]:
    with gzip.open(path, "rt", newline="") as f:
        return [row[0] for row in list(csv.reader(f))[1:]]


@pytest.fixture(scope="module")
def arxiv(tmp_path_factory):
    return load_dataset(DataConfig(dataset="arxiv-2023", root=str(SHARED),
                                   cache_dir=str(tmp_path_factory.mktemp("cache"))))


@needs_shared
def test_arxiv_2023_nodes_labels_and_texts_are_the_files(arxiv):
    raw = SHARED / "arxiv-2023" / "raw"
    titles, labels = column(raw / "titles.csv.gz"), column(raw / "labels.csv.gz")
    assert arxiv.num_nodes == len(titles) == 33868 and arxiv.num_classes == 39
    assert arxiv.class_names == sorted(set(labels))
    assert [arxiv.class_names[c] for c in arxiv.labels.tolist()] == labels
    quoted = next(i for i, t in enumerate(titles) if "," in t)  # a title that the CSV had to quote
    assert arxiv.texts([0, quoted, 33867]) == [titles[0], titles[quoted], titles[33867]]
    assert arxiv.metadata["arxiv_ids"][:2] == column(raw / "ids.csv.gz")[:2]


@needs_shared
def test_arxiv_2023_graph_is_the_citations_made_undirected(arxiv):
    with gzip.open(SHARED / "arxiv-2023" / "raw" / "edges.csv.gz", "rt") as f:
        edges = np.loadtxt(f, delimiter=",", skiprows=1, dtype=np.int64)
    pairs = {(min(a, b), max(a, b)) for a, b in edges.tolist() if a != b}
    assert len(edges) == 305672 and len(pairs) == 303379
    row = np.repeat(np.arange(arxiv.num_nodes), np.diff(arxiv.rowptr.numpy()))
    col = arxiv.col.numpy()
    assert len(col) == 2 * len(pairs) and not (row == col).any()
    assert {(int(a), int(b)) for a, b in zip(row, col, strict=True) if a < b} == pairs


@needs_shared
def test_arxiv_2023_splits(arxiv):
    upstream = arxiv.split("upstream")
    assert arxiv.default_split == "upstream" and arxiv.split("") is not None
    for name, ids in (("train", upstream.train), ("valid", upstream.valid), ("test", upstream.test)):
        want = sorted(int(v) for v in column(SHARED / "arxiv-2023" / "split" / f"{name}.csv.gz"))
        assert ids.tolist() == want, name
    assert (len(upstream.train), len(upstream.valid), len(upstream.test)) == (19461, 4682, 668)
    low = arxiv.split("low-0")  # 20 per class, fewer where a class has under 40 papers (half of it)
    counts = np.bincount(arxiv.labels[low.train].numpy(), minlength=39)
    sizes = np.bincount(arxiv.labels.numpy(), minlength=39)
    assert (counts == np.minimum(20, np.maximum(1, sizes // 2))).all()
    assert (len(low.valid), len(low.test)) == (500, 1000)
    high = arxiv.split("high-3")
    assert len(high.train) == round(0.6 * 33868) and arxiv.split("low-1").train.tolist() != low.train.tolist()


@needs_shared
def test_info_shows_arxiv_2023(tmp_path):
    cfg = Config()
    cfg.data.dataset, cfg.data.root, cfg.data.cache_dir, cfg.data.max_length = "arxiv-2023", str(SHARED), \
        str(tmp_path), 32
    d = dataset_info(cfg)
    assert d["nodes"] == 33868 and d["classes"] == 39 and d["default_split"] == "upstream"
    assert d["splits"]["upstream"] == {"train": 19461, "valid": 4682, "test": 668}


def write_folder(root: Path, titles, labels, edges, splits=((0,), (1,), (2,))) -> Path:
    """A small arxiv-2023 folder in the real layout (gzipped CSVs with headers)."""
    raw, split = root / "arxiv-2023" / "raw", root / "arxiv-2023" / "split"
    raw.mkdir(parents=True)
    split.mkdir()

    def write(path: Path, header: list[str], rows) -> None:
        with gzip.open(path, "wt", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    write(raw / "titles.csv.gz", ["titles"], [[t] for t in titles])
    write(raw / "labels.csv.gz", ["labels"], [[c] for c in labels])
    write(raw / "ids.csv.gz", ["ids"], [[f"2301.{i:05d}"] for i in range(len(titles))])
    write(raw / "edges.csv.gz", ["source", "target"], edges)
    for name, ids in zip(("train", "valid", "test"), splits, strict=True):
        write(split / f"{name}.csv.gz", [f"{name}_id"], [[i] for i in ids])
    return root


def test_a_small_folder_loads_with_quoted_titles(tmp_path):
    root = write_folder(tmp_path, ["A, B and C", 'Say "hi"\nagain', "Plain"], ["cs.LG", "cs.AI", "cs.LG"],
                        [[0, 1], [1, 2], [2, 2]])
    g = load_dataset(DataConfig(dataset="arxiv-2023", root=str(root), cache_dir=str(tmp_path / "c")))
    assert g.texts([0, 1, 2]) == ["A, B and C", 'Say "hi"\nagain', "Plain"]
    assert g.class_names == ["cs.AI", "cs.LG"] and g.labels.tolist() == [1, 0, 1]
    assert g.rowptr.tolist() == [0, 1, 3, 4]  # the self-citation 2-2 dropped


@pytest.mark.parametrize("titles, labels, edges, message", [
    (["a", "b", "c"], ["cs.LG", "cs.AI"], [[0, 1]], r"labels.csv.gz: 2 rows, but .*titles.csv.gz has 3"),
    (["a", "b", "c"], ["cs.LG"] * 3, [[0, 3]], r"edges.csv.gz: line 2: node row number out of range \[0, 3\)"),
    (["a", "b", "c"], ["cs.LG"] * 3, [[0, "x"]], r"edges.csv.gz: line 2: expected node row numbers"),
    (["a", "b", "c"], ["cs.LG"] * 3, [[0, 1, 2]], r"edges.csv.gz: line 2: expected 2 comma-separated field"),
])
def test_bad_files_are_named_in_one_line(tmp_path, titles, labels, edges, message):
    root = write_folder(tmp_path, titles, labels, edges)
    with pytest.raises(FastleadingError, match=message) as e:
        load_dataset(DataConfig(dataset="arxiv-2023", root=str(root), cache_dir=str(tmp_path / "c")))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "c" / "graphs").exists() or not any((tmp_path / "c" / "graphs").iterdir())


def test_a_missing_split_file_is_named(tmp_path):
    root = write_folder(tmp_path, ["a", "b", "c"], ["cs.LG"] * 3, [[0, 1]])
    (root / "arxiv-2023" / "split" / "valid.csv.gz").unlink()
    with pytest.raises(FastleadingError, match="arxiv-2023 valid split: file not found"):
        load_dataset(DataConfig(dataset="arxiv-2023", root=str(root), cache_dir=str(tmp_path / "c")))
