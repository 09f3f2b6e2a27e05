"""CiteSeer with raw text, from ``<root>/citeseer-tag/``.

Files (as kept in the TAPE repository, CiteSeer-Orig):

* ``citeseer_texts.txt.gz`` (or ``.txt``): three lines per paper: paper id, title and
  text, class name (one of Agents, AI, DB, IR, ML, HCI);
* ``citeseer.cites.gz`` (or ``.cites``): one citation per line, ``<cited>\\t<citing>``.

Nodes are the papers with text, in file order; edges are the citations between two
of them, made undirected, self-citations and duplicates dropped (3,186 nodes, 4,225
undirected edges). There is no standard split: seeded ``low-0..9`` (20 per class /
500 / 1000, the default is ``low-0``) and ``high-0..9`` (60/20/20). Shallow features:
TF-IDF over the 3,000 most frequent informative words of the texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fastleading.data.features import tfidf_features
from fastleading.data.rawio import data_root, find_file, fingerprint, open_text
from fastleading.data.splits import seeded_splits
from fastleading.data.tag import NodeTexts, TextAttributedGraph
from fastleading.engine.graph import build_csr
from fastleading.errors import FastleadingError

if TYPE_CHECKING:
    from fastleading.config import DataConfig

CLASS_NAMES = ["Agents", "AI", "DB", "IR", "ML", "HCI"]
NUM_SEEDS = 10


def _files(cfg: DataConfig) -> tuple[Path, Path]:
    folder = data_root(cfg.root) / "citeseer-tag"
    texts = find_file([folder / "citeseer_texts.txt.gz", folder / "citeseer_texts.txt"], "citeseer-tag texts")
    cites = find_file([folder / "citeseer.cites.gz", folder / "citeseer.cites"], "citeseer-tag citations")
    return texts, cites


def options(cfg: DataConfig) -> dict:
    return {"files": fingerprint(_files(cfg))}


def build(cfg: DataConfig) -> TextAttributedGraph:
    texts_file, cites_file = _files(cfg)
    ids, texts, labels = read_papers(texts_file)
    src, dst = read_citations(cites_file, {pid: i for i, pid in enumerate(ids)})
    rowptr, col = build_csr(src, dst, len(ids))
    features, _ = tfidf_features(texts)
    label_ids = np.asarray(labels, dtype=np.int64)
    return TextAttributedGraph(rowptr, col, torch.from_numpy(label_ids), CLASS_NAMES,
                               seeded_splits(label_ids, NUM_SEEDS), "low-0", NodeTexts.from_strings(texts),
                               features, {"name": "citeseer-tag", "paper_ids": ids})


def read_papers(path: Path) -> tuple[list[str], list[str], list[int]]:
    """Paper ids, texts and class indices from the 3-lines-per-paper file."""
    with open_text(path) as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 3:
        raise FastleadingError(f"{path}: expected 3 lines per paper (id, text, class), "
                               f"got {len(lines)} lines (not a multiple of 3)")
    index = {name: c for c, name in enumerate(CLASS_NAMES)}
    ids: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    seen: dict[str, int] = {}  # id -> its line
    for k in range(0, len(lines), 3):
        pid, text, label = lines[k].strip(), lines[k + 1].strip(), lines[k + 2].strip()
        if not pid:
            raise FastleadingError(f"{path}: line {k + 1}: empty paper id")
        if pid in seen:
            raise FastleadingError(f"{path}: line {k + 1}: duplicate paper id '{pid}' "
                                   f"(first on line {seen[pid]})")
        if not text:
            raise FastleadingError(f"{path}: line {k + 2}: empty text for paper '{pid}'")
        if label not in index:
            raise FastleadingError(f"{path}: line {k + 3}: unknown class '{label}' for paper '{pid}' "
                                   f"(expected one of {', '.join(CLASS_NAMES)})")
        seen[pid] = k + 1
        ids.append(pid)
        texts.append(text)
        labels.append(index[label])
    if not ids:
        raise FastleadingError(f"{path}: no papers")
    return ids, texts, labels


def read_citations(path: Path, node_of: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Citations between papers that have text, as node index arrays (int64 ``[M]``)."""
    src, dst = [], []
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 2:
                raise FastleadingError(f"{path}: line {line_no}: expected '<cited id>\\t<citing id>', "
                                       f"got {len(parts)} tab-separated fields")
            a, b = node_of.get(parts[0].strip()), node_of.get(parts[1].strip())
            if a is not None and b is not None:  # papers without text are not nodes
                src.append(a)
                dst.append(b)
    return np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
