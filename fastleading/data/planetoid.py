"""Planetoid Cora and CiteSeer (structure, bag-of-words, public split; no text).

Reads the original Planetoid files ``<root>/planetoid/{Cora,CiteSeer}/raw/ind.<name>.*``
with PyG's parser (``torch_geometric.io.read_planetoid_data``), which only reads: the
shared data folder stays untouched and nothing needs copying. Splits: ``public``
(140/500/1000 on Cora, 120/500/1000 on CiteSeer; the default) and seeded ``low-0..9``
/ ``high-0..9``. The 15 CiteSeer nodes without a label (isolated test-range nodes that
Planetoid leaves out) get label -1. Features: the binary bag-of-words rows (float32).
These graphs have no node texts: only the shallow method can use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fastleading.data.rawio import data_root, find_file, fingerprint
from fastleading.data.splits import seeded_splits
from fastleading.data.tag import Split, TextAttributedGraph
from fastleading.engine.graph import build_csr

if TYPE_CHECKING:
    from fastleading.config import DataConfig

# dataset name -> (folder, file prefix)
NAMES = {"planetoid-cora": ("Cora", "cora"), "planetoid-citeseer": ("CiteSeer", "citeseer")}
_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
NUM_SEEDS = 10


def _raw_files(cfg: DataConfig, name: str) -> tuple[Path, list[Path]]:
    folder, prefix = NAMES[name]
    raw = data_root(cfg.root) / "planetoid" / folder / "raw"
    files = [find_file([raw / f"ind.{prefix}.{s}"], f"{name}") for s in _SUFFIXES]
    return raw, files


def options(cfg: DataConfig, name: str) -> dict:
    return {"files": fingerprint(_raw_files(cfg, name)[1])}


def build(cfg: DataConfig, name: str) -> TextAttributedGraph:
    from torch_geometric.io.planetoid import read_file, read_planetoid_data

    raw, _ = _raw_files(cfg, name)
    prefix = NAMES[name][1]
    data = read_planetoid_data(str(raw), prefix)
    n = data.num_nodes
    labels = data.y.numpy().astype(np.int64)
    # Labelled nodes are those of `ally` (the first rows) and the test indices; the rest
    # (CiteSeer's isolated test-range nodes) have all-zero label rows in the raw files.
    labelled = np.zeros(n, dtype=bool)
    labelled[: read_file(str(raw), prefix, "ally").shape[0]] = True
    labelled[read_file(str(raw), prefix, "test.index").numpy()] = True
    labels[~labelled] = -1
    rowptr, col = build_csr(data.edge_index[0], data.edge_index[1], n)
    public = Split(*(m.nonzero().view(-1) for m in (data.train_mask, data.val_mask, data.test_mask)))
    splits = {"public": public, **seeded_splits(labels, NUM_SEEDS)}
    num_classes = int(data.y.max()) + 1
    return TextAttributedGraph(rowptr, col, torch.from_numpy(labels),
                               [f"class-{c}" for c in range(num_classes)], splits, "public",
                               texts=None, features=data.x.to(torch.float32).contiguous(),
                               metadata={"name": name})
