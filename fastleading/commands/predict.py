"""Predictions of a trained run (``best.pt``): class probabilities per node, new nodes, link scores.

:class:`TrainedRun` loads a run folder's config, graph, token cache and best model once;

- :meth:`TrainedRun.predict` gives every node's (or a subset's) class probabilities and
  predicted class, with node ids as the dataset names them (``node_ids`` of a custom folder,
  CiteSeer-TAG's paper ids, else the node index);
- **new nodes** (inductive prediction): a file of new nodes (``id,text``) and a file of their
  edges (``src,dst``, to existing or other new nodes). The run's fine-tuned LM encodes the new
  texts (tokenized as the run's token cache); the existing nodes' embeddings are not encoded
  again: they come from the run's embeddings cache (``best-embeddings.npy``, written by the
  first prediction and keyed by ``best.pt``'s SHA-256, so a changed ``best.pt`` is encoded
  afresh), or from an exported embeddings file (``fastleading export --out``) when one is
  given (``best.pt`` holds the weights only, not the memory bank). The head and the propagation then run
  over the extended graph with the operator evaluation uses
  (:func:`fastleading.trainer.evaluate.full_graph_logits`: LEADING's implicit layer at its
  fixed point by conjugate gradient, :func:`fastleading.models.appnp.solve_appnp`). New edges change
  the degrees, so existing nodes near them get new predictions too;
- link runs (``train.task=link``): :meth:`TrainedRun.score_pairs` scores node pairs with the
  run's decoder on the representations propagated over the training graph (plus new nodes),
  as its evaluation does.

Without new nodes the existing nodes' outputs are those of the evaluation of ``best.pt``
(conjugate gradient from a cold start to ``model.eval_tol``, where training warm-started it).
Files: ``.csv`` always; ``.parquet`` when pyarrow is installed. Bad files stop with one line
naming the file and line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastleading.errors import FastleadingError
from fastleading.run.io import atomic_write

LM_METHODS = ("leading", "coupled", "supervised")
WRITE_CHUNK = 65536  # CSV rows formatted at a time
# metadata keys under which a dataset keeps its own node ids
NODE_ID_KEYS = ("node_ids", "paper_ids")


def node_names(graph) -> list[str] | None:
    """The dataset's own node ids (a list of N strings), or None when nodes are named by index."""
    for key in NODE_ID_KEYS:
        ids = graph.metadata.get(key)
        if ids is not None and len(ids) == graph.num_nodes:
            return [str(i) for i in ids]
    return None


class NodeIndex:
    """Node id (a string) -> index, for the graph's nodes and then the new ones (``get`` as a dict's)."""

    def __init__(self, names: list[str] | None, num_nodes: int):
        self.names, self.num_nodes = names, num_nodes
        self.index = {name: i for i, name in enumerate(names)} if names is not None else None
        self.new: dict[str, int] = {}
        self.new_names: list[str] = []

    def get(self, name: str, default=None):
        if name in self.new:
            return self.new[name]
        if self.index is not None:
            return self.index.get(name, default)
        return int(name) if name.isdigit() and int(name) < self.num_nodes else default

    def add(self, name: str) -> int:
        self.new[name] = self.num_nodes + len(self.new)
        self.new_names.append(name)
        return self.new[name]

    def name(self, i: int) -> str:
        if i >= self.num_nodes:
            return self.new_names[i - self.num_nodes]
        return self.names[i] if self.names is not None else str(i)


def read_id_list(path: str | Path) -> list[str]:
    """Node ids, one per line (a first line ``id`` is a header); one-line errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FastleadingError(f"{path}: file of node ids not found (one id per line)")
    from fastleading.data.custom import ENCODING, not_utf8

    try:
        text = path.read_text(encoding=ENCODING)  # a byte-order mark is not part of the first id
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if ids and ids[0] == "id":
        ids = ids[1:]
    if not ids:
        raise FastleadingError(f"{path}: no node ids (expected one id per line)")
    return ids


def read_pairs(path: str | Path, index: NodeIndex) -> tuple[torch.Tensor, torch.Tensor]:
    """Node pairs of a ``src,dst`` CSV as int64 index tensors (one-line errors name the line)."""
    from fastleading.data.custom import read_edges

    path = Path(path)
    if not path.is_file():
        raise FastleadingError(f"{path}: file of node pairs not found (header 'src,dst', one pair per line)")
    src, dst = read_edges(path, index)
    if len(src) == 0:
        raise FastleadingError(f"{path}: no node pairs (header 'src,dst', one pair per line)")
    return torch.from_numpy(src), torch.from_numpy(dst)


@dataclass
class Predictions:
    """Class probabilities of some nodes.

    Attributes:
        ids: the nodes' ids (strings, as the dataset names them; new nodes by their file's ids).
        probs: float32 ``[n, C]``, softmax of the logits.
        pred: int64 ``[n]``, the predicted class (argmax of the logits).
        logits: float32 ``[n, C]``.
        class_names: C names.
    """

    ids: list[str]
    probs: np.ndarray
    pred: np.ndarray
    logits: np.ndarray
    class_names: list[str]

    def columns(self) -> dict[str, Sequence | np.ndarray]:
        names = np.asarray(self.class_names, dtype=object)
        cols = {"id": self.ids, "pred": self.pred, "pred_class": names[self.pred]}
        cols.update({f"prob_{name}": self.probs[:, c] for c, name in enumerate(self.class_names)})
        return cols

    def write(self, path: str | Path) -> Path:
        """Write ``id, pred, pred_class, prob_<class>...`` to ``path`` (.csv, or .parquet with pyarrow)."""
        return write_table(self.columns(), path)


@dataclass
class LinkScores:
    """Scores of node pairs: ``score`` is the decoder's logit (float32 ``[P]``), ``prob`` its sigmoid."""

    src: list[str]
    dst: list[str]
    score: np.ndarray

    @property
    def prob(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.score))

    def columns(self) -> dict[str, Sequence | np.ndarray]:
        return {"src": self.src, "dst": self.dst, "score": self.score, "prob": self.prob}

    def write(self, path: str | Path) -> Path:
        """Write ``src, dst, score, prob`` to ``path`` (.csv, or .parquet with pyarrow)."""
        return write_table(self.columns(), path)


def write_table(columns: Mapping[str, Sequence | np.ndarray], path: str | Path) -> Path:
    """``columns`` (name -> equal-length lists or 1-D arrays) as a CSV or Parquet file, written
    atomically; CSV rows are formatted :data:`WRITE_CHUNK` at a time (bounded memory)."""
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise FastleadingError(f"{path}: Parquet needs pyarrow, which is not installed "
                                   "(pip install pyarrow, or write a .csv)") from None
        table = pa.table({name: pa.array(col) for name, col in columns.items()})
        return atomic_write(path, lambda f: pq.write_table(table, f))
    if path.suffix != ".csv":
        raise FastleadingError(f"{path}: predictions are written as .csv or .parquet; give a path ending in one")

    def write(f) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        out = csv.writer(text)
        out.writerow(list(columns))
        n = len(next(iter(columns.values())))
        for a in range(0, n, WRITE_CHUNK):
            chunk = [col[a:a + WRITE_CHUNK] for col in columns.values()]
            out.writerows(zip(*(c.tolist() if isinstance(c, np.ndarray) else c for c in chunk), strict=True))
        text.flush()
        text.detach()

    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, write)


class TrainedRun:
    """A finished LM run (``config.json`` + ``best.pt``) loaded for prediction.

    Args:
        run_dir: the run folder written by ``fastleading train``.
        quiet: no progress bars.
        overrides: ``section.key=value`` applied to the run's config, e.g. ``data.root=...``
            (the data moved) or ``train.device=cpu`` (a GPU run used on a CPU machine).
    """

    def __init__(self, run_dir: str | Path, quiet: bool = True, overrides: Sequence[str] = ()):
        from fastleading.data import prepare
        from fastleading.engine.precision import resolve_device, resolve_precision
        from fastleading.run.folder import read_run_config, require_best, require_run_device
        from fastleading.trainer.model import load_best

        self.run_dir = Path(run_dir)
        self.quiet = quiet
        self.cfg = cfg = read_run_config(self.run_dir, overrides=overrides)
        if cfg.train.method not in LM_METHODS:
            raise FastleadingError(f"{self.run_dir}: method '{cfg.train.method}' keeps no trained model (it trains "
                                   f"a GNN on fixed features in one go); prediction needs a run of "
                                   f"{', '.join(LM_METHODS)}")
        require_best(self.run_dir)  # before the dataset and the model are loaded
        require_run_device(self.run_dir, cfg)
        self.device = resolve_device(cfg.train.device)
        self.graph, tokens = prepare(cfg)
        assert tokens is not None  # an LM method's graph has texts and a token cache
        self.tokens = tokens
        self.propagation_graph = self.graph
        if cfg.train.task == "link":  # trained and evaluated on the training graph
            from fastleading.data import link_view

            self.propagation_graph, _ = link_view(cfg, self.graph)
        self.precision = resolve_precision(cfg.train.precision, cfg.train.bank_dtype, self.device)
        self.model = load_best(self.run_dir, cfg, self.graph.num_nodes, self.graph.num_classes,
                               self.precision.bank_dtype).to(self.device)
        from fastleading.models.encode import EncodeCounter

        self.counter = EncodeCounter(self.graph.num_nodes)  # the LM's encodes of this object (kind eval)
        self._cache_key: dict | None = None

    @property
    def is_link(self) -> bool:
        return self.cfg.train.task == "link"

    def embeddings(self) -> torch.Tensor:
        """Every node's LM embedding with the run's best LM: ``[N, H]`` in the run's bank dtype,
        on its device. Read from the run's cache (``best-embeddings.npy``) when it was computed
        from this very ``best.pt`` (:meth:`cache_key`); else one no-gradient encode of every node,
        then written to the cache, so that later predictions (new nodes included) encode only
        their new texts. A run folder that cannot be written to is said once and not cached."""
        from fastleading.models.encode import encode_all

        emb = self.cached_embeddings()
        if emb is not None:
            return emb
        t = self.cfg.train
        emb = encode_all(self.model.encoder, self.tokens, self.graph.num_nodes, self.device, self.precision,
                         t.eval_batch_size, self.quiet, "encode", counter=self.counter, kind="eval",
                         token_budget=t.encode_token_budget, backend=t.encode_backend)
        self.write_cache(emb)
        return emb

    def cache_key(self) -> dict:
        """What the embeddings cache must have been computed from: ``best.pt``'s bytes (SHA-256),
        the nodes, the hidden size and the token rows' length."""
        import hashlib

        from fastleading.run.checkpoint import BEST

        if self._cache_key is not None:
            return self._cache_key
        digest = hashlib.sha256()
        with open(self.run_dir / BEST, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        self._cache_key = {"best_pt_sha256": digest.hexdigest(), "num_nodes": self.graph.num_nodes,
                           "hidden_size": self.model.encoder.hidden_size, "max_length": self.tokens.max_length,
                           "model": self.cfg.model.name}
        return self._cache_key

    def cached_embeddings(self) -> torch.Tensor | None:
        """The cached embeddings if the cache's key is this run's (:meth:`cache_key`), else None."""
        import json

        from fastleading.run.folder import BEST_EMBEDDINGS, BEST_EMBEDDINGS_META

        meta, data = self.run_dir / BEST_EMBEDDINGS_META, self.run_dir / BEST_EMBEDDINGS
        if not (meta.is_file() and data.is_file()):
            return None
        try:
            key = json.loads(meta.read_text())["key"]
            emb = np.load(data, mmap_mode="r")
        except (ValueError, KeyError, TypeError, OSError):
            return None  # a damaged cache is computed again
        if key != self.cache_key() or list(emb.shape) != [self.graph.num_nodes, self.model.encoder.hidden_size]:
            return None
        return torch.from_numpy(np.array(emb, dtype=np.float32)).to(self.device, self.precision.bank_dtype)

    def write_cache(self, emb: torch.Tensor) -> None:
        import json

        from fastleading.models.encode_backend import resolve_backend
        from fastleading.run.console import notice
        from fastleading.run.folder import BEST_EMBEDDINGS, BEST_EMBEDDINGS_META
        from fastleading.run.io import atomic_write, atomic_write_text

        try:
            # the data first: a cache whose key is there is complete
            (self.run_dir / BEST_EMBEDDINGS_META).unlink(missing_ok=True)
            atomic_write(self.run_dir / BEST_EMBEDDINGS, lambda f: np.save(f, emb.float().cpu().numpy()))
            atomic_write_text(self.run_dir / BEST_EMBEDDINGS_META,
                              json.dumps({"key": self.cache_key(), "backend": resolve_backend(
                                  self.cfg.train.encode_backend, self.device, self.model.encoder, self.precision)}))
        except (OSError, FastleadingError) as e:
            notice(f"{self.run_dir}: the embeddings of best.pt are not cached ({str(e).splitlines()[0]}); the "
                   "next prediction encodes every node again")

    def load_embeddings(self, path: str | Path) -> torch.Tensor:
        """Exported embeddings (``fastleading export --out``, float ``[N, H]`` .npy) on the run's
        device; only those made from this run's current ``best.pt``."""
        from fastleading.run.folder import check_provenance

        path = Path(path)
        if not path.is_file():
            raise FastleadingError(f"{path}: embeddings file not found (write one with `fastleading export`)")
        try:
            emb = np.load(path, mmap_mode="r")
        except ValueError as e:
            raise FastleadingError(f"{path}: not a .npy file ({e})") from None
        want = [self.graph.num_nodes, self.model.encoder.hidden_size]
        if emb.ndim != 2 or list(emb.shape) != want:
            raise FastleadingError(f"{path}: expected embeddings of shape {want} (this run's nodes x its LM's "
                                   f"hidden size), got {list(emb.shape)}")
        check_provenance(path, self.run_dir)
        # a copy: the memory-mapped file is read-only, which torch.from_numpy warns about
        return torch.from_numpy(np.array(emb, dtype=np.float32)).to(self.device)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """LM embeddings ``[M, H]`` (fp32) of new texts, tokenized as the run's token cache."""
        from fastleading.data.tokens import TokenCache, load_tokenizer, tokenize_rows
        from fastleading.models.encode import encode_eval

        tok, _ = load_tokenizer(self.cfg.model.name)
        cache = self.tokens
        ids, lengths = tokenize_rows(tok, texts, cache.padding_side, cache.max_length)
        new = TokenCache(torch.from_numpy(ids.astype(np.int32)), torch.from_numpy(lengths.astype(np.int32)),
                         cache.padding_side, cache.pad_token_id, cache.max_length, cache.model_name)
        t = self.cfg.train
        self.counter.add("eval", len(texts))
        return encode_eval(self.model.encoder, new, torch.arange(len(texts)), self.device, self.precision,
                           token_budget=t.encode_token_budget, max_rows=t.eval_batch_size,
                           backend=t.encode_backend).float()

    def outputs(self, new_nodes: str | Path | None = None, new_edges: str | Path | None = None,
                embeddings: str | Path | None = None) -> tuple[torch.Tensor, NodeIndex]:
        """The model's outputs for every node of the (extended) graph: fp32 ``[N + M, C]`` logits
        (link runs: ``[N + M, link_dim]`` representations), and the node ids."""
        from fastleading.trainer.evaluate import full_graph_logits

        graph = self.propagation_graph
        index = NodeIndex(node_names(self.graph), self.graph.num_nodes)
        emb = self.load_embeddings(embeddings) if embeddings is not None else self.embeddings()
        rowptr, col = graph.rowptr, graph.col
        if new_nodes is not None or new_edges is not None:
            if new_nodes is None or new_edges is None:
                raise FastleadingError("predict: new nodes need both a nodes file (id,text) and an edges file "
                                       "(src,dst)")
            texts, src, dst = read_new_nodes(new_nodes, new_edges, index)
            emb = torch.cat([emb, self.encode_texts(texts).to(emb.dtype)])
            rowptr, col = extend_csr(rowptr, col, src, dst, len(texts))
        self.model.to_head_frame_(emb)  # this call's own rows, into the frame the head was trained in
        logits, _, _ = full_graph_logits(self.model, emb, rowptr.to(self.device), col.to(self.device), self.cfg,
                                         self.precision)
        return logits, index

    def predict(self, nodes: list[str] | None = None, new_nodes: str | Path | None = None,
                new_edges: str | Path | None = None, embeddings: str | Path | None = None) -> Predictions:
        """Class probabilities and predicted classes.

        Args:
            nodes: ids of the nodes to report (existing or new); None: every node of the graph,
                or, with new nodes, the new nodes.
            new_nodes: CSV (``id,text``) or JSONL file of new nodes; ``new_edges``: CSV (``src,dst``)
                of their edges, each touching at least one new node.
            embeddings: exported ``[N, H]`` embeddings of the existing nodes (default: a fresh encode).
        """
        if self.is_link:
            raise FastleadingError(f"{self.run_dir}: a link prediction run (train.task=link) has no classes; "
                                   "score node pairs instead (--pairs FILE)")
        logits, index = self.outputs(new_nodes, new_edges, embeddings)
        rows = self._rows(nodes, index)
        picked = logits[rows].float().cpu()
        return Predictions([index.name(i) for i in rows.tolist()], torch.softmax(picked, -1).numpy(),
                           picked.argmax(-1).numpy(), picked.numpy(), list(self.graph.class_names))

    def score_pairs(self, pairs: str | Path, new_nodes: str | Path | None = None,
                    new_edges: str | Path | None = None, embeddings: str | Path | None = None) -> LinkScores:
        """Scores of the node pairs of ``pairs`` (CSV ``src,dst``; ids of existing or new nodes)."""
        from fastleading.link.decoder import LinkDecoder, score_pairs

        if not self.is_link:
            raise FastleadingError(f"{self.run_dir}: pairs are scored by link prediction runs (train.task=link); "
                                   "this run classifies nodes")
        z, index = self.outputs(new_nodes, new_edges, embeddings)
        src, dst = read_pairs(pairs, index)
        decoder = self.model.decoder
        assert isinstance(decoder, LinkDecoder)  # a link run's model is a LinkPredictor
        scores = score_pairs(decoder, z, src, dst).cpu().numpy()
        return LinkScores([index.name(i) for i in src.tolist()], [index.name(i) for i in dst.tolist()], scores)

    @staticmethod
    def _rows(nodes: list[str] | None, index: NodeIndex) -> torch.Tensor:
        if nodes is None:
            if index.new:
                return torch.arange(index.num_nodes, index.num_nodes + len(index.new))
            return torch.arange(index.num_nodes)
        rows = []
        for name in nodes:
            i = index.get(str(name))
            if i is None:
                raise FastleadingError(f"predict: unknown node id '{name}' (not in the dataset nor the new nodes)")
            rows.append(i)
        return torch.tensor(rows, dtype=torch.long)


def read_new_nodes(nodes_path: str | Path, edges_path: str | Path,
                   index: NodeIndex) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """New nodes' texts and their edges (int64 index pairs), registering their ids in ``index``.

    The nodes file has the columns ``id`` and ``text`` (CSV with a header, or JSONL; the
    ``custom`` dataset's reader); an id may not be an existing node's. Every edge must touch
    a new node."""
    from fastleading.data.custom import read_edges, read_nodes

    nodes_path, edges_path = Path(nodes_path), Path(edges_path)
    if not nodes_path.is_file():
        raise FastleadingError(f"{nodes_path}: new nodes file not found (CSV with header 'id,text', or JSONL)")
    if nodes_path.suffix not in (".csv", ".jsonl"):
        raise FastleadingError(f"{nodes_path}: new nodes are read from .csv (header 'id,text') or .jsonl")
    if not edges_path.is_file():
        raise FastleadingError(f"{edges_path}: new edges file not found (header 'src,dst', one edge per line)")
    ids, texts, _, _, lines = read_nodes(nodes_path)
    for name, line in zip(ids, lines, strict=True):
        if index.get(name) is not None:
            raise FastleadingError(f"{nodes_path}: line {line}: node id '{name}' already exists in the dataset")
    for name in ids:
        index.add(name)
    src, dst = read_edges(edges_path, index)
    old = (src < index.num_nodes) & (dst < index.num_nodes)
    if old.any():
        k = int(np.flatnonzero(old)[0])
        raise FastleadingError(f"{edges_path}: edge '{index.name(int(src[k]))},{index.name(int(dst[k]))}' joins two "
                               "existing nodes; new edges must touch a new node")
    return texts, torch.from_numpy(src), torch.from_numpy(dst)


def extend_csr(rowptr: torch.Tensor, col: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
               num_new: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The symmetric CSR ``rowptr/col`` (N nodes) with ``num_new`` more nodes and the edges
    ``src -> dst`` (int64, made undirected, duplicates and self loops dropped); int64 ``[N+M+1]``
    and the column dtype of :func:`fastleading.engine.graph.build_csr`. One pass over the old edges."""
    from fastleading.engine.graph import build_csr
    from fastleading.link.split import csr_rows

    n = len(rowptr) - 1
    rows = torch.cat([csr_rows(rowptr), src.long()])
    cols = torch.cat([col.long(), dst.long()])
    return build_csr(rows, cols, n + num_new)
