"""Your own text-attributed graph, from a folder (``data.dataset=custom``, ``data.root=<folder>``).

Folder format::

    nodes.csv  or  nodes.jsonl     one node per row (required)
    edges.csv                      one edge per row (required; may hold only the header)
    classes.txt                    one class name per line (optional; fixes the class order)

``nodes.csv`` has a header line naming its columns (other columns are ignored):

* ``id``: any string, unique per node (required);
* ``text``: the node's text (required column; quote it when it holds commas, quotes or
  line breaks, as the csv module / spreadsheets do). A text may be empty (a paper without
  an abstract): empty texts are counted (``fastleading info``) and encoded as the model's
  special tokens alone; a file where most texts are empty is refused;
* ``label``: a class name, or an integer class index; empty = unknown (optional);
* ``split``: ``train``, ``valid``, ``test`` or empty (optional).

``nodes.jsonl`` holds one JSON object per line with the same keys (``label`` a string
or an integer, ``null`` or missing = unknown; ``text`` a string, ``null`` or missing = empty).

Every file is read as UTF-8, with or without a byte-order mark (spreadsheet programs write
one).

``edges.csv`` has the header ``src,dst`` and one edge per line between two node ids of
the nodes file. Edges are made undirected; self-loops and duplicates are dropped.

Classes: the names in ``classes.txt`` when present (labels must be one of them, or an
index below their count); else the sorted distinct label names, or, when every label
is an integer, the indices ``0 .. max``. Splits: ``given`` (from the ``split`` column,
the default when present) and seeded ``low-0..4`` (20 per class / 500 / 1000) and
``high-0..4`` (60/20/20) over the labelled nodes. Shallow features: TF-IDF of the texts.

Every problem (missing file or column, duplicate or unknown node id, most texts empty, label
outside the classes, unknown split name) is reported with the file and line.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from fastleading.data.features import tfidf_features
from fastleading.data.rawio import fingerprint
from fastleading.data.splits import seeded_splits
from fastleading.data.tag import NodeTexts, Split, TextAttributedGraph
from fastleading.engine.graph import build_csr
from fastleading.errors import FastleadingError

if TYPE_CHECKING:
    from fastleading.config import DataConfig

SPLIT_NAMES = ("train", "valid", "test")
ENCODING = "utf-8-sig"  # UTF-8 with or without a byte-order mark
NUM_SEEDS = 5


def _folder(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise FastleadingError("dataset 'custom': set data.root to the folder with nodes.csv (or nodes.jsonl) "
                               "and edges.csv")
    folder = Path(cfg.root).expanduser()
    if not folder.is_dir():
        raise FastleadingError(f"dataset 'custom': data.root '{folder}' is not a folder")
    return folder


def _files(folder: Path) -> tuple[Path, Path, Path | None]:
    nodes = [folder / "nodes.csv", folder / "nodes.jsonl"]
    found = [p for p in nodes if p.is_file()]
    if not found:
        raise FastleadingError(f"dataset 'custom': '{nodes[0]}' (or nodes.jsonl) not found")
    if len(found) > 1:
        raise FastleadingError(f"dataset 'custom': both nodes.csv and nodes.jsonl in '{folder}'; keep one")
    edges = folder / "edges.csv"
    if not edges.is_file():
        raise FastleadingError(f"dataset 'custom': '{edges}' not found (header 'src,dst', one edge per line)")
    classes = folder / "classes.txt"
    return found[0], edges, classes if classes.is_file() else None


def options(cfg: DataConfig) -> dict:
    nodes, edges, classes = _files(_folder(cfg))
    return {"files": fingerprint([p for p in (nodes, edges, classes) if p is not None])}


def not_utf8(path: Path) -> FastleadingError:
    """The one line for a text file that is not UTF-8: the line and the byte where it stops
    being UTF-8 (found on this error path only, by decoding the whole file again)."""
    data = Path(path).read_bytes()
    try:
        data.decode(ENCODING)
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        return FastleadingError(f"{path}: line {line}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}; "
                                "Latin-1 or Windows-1252?); save the file as UTF-8")
    return FastleadingError(f"{path}: not UTF-8; save the file as UTF-8")


@contextlib.contextmanager
def text_faults(path: Path, line: Callable[[], int]) -> Iterator[None]:
    """Turn what reading the text file ``path`` can meet into one line each: bytes that are not
    UTF-8, and CSV quoting that does not close (``line()``: where the row being read starts)."""
    try:
        yield
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except csv.Error as e:
        where = f"{path}: line {line()}"
        if "unexpected end of data" in str(e):
            raise FastleadingError(f"{where}: the quote opened on this line is never closed (the file ends inside "
                                   "the quoted field); close it, or double a quote that is part of the text "
                                   '(\"\")') from None
        raise FastleadingError(f"{where}: malformed CSV ({e})") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    last = 0
    with open(path, encoding=ENCODING, newline="") as f, text_faults(path, lambda: last + 1):
        reader = csv.DictReader(f, strict=True)
        if reader.fieldnames is None:
            raise FastleadingError(f"{path}: empty file (expected a header line 'id,text[,label][,split]')")
        fields = [c.strip() for c in reader.fieldnames]
        for col in ("id", "text"):
            if col not in fields:
                raise FastleadingError(f"{path}: line 1: no '{col}' column in the header "
                                       f"(expected id,text[,label][,split], got {','.join(fields)})")
        reader.fieldnames = fields
        last = reader.line_num
        for row in reader:
            # A quoted text may span several lines: report the line where the row starts.
            nid = (row.get("id") or "").strip()
            if row.get("text") is None and nid:
                raise FastleadingError(f"{path}: line {last + 1}: node '{nid}' has no text field (expected "
                                       f"{','.join(fields)}; an empty text is written '{nid},')")
            yield last + 1, {k: (v or "") for k, v in row.items() if k is not None}
            last = reader.line_num


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    line_no = 0
    with open(path, encoding=ENCODING) as f, text_faults(path, lambda: line_no + 1):
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise FastleadingError(f"{path}: line {line_no}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise FastleadingError(f"{path}: line {line_no}: expected a JSON object with id and text")
            yield line_no, row


def read_nodes(path: Path) -> tuple[list[str], list[str], list[object], list[str], list[int]]:
    """Ids, texts, raw labels (str/int/None), split names and line numbers of every node."""
    rows = _csv_rows(path) if path.suffix == ".csv" else _jsonl_rows(path)
    ids: list[str] = []
    texts: list[str] = []
    labels: list[object] = []
    splits: list[str] = []
    lines: list[int] = []
    seen: dict[str, int] = {}  # id -> its line
    for line_no, row in rows:
        where = f"{path}: line {line_no}"
        if row.get("id") is None or str(row["id"]).strip() == "":
            raise FastleadingError(f"{where}: missing node id")
        nid = str(row["id"]).strip()
        if nid in seen:
            raise FastleadingError(f"{where}: duplicate node id '{nid}' (first on line {seen[nid]})")
        text = row.get("text")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise FastleadingError(f"{where}: text of node '{nid}' must be a string, got {type(text).__name__}")
        label = row.get("label")
        if isinstance(label, str):
            label = label.strip() or None
        if isinstance(label, bool) or (label is not None and not isinstance(label, (str, int))):
            raise FastleadingError(f"{where}: label of node '{nid}' must be a class name or an integer")
        split = str(row.get("split") or "").strip()
        if split and split not in SPLIT_NAMES:
            raise FastleadingError(f"{where}: unknown split '{split}' for node '{nid}' "
                                   f"(expected train, valid, test or empty)")
        if split and label is None:
            raise FastleadingError(f"{where}: node '{nid}' is in split '{split}' but has no label")
        seen[nid] = line_no
        ids.append(nid)
        texts.append(text.strip())
        labels.append(label)
        splits.append(split)
        lines.append(line_no)
    if not ids:
        raise FastleadingError(f"{path}: no nodes")
    empty = [i for i, t in enumerate(texts) if not t]
    if 2 * len(empty) > len(ids):
        raise FastleadingError(f"{path}: {len(empty)} of {len(ids)} node texts are empty (first: node "
                               f"'{ids[empty[0]]}', line {lines[empty[0]]}); most nodes would have nothing for the "
                               "language model to encode (fill in the texts)")
    return ids, texts, labels, splits, lines


def _as_int(label: object) -> int | None:
    if isinstance(label, int):
        return label
    try:
        return int(str(label))
    except ValueError:
        return None


def class_indices(raw: list[object], lines: list[int], path: Path,
                  classes_file: Path | None) -> tuple[np.ndarray, list[str]]:
    """Map raw labels to class indices (int64 ``[N]``, -1 = unknown) and class names."""
    given = [lab for lab in raw if lab is not None]
    names: list[str]
    if classes_file is not None:
        names = [ln.strip() for ln in classes_file.read_text(encoding=ENCODING).splitlines() if ln.strip()]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise FastleadingError(f"{classes_file}: duplicate class name '{sorted(dup)[0]}'")
        if not names:
            raise FastleadingError(f"{classes_file}: no class names")
    elif given and all(_as_int(lab) is not None for lab in given):
        names = [str(c) for c in range(max(v for v in map(_as_int, given) if v is not None) + 1)]
    else:
        names = sorted({str(lab) for lab in given})
    index = {n: c for c, n in enumerate(names)}
    labels = np.full(len(raw), -1, dtype=np.int64)
    for i, lab in enumerate(raw):
        if lab is None:
            continue
        if str(lab) in index:
            c = index[str(lab)]
        elif (k := _as_int(lab)) is not None:
            if not 0 <= k < len(names):
                raise FastleadingError(f"{path}: line {lines[i]}: label {lab} outside the class range "
                                       f"0..{len(names) - 1}")
            c = k
        else:
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise FastleadingError(f"{path}: line {lines[i]}: unknown class '{lab}' (expected one of {shown})")
        labels[i] = c
    return labels, names


class NodeLookup(Protocol):
    """Node id -> index, or None for an unknown id (a dict, or ``predict``'s index of new nodes)."""

    def get(self, name: str, /) -> int | None: ...


def read_edges(path: Path, node_of: NodeLookup) -> tuple[np.ndarray, np.ndarray]:
    src, dst, last = [], [], 0
    with open(path, encoding=ENCODING, newline="") as f, text_faults(path, lambda: last + 1):
        reader = csv.reader(f, strict=True)
        header = next(reader, None)
        last = reader.line_num
        if header is None or [h.strip() for h in header] != ["src", "dst"]:
            raise FastleadingError(f"{path}: line 1: expected the header 'src,dst', got {','.join(header or [])!r}")
        for row in reader:
            last = reader.line_num  # a row read whole: a fault of the next one starts after it
            if not row or all(not v.strip() for v in row):
                continue
            if len(row) != 2:
                raise FastleadingError(f"{path}: line {reader.line_num}: expected 'src,dst', got {len(row)} fields")
            ends = []
            for v in row:
                i = node_of.get(v.strip())
                if i is None:
                    raise FastleadingError(f"{path}: line {reader.line_num}: unknown node id '{v.strip()}' "
                                           f"(not in the nodes file)")
                ends.append(i)
            src.append(ends[0])
            dst.append(ends[1])
    return np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)


def build(cfg: DataConfig) -> TextAttributedGraph:
    folder = _folder(cfg)
    nodes_file, edges_file, classes_file = _files(folder)
    ids, texts, raw_labels, split_of, lines = read_nodes(nodes_file)
    labels, names = class_indices(raw_labels, lines, nodes_file, classes_file)
    src, dst = read_edges(edges_file, {nid: i for i, nid in enumerate(ids)})
    rowptr, col = build_csr(src, dst, len(ids))
    splits: dict[str, Split] = {}
    if any(split_of):
        where = np.asarray(split_of)
        splits["given"] = Split(*(torch.from_numpy(np.flatnonzero(where == s).astype(np.int64))
                                  for s in SPLIT_NAMES))
    if (labels >= 0).any():
        splits.update(seeded_splits(labels, NUM_SEEDS))
    default = next(iter(splits), "")
    features, _ = tfidf_features(texts)
    return TextAttributedGraph(rowptr, col, torch.from_numpy(labels), names, splits, default,
                               NodeTexts.from_strings(texts), features,
                               {"name": "custom", "source": str(folder.resolve()), "node_ids": ids})
