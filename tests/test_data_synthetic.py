"""Synthetic TAGs: determinism, the requested homophily / text signal, power-law degrees,
label signal in both text and graph, and scale mode's token ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastleading.config import DataConfig
from fastleading.data import load_dataset, synthetic
from fastleading.data.synthetic import FILLER_WORDS, TOPIC_WORDS, generate, vocabulary, write_synthetic_tokens
from fastleading.engine.graph import degrees
from fastleading.errors import FastleadingError


def _edge_rows(graph) -> np.ndarray:
    return np.repeat(np.arange(graph.num_nodes), degrees(graph.rowptr).numpy())


def test_same_seed_same_graph_other_seed_other_graph():
    a, b, c = generate(600, 4, seed=3), generate(600, 4, seed=3), generate(600, 4, seed=4)
    assert torch.equal(a.col, b.col) and torch.equal(a.labels, b.labels)
    assert a.texts(range(600)) == b.texts(range(600))
    assert not torch.equal(a.labels, c.labels)


@pytest.mark.parametrize("homophily", [0.2, 0.8])
def test_edges_within_class_match_the_requested_homophily(homophily):
    g = generate(3000, 5, avg_degree=10, homophily=homophily, seed=1)
    y = g.labels.numpy()
    within = (y[_edge_rows(g)] == y[g.col.numpy()]).mean()
    assert abs(within - homophily) < 0.04
    assert 8.5 < g.num_edges / g.num_nodes <= 10  # a little below 10: duplicates are dropped


def test_degrees_are_heavy_tailed():
    g = generate(20000, 5, avg_degree=8, seed=2, with_text=False)
    deg = degrees(g.rowptr).numpy()
    # A power law has hubs far above the mean; a Poisson graph's maximum would be ~25 here.
    assert deg.max() > 20 * deg.mean()
    assert np.percentile(deg, 50) < deg.mean()


def test_text_words_come_from_the_class_topic_with_the_requested_fraction():
    g = generate(2000, 4, words=24, signal=0.3, seed=5)
    vocab = {w: i for i, w in enumerate(vocabulary(4, 5))}
    topic = own = total = 0
    for i, text in enumerate(g.texts(range(g.num_nodes))):
        ids = np.array([vocab[w] for w in text.split()])
        assert 18 <= len(ids) <= 30
        is_topic = ids < 4 * TOPIC_WORDS
        topic += is_topic.sum()
        own += (ids[is_topic] // TOPIC_WORDS == int(g.labels[i])).sum()
        total += len(ids)
    assert own == topic  # topic words only ever come from the node's own class
    assert abs(topic / total - 0.3) < 0.02


def _ridge_probe(x: torch.Tensor, y: torch.Tensor, split, lam: float = 1.0) -> float:
    """Test accuracy of a ridge-regression classifier on one-hot labels, fitted on the
    split's training nodes in closed (kernel) form: a linear probe with no optimizer."""
    xt = x[split.train].double()
    targets = torch.nn.functional.one_hot(y[split.train]).double()
    alpha = torch.linalg.solve(xt @ xt.T + lam * torch.eye(len(xt), dtype=torch.float64), targets)
    pred = (x[split.test].double() @ (xt.T @ alpha)).argmax(1)
    return (pred == y[split.test]).double().mean().item()


def test_text_and_graph_both_carry_signal_and_the_graph_helps():
    g = generate(1500, 5, seed=0)
    x, y, split = g.features, g.labels, g.split("low-0")
    rows = torch.from_numpy(_edge_rows(g))
    norm = (degrees(g.rowptr).double() + 1).rsqrt()[:, None]
    propagated = x.double()
    for _ in range(2):  # two rounds of symmetric-normalised propagation with self-loops (SGC)
        scaled = propagated * norm
        propagated = (torch.zeros_like(scaled).index_add_(0, rows, scaled[g.col.long()]) + scaled) * norm
    text_only, with_graph = _ridge_probe(x, y, split), _ridge_probe(propagated, y, split)
    assert 0.45 < text_only < 0.9     # chance is 0.2
    assert with_graph > text_only + 0.1


def test_load_dataset_caches_by_options(tmp_path):
    cfg = DataConfig(cache_dir=str(tmp_path), synthetic_nodes=300, synthetic_classes=3)
    g1 = load_dataset(cfg)
    assert g1.path.parent == tmp_path / "graphs" and g1.path.name.startswith("synthetic-")
    assert g1.default_split == "low-0" and len(g1.split_names) == 11
    cfg.synthetic_seed = 1
    g2 = load_dataset(cfg)
    assert g2.path != g1.path and not torch.equal(g1.labels, g2.labels)


def test_products_split_has_ogbn_products_proportions(tmp_path):
    """``data.split=products``: a random 8.03 / 1.61 / 90.37 percent split (ogbn-products'
    196,615 / 39,323 / 2,213,091 of 2,449,029, which it reproduces exactly at that size)."""
    from fastleading.data.splits import PRODUCTS_COUNTS, products_split

    cfg = DataConfig(cache_dir=str(tmp_path), synthetic_nodes=5000, synthetic_classes=7, synthetic_tokens=True)
    graph = load_dataset(cfg)
    s = graph.split("products")
    parts = [s.train.numpy(), s.valid.numpy(), s.test.numpy()]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(5000))  # a partition of all nodes
    total = sum(PRODUCTS_COUNTS)
    for part, count in zip(parts, PRODUCTS_COUNTS, strict=True):
        assert abs(len(part) - 5000 * count / total) <= 1
    assert set(graph.labels[s.train].tolist()) == set(range(7))
    # the same split after a round trip through the cache, and a different one for another seed
    again = load_dataset(cfg).split("products")
    assert torch.equal(again.train, s.train) and torch.equal(again.test, s.test)
    other = products_split(np.zeros(5000, dtype=np.int64), seed=1)
    assert not torch.equal(other.train, s.train)
    full = products_split(np.zeros(total, dtype=np.int64))
    assert (len(full.train), len(full.valid), len(full.test)) == PRODUCTS_COUNTS


def test_bad_options_are_named():
    with pytest.raises(FastleadingError, match="data.synthetic_homophily"):
        generate(100, 2, homophily=1.5)
    with pytest.raises(FastleadingError, match="data.synthetic_nodes"):
        generate(3, 2)


class _FakeTokenizer:
    """What write_synthetic_tokens uses of a tokenizer: [CLS] text [SEP] framing."""

    all_special_ids = [0, 1, 2]

    def __len__(self) -> int:
        return 5000

    def __call__(self, text, add_special_tokens=True):
        ids = [100]
        return {"input_ids": [1, *ids, 2] if add_special_tokens else ids}


@pytest.mark.parametrize("side", ["right", "left"])
def test_scale_mode_tokens_are_the_words_of_text_mode(side, monkeypatch):
    """Token mode writes, per node, exactly the words text mode would write (one token each)."""
    monkeypatch.setattr(synthetic, "BLOCK", 64)  # several blocks on a small graph
    text_graph = generate(200, 3, words=12, seed=7)
    token_graph = generate(200, 3, words=12, seed=7, with_text=False)
    assert token_graph.metadata["synthetic_tokens"] and not token_graph.has_text
    assert torch.equal(text_graph.col, token_graph.col)
    max_length = 14  # shorter than most rows: truncation keeps [SEP]
    ids = np.zeros((200, max_length), dtype=np.int32)
    lengths = np.zeros(200, dtype=np.int32)
    tok = _FakeTokenizer()
    write_synthetic_tokens(token_graph, ids, lengths, tok, side, pad_token_id=0)
    rng = np.random.default_rng([7, 4])
    candidates = np.array([i for i in range(5000) if i not in tok.all_special_ids])
    drawn = rng.choice(candidates, 3 * TOPIC_WORDS + FILLER_WORDS, replace=False)
    token_of = dict(zip(vocabulary(3, 7), drawn, strict=True))
    for i, text in enumerate(text_graph.texts(range(200))):
        body = [token_of[w] for w in text.split()][: max_length - 2]
        expected = [1, *body, 2]
        row = ids[i].tolist()
        pad = [0] * (max_length - len(expected))
        assert row == (expected + pad if side == "right" else pad + expected)
        assert lengths[i] == len(expected)
