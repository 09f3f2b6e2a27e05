"""Small ogbn-arxiv / ogbn-products folders in OGB's exact on-disk layout, for tests.

Each writer returns the ground truth it wrote (edges, labels, split, texts per node),
so tests compare what the loaders read against what was generated.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterable
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


# The first record of OGB's titleabs.tsv.gz: a paper that is not a node of ogbn-arxiv.
EXTRA_FIRST_PAPER = 200971


def write_titleabs_tar_gz(path: Path, body: str) -> None:
    """``body`` as OGB ships ``titleabs.tsv.gz``: an uncompressed tar archive holding one
    file ``titleabs.tsv``, inside a gzip stream. So the 512-byte tar header (name, mode,
    octal sizes, NUL padding) comes right before the first record, NUL padding and the
    two zero end blocks come right after the last one, and there is no header row."""
    data = body.encode("utf-8")
    member = tarfile.TarInfo("titleabs.tsv")
    member.size, member.mode, member.mtime = len(data), 0o644, 1_600_000_000
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(data))


def write_ogbn_arxiv(root: Path, n: int = 50, seed: int = 0, text_in_root: bool = False,
                     tar: bool = True, first_is_node: bool = False, final_newline: bool = True) -> dict:
    """``root/ogbn_arxiv/`` plus ``titleabs.tsv.gz`` (in the folder, or in ``root``).

    ``tar``: the real file (see :func:`write_titleabs_tar_gz`); else a plain gzipped tsv
    with a header row. Like the real file, it has 20 more papers than the graph has
    nodes, in another order, and its first record is paper ``EXTRA_FIRST_PAPER``, not a
    node (``first_is_node``: a node's paper comes first instead). ``final_newline``: the
    last record ends with a newline before the padding.
    """
    rng = np.random.default_rng(seed)
    folder = root / "ogbn_arxiv"
    truth = _common(folder, rng, n, 40, "time", 8)
    write_gz(folder / "raw" / "node_year.csv.gz", _rows(rng.integers(1990, 2021, n)))
    paper_ids = EXTRA_FIRST_PAPER + 1 + rng.choice(10**9, n + 20, replace=False)
    write_gz(folder / "mapping" / "nodeidx2paperid.csv.gz",
             "node idx,paper id\n" + "".join(f"{i},{paper_ids[i]}\n" for i in range(n)))
    write_gz(folder / "mapping" / "labelidx2arxivcategeory.csv.gz",
             "label idx,arxiv category\n" + "".join(f"{c},arxiv cs c{c}\n" for c in range(40)))
    titles = [f"Title {i} \"quoted\", with comma" for i in range(n + 20)]
    abstracts = [f"Abstract of paper {i}.\tIt has a tab and unicode: é." for i in range(n + 20)]
    order = rng.permutation(n + 20)  # file order differs from node order; 20 papers are not nodes
    last = int(np.flatnonzero(order < n)[-1])  # the padding follows a node's record
    order = np.concatenate([np.delete(order, last), order[last:last + 1]])
    if first_is_node:
        first = int(np.flatnonzero(order < n)[0])
        order = np.concatenate([order[first:first + 1], np.delete(order, first)])
    records = [f"{paper_ids[i]}\t{titles[i]}\t{abstracts[i]}" for i in order]
    if not first_is_node:
        records.insert(0, f"{EXTRA_FIRST_PAPER}\tAn extra paper\tIt is not in the graph.")
    body = "\n".join(records) + ("\n" if final_newline else "")
    path = (root if text_in_root else folder) / "titleabs.tsv.gz"
    if tar:
        write_titleabs_tar_gz(path, body)
    else:
        write_gz(path, "paper id\ttitle\tabstract\n" + body)
    truth["texts"] = [f"{titles[i]}\n{abstracts[i]}" for i in range(n)]
    truth["class_names"] = [f"arxiv cs c{c}" for c in range(40)]
    truth["first_record_node"] = int(order[0]) if first_is_node else None
    truth["last_record_node"] = int(order[-1])
    return truth


def write_ogbn_products(root: Path, n: int = 50, seed: int = 0, gz: bool = False,
                        no_record: Iterable[int] | None = None) -> dict:
    """``root/ogbn_products/`` with ``Amazon-3M.raw/{trn,tst}.json`` (JSON lines).

    Like the real files: the raw files hold 10 products that are not nodes; the ASINs of
    the nodes in ``no_record`` (default: every 11th node from node 3) have no record at
    all; every 7th record has an empty ``content``; and node 5's record has neither
    title nor content. Nodes without a record or with an empty one get an empty text.
    """
    rng = np.random.default_rng(seed)
    folder = root / "ogbn_products"
    truth = _common(folder, rng, n, 47, "sales_ranking", 6)
    asins = [f"B{v:09d}" for v in rng.choice(10**9, n + 10, replace=False)]
    write_gz(folder / "mapping" / "nodeidx2asin.csv.gz",
             "node idx,asin\n" + "".join(f"{i},{asins[i]}\n" for i in range(n)))
    write_gz(folder / "mapping" / "labelidx2productcategory.csv.gz",
             "label idx,product category\n" + "".join(f"{c},Category {c}\n" for c in range(47)))
    missing = set(range(3, n, 11) if no_record is None else no_record)
    titles = ["" if i == 5 else f"Product {i}" for i in range(n + 10)]
    contents = ["" if i % 7 == 0 or i == 5 else f"Made of {i} parts." for i in range(n + 10)]
    items = [{"uid": asins[i], "title": titles[i], "content": contents[i],
              "target_ind": [1, 2], "target_rel": [1.0, 1.0]} for i in range(n + 10)]
    order = [i for i in rng.permutation(n + 10) if i not in missing]
    raw = folder / "Amazon-3M.raw"
    raw.mkdir(parents=True, exist_ok=True)
    half = len(order) // 2
    for name, part in (("trn.json", order[:half]), ("tst.json", order[half:])):
        text = "".join(json.dumps(items[i]) + "\n" for i in part)
        if gz:
            write_gz(raw / f"{name}.gz", text)
        else:
            (raw / name).write_text(text)
    truth["texts"] = ["" if i in missing else "\n".join(t for t in (titles[i], contents[i]) if t)
                      for i in range(n)]
    truth["empty_texts"] = sum(not t for t in truth["texts"])
    truth["class_names"] = [f"Category {c}" for c in range(47)]
    return truth
