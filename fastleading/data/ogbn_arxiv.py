"""ogbn-arxiv with titles and abstracts, from ``<root>/ogbn_arxiv/`` (OGB's layout).

Graph, labels (40 arXiv CS categories), node features (128-d word2vec averages, used
as shallow features) and the ``time`` split come from OGB's files (see
:mod:`fastleading.data.ogbn_common`). Texts come from OGB's ``titleabs.tsv.gz``
(https://snap.stanford.edu/ogb/data/misc/ogbn_arxiv/titleabs.tsv.gz; three
tab-separated columns ``paper id \\t title \\t abstract``), placed in
``<root>/ogbn_arxiv/`` or ``<root>/`` (gzipped or not), and joined to the nodes through
``mapping/nodeidx2paperid.csv.gz`` (``node idx,paper id`` with a header line). The real
file is a tar archive (one file, ``titleabs.tsv``) inside the gzip stream, with no
header row; :func:`fastleading.data.rawio.open_text` unpacks it, so neither the tar
header before the first record nor the NUL padding after the last one reaches the
texts. It holds more papers than the graph has nodes (179,720 records for 169,343
nodes; the first, paper 200971, is not a node): papers that are not nodes are ignored.
Lines whose first field is not an integer (a header row of a plain tsv) are skipped.
Node text: ``title + "\\n" + abstract``; a node whose paper has no record gets an empty
text (see :func:`fastleading.data.ogbn_common.join_texts`). Class names come from
``mapping/labelidx2arxivcategeory.csv.gz`` (OGB's spelling) when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fastleading.data import ogbn_common as ogb
from fastleading.data.rawio import data_root, open_text
from fastleading.data.tag import NodeTexts, TextAttributedGraph
from fastleading.engine.graph import build_csr
from fastleading.errors import FastleadingError

if TYPE_CHECKING:
    from fastleading.config import DataConfig

LAYOUT = ogb.OgbLayout(name="ogbn-arxiv", split="time", num_classes=40,
                       node_mapping="nodeidx2paperid.csv.gz",
                       class_mapping="labelidx2arxivcategeory.csv.gz",
                       text_hint="(titleabs.tsv.gz: paper id, title, abstract) in that folder")
TEXT_NAMES = ("titleabs.tsv.gz", "titleabs.tsv")


def _text_file(root: Path) -> Path:
    folder = ogb.check_files(LAYOUT, root)
    for base in (folder, root):
        for name in TEXT_NAMES:
            if (base / name).is_file():
                return base / name
    raise LAYOUT.missing(folder / TEXT_NAMES[0], root)


def options(cfg: DataConfig) -> dict:
    root = data_root(cfg.root)
    return ogb.options(LAYOUT, root, [_text_file(root)])


def build(cfg: DataConfig) -> TextAttributedGraph:
    root = data_root(cfg.root)
    text_file = _text_file(root)
    folder = root / LAYOUT.dir_name
    g = ogb.read_graph(LAYOUT, folder)
    mapping = folder / "mapping" / LAYOUT.node_mapping
    keys = ogb.read_node_keys(mapping, g.num_nodes)
    keys = np.array([_paper_id(k, mapping) for k in keys], dtype=object)
    texts = ogb.join_texts(keys, read_titleabs(text_file, set(keys)), str(text_file), "paper id")
    rowptr, col = build_csr(g.src, g.dst, g.num_nodes)
    return TextAttributedGraph(rowptr, col, torch.from_numpy(g.labels), g.class_names, {"time": g.split},
                               "time", NodeTexts.from_strings(texts), g.features, {"name": LAYOUT.name})


def _paper_id(key: str, path: Path) -> str:
    try:
        return str(int(key))  # canonical form, so "0123" in one file matches "123" in the other
    except ValueError:
        raise FastleadingError(f"{path}: paper id '{key}' is not an integer") from None


def read_titleabs(path: Path, wanted: set[str]) -> dict[str, str]:
    """``paper id -> "title\\nabstract"`` for the papers in ``wanted``."""
    out = {}
    with open_text(path) as f:
        for line in f:
            parts = line.rstrip("\r\n").split("\t", 2)
            try:
                pid = str(int(parts[0]))
            except ValueError:
                continue  # the header row of a plain tsv
            if pid in wanted:
                title = parts[1].strip() if len(parts) > 1 else ""
                abstract = parts[2].strip() if len(parts) > 2 else ""
                out[pid] = "\n".join(p for p in (title, abstract) if p)
    return out
