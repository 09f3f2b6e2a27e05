"""Shallow text features (TF-IDF over a vocabulary built from the texts).

They feed the shallow baseline (a GNN on fixed features), not the LM path.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

_WORD = re.compile(r"[a-z][a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words of at least two characters."""
    return _WORD.findall(text.lower())


def tfidf_features(texts: Sequence[str], max_features: int = 3000, min_df: int = 2,
                   max_df: float = 0.5) -> tuple[torch.Tensor, list[str]]:
    """TF-IDF of every text over the ``max_features`` most frequent informative words.

    Words in fewer than ``min_df`` texts or in more than ``max_df`` of them are left
    out; ties in document frequency break alphabetically (deterministic). Rows are
    L2-normalised (a text with no vocabulary word stays all-zero).

    Returns:
        ``(features, vocabulary)``: float32 ``[N, V]`` and the V words.
    """
    docs = [words(t) for t in texts]
    n = len(docs)
    df = Counter(w for d in docs for w in set(d))
    kept = [w for w, c in df.items() if c >= min_df and c <= max_df * n]
    kept.sort(key=lambda w: (-df[w], w))
    vocab = kept[:max_features]
    index = {w: i for i, w in enumerate(vocab)}
    rows, cols = [], []
    for r, d in enumerate(docs):
        ids = [index[w] for w in d if w in index]
        rows.extend([r] * len(ids))
        cols.extend(ids)
    counts = np.zeros((n, len(vocab)), dtype=np.float32)
    np.add.at(counts, (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)), 1.0)
    idf = np.log((1.0 + n) / (1.0 + np.array([df[w] for w in vocab], dtype=np.float32))) + 1.0
    x = counts * idf
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x /= np.maximum(norms, 1e-12)
    return torch.from_numpy(x), vocab
