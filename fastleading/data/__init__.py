"""Datasets: a registry of loaders, the processed-graph cache, and ``prepare``.

``load_dataset(cfg.data)`` builds a :class:`TextAttributedGraph` from the raw files
once and caches it under ``<cache_dir>/graphs/<name>-<hash>/``, where the hash covers
the options that change the result (the loader's own options, such as the synthetic
generator's parameters or the raw files' sizes and modification times, and the
on-disk format version). Later calls open the cache (memory-mapped, seconds even at
ogbn-products size).

``prepare(cfg)`` = the graph plus its token cache (:mod:`fastleading.data.tokens`);
the CLI's ``prepare`` / ``info`` commands and the trainer all go through it.
``link_view(cfg, graph)`` = the link split of ``cfg.data`` (the dataset's official one, read by
its entry's ``link_split``, or generated: :mod:`fastleading.link.split`) and the training
graph without its held-out edges.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from fastleading.data import (
    arxiv_2023,
    citeseer_tag,
    custom,
    ogbl_citation2,
    ogbn_arxiv,
    ogbn_products,
    planetoid,
    saved,
    synthetic,
)
from fastleading.data.info import format_info, info
from fastleading.data.tag import FORMAT_VERSION, Split, TextAttributedGraph, require_text
from fastleading.data.tokens import TokenCache, cached_or_counted_tokens, prepare_tokens, prepared_lengths
from fastleading.errors import FastleadingError
from fastleading.link.split import DEFAULT_RATIOS, LinkSplit, random_link_split, training_graph

if TYPE_CHECKING:
    from fastleading.config import Config, DataConfig


@dataclass(frozen=True)
class DatasetEntry:
    """How to build one dataset: ``options(cfg)`` (what its cache key covers; may check
    that the raw files exist) and ``build(cfg)``; ``link_split(cfg, num_nodes)`` reads its
    official link split (None: it has none)."""

    options: Callable[[DataConfig], dict]
    build: Callable[[DataConfig], TextAttributedGraph]
    description: str
    link_split: Callable[[DataConfig, int], LinkSplit] | None = None


DATASETS: dict[str, DatasetEntry] = {
    "synthetic": DatasetEntry(synthetic.options, synthetic.build,
                              "seeded synthetic TAG (class-conditional texts, homophilous power-law graph)"),
    "citeseer-tag": DatasetEntry(citeseer_tag.options, citeseer_tag.build,
                                 "CiteSeer with raw text (3,186 papers, 6 classes) from <root>/citeseer-tag/"),
    "arxiv-2023": DatasetEntry(arxiv_2023.options, arxiv_2023.build,
                               "arXiv CS papers of 2023 and earlier with titles (33,868 papers, 39 classes; split "
                               "'upstream': the 2023 papers as test) from <root>/arxiv-2023/"),
    "planetoid-cora": DatasetEntry(partial(planetoid.options, name="planetoid-cora"),
                                   partial(planetoid.build, name="planetoid-cora"),
                                   "Planetoid Cora (no text; shallow method only) from <root>/planetoid/"),
    "planetoid-citeseer": DatasetEntry(partial(planetoid.options, name="planetoid-citeseer"),
                                       partial(planetoid.build, name="planetoid-citeseer"),
                                       "Planetoid CiteSeer (no text; shallow method only) from <root>/planetoid/"),
    "ogbn-arxiv": DatasetEntry(ogbn_arxiv.options, ogbn_arxiv.build,
                               "ogbn-arxiv with titles/abstracts from <root>/ogbn_arxiv/ (OGB layout)"),
    "ogbn-products": DatasetEntry(ogbn_products.options, ogbn_products.build,
                                  "ogbn-products with Amazon texts from <root>/ogbn_products/ (OGB layout)"),
    "ogbl-citation2": DatasetEntry(ogbl_citation2.options, ogbl_citation2.build,
                                   "ogbl-citation2 (link prediction) from <root>/ogbl_citation2/ (OGB layout) with "
                                   "your titleabs.tsv.gz paper texts", ogbl_citation2.read_link_split),
    "custom": DatasetEntry(custom.options, custom.build,
                           "your own folder (data.root): nodes.csv|nodes.jsonl, edges.csv, classes.txt"),
    "saved": DatasetEntry(saved.options, saved.build,
                          "a graph saved by TextAttributedGraph.save (data.root), as the Python API's train does"),
}


def dataset_entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise FastleadingError(f"config key 'data.dataset': unknown dataset '{name}' "
                               f"(known: {', '.join(DATASETS)})")
    return DATASETS[name]


def graph_dir(cfg: DataConfig) -> Path:
    """``<cache_dir>/graphs/<name>-<10-hex hash of the options that matter>``."""
    entry = dataset_entry(cfg.dataset)
    key = {"dataset": cfg.dataset, "format": FORMAT_VERSION, **entry.options(cfg)}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cfg.cache_dir).expanduser() / "graphs" / f"{cfg.dataset}-{digest}"


def load_dataset(cfg: DataConfig) -> TextAttributedGraph:
    """The dataset named by ``cfg.dataset``: from the cache, else built and cached."""
    path = graph_dir(cfg)
    if not (path / "meta.json").is_file():
        graph = dataset_entry(cfg.dataset).build(cfg)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FastleadingError(f"data.cache_dir '{cfg.cache_dir}': cannot create the folder {path.parent} "
                                   f"({e.strerror})") from None
        graph.save(path, overwrite=False)
    return TextAttributedGraph.load(path)


def prepare(cfg: Config) -> tuple[TextAttributedGraph, TokenCache | None]:
    """The graph and, for LM methods, its token cache (``None`` for ``method=shallow``).

    Checks that the configured split exists and that LM methods get a graph with texts.
    """
    graph = load_dataset(cfg.data)
    if cfg.train.task == "node":
        if not graph.split_names and graph.metadata.get("link_split"):
            raise FastleadingError(f"dataset '{graph.name}' has no node labels, it is for link prediction: "
                                   "set train.task=link (--task link)")
        graph.split(cfg.data.split)  # fail early on an unknown split name
    if cfg.train.method == "shallow":
        return graph, None
    require_text(graph)
    assert graph.path is not None  # load_dataset's graph lives in its cache folder
    announce_new_length(graph.path.name, cfg)
    tokens = prepare_tokens(graph, graph.path, cfg.model.name, cfg.data.max_length, cfg.data.cache_dir)
    return graph, tokens


def announce_new_length(graph_key: str, cfg: Config) -> None:
    """Say which ``data.max_length`` is used when the dataset is about to be tokenized at a
    length other than the ones it is already prepared at (a left-out ``--max-length`` is the
    default, 64, not the length ``prepare`` was given)."""
    from fastleading.run import console

    lengths = prepared_lengths(cfg.data.cache_dir, graph_key, cfg.model.name)
    if lengths and cfg.data.max_length not in lengths:
        console.notice(f"tokenizing {cfg.data.dataset} at data.max_length={cfg.data.max_length} into a new cache; it "
                       f"is prepared at {', '.join(map(str, lengths))} (set --max-length / data.max_length to use "
                       "that)")


def load_link_split(cfg: Config, graph) -> LinkSplit:
    """The link split of ``cfg.data`` for ``graph`` (official, or generated from the seed)."""
    d = cfg.data
    official = dataset_entry(d.dataset).link_split
    choice = d.link_split or ("official" if official is not None else DEFAULT_RATIOS)
    if choice == "official":
        if official is None:
            raise FastleadingError(f"config key 'data.link_split': dataset '{d.dataset}' has no official link "
                                   f"split; give percentages such as {DEFAULT_RATIOS} or 10/30/60")
        split = official(d, graph.num_nodes)
    else:
        split = random_link_split(graph.rowptr, graph.col, choice, d.link_seed, d.link_eval_negatives)
    if split.train.shape[1] == 0:
        raise FastleadingError(f"dataset '{d.dataset}': link split '{choice}' has no training edges")
    return split


def link_view(cfg: Config, graph) -> tuple[TextAttributedGraph, LinkSplit]:
    """(``graph`` with its CSR replaced by the training graph, the link split): what every link
    method trains and evaluates on."""
    split = load_link_split(cfg, graph)
    view = copy.copy(graph)
    view.rowptr, view.col = training_graph(graph.rowptr, graph.col, split)
    return view, split


def dataset_info(cfg: Config) -> dict:
    """What ``fastleading info`` shows, writing nothing: :func:`info` of the graph (from its
    cache, else built in memory) and, when it has texts, of its tokens for ``cfg.model.name``
    at ``cfg.data.max_length`` (the token cache when it exists, else counted in memory), with
    ``cached`` (graph and tokens) and the lengths the dataset is prepared at (``prepared_lengths``)."""
    path = graph_dir(cfg.data)
    cached = (path / "meta.json").is_file()
    graph = TextAttributedGraph.load(path) if cached else dataset_entry(cfg.data.dataset).build(cfg.data)
    tokens = None
    if graph.has_text or (cached and graph.metadata.get("synthetic_tokens")):
        tokens = cached_or_counted_tokens(graph, path, cfg.model.name, cfg.data.max_length, cfg.data.cache_dir)
    d = info(graph, tokens)
    d["path"], d["cached"] = str(path), cached
    if tokens is not None:
        d["tokens"]["cached"] = tokens.path is not None
        d["tokens"]["prepared_lengths"] = prepared_lengths(cfg.data.cache_dir, path.name, cfg.model.name)
    return d


__all__ = ["DATASETS", "Split", "dataset_info", "TextAttributedGraph", "TokenCache", "format_info", "graph_dir", "info",
           "link_view", "load_dataset", "load_link_split", "prepare", "prepare_tokens", "require_text"]
