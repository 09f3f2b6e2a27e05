"""ogbn-products with product titles and descriptions, from ``<root>/ogbn_products/``.

Graph, labels (47 categories), node features (100-d bag-of-words, used as shallow
features) and the ``sales_ranking`` split come from OGB's files (see
:mod:`fastleading.data.ogbn_common`). Texts come from the Amazon-3M raw files of the
Extreme Classification Repository, ``Amazon-3M.raw/trn.json`` and ``tst.json``
(JSON lines with ``uid`` = ASIN, ``title``, ``content``; gzipped or not), in
``<root>/ogbn_products/Amazon-3M.raw/`` or ``<root>/Amazon-3M.raw/``, joined to the
nodes through ``mapping/nodeidx2asin.csv.gz`` (``node idx,asin`` with a header line).
Node text: ``title + "\\n" + content`` (content may be empty). Some ASINs of the mapping
have no record at all and some records are empty: those nodes get an empty text, which
``fastleading info`` counts (see :func:`fastleading.data.ogbn_common.join_texts`). Class
names come from ``mapping/labelidx2productcategory.csv.gz`` when present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fastleading.data import ogbn_common as ogb
from fastleading.data.rawio import data_root, open_text
from fastleading.data.tag import NodeTexts, TextAttributedGraph
from fastleading.engine.graph import build_csr
from fastleading.errors import FastleadingError

if TYPE_CHECKING:
    from fastleading.config import DataConfig

LAYOUT = ogb.OgbLayout(name="ogbn-products", split="sales_ranking", num_classes=47,
                       node_mapping="nodeidx2asin.csv.gz",
                       class_mapping="labelidx2productcategory.csv.gz",
                       text_hint="(Amazon-3M.raw/trn.json and tst.json: uid, title, content) in that folder")
RAW_TEXT_DIR = "Amazon-3M.raw"


def _text_files(root: Path) -> list[Path]:
    folder = ogb.check_files(LAYOUT, root)
    files = []
    for part in ("trn", "tst"):
        candidates = [base / RAW_TEXT_DIR / f"{part}.json{gz}" for base in (folder, root) for gz in (".gz", "")]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise LAYOUT.missing(folder / RAW_TEXT_DIR / f"{part}.json", root)
        files.append(found[0])
    return files


def options(cfg: DataConfig) -> dict:
    root = data_root(cfg.root)
    return ogb.options(LAYOUT, root, _text_files(root))


def build(cfg: DataConfig) -> TextAttributedGraph:
    root = data_root(cfg.root)
    text_files = _text_files(root)
    folder = root / LAYOUT.dir_name
    g = ogb.read_graph(LAYOUT, folder)
    keys = ogb.read_node_keys(folder / "mapping" / LAYOUT.node_mapping, g.num_nodes)
    wanted = set(keys)
    text_of: dict[str, str] = {}
    for path in text_files:
        text_of.update(read_amazon_texts(path, wanted))
    texts = ogb.join_texts(keys, text_of, " + ".join(map(str, text_files)), "asin")
    rowptr, col = build_csr(g.src, g.dst, g.num_nodes)
    return TextAttributedGraph(rowptr, col, torch.from_numpy(g.labels), g.class_names,
                               {"sales_ranking": g.split}, "sales_ranking", NodeTexts.from_strings(texts),
                               g.features, {"name": LAYOUT.name})


def read_amazon_texts(path: Path, wanted: set[str]) -> dict[str, str]:
    """``asin -> "title\\ncontent"`` for the products in ``wanted``."""
    out = {}
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                uid = str(item["uid"]).strip()
            except (ValueError, KeyError, TypeError):
                raise FastleadingError(f"{path}: line {line_no}: expected a JSON object with "
                                       f"'uid', 'title' and 'content'") from None
            if uid in wanted:
                title = str(item.get("title") or "").strip()
                content = str(item.get("content") or "").strip()
                out[uid] = "\n".join(p for p in (title, content) if p)
    return out
