"""The Python API: build a graph, train, load a run, predict, embed.

    import fastleading as fl

    graph = fl.graph_from_arrays(edge_index, texts, labels)      # or fl.graph_from_pyg(data, texts)
    run = fl.train(fl.Config(), graph=graph, out="runs/mine")    # a Run: summary, paths
    run.predict().write("runs/mine/predictions.csv")             # class probabilities per node
    emb = run.embeddings()                                       # [N, H] float32
    run = fl.load_run("runs/mine")                               # later, from the folder

A graph given to :func:`train` is saved into the run folder (``OUT/graph/``, the
``saved`` dataset) and the run's config points at it, so the folder is complete on its own:
``fastleading train --resume``, ``fastleading predict`` and :func:`load_run` find the graph
again. Everything else is the CLI's: the same config, trainer and run folder.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastleading.config import Config
from fastleading.data.tag import NodeTexts, Split, TextAttributedGraph
from fastleading.errors import FastleadingError

GRAPH_DIR = "graph"
SPLIT_KEYS = ("train", "valid", "test")


def _as_index(value: Any, num_nodes: int, where: str) -> torch.Tensor:
    """Node ids (int array) or a boolean mask ``[N]`` as sorted int64 ids."""
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if arr.dtype == bool:
        if arr.shape != (num_nodes,):
            raise FastleadingError(f"{where}: a boolean mask must have shape [{num_nodes}], got {list(arr.shape)}")
        arr = np.flatnonzero(arr)
    if arr.size and (arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer)):
        raise FastleadingError(f"{where}: expected node ids (a 1-D integer array) or a boolean mask")
    arr = arr.astype(np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= num_nodes):
        raise FastleadingError(f"{where}: node ids must lie in [0, {num_nodes})")
    return torch.from_numpy(np.unique(arr))


def _splits(splits: Mapping | None, labels: np.ndarray) -> dict[str, Split]:
    from fastleading.data.splits import seeded_splits

    if splits is None:
        return seeded_splits(labels, 5) if (labels >= 0).any() else {}
    if set(splits) == set(SPLIT_KEYS):
        splits = {"given": splits}
    out = {}
    for name, parts in splits.items():
        if not isinstance(parts, Mapping) or set(parts) != set(SPLIT_KEYS):
            raise FastleadingError(f"splits['{name}']: expected a mapping with the keys train, valid, test")
        out[str(name)] = Split(*(_as_index(parts[k], len(labels), f"splits['{name}']['{k}']") for k in SPLIT_KEYS))
        for k, ids in zip(SPLIT_KEYS, (out[str(name)].train, out[str(name)].valid, out[str(name)].test), strict=True):
            if len(ids) and (labels[ids.numpy()] < 0).any():
                raise FastleadingError(f"splits['{name}']['{k}']: holds nodes without a label (-1)")
    return out


def graph_from_arrays(edge_index: Any, texts: Sequence[str], labels: Any = None, splits: Mapping | None = None, *,
                      class_names: Sequence[str] | None = None, node_ids: Sequence[str] | None = None,
                      features: Any = None, name: str = "graph") -> TextAttributedGraph:
    """A :class:`TextAttributedGraph` from arrays.

    Args:
        edge_index: integer ``[2, E]`` (numpy, torch or lists): edge ``e`` joins
            ``edge_index[0, e]`` and ``edge_index[1, e]``; made undirected, self loops and
            duplicates dropped.
        texts: N node texts (N = the number of nodes).
        labels: integer ``[N]`` class of every node, ``-1`` = unknown; None: no labels.
        splits: ``{"train": ids, "valid": ids, "test": ids}`` (node ids or boolean masks
            ``[N]``; the split is named ``given``), or several as ``{name: {...}}``; None:
            seeded ``low-0..4`` (20 per class / 500 / 1000) and ``high-0..4`` (60/20/20) over
            the labelled nodes.
        class_names: C names (default ``"0" .. str(max label)``).
        node_ids: N strings naming the nodes in predictions (default: the index).
        features: float ``[N, F]`` for the ``shallow`` baseline (default: TF-IDF of the texts).
        name: the dataset's name in summaries.
    """
    from fastleading.data.features import tfidf_features
    from fastleading.engine.graph import build_csr

    texts = [str(t) for t in texts]
    n = len(texts)
    if n == 0:
        raise FastleadingError("graph_from_arrays: texts: expected one text per node, got none")
    edges = edge_index.detach().cpu().numpy() if isinstance(edge_index, torch.Tensor) else np.asarray(edge_index)
    if edges.size == 0:
        edges = np.zeros((2, 0), dtype=np.int64)
    if edges.ndim != 2 or edges.shape[0] != 2 or not np.issubdtype(edges.dtype, np.integer):
        raise FastleadingError(f"graph_from_arrays: edge_index: expected an integer array of shape [2, E], got "
                               f"{edges.dtype} {list(edges.shape)}")
    if edges.size and (edges.min() < 0 or edges.max() >= n):
        raise FastleadingError(f"graph_from_arrays: edge_index: node ids must lie in [0, {n}) (one text per node)")
    if labels is None:
        labels_np = np.full(n, -1, dtype=np.int64)
    else:
        labels_np = (labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels))
        if labels_np.shape != (n,) or not np.issubdtype(labels_np.dtype, np.integer):
            raise FastleadingError(f"graph_from_arrays: labels: expected integers of shape [{n}], got "
                                   f"{labels_np.dtype} {list(labels_np.shape)}")
        labels_np = labels_np.astype(np.int64)
    top = int(labels_np.max()) if n else -1
    names = [str(c) for c in range(top + 1)] if class_names is None else [str(c) for c in class_names]
    if labels_np.min() < -1 or top >= len(names):
        raise FastleadingError(f"graph_from_arrays: labels: expected values in [-1, {len(names)}) "
                               f"({len(names)} classes)")
    if node_ids is not None and (len(node_ids) != n or len({str(i) for i in node_ids}) != n):
        raise FastleadingError(f"graph_from_arrays: node_ids: expected {n} distinct ids")
    if features is None:
        feats, _ = tfidf_features(texts)
    else:
        feats = torch.as_tensor(np.asarray(features, dtype=np.float32))
        if feats.dim() != 2 or feats.shape[0] != n:
            raise FastleadingError(f"graph_from_arrays: features: expected shape [{n}, F], got {list(feats.shape)}")
    split_map = _splits(splits, labels_np)
    rowptr, col = build_csr(edges[0].astype(np.int64), edges[1].astype(np.int64), n)
    metadata: dict[str, Any] = {"name": name}
    if node_ids is not None:
        metadata["node_ids"] = [str(i) for i in node_ids]
    return TextAttributedGraph(rowptr, col, torch.from_numpy(labels_np), names, split_map, next(iter(split_map), ""),
                               NodeTexts.from_strings(texts), feats, metadata)


def graph_from_pyg(data: Any, texts: Sequence[str], **kwargs: Any) -> TextAttributedGraph:
    """A :class:`TextAttributedGraph` from a PyG ``Data`` and its node texts.

    Takes ``data.edge_index``, ``data.y`` (labels, ``-1`` = unknown) when present,
    ``data.train_mask`` / ``val_mask`` / ``test_mask`` as the split ``given`` (masks of shape
    ``[N, k]``: splits ``given-0 .. given-{k-1}``) and ``data.x`` as the shallow features;
    ``kwargs`` go to :func:`graph_from_arrays` (``class_names``, ``node_ids``, ``name``...)."""
    get = data.get if hasattr(data, "keys") else (lambda key: getattr(data, key, None))  # a mapping, or PyG's Data
    labels = get("y")
    if labels is not None and labels.dim() != 1:
        raise FastleadingError(f"graph_from_pyg: data.y: expected one class per node (shape [N]), got "
                               f"{list(labels.shape)}")
    masks = [m for m in (get(k) for k in ("train_mask", "val_mask", "test_mask")) if m is not None]
    splits = kwargs.pop("splits", None)
    if splits is None and len(masks) == 3:
        if masks[0].dim() == 1:
            splits = {"given": dict(zip(SPLIT_KEYS, masks, strict=True))}
        else:
            splits = {f"given-{j}": dict(zip(SPLIT_KEYS, (m[:, j] for m in masks), strict=True))
                      for j in range(masks[0].shape[1])}
    x = get("x")
    if "features" not in kwargs and x is not None and x.dim() == 2:
        kwargs["features"] = x.float()
    return graph_from_arrays(get("edge_index"), texts, labels, splits, **kwargs)


@dataclass
class Run:
    """A run folder: its config, summary and files, and what its trained model can do.

    Attributes:
        dir: the run folder.
        config: the run's resolved :class:`fastleading.config.Config`.
        summary: ``summary.json`` as a dict.
        paths: ``config``, ``summary``, ``metrics``, ``best``, ``checkpoint`` (and ``graph``
            for a graph given to :func:`train`): the files the run wrote.
        quiet: :meth:`predict`, :meth:`score_pairs` and :meth:`embeddings` print nothing but
            errors (no loading bars or library warnings; :func:`fastleading.run.console.output`).
        device: the device they run on (``cpu``, ``cuda``...); None: the run's ``train.device``.
    """

    dir: Path
    config: Config
    summary: dict
    paths: dict[str, Path]
    quiet: bool = True
    device: str | None = None
    _trained: Any = field(default=None, repr=False)

    def _overrides(self) -> list[str]:
        return [] if self.device is None else [f"train.device={self.device}"]

    def _model(self):
        from fastleading.commands.predict import TrainedRun

        if self._trained is None:
            self._trained = TrainedRun(self.dir, quiet=self.quiet, overrides=self._overrides())
        return self._trained

    def _call(self, fn):
        from fastleading.run import console

        with console.output(self.quiet):
            return fn()

    def predict(self, nodes: Sequence[str] | None = None, new_nodes: str | Path | None = None,
                new_edges: str | Path | None = None, embeddings: str | Path | None = None):
        """Class probabilities and predicted classes
        (:meth:`fastleading.commands.predict.TrainedRun.predict`): every node, the ``nodes`` named, or
        new nodes from ``new_nodes`` (``id,text``) and ``new_edges`` (``src,dst``) files.
        Returns :class:`fastleading.commands.predict.Predictions` (``ids``, ``probs``, ``pred``, ``write``)."""
        return self._call(lambda: self._model().predict(None if nodes is None else [str(n) for n in nodes],
                                                        new_nodes, new_edges, embeddings))

    def score_pairs(self, pairs: str | Path, new_nodes: str | Path | None = None,
                    new_edges: str | Path | None = None, embeddings: str | Path | None = None):
        """Link runs: scores of the node pairs of the CSV ``pairs`` (``src,dst``)
        (:class:`fastleading.commands.predict.LinkScores`)."""
        return self._call(lambda: self._model().score_pairs(pairs, new_nodes, new_edges, embeddings))

    def embeddings(self) -> np.ndarray:
        """Every node's embedding from the run's best fine-tuned LM: float32 ``[N, H]``
        (what ``fastleading export --out`` writes)."""
        from fastleading.baselines.downstream import run_embeddings

        return self._call(lambda: run_embeddings(self.dir, self.quiet, self._overrides())[2].numpy())


def load_run(run_dir: str | Path, device: str | None = None) -> Run:
    """The run in ``run_dir`` (a folder written by ``fastleading train`` or :func:`train`);
    ``device`` overrides the run's ``train.device`` for what its model computes (e.g. ``cpu``
    for a run trained on a GPU)."""
    from fastleading.run.folder import read_run_config

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise FastleadingError(f"{summary_path}: the run has not finished (no summary.json); resume it with "
                               f"`fastleading train --resume {run_dir}`")
    paths = {"config": run_dir / "config.json", "summary": summary_path, "metrics": run_dir / "metrics.jsonl",
             "best": run_dir / "best.pt", "checkpoint": run_dir / "checkpoint.pt", "graph": run_dir / GRAPH_DIR}
    return Run(run_dir, cfg, json.loads(summary_path.read_text()), {k: p for k, p in paths.items() if p.exists()},
               device=device)


def train(config: Config | None = None, graph: TextAttributedGraph | None = None, out: str | Path = "runs/default",
          resume: bool = False, overwrite: bool = False, quiet: bool = True) -> Run:
    """Train ``config.train.method`` (default config: LEADING on the built-in synthetic graph)
    into the run folder ``out`` and return the :class:`Run`.

    ``graph``: train on this graph instead of ``config.data.dataset``; it is saved into
    ``out/graph/`` and the run's config names it (``data.dataset=saved``, ``data.root=graph``
    relative to the run folder: the folder can be moved or copied). A folder that already holds
    a run is refused (before anything in it changes) unless ``resume`` continues that run from
    its checkpoint (the graph already saved is used) or ``overwrite`` replaces it."""
    from fastleading.commands.methods import train_method
    from fastleading.run.folder import refuse_held

    cfg = dataclasses.replace(config) if config is not None else Config()
    cfg.data = dataclasses.replace(cfg.data)
    out = Path(out)
    if graph is not None:
        refuse_held(out, resume, overwrite, caller="api")  # before the graph of a finished run is replaced
        folder = (out / GRAPH_DIR).resolve()
        if not (resume and (folder / "meta.json").is_file()):
            graph.save(folder)
        cfg.data.dataset, cfg.data.root = "saved", str(folder)
    train_method(cfg, out, resume=resume, quiet=quiet, overwrite=overwrite, caller="api")
    return load_run(out)
