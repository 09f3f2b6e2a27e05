"""The tokenization cache: every node text tokenized once, memory-mapped afterwards.

``prepare_tokens`` runs the model's FAST (Rust) tokenizer over all node texts in
batches and writes, atomically (temp folder + rename)::

    <cache_dir>/tokens/<graph key>--<model>-L<max_length>-<side>-<hash>/
        input_ids.npy   int32 [N, L]   padded to L = max_length on the padding side
        lengths.npy     int32 [N]      real tokens per row (special tokens included)
        meta.json       model, vocab hash, max_length, padding side, pad id, N

The folder key covers the dataset's cache key, the tokenizer (name and a hash of its
full definition), ``max_length`` and the padding side, so a second call opens the
cache at once. Decoder models (GPT-2, Llama: ``architectures`` ending in CausalLM /
LMHeadModel, ``config.is_decoder``, or a tokenizer without a pad token) pad on the
LEFT, so that the last position holds every row's last token; a missing pad token is
set to the EOS token. A text that tokenizes to nothing (an empty text, with a tokenizer that
adds no special tokens, as GPT-2's) is stored as one EOS token (the pad token where there is
no EOS), so that no row is all padding: an all-masked row would pool to NaN.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastleading.data.tag import TextAttributedGraph, damaged, load_npy, publish_dir, read_meta, require_text
from fastleading.errors import FastleadingError

TOKENIZE_BATCH = 1024
FORMAT_VERSION = 2  # 2: no row of zero tokens


@dataclass
class TokenCache:
    """Token ids of every node (see the module docstring).

    Attributes:
        input_ids: int32 ``[N, L]`` (a view of the memory-mapped file).
        lengths: int32 ``[N]``.
    """

    input_ids: torch.Tensor
    lengths: torch.Tensor
    padding_side: str
    pad_token_id: int
    max_length: int
    model_name: str = ""
    path: Path | None = None

    @property
    def num_nodes(self) -> int:
        return self.input_ids.shape[0]

    def batch(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``ids`` (int64 ``[B]``) as ``(input_ids, attention_mask)``, both int64
        ``[B, l]`` on the CPU, where ``l`` = the longest row of the batch: padding columns
        that every row has are cut (from the right for right padding, the left for left
        padding)."""
        ids = torch.as_tensor(ids, dtype=torch.long, device="cpu")
        rows = self.input_ids[ids].long()
        lengths = self.lengths[ids].long()
        width = int(lengths.max()) if len(ids) else 0
        positions = torch.arange(self.max_length)
        if self.padding_side == "right":
            rows, positions = rows[:, :width], positions[:width]
            mask = positions[None, :] < lengths[:, None]
        else:
            start = self.max_length - width
            rows, positions = rows[:, start:], positions[start:]
            mask = positions[None, :] >= (self.max_length - lengths)[:, None]
        return rows.contiguous(), mask.long()

    @classmethod
    def load(cls, path: Path) -> TokenCache:
        """Open a cache folder; a damaged file (or one of the wrong shape) is one line naming it."""
        meta = read_meta(path / "meta.json")
        try:
            n, length = int(meta["num_nodes"]), int(meta["max_length"])
            fields = meta["padding_side"], int(meta["pad_token_id"]), length, meta["model_name"]
        except (KeyError, TypeError, ValueError) as e:
            raise damaged(path / "meta.json", f"no usable {type(e).__name__}: {e}") from None
        return cls(torch.from_numpy(load_npy(path / "input_ids.npy", (n, length))),
                   torch.from_numpy(load_npy(path / "lengths.npy", (n,))), *fields, path)


def load_tokenizer(model_name: str):
    """The model's fast tokenizer and whether the model is a decoder (left padding).

    A tokenizer without a pad token gets ``pad = eos``.
    """
    from transformers import AutoConfig, AutoTokenizer

    from fastleading.models.hub import load_args
    from fastleading.models.lm import is_decoder

    path, kwargs = load_args(model_name)
    try:
        tok = AutoTokenizer.from_pretrained(path, use_fast=True, **kwargs)
    except Exception as e:  # OSError, ValueError, ...: the message names what is missing
        raise FastleadingError(f"model '{model_name}': cannot load its tokenizer ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not getattr(tok, "is_fast", False):
        raise FastleadingError(f"model '{model_name}': its tokenizer is not a fast (Rust) tokenizer; "
                               f"fastleading needs one (a model folder with tokenizer.json)")
    try:
        config = AutoConfig.from_pretrained(path, **kwargs)
    except Exception:  # a tokenizer-only folder: decide from the tokenizer alone
        config = None
    decoder = (config is not None and is_decoder(config)) or tok.pad_token_id is None
    if tok.pad_token_id is None:
        if tok.eos_token is None:
            raise FastleadingError(f"model '{model_name}': its tokenizer has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    return tok, decoder


def tokenizer_hash(tok) -> str:
    """Hash of the tokenizer's complete definition (vocabulary, merges, normalizer...)."""
    return hashlib.sha1(tok.backend_tokenizer.to_str().encode()).hexdigest()[:10]


def token_dir(cache_dir: str | Path, graph_key: str, model_name: str, vocab_hash: str,
              max_length: int, padding_side: str) -> Path:
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name.rstrip("/").split("/")[-1])[:40]
    key = json.dumps([graph_key, model_name, vocab_hash, max_length, padding_side, FORMAT_VERSION])
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    return Path(cache_dir).expanduser() / "tokens" / f"{graph_key}--{model}-L{max_length}-{padding_side}-{digest}"


def _tokenizer(model_name: str, max_length: int, padding_side: str | None):
    """``(tokenizer, decoder, padding side)`` for ``model_name`` at ``max_length``, checked."""
    if max_length < 2:
        raise FastleadingError(f"config key 'data.max_length': expected at least 2, got {max_length}")
    tok, decoder = load_tokenizer(model_name)
    side = padding_side or ("left" if decoder else "right")
    if side not in ("left", "right"):
        raise FastleadingError(f"padding side must be 'left' or 'right', got {side!r}")
    limit = getattr(tok, "model_max_length", None)
    if limit is not None and limit < 10**6 and max_length > limit:
        raise FastleadingError(f"config key 'data.max_length': {max_length} exceeds the {limit} positions "
                               f"of model '{model_name}'")
    return tok, decoder, side


def _graph_key(graph: TextAttributedGraph, graph_dir_or_key: str | Path | None) -> str:
    key = Path(graph_dir_or_key).name if graph_dir_or_key is not None else graph.cache_key
    if not key:
        raise FastleadingError("prepare_tokens: the graph has no cache key; load it with load_dataset() "
                               "or pass graph_dir_or_key")
    return key


def prepare_tokens(graph: TextAttributedGraph, graph_dir_or_key: str | Path | None, model_name: str,
                   max_length: int, cache_dir: str | Path, padding_side: str | None = None) -> TokenCache:
    """Tokenize every node text of ``graph`` (or open the cache made by an earlier call).

    Args:
        graph_dir_or_key: the graph's cache folder or its name (``graph.path``); None =
            ``graph.cache_key`` (a graph that was never saved cannot be cached).
        padding_side: "left" / "right"; None = left for decoders, right otherwise.
    """
    require_text(graph)
    key = _graph_key(graph, graph_dir_or_key)
    tok, decoder, side = _tokenizer(model_name, max_length, padding_side)
    vocab_hash = tokenizer_hash(tok)
    path = token_dir(cache_dir, key, model_name, vocab_hash, max_length, side)
    if not (path / "meta.json").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            _write(graph, tok, side, max_length, tmp)
            meta = {"model_name": model_name, "vocab_hash": vocab_hash, "max_length": max_length,
                    "padding_side": side, "pad_token_id": int(tok.pad_token_id), "num_nodes": graph.num_nodes,
                    "graph_key": key, "decoder": decoder}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
            publish_dir(tmp, path, overwrite=False)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return TokenCache.load(path)


def tokenize_rows(tok, texts: list[str], side: str, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """The token cache's rows of ``texts``: ids ``[n, max_length]`` padded on ``side`` and the
    real token counts ``[n]`` (a text that tokenizes to nothing gets one EOS token)."""
    tok.padding_side = side
    enc = tok(list(texts), max_length=max_length, truncation=True, padding="max_length", return_attention_mask=True,
              return_token_type_ids=False, return_tensors="np")
    ids, count = enc["input_ids"], enc["attention_mask"].sum(axis=1)
    empty = count == 0
    if empty.any():  # one EOS instead of nothing, on the side the real tokens sit
        filler = tok.eos_token_id if tok.eos_token_id is not None else tok.pad_token_id
        ids[empty, 0 if side == "right" else max_length - 1] = filler
        count[empty] = 1
    return ids, count


@dataclass
class TokenLengths:
    """Tokens per node text at ``max_length`` (int32 ``[N]``, special tokens included), counted
    in memory without writing a cache: what ``fastleading info`` reports where no token cache
    exists. Has the attributes of :class:`TokenCache` that :func:`fastleading.data.info.info` reads."""

    lengths: torch.Tensor
    padding_side: str
    max_length: int
    model_name: str
    path: Path | None = None


def cached_or_counted_tokens(graph: TextAttributedGraph, graph_dir_or_key: str | Path | None, model_name: str,
                             max_length: int, cache_dir: str | Path) -> TokenCache | TokenLengths:
    """The token cache of ``graph`` for ``model_name`` at ``max_length`` when one exists, else
    the token counts computed in memory (:class:`TokenLengths`); never writes anything."""
    key = _graph_key(graph, graph_dir_or_key)
    tok, _, side = _tokenizer(model_name, max_length, None)
    path = token_dir(cache_dir, key, model_name, tokenizer_hash(tok), max_length, side)
    if (path / "meta.json").is_file():
        return TokenCache.load(path)
    require_text(graph)
    lengths = np.zeros(graph.num_nodes, dtype=np.int32)
    for start, stop, _, count in _token_batches(graph, tok, side, max_length):
        lengths[start:stop] = count
    return TokenLengths(torch.from_numpy(lengths), side, max_length, model_name)


def prepared_lengths(cache_dir: str | Path, graph_key: str, model_name: str) -> list[int]:
    """The ``max_length`` of every token cache of the graph ``graph_key`` (its cache folder's
    name) for ``model_name``, sorted (reads the caches' ``meta.json`` only)."""
    found = set()
    for meta in (Path(cache_dir).expanduser() / "tokens").glob(f"{glob.escape(graph_key)}--*/meta.json"):
        try:
            m = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if m.get("graph_key") == graph_key and m.get("model_name") == model_name:
            found.add(int(m["max_length"]))
    return sorted(found)


def _token_batches(graph: TextAttributedGraph, tok, side: str, max_length: int):
    """Every node text tokenized, :data:`TOKENIZE_BATCH` at a time: ``(start, stop, ids int
    [B, max_length] padded on ``side``, real tokens per row [B])``; a text that tokenizes to
    nothing is one EOS (see the module docstring)."""
    from fastleading.run.console import bar

    n = graph.num_nodes
    with bar(total=n, desc=f"tokenizing {graph.name} at max_length {max_length}", unit="text") as progress:
        for start in range(0, n, TOKENIZE_BATCH):
            stop = min(n, start + TOKENIZE_BATCH)
            ids, count = tokenize_rows(tok, graph.texts(range(start, stop)), side, max_length)
            yield start, stop, ids, count
            progress.update(stop - start)


def _write(graph: TextAttributedGraph, tok, side: str, max_length: int, out: Path) -> None:
    """Fill ``out/input_ids.npy`` and ``out/lengths.npy`` batch by batch (bounded memory)."""
    from numpy.lib.format import open_memmap

    n = graph.num_nodes
    input_ids = open_memmap(out / "input_ids.npy", mode="w+", dtype=np.int32, shape=(n, max_length))
    lengths = open_memmap(out / "lengths.npy", mode="w+", dtype=np.int32, shape=(n,))
    if graph.metadata.get("synthetic_tokens"):
        from fastleading.data.synthetic import write_synthetic_tokens

        write_synthetic_tokens(graph, input_ids, lengths, tok, side, int(tok.pad_token_id))
    else:
        for start, stop, ids, count in _token_batches(graph, tok, side, max_length):
            input_ids[start:stop] = ids
            lengths[start:stop] = count
    input_ids.flush()
    lengths.flush()
    del input_ids, lengths
