"""The data model: a text-attributed graph (TAG) that opens in seconds at any size.

A :class:`TextAttributedGraph` holds

* the graph as a symmetric CSR without self-loops or duplicates (``rowptr`` int64
  ``[N+1]``, ``col`` int32 ``[E]``, built by :func:`fastleading.engine.graph.build_csr`);
* node texts (:class:`NodeTexts`: one utf-8 blob plus int64 offsets), or none;
* labels (int64 ``[N]``, ``-1`` = unknown) and class names;
* named splits (:class:`Split` of sorted int64 index tensors) and a default split name;
* optional shallow features (float32 ``[N, F]``) for the shallow baseline;
* metadata (a JSON-able dict).

On disk (one folder, see :meth:`TextAttributedGraph.save`)::

    meta.json                 name, sizes, class names, split names, metadata
    rowptr.npy col.npy        the CSR
    labels.npy                int64 [N]
    texts.npy offsets.npy     uint8 utf-8 blob, int64 [N+1]  (only when has_text)
    features.npy              float32 [N, F]                  (only when present)
    splits/<name>.npz         train / valid / test int64 index arrays

Every array that scales with the graph is memory-mapped on load, so an
ogbn-products-size graph (2.45M nodes, 124M directed edges) opens without reading it.
Arrays are mapped copy-on-write (``mmap_mode="c"``): torch tensors over them are
writable in memory (a stray in-place op cannot crash the process on a read-only page)
while the file on disk is never modified.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastleading.errors import FastleadingError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Node indices (sorted int64 tensors) of one train / validation / test split."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def damaged(path: Path, reason: str) -> FastleadingError:
    """The one line for a cache file that cannot be used (the cache is rebuilt once it is gone)."""
    return FastleadingError(f"{path}: damaged cache file ({reason}); delete the folder {path.parent} to rebuild it")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def read_meta(path: Path) -> dict:
    """A cache folder's ``meta.json``; a damaged one is one line naming it."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(path, _first_line(e)) from None
    if not isinstance(meta, dict):
        raise damaged(path, f"a JSON {type(meta).__name__}, expected an object")
    return meta


def load_npy(path: Path, shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Memory-map a .npy file copy-on-write (empty arrays are read: mmap needs a byte). A missing
    or damaged file (truncated, say), or one not of ``shape`` (None: any size on that axis), is
    one line naming it."""
    try:
        arr = np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise damaged(path, _first_line(e)) from None
    if shape is not None and (arr.ndim != len(shape)
                              or any(w is not None and a != w for a, w in zip(arr.shape, shape, strict=True))):
        want = "[" + ", ".join("*" if w is None else str(w) for w in shape) + "]"
        raise damaged(path, f"shape {list(arr.shape)}, expected {want}")
    return arr if arr.size else np.array(arr)


class NodeTexts:
    """Node texts as one utf-8 blob (uint8 ``[B]``) and offsets (int64 ``[N+1]``).

    Text ``i`` is ``blob[offsets[i]:offsets[i+1]]`` decoded; nothing is decoded until
    asked for, so millions of texts cost only their mapped pages.
    """

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob = blob
        self.offsets = offsets

    @classmethod
    def from_strings(cls, texts: Sequence[str]) -> NodeTexts:
        encoded = [t.encode("utf-8") for t in texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return cls(blob, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.blob[start:end].tobytes().decode("utf-8")

    def take(self, ids: Iterable[int]) -> list[str]:
        return [self[int(i)] for i in ids]

    def byte_lengths(self) -> np.ndarray:
        """Length in bytes of every text (int64 ``[N]``)."""
        return np.diff(self.offsets)


class TextAttributedGraph:
    """A text-attributed graph; see the module docstring for fields and layout.

    Args:
        rowptr: int64 ``[N+1]``; col: int32/int64 ``[E]`` (symmetric CSR).
        labels: int64 ``[N]`` in ``[-1, C)``.
        class_names: C names.
        splits: name -> :class:`Split` (or a callable returning it, for lazy loading).
        default_split: the split used when none is named.
        texts: :class:`NodeTexts` of N texts, or None.
        features: float32 ``[N, F]`` or None.
        metadata: JSON-able dict (``name`` is the dataset name).
    """

    def __init__(self, rowptr: torch.Tensor, col: torch.Tensor, labels: torch.Tensor,
                 class_names: Sequence[str], splits: dict, default_split: str,
                 texts: NodeTexts | None = None, features: torch.Tensor | None = None,
                 metadata: dict | None = None):
        self.rowptr = rowptr
        self.col = col
        self.labels = labels
        self.class_names = list(class_names)
        self._splits = dict(splits)
        self.default_split = default_split
        self._texts = texts
        self.features = features
        self.metadata = dict(metadata or {})
        self.path: Path | None = None  # set by load(): the cache folder this graph lives in
        self._check()

    # ------------------------------------------------------------------ sizes
    @property
    def name(self) -> str:
        return str(self.metadata.get("name", "graph"))

    @property
    def num_nodes(self) -> int:
        return len(self.rowptr) - 1

    @property
    def num_edges(self) -> int:
        """Directed edges stored in the CSR (each undirected edge counts twice)."""
        return len(self.col)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_text(self) -> bool:
        return self._texts is not None

    @property
    def cache_key(self) -> str | None:
        """Name of the cache folder (dataset + option hash) when loaded from one."""
        return self.path.name if self.path is not None else None

    # ------------------------------------------------------------------ texts
    def text(self, i: int) -> str:
        return self._require_texts()[i]

    def texts(self, ids: Iterable[int]) -> list[str]:
        return self._require_texts().take(ids)

    @property
    def node_texts(self) -> NodeTexts:
        return self._require_texts()

    def _require_texts(self) -> NodeTexts:
        if self._texts is None:
            raise FastleadingError(f"dataset '{self.name}' has no node texts")
        return self._texts

    # ------------------------------------------------------------------ splits
    @property
    def split_names(self) -> list[str]:
        return list(self._splits)

    def split(self, name: str | None = None) -> Split:
        """The named split ('' or None = the default split)."""
        name = name or self.default_split
        if not self._splits:
            raise FastleadingError(f"dataset '{self.name}' has no splits (it has no labelled nodes); link prediction "
                                   "needs no labels: train.task=link (--task link)")
        if name not in self._splits:
            known = ", ".join(self._splits) or "none"
            raise FastleadingError(f"dataset '{self.name}': unknown split '{name}' (known: {known})")
        s = self._splits[name]
        if callable(s):  # lazily loaded from disk on first use
            s = self._splits[name] = s()
        return s

    # ------------------------------------------------------------------ checks
    def _check(self) -> None:
        """Internal consistency; loaders report bad input (files, lines) before this."""
        n = self.num_nodes
        where = f"dataset '{self.name}'"
        if self.rowptr.dtype != torch.int64 or int(self.rowptr[-1]) != len(self.col):
            raise FastleadingError(f"{where}: rowptr must be int64 [N+1] ending at the number of edges")
        if self.labels.shape != (n,):
            raise FastleadingError(f"{where}: expected {n} labels, got shape {tuple(self.labels.shape)}")
        if self._texts is not None and len(self._texts) != n:
            raise FastleadingError(f"{where}: expected {n} texts, got {len(self._texts)}")
        if self.features is not None and (self.features.dim() != 2 or self.features.shape[0] != n):
            raise FastleadingError(f"{where}: features must be [{n}, F], got {tuple(self.features.shape)}")
        if self._splits and self.default_split not in self._splits:
            raise FastleadingError(f"{where}: default split '{self.default_split}' is not one of its splits")

    # ------------------------------------------------------------------ disk
    def save(self, path: str | Path, overwrite: bool = True) -> Path:
        """Write the graph to folder ``path`` atomically (temp folder, then rename).

        An existing folder is replaced (``overwrite=False``: kept, when complete); a
        reader sees the old or the new one, never a half-written one (a folder counts
        as complete once ``meta.json`` exists).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            self._write(tmp)
            publish_dir(tmp, path, overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    def _write(self, d: Path) -> None:
        np.save(d / "rowptr.npy", self.rowptr.numpy())
        np.save(d / "col.npy", self.col.numpy())
        np.save(d / "labels.npy", self.labels.numpy())
        if self._texts is not None:
            np.save(d / "texts.npy", np.asarray(self._texts.blob, dtype=np.uint8))
            np.save(d / "offsets.npy", np.asarray(self._texts.offsets, dtype=np.int64))
        if self.features is not None:
            np.save(d / "features.npy", self.features.numpy().astype(np.float32, copy=False))
        (d / "splits").mkdir()
        split_files = {}
        for i, name in enumerate(self._splits):
            s = self.split(name)
            # File names are indices: split names are free text (e.g. "low-0", "sales ranking").
            split_files[name] = f"{i}.npz"
            np.savez(d / "splits" / f"{i}.npz", train=s.train.numpy(), valid=s.valid.numpy(),
                     test=s.test.numpy())
        meta = {
            "format_version": FORMAT_VERSION,
            "num_nodes": self.num_nodes,
            "num_edges": self.num_edges,
            "class_names": self.class_names,
            "default_split": self.default_split,
            "splits": split_files,
            "has_text": self.has_text,
            "has_features": self.features is not None,
            "metadata": self.metadata,
        }
        # meta.json last: its presence marks a complete folder.
        (d / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TextAttributedGraph:
        """Open a folder written by :meth:`save`; big arrays are memory-mapped."""
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            raise FastleadingError(f"{path}: not a prepared graph folder (meta.json missing)")
        meta = read_meta(meta_file)
        if meta.get("format_version") != FORMAT_VERSION:
            raise FastleadingError(f"{meta_file}: format version {meta.get('format_version')} "
                                   f"(expected {FORMAT_VERSION}); delete the folder to rebuild it")
        try:
            n, e = int(meta["num_nodes"]), int(meta["num_edges"])
            has_text, has_features, split_files = meta["has_text"], meta["has_features"], dict(meta["splits"])
            class_names, default_split, metadata = meta["class_names"], meta["default_split"], meta["metadata"]
        except (KeyError, TypeError, ValueError) as err:
            raise damaged(meta_file, f"no usable {_first_line(err)}") from None

        def tensor(name: str, shape: tuple[int | None, ...]) -> torch.Tensor:
            return torch.from_numpy(load_npy(path / name, shape))

        texts = None
        if has_text:
            texts = NodeTexts(load_npy(path / "texts.npy", (None,)), load_npy(path / "offsets.npy", (n + 1,)))

        def lazy_split(file: Path):
            def read() -> Split:
                try:
                    with np.load(file, allow_pickle=False) as z:
                        return Split(*(torch.from_numpy(z[k]) for k in ("train", "valid", "test")))
                except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                    raise damaged(file, _first_line(err)) from None
            return read

        splits = {name: lazy_split(path / "splits" / f) for name, f in split_files.items()}
        graph = cls(tensor("rowptr.npy", (n + 1,)), tensor("col.npy", (e,)), tensor("labels.npy", (n,)), class_names,
                    splits, default_split, texts, tensor("features.npy", (n, None)) if has_features else None, metadata)
        graph.path = path
        return graph

    def __repr__(self) -> str:
        return (f"TextAttributedGraph(name={self.name!r}, nodes={self.num_nodes}, edges={self.num_edges}, "
                f"classes={self.num_classes}, has_text={self.has_text}, splits={self.split_names})")


def publish_dir(tmp: Path, path: Path, overwrite: bool = True) -> None:
    """Move the finished folder ``tmp`` (complete once it holds ``meta.json``) to ``path``.

    With ``overwrite=False`` a complete folder already at ``path`` wins and ``tmp`` is
    dropped: it was built from the same inputs (a cache key), and other processes may
    already be reading the published one. If another process publishes between our
    check and our rename, the rename fails and the same rule applies.
    """
    if not overwrite and (path / "meta.json").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.rmdir(old)
        try:
            os.rename(path, old)
        except FileNotFoundError:  # removed meanwhile by someone else
            old = None
    try:
        os.rename(tmp, path)
    except OSError:
        if not (path / "meta.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def require_text(graph: TextAttributedGraph) -> None:
    """Raise a clear error when an LM method is asked to train on a graph without texts."""
    if not graph.has_text and not graph.metadata.get("synthetic_tokens"):
        raise FastleadingError(
            f"dataset '{graph.name}' has no node texts; LM methods need a text-attributed graph "
            f"(use train.method=shallow, or a dataset with texts such as citeseer-tag)")
