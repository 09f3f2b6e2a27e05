"""A graph saved with :meth:`fastleading.data.tag.TextAttributedGraph.save` (``data.dataset=saved``,
``data.root=<its folder>``): how the Python API (:func:`fastleading.api.train`) trains on a
graph built in memory, and how a later ``load_run`` finds it again from the run's config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastleading.data.rawio import fingerprint
from fastleading.data.tag import TextAttributedGraph
from fastleading.errors import FastleadingError

if TYPE_CHECKING:
    from fastleading.config import DataConfig


def _folder(cfg: DataConfig) -> Path:
    folder = Path(cfg.root or "").expanduser()
    if not cfg.root or not (folder / "meta.json").is_file():
        raise FastleadingError(f"dataset 'saved': data.root '{cfg.root or ''}' is not a folder written by "
                               "TextAttributedGraph.save (no meta.json)")
    return folder


def options(cfg: DataConfig) -> dict:
    folder = _folder(cfg)
    return {"files": fingerprint(sorted(p for p in folder.rglob("*") if p.is_file()))}


def build(cfg: DataConfig) -> TextAttributedGraph:
    return TextAttributedGraph.load(_folder(cfg))
