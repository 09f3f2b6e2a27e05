"""ogbl-citation2 from ``<root>/ogbl_citation2/`` (OGB's layout), with user-supplied paper texts.

OGB's ``LinkPropPredDataset("ogbl-citation2", root)`` keeps, in ``ROOT/ogbl_citation2/``::

    raw/edge.csv.gz              one directed citation per line: "source,target" (no header)
    raw/num-node-list.csv.gz     one line: the number of nodes
    raw/node-feat.csv.gz         optional: 128 comma-separated floats per node (shallow features)
    raw/node_year.csv.gz         optional: publication year per node (not used)
    mapping/nodeidx2paperid.csv.gz   "node idx,paper id" with a header line (MAG paper ids)
    split/time/train.pt          torch-saved dict: source_node, target_node        [M]
    split/time/valid.pt, test.pt torch-saved dicts: source_node, target_node [M],
                                 target_node_neg [M, 1000] (the fixed negatives of each edge)

The split files are read with ``torch.load(weights_only=True)``: no code in them runs. OGB
saved their arrays as numpy arrays, so numpy's array reconstruction (and nothing else) is
allowed besides tensors; an array must hold integers.

OGB ships no texts. Give them as a ``titleabs.tsv.gz`` / ``titleabs.tsv`` file in
``ogbl_citation2/`` or in ``<root>/``: ``paper id \\t title \\t abstract`` per line, the format of
ogbn-arxiv's titleabs (read by :func:`fastleading.data.ogbn_arxiv.read_titleabs`: a tar member
inside the gzip stream, a header row or records of papers that are not nodes are all fine).
Node text: ``title + "\\n" + abstract``; more than half of the nodes without a text is an error.

The graph is the citations made undirected; the validation and test edges are removed from the
message-passing graph by :func:`fastleading.link.split.training_graph` (OGB's edge file
holds only the training edges already; removing them again is a no-op then). No node labels:
only ``train.task=link`` trains on it (``data.link_split`` = ``official``, the default).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fastleading.data import ogbn_common as ogb
from fastleading.data.ogbn_arxiv import _paper_id, read_titleabs
from fastleading.data.rawio import data_root, fingerprint
from fastleading.data.tag import NodeTexts, TextAttributedGraph
from fastleading.engine.graph import build_csr
from fastleading.errors import FastleadingError
from fastleading.link.split import LinkSplit

if TYPE_CHECKING:
    from fastleading.config import DataConfig

NAME = "ogbl-citation2"
DIR = "ogbl_citation2"
TEXT_NAMES = ("titleabs.tsv.gz", "titleabs.tsv")
SPLIT_KEYS = {"train": ("source_node", "target_node"),
              "valid": ("source_node", "target_node", "target_node_neg"),
              "test": ("source_node", "target_node", "target_node_neg")}


def required(folder: Path) -> list[Path]:
    return [folder / "raw" / "edge.csv.gz", folder / "raw" / "num-node-list.csv.gz",
            folder / "mapping" / "nodeidx2paperid.csv.gz",
            *(folder / "split" / "time" / f"{part}.pt" for part in SPLIT_KEYS)]


def _missing(what: Path, root: Path) -> FastleadingError:
    folder = root / DIR
    listing = ", ".join(str(p.relative_to(folder)) for p in required(folder))
    return FastleadingError(f"{NAME}: missing '{what}'; put OGB's {NAME} folder at '{folder}' ({listing}) and the "
                            f"paper texts (titleabs.tsv.gz: paper id, title, abstract, as ogbn-arxiv's) in that "
                            f"folder or in '{root}'")


def _files(root: Path) -> tuple[Path, Path]:
    folder = root / DIR
    for p in required(folder):
        if not p.is_file():
            raise _missing(p, root)
    for base in (folder, root):
        for name in TEXT_NAMES:
            if (base / name).is_file():
                return folder, base / name
    raise _missing(folder / TEXT_NAMES[0], root)


def options(cfg: DataConfig) -> dict:
    root = data_root(cfg.root)
    folder, text_file = _files(root)
    optional = [p for p in (folder / "raw" / "node-feat.csv.gz",) if p.is_file()]
    return {"files": fingerprint([*required(folder), *optional, text_file])}


def build(cfg: DataConfig) -> TextAttributedGraph:
    root = data_root(cfg.root)
    folder, text_file = _files(root)
    raw = folder / "raw"
    n = num_nodes(raw / "num-node-list.csv.gz")
    edges = ogb.read_ints(raw / "edge.csv.gz", 2)
    ogb.check_range(edges, 0, n, raw / "edge.csv.gz", "node ids of edge")
    mapping = folder / "mapping" / "nodeidx2paperid.csv.gz"
    keys = np.array([_paper_id(k, mapping) for k in ogb.read_node_keys(mapping, n)], dtype=object)
    texts = ogb.join_texts(keys, read_titleabs(text_file, set(keys)), str(text_file), "paper id")
    feat_file = raw / "node-feat.csv.gz"
    features = ogb.read_floats(feat_file, n) if feat_file.is_file() else None
    rowptr, col = build_csr(edges[:, 0].copy(), edges[:, 1].copy(), n)
    return TextAttributedGraph(rowptr, col, torch.full((n,), -1, dtype=torch.int64), [], {}, "",
                               NodeTexts.from_strings(texts), features, {"name": NAME, "link_split": "official"})


def num_nodes(path: Path) -> int:
    counts = ogb.read_ints(path, 1)
    if counts.shape[0] != 1 or counts[0, 0] < 1:
        raise FastleadingError(f"{path}: expected one line with the number of nodes")
    return int(counts[0, 0])


def _numpy_globals() -> list:
    """What unpickling plain numpy arrays needs (numpy 1 and 2 spell the module differently)."""
    core = getattr(np, "_core", None) or np.core
    rec = core.multiarray._reconstruct
    dtypes = [type(np.dtype(t)) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                                          np.uint64, np.float16, np.float32, np.float64, np.bool_)]
    return [rec, (rec, "numpy.core.multiarray._reconstruct"), (rec, "numpy._core.multiarray._reconstruct"),
            np.ndarray, np.dtype, *dtypes]


def load_split_file(path: Path, keys: tuple[str, ...], n: int) -> dict[str, torch.Tensor]:
    """One split file as int64 tensors, checked: the ``keys``, integer arrays, equal lengths,
    ``target_node_neg`` two-dimensional, every id in ``[0, n)``."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or something besides tensors and numpy arrays
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        first = next((line for line in lines if "Unsupported global" in line or "but got" in line),
                     lines[-1] if lines else type(e).__name__)
        raise FastleadingError(f"{path}: cannot load as a torch-saved dict of arrays with weights_only=True "
                               f"({first[:200]})") from None
    if not isinstance(data, dict) or any(k not in data for k in keys):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise FastleadingError(f"{path}: expected a dict with keys {', '.join(keys)}, got {got}")
    out = {}
    for k in keys:
        v = data[k]
        arr = torch.from_numpy(np.asarray(v)) if isinstance(v, np.ndarray) else v
        if not isinstance(arr, torch.Tensor) or arr.dtype.is_floating_point or arr.dtype.is_complex or \
                arr.dtype == torch.bool:
            raise FastleadingError(f"{path}: '{k}' must be an integer array, got "
                                   f"{getattr(arr, 'dtype', type(arr).__name__)}")
        want_dim = 2 if k == "target_node_neg" else 1
        if arr.dim() != want_dim:
            raise FastleadingError(f"{path}: '{k}' must be {want_dim}-dimensional, got shape {tuple(arr.shape)}")
        arr = arr.long()
        if arr.numel() and (int(arr.min()) < 0 or int(arr.max()) >= n):
            raise FastleadingError(f"{path}: '{k}' has node ids outside [0, {n})")
        out[k] = arr
    lengths = {k: len(v) for k, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise FastleadingError(f"{path}: expected one row per edge in every array, got lengths {lengths}")
    return out


def read_link_split(cfg: DataConfig, n: int) -> LinkSplit:
    """OGB's ``time`` split of ogbl-citation2 (see the module docstring)."""
    folder, _ = _files(data_root(cfg.root))
    parts = {part: load_split_file(folder / "split" / "time" / f"{part}.pt", keys, n)
             for part, keys in SPLIT_KEYS.items()}

    def edges(p: dict) -> torch.Tensor:
        return torch.stack([p["source_node"], p["target_node"]])

    return LinkSplit(edges(parts["train"]), edges(parts["valid"]), parts["valid"]["target_node_neg"],
                     edges(parts["test"]), parts["test"]["target_node_neg"], name="official")
