"""arXiv-2023: arXiv CS papers with their titles, from ``<root>/arxiv-2023/``.

Files (as kept in the public repository of Huang et al., "Can LLMs Effectively Leverage Graph
Structural Information: When and Why", dataset/arxiv_2023/; every file in the same node order,
row ``i`` is node ``i``, each with a header line):

* ``raw/titles.csv.gz``: one column ``titles`` (CSV, quoted where a title holds a comma or a
  line break);
* ``raw/labels.csv.gz``: one column ``labels``, the arXiv CS category (``cs.LG``, ...);
* ``raw/ids.csv.gz``: one column ``ids``, the arXiv id;
* ``raw/edges.csv.gz``: ``source,target`` node row numbers, one citation a line;
* ``split/{train,valid,test}.csv.gz``: one column of node row numbers each (the upstream
  split: 19,461 / 4,682 / 668; the test papers are those published in 2023).

33,868 nodes, 305,672 directed citations made undirected (self-loops and duplicates
dropped), 39 classes (the sorted category names). Splits: ``upstream`` (the default), and
seeded ``low-0..9`` (20 per class / 500 / 1000) and ``high-0..9`` (60/20/20) like
CiteSeer-TAG's. Shallow features: TF-IDF of the titles.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fastleading.data.features import tfidf_features
from fastleading.data.rawio import data_root, find_file, fingerprint, open_text
from fastleading.data.splits import seeded_splits
from fastleading.data.tag import NodeTexts, Split, TextAttributedGraph
from fastleading.engine.graph import build_csr
from fastleading.errors import FastleadingError

if TYPE_CHECKING:
    from fastleading.config import DataConfig

NAME = "arxiv-2023"
NUM_SEEDS = 10
RAW = ("titles", "labels", "ids", "edges")
SPLITS = ("train", "valid", "test")


def _files(cfg: DataConfig) -> dict[str, Path]:
    folder = data_root(cfg.root) / NAME
    files = {name: find_file([folder / "raw" / f"{name}.csv.gz", folder / "raw" / f"{name}.csv"], f"{NAME} {name}")
             for name in RAW}
    files.update({name: find_file([folder / "split" / f"{name}.csv.gz", folder / "split" / f"{name}.csv"],
                                  f"{NAME} {name} split") for name in SPLITS})
    return files


def options(cfg: DataConfig) -> dict:
    return {"files": fingerprint(list(_files(cfg).values()))}


def read_rows(path: Path, ncols: int) -> list[list[str]]:
    """The rows of a CSV file after its header line, each with ``ncols`` fields; one line naming
    the file and the record otherwise."""
    with open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise FastleadingError(f"{path}: empty file (expected a header line and {ncols} column(s))")
            rows = []
            for row in reader:
                if len(row) != ncols:
                    raise FastleadingError(f"{path}: line {reader.line_num}: expected {ncols} comma-separated "
                                           f"field(s), got {len(row)}")
                rows.append(row)
        except csv.Error as e:
            raise FastleadingError(f"{path}: line {reader.line_num}: not valid CSV ({e})") from None
    return rows


def read_ints(path: Path, ncols: int, num_nodes: int) -> np.ndarray:
    """int64 ``[rows, ncols]`` of node row numbers in ``[0, num_nodes)``."""
    rows = read_rows(path, ncols)
    try:
        values = np.asarray(rows, dtype=np.int64).reshape(len(rows), ncols)
    except ValueError:
        line = next(i for i, row in enumerate(rows) if not all(v.strip().lstrip("-").isdigit() for v in row))
        raise FastleadingError(f"{path}: line {line + 2}: expected node row numbers, got {rows[line]}") from None
    bad = np.flatnonzero((values < 0).any(axis=1) | (values >= num_nodes).any(axis=1))
    if len(bad):
        raise FastleadingError(f"{path}: line {bad[0] + 2}: node row number out of range [0, {num_nodes}): "
                               f"{values[bad[0]].tolist()}")
    return values


def build(cfg: DataConfig) -> TextAttributedGraph:
    files = _files(cfg)
    titles = [row[0] for row in read_rows(files["titles"], 1)]
    categories = [row[0].strip() for row in read_rows(files["labels"], 1)]
    ids = [row[0].strip() for row in read_rows(files["ids"], 1)]
    n = len(titles)
    for what, values in (("labels", categories), ("ids", ids)):
        if len(values) != n:
            raise FastleadingError(f"{files[what]}: {len(values)} rows, but {files['titles']} has {n}: every file "
                                   "holds one row per node, in the same order")
    class_names = sorted(set(categories))
    index = {name: c for c, name in enumerate(class_names)}
    labels = np.asarray([index[c] for c in categories], dtype=np.int64)
    edges = read_ints(files["edges"], 2, n)
    rowptr, col = build_csr(edges[:, 0], edges[:, 1], n)
    splits = {"upstream": Split(*(torch.from_numpy(np.sort(read_ints(files[s], 1, n)[:, 0])) for s in SPLITS))}
    splits.update(seeded_splits(labels, NUM_SEEDS))
    features, _ = tfidf_features(titles)
    return TextAttributedGraph(rowptr, col, torch.from_numpy(labels), class_names, splits, "upstream",
                               NodeTexts.from_strings(titles), features, {"name": NAME, "arxiv_ids": ids})
