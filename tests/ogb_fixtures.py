"""Small ogbn-arxiv / ogbn-products folders in OGB's exact on-disk layout, for tests.

Each writer returns the ground truth it wrote (edges, labels, split, texts per node),
so tests compare what the loaders read against what was generated.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np


def write_gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write(text)


def _rows(arr: np.ndarray) -> str:
    arr = np.asarray(arr)
    if arr.ndim == 1:
        arr = arr[:, None]
    return "".join(",".join(str(v) for v in row) + "\n" for row in arr.tolist())


def _common(folder: Path, rng: np.random.Generator, n: int, num_classes: int, split: str,
            feat_dim: int) -> dict:
    """OGB's raw/ and split/ files of a random directed graph (with duplicates and self-loops)."""
    m = 3 * n
    edges = rng.integers(0, n, (m, 2))
    edges[:3] = [[0, 0], [1, 2], [1, 2]]  # a self-loop and a duplicate, as real data has
    labels = rng.integers(0, num_classes, n)
    feats = rng.standard_normal((n, feat_dim)).astype(np.float32)
    perm = rng.permutation(n)
    parts = {"train": np.sort(perm[: n // 2]), "valid": np.sort(perm[n // 2: 3 * n // 4]),
             "test": np.sort(perm[3 * n // 4:])}
    (folder / "processed").mkdir(parents=True)  # OGB's zip ships an empty processed/ folder
    (folder / "RELEASE_v1.txt").write_text("fixture\n")
    raw = folder / "raw"
    write_gz(raw / "edge.csv.gz", _rows(edges))
    write_gz(raw / "num-node-list.csv.gz", f"{n}\n")
    write_gz(raw / "num-edge-list.csv.gz", f"{m}\n")
    write_gz(raw / "node-label.csv.gz", _rows(labels))
    write_gz(raw / "node-feat.csv.gz", "".join(",".join(f"{v:.6f}" for v in row) + "\n" for row in feats))
    for name, idx in parts.items():
        write_gz(folder / "split" / split / f"{name}.csv.gz", _rows(idx))
    return {"num_nodes": n, "edges": edges, "labels": labels, "features": feats, "split": parts}


def write_ogbn_arxiv(root: Path, n: int = 50, seed: int = 0, text_in_root: bool = False) -> dict:
    """``root/ogbn_arxiv/`` plus ``titleabs.tsv.gz`` (in the folder, or in ``root``)."""
    rng = np.random.default_rng(seed)
    folder = root / "ogbn_arxiv"
    truth = _common(folder, rng, n, 40, "time", 8)
    write_gz(folder / "raw" / "node_year.csv.gz", _rows(rng.integers(1990, 2021, n)))
    paper_ids = rng.choice(10**9, n + 20, replace=False)
    write_gz(folder / "mapping" / "nodeidx2paperid.csv.gz",
             "node idx,paper id\n" + "".join(f"{i},{paper_ids[i]}\n" for i in range(n)))
    write_gz(folder / "mapping" / "labelidx2arxivcategeory.csv.gz",
             "label idx,arxiv category\n" + "".join(f"{c},arxiv cs c{c}\n" for c in range(40)))
    titles = [f"Title {i} \"quoted\", with comma" for i in range(n + 20)]
    abstracts = [f"Abstract of paper {i}.\tIt has a tab and unicode: é." for i in range(n + 20)]
    order = rng.permutation(n + 20)  # file order differs from node order; 20 papers are not nodes
    body = "".join(f"{paper_ids[i]}\t{titles[i]}\t{abstracts[i]}\n" for i in order)
    write_gz((root if text_in_root else folder) / "titleabs.tsv.gz", "paper id\ttitle\tabstract\n" + body)
    truth["texts"] = [f"{titles[i]}\n{abstracts[i]}" for i in range(n)]
    truth["class_names"] = [f"arxiv cs c{c}" for c in range(40)]
    return truth


def write_ogbn_products(root: Path, n: int = 50, seed: int = 0, gz: bool = False) -> dict:
    """``root/ogbn_products/`` with ``Amazon-3M.raw/{trn,tst}.json`` (JSON lines)."""
    rng = np.random.default_rng(seed)
    folder = root / "ogbn_products"
    truth = _common(folder, rng, n, 47, "sales_ranking", 6)
    asins = [f"B{v:09d}" for v in rng.choice(10**9, n + 10, replace=False)]
    write_gz(folder / "mapping" / "nodeidx2asin.csv.gz",
             "node idx,asin\n" + "".join(f"{i},{asins[i]}\n" for i in range(n)))
    write_gz(folder / "mapping" / "labelidx2productcategory.csv.gz",
             "label idx,product category\n" + "".join(f"{c},Category {c}\n" for c in range(47)))
    items = [{"uid": asins[i], "title": f"Product {i}", "content": "" if i % 7 == 0 else f"Made of {i} parts.",
              "target_ind": [1, 2], "target_rel": [1.0, 1.0]} for i in range(n + 10)]
    order = rng.permutation(n + 10)
    raw = folder / "Amazon-3M.raw"
    raw.mkdir(parents=True, exist_ok=True)
    half = len(order) // 2
    for name, part in (("trn.json", order[:half]), ("tst.json", order[half:])):
        text = "".join(json.dumps(items[i]) + "\n" for i in part)
        if gz:
            write_gz(raw / f"{name}.gz", text)
        else:
            (raw / name).write_text(text)
    truth["texts"] = [f"Product {i}" if i % 7 == 0 else f"Product {i}\nMade of {i} parts." for i in range(n)]
    truth["class_names"] = [f"Category {c}" for c in range(47)]
    return truth
