"""A small ogbl-citation2 folder in OGB's on-disk layout, for tests (see ogb_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ogb_fixtures import _rows, write_gz, write_titleabs_tar_gz


def write_ogbl_citation2(root: Path, n: int = 60, seed: int = 0, numpy_arrays: bool = True, num_neg: int = 1000,
                         text_in_root: bool = False, features: bool = True) -> dict:
    """``root/ogbl_citation2/`` plus ``titleabs.tsv.gz`` (tar inside gzip, like ogbn-arxiv's).

    Like OGB: directed citations; ``raw/edge.csv.gz`` holds the training edges only; the
    split files are torch-saved dicts of numpy arrays (``numpy_arrays=False``: of tensors);
    every validation / test edge has ``num_neg`` negative targets. The text file has 5 papers
    that are not nodes and a record order unlike the node order.
    """
    rng = np.random.default_rng(seed)
    folder = root / "ogbl_citation2"
    m = 4 * n
    edges = np.unique(rng.integers(0, n, (m, 2)), axis=0)
    edges = edges[edges[:, 0] != edges[:, 1]]
    edges = edges[rng.permutation(len(edges))]
    # OGB: valid/test hold one citation of some papers, removed from the graph
    n_eval = len(edges) // 10
    valid, test, train = edges[:n_eval], edges[n_eval:2 * n_eval], edges[2 * n_eval:]
    raw = folder / "raw"
    (folder / "processed").mkdir(parents=True)
    write_gz(raw / "edge.csv.gz", _rows(train))
    write_gz(raw / "num-node-list.csv.gz", f"{n}\n")
    write_gz(raw / "num-edge-list.csv.gz", f"{len(train)}\n")
    write_gz(raw / "node_year.csv.gz", _rows(rng.integers(1990, 2021, n)))
    feats = rng.standard_normal((n, 6)).astype(np.float32)
    if features:
        write_gz(raw / "node-feat.csv.gz", "".join(",".join(f"{v:.6f}" for v in row) + "\n" for row in feats))
    paper_ids = 1000 + rng.choice(10**9, n + 5, replace=False)
    write_gz(folder / "mapping" / "nodeidx2paperid.csv.gz",
             "node idx,paper id\n" + "".join(f"{i},{paper_ids[i]}\n" for i in range(n)))
    wrap = (lambda a: a) if numpy_arrays else torch.from_numpy
    split_dir = folder / "split" / "time"
    split_dir.mkdir(parents=True)
    torch.save({"source_node": wrap(train[:, 0].copy()), "target_node": wrap(train[:, 1].copy())},
               split_dir / "train.pt")
    negs = {}
    for name, part in (("valid", valid), ("test", test)):
        neg = rng.integers(0, n, (len(part), num_neg))
        negs[name] = neg
        torch.save({"source_node": wrap(part[:, 0].copy()), "target_node": wrap(part[:, 1].copy()),
                    "target_node_neg": wrap(neg)}, split_dir / f"{name}.pt")
    order = rng.permutation(n + 5)
    records = [f"{paper_ids[i]}\tTitle {i}\tAbstract of paper {i}." for i in order]
    write_titleabs_tar_gz((root if text_in_root else folder) / "titleabs.tsv.gz", "\n".join(records) + "\n")
    return {"num_nodes": n, "train": train, "valid": valid, "test": test, "valid_neg": negs["valid"],
            "test_neg": negs["test"], "features": feats,
            "texts": [f"Title {i}\nAbstract of paper {i}." for i in range(n)]}
