"""Reading OGB node-property datasets from their on-disk layout, without ogb's downloader.

OGB's ``NodePropPredDataset(name, root)`` keeps, in ``ROOT/<name with _>/``::

    RELEASE_v1.txt
    raw/edge.csv.gz            one directed edge per line: "src,dst" (no header)
    raw/num-node-list.csv.gz   one line: the number of nodes
    raw/node-label.csv.gz      one class index per node and line
    raw/node-feat.csv.gz       optional: one comma-separated float vector per node
    split/<split>/{train,valid,test}.csv.gz   one node index per line
    mapping/...                node index -> original ids, label index -> class name

The raw files are read here directly (pandas' C parser; ogb reads them the same way),
so ogb never prompts on stdin for a missing RELEASE file and its ``torch.load`` of the
processed file (which fails with torch >= 2.6's ``weights_only``) is never needed.
Bad input (non-integer fields, node ids out of range, labels out of range) is reported
with the file and line.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastleading.data.rawio import fingerprint, open_text
from fastleading.data.tag import Split
from fastleading.errors import FastleadingError


@dataclass(frozen=True)
class OgbLayout:
    """What differs between the OGB node datasets we read."""

    name: str                # "ogbn-arxiv"
    split: str               # folder under split/, e.g. "time"
    num_classes: int         # from ogb's nodeproppred/master.csv
    node_mapping: str        # mapping/<file>: node idx -> original id
    class_mapping: str       # mapping/<file>: label idx -> class name
    text_hint: str           # where the raw texts go, for error messages

    @property
    def dir_name(self) -> str:
        return self.name.replace("-", "_")

    def required(self, folder: Path) -> list[Path]:
        raw, split = folder / "raw", folder / "split" / self.split
        return [raw / "edge.csv.gz", raw / "num-node-list.csv.gz", raw / "node-label.csv.gz",
                split / "train.csv.gz", split / "valid.csv.gz", split / "test.csv.gz",
                folder / "mapping" / self.node_mapping]

    def missing(self, what: Path, root: Path) -> FastleadingError:
        folder = root / self.dir_name
        listing = ", ".join(str(p.relative_to(folder)) for p in self.required(folder))
        return FastleadingError(
            f"{self.name}: missing '{what}'; put OGB's {self.name} folder at '{folder}' "
            f"({listing}) and the raw texts {self.text_hint}")


def check_files(layout: OgbLayout, root: Path) -> Path:
    """The dataset folder, after checking that every required file is there."""
    folder = root / layout.dir_name
    for p in layout.required(folder):
        if not p.is_file():
            raise layout.missing(p, root)
    return folder


def options(layout: OgbLayout, root: Path, text_files: Sequence[Path]) -> dict:
    folder = check_files(layout, root)
    optional = [p for p in (folder / "raw" / "node-feat.csv.gz", folder / "mapping" / layout.class_mapping)
                if p.is_file()]
    return {"files": fingerprint([*layout.required(folder), *optional, *text_files])}


def _first_bad_line(path: Path, ncols: int, parse: Callable[[str], object], expected: str) -> FastleadingError:
    """Scan a file that pandas refused and name its first malformed line."""
    with open_text(path) as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            try:
                if len(row) != ncols:
                    raise ValueError
                for v in row:
                    parse(v)
            except ValueError:
                return FastleadingError(f"{path}: line {line_no}: expected {expected}, got '{','.join(row)}'")
    return FastleadingError(f"{path}: cannot parse as {expected} per line")


def read_ints(path: Path, ncols: int) -> np.ndarray:
    """A headerless integer CSV as int64 ``[rows, ncols]``."""
    import pandas as pd

    expected = f"{ncols} comma-separated integer{'s' if ncols > 1 else ''}"
    try:
        # copy=True: pandas' copy-on-write hands out read-only arrays; torch wants writable ones.
        arr = pd.read_csv(path, header=None, dtype=np.int64).to_numpy(copy=True)
    except pd.errors.EmptyDataError:
        return np.zeros((0, ncols), dtype=np.int64)
    except (ValueError, TypeError, pd.errors.ParserError):
        raise _first_bad_line(path, ncols, int, expected) from None
    if arr.shape[1] != ncols:
        raise _first_bad_line(path, ncols, int, expected)
    return arr


def read_floats(path: Path, rows: int) -> torch.Tensor:
    """A headerless float CSV (node features) as float32 ``[rows, F]``."""
    import pandas as pd

    try:
        arr = pd.read_csv(path, header=None, dtype=np.float32).to_numpy(copy=True)
    except (ValueError, TypeError, pd.errors.ParserError):
        with open_text(path) as f:
            ncols = len(f.readline().split(","))
        raise _first_bad_line(path, ncols, float, f"{ncols} comma-separated numbers") from None
    if arr.shape[0] != rows:
        raise FastleadingError(f"{path}: expected {rows} rows (one per node), got {arr.shape[0]}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def check_range(values: np.ndarray, lo: int, hi: int, path: Path, what: str) -> None:
    """Error naming the first line whose value is outside ``[lo, hi)`` (row = line - 1)."""
    bad = np.flatnonzero(((values < lo) | (values >= hi)).reshape(len(values), -1).any(axis=1))
    if len(bad):
        row = int(bad[0])
        raise FastleadingError(f"{path}: line {row + 1}: {what} {values[row].tolist()} out of range "
                               f"(expected {lo} <= value < {hi})")


@dataclass
class OgbGraph:
    """The parts of an OGB node dataset that do not depend on its texts."""

    num_nodes: int
    src: np.ndarray          # int64 [M]
    dst: np.ndarray          # int64 [M]
    labels: np.ndarray       # int64 [N]
    split: Split
    class_names: list[str]
    features: torch.Tensor | None


def read_graph(layout: OgbLayout, folder: Path) -> OgbGraph:
    raw = folder / "raw"
    counts = read_ints(raw / "num-node-list.csv.gz", 1)
    if counts.shape[0] != 1 or counts[0, 0] < 1:
        raise FastleadingError(f"{raw / 'num-node-list.csv.gz'}: expected one line with the number of nodes")
    n = int(counts[0, 0])
    edges = read_ints(raw / "edge.csv.gz", 2)
    check_range(edges, 0, n, raw / "edge.csv.gz", "node ids of edge")
    labels = read_ints(raw / "node-label.csv.gz", 1)[:, 0]
    if len(labels) != n:
        raise FastleadingError(f"{raw / 'node-label.csv.gz'}: expected {n} lines (one label per node), "
                               f"got {len(labels)}")
    check_range(labels, 0, layout.num_classes, raw / "node-label.csv.gz", "label")
    parts = []
    for part in ("train", "valid", "test"):
        path = folder / "split" / layout.split / f"{part}.csv.gz"
        idx = read_ints(path, 1)[:, 0]
        check_range(idx, 0, n, path, "node index")
        parts.append(torch.from_numpy(np.sort(idx)))
    feat_file = raw / "node-feat.csv.gz"
    features = read_floats(feat_file, n) if feat_file.is_file() else None
    return OgbGraph(n, edges[:, 0].copy(), edges[:, 1].copy(), labels, Split(*parts),
                    read_class_names(folder / "mapping" / layout.class_mapping, layout.num_classes), features)


def read_class_names(path: Path, num_classes: int) -> list[str]:
    """Class names from a ``label idx,<name>`` mapping (header line first), if present."""
    names = [f"class-{c}" for c in range(num_classes)]
    if path.is_file():
        import pandas as pd

        table = pd.read_csv(path)
        for idx, name in zip(table.iloc[:, 0], table.iloc[:, 1], strict=True):
            if 0 <= int(idx) < num_classes:
                names[int(idx)] = str(name)
    return names


def read_node_keys(path: Path, num_nodes: int) -> np.ndarray:
    """Original id of every node from a ``node idx,<id>`` mapping (header line first)."""
    import pandas as pd

    table = pd.read_csv(path, dtype=str)
    if table.shape[1] != 2:
        raise FastleadingError(f"{path}: expected two columns 'node idx,<original id>'")
    try:
        idx = table.iloc[:, 0].astype(np.int64).to_numpy()
    except ValueError:
        raise _first_bad_line(path, 2, str, "'node idx,<original id>'") from None
    check_range(idx, 0, num_nodes, path, "node idx")
    keys = np.empty(num_nodes, dtype=object)
    keys[idx] = table.iloc[:, 1].str.strip().to_numpy()
    if len(np.unique(idx)) != num_nodes:
        raise FastleadingError(f"{path}: expected one line per node 0..{num_nodes - 1}, got {len(idx)} "
                               f"lines covering {len(np.unique(idx))} nodes")
    return keys


def join_texts(keys: np.ndarray, text_of: dict[str, str], source: str, key_name: str) -> list[str]:
    """Text of every node through its original id; ``""`` where ``text_of`` has none.

    Real files miss a few (ogbn-products: ASINs without a record, records with neither
    title nor content); ``fastleading info`` counts those nodes. When MORE than half the
    nodes have no text, the texts are not this graph's: an error names ``source``, the
    count and the first such node.
    """
    texts = [text_of.get(k, "") for k in keys]
    empty = np.flatnonzero(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) == 0)
    if 2 * len(empty) > len(texts):
        i = int(empty[0])
        raise FastleadingError(f"{source}: no text for {len(empty)} of {len(texts)} nodes, e.g. node {i} "
                               f"({key_name} {keys[i]}); expected a text for most nodes' {key_name}s "
                               f"(are these the texts of this graph?)")
    return texts
