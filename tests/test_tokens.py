"""The tokenization cache: contents vs the tokenizer, caching, padding sides, batches."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fastleading.config import DataConfig  # noqa: E402
from fastleading.data import load_dataset, tokens  # noqa: E402
from fastleading.data.tokens import load_tokenizer, prepare_tokens  # noqa: E402
from fastleading.errors import FastleadingError  # noqa: E402

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    cfg = DataConfig(cache_dir=str(tmp_path_factory.mktemp("cache")), synthetic_nodes=150, synthetic_classes=3)
    return load_dataset(cfg)


@pytest.fixture(scope="module")
def gpt2_like(tmp_path_factory):
    """A tiny byte-level BPE tokenizer without a pad token, like GPT-2's (built offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    path = tmp_path_factory.mktemp("gpt2-like")
    tok.save_pretrained(path)
    return str(path)


def test_cache_holds_what_the_tokenizer_returns(graph, tmp_path):
    cache = prepare_tokens(graph, graph.path, MINILM, 24, tmp_path)
    tok, decoder = load_tokenizer(MINILM)
    assert not decoder and cache.padding_side == "right" and cache.pad_token_id == tok.pad_token_id == 0
    assert cache.input_ids.dtype == torch.int32 and cache.input_ids.shape == (150, 24)
    for i in range(graph.num_nodes):
        ids = tok(graph.text(i), truncation=True, max_length=24)["input_ids"]
        assert int(cache.lengths[i]) == len(ids)
        assert cache.input_ids[i].tolist() == ids + [0] * (24 - len(ids))
    meta = json.loads((cache.path / "meta.json").read_text())
    assert meta["padding_side"] == "right" and meta["pad_token_id"] == 0 and meta["max_length"] == 24
    assert cache.path.name.startswith(graph.cache_key)


def test_second_call_opens_the_cache_without_tokenizing(graph, tmp_path, monkeypatch):
    first = prepare_tokens(graph, graph.path, MINILM, 32, tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(tokens, "_write", fail)
    second = prepare_tokens(graph, graph.cache_key, MINILM, 32, tmp_path)
    assert second.path == first.path
    assert torch.equal(second.input_ids, first.input_ids) and torch.equal(second.lengths, first.lengths)
    with pytest.raises(AssertionError, match="tokenized again"):  # other options: another key
        prepare_tokens(graph, graph.path, MINILM, 33, tmp_path)
    with pytest.raises(AssertionError, match="tokenized again"):
        prepare_tokens(graph, graph.path, MINILM, 32, tmp_path, padding_side="left")


@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_equals_the_tokenizers_longest_padding(graph, tmp_path, side):
    cache = prepare_tokens(graph, graph.path, MINILM, 40, tmp_path, padding_side=side)
    tok, _ = load_tokenizer(MINILM)
    tok.padding_side = side
    gen = torch.Generator().manual_seed(0)
    for size in (1, 5, 17):
        ids = torch.randperm(graph.num_nodes, generator=gen)[:size]
        input_ids, mask = cache.batch(ids)
        ref = tok(graph.texts(ids.tolist()), truncation=True, max_length=40, padding="longest",
                  return_tensors="pt")
        assert input_ids.dtype == torch.int64 and mask.dtype == torch.int64
        assert torch.equal(input_ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"])


def test_decoder_tokenizer_pads_left_with_eos(graph, tmp_path, gpt2_like):
    tok, decoder = load_tokenizer(gpt2_like)
    assert decoder and tok.pad_token == "<|endoftext|>"
    cache = prepare_tokens(graph, graph.path, gpt2_like, 48, tmp_path)
    assert cache.padding_side == "left" and cache.pad_token_id == tok.eos_token_id
    for i in (0, 7, 149):
        ids = tok(graph.text(i), truncation=True, max_length=48)["input_ids"]
        row = cache.input_ids[i].tolist()
        assert row == [tok.eos_token_id] * (48 - len(ids)) + ids and int(cache.lengths[i]) == len(ids)
    input_ids, mask = cache.batch(torch.tensor([0, 7]))
    assert (mask[:, -1] == 1).all()  # the last column holds every row's last token


@pytest.mark.parametrize("side", ["left", "right"])
def test_an_empty_text_becomes_one_eos_token_not_an_all_masked_row(tmp_path, gpt2_like, side):
    """GPT-2-like tokenizers add no special tokens: an empty text would give a row of padding only."""
    from fastleading.data.tag import NodeTexts, TextAttributedGraph

    texts = ["the quick fox", "", "lazy dog", ""]
    g = TextAttributedGraph(torch.tensor([0, 1, 2, 3, 4]), torch.tensor([1, 0, 3, 2], dtype=torch.int32),
                            torch.zeros(4, dtype=torch.long), ["a"], {}, "", texts=NodeTexts.from_strings(texts),
                            metadata={"name": "empty-texts"})
    g.save(tmp_path / "graph")
    tok, _ = load_tokenizer(gpt2_like)
    assert tok("")["input_ids"] == []  # the case this guards against
    cache = prepare_tokens(g, tmp_path / "graph", gpt2_like, 8, tmp_path / "cache", padding_side=side)
    assert cache.lengths.tolist() == [len(tok(t)["input_ids"]) or 1 for t in texts]
    input_ids, mask = cache.batch(torch.arange(4))
    assert (mask.sum(1) >= 1).all()
    for i in (1, 3):
        assert input_ids[i][mask[i].bool()].tolist() == [tok.eos_token_id]
    assert input_ids[0][mask[0].bool()].tolist() == tok(texts[0])["input_ids"]


def test_causal_lm_config_means_left_padding_even_with_a_pad_token(tmp_path, gpt2_like):
    import shutil

    path = tmp_path / "model"
    shutil.copytree(gpt2_like, path)
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    cfg["pad_token"] = "<|endoftext|>"
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    tok, decoder = load_tokenizer(str(path))
    assert tok.pad_token_id is not None and decoder


def test_slow_tokenizers_are_refused(monkeypatch):
    class Slow:
        is_fast = False

    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **k: Slow())
    monkeypatch.setattr("fastleading.models.hub.check_hub_model", lambda name: name)  # a Hub name, taken as found
    with pytest.raises(FastleadingError, match="model 'some/model': its tokenizer is not a fast"):
        load_tokenizer("some/model")


def test_max_length_beyond_the_model_is_refused(graph, tmp_path):
    with pytest.raises(FastleadingError, match="data.max_length': 1024 exceeds the 512 positions"):
        prepare_tokens(graph, graph.path, MINILM, 1024, tmp_path)


def test_a_failure_midway_leaves_no_cache(graph, tmp_path, monkeypatch):
    monkeypatch.setattr(tokens, "TOKENIZE_BATCH", 50)
    calls = {"n": 0}
    real = type(graph).texts

    def flaky(self, ids):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("interrupted")
        return real(self, ids)

    monkeypatch.setattr(type(graph), "texts", flaky)
    with pytest.raises(RuntimeError, match="interrupted"):
        prepare_tokens(graph, graph.path, MINILM, 16, tmp_path)
    assert list((tmp_path / "tokens").iterdir()) == []


def test_scale_mode_writes_tokens_without_strings(tmp_path):
    cfg = DataConfig(cache_dir=str(tmp_path), synthetic_nodes=300, synthetic_classes=4, synthetic_tokens=True)
    g = load_dataset(cfg)
    assert not g.has_text
    cache = prepare_tokens(g, g.path, MINILM, 20, tmp_path)
    tok, _ = load_tokenizer(MINILM)
    ids, lengths = cache.input_ids.numpy(), cache.lengths.numpy()
    special = set(tok.all_special_ids)
    assert (lengths >= 3).all() and (lengths <= 20).all()
    for i in range(g.num_nodes):
        row, n = ids[i], lengths[i]
        assert row[0] == tok.cls_token_id and row[n - 1] == tok.sep_token_id and (row[n:] == 0).all()
        assert not special & set(row[1:n - 1].tolist())
    # Class-conditional: nodes of one class share topic tokens more than nodes of different classes.
    y = g.labels.numpy()
    bags = [set(ids[i, 1:lengths[i] - 1].tolist()) for i in range(g.num_nodes)]
    same = np.mean([len(bags[i] & bags[j]) for i in range(40) for j in range(40, 80) if y[i] == y[j]])
    other = np.mean([len(bags[i] & bags[j]) for i in range(40) for j in range(40, 80) if y[i] != y[j]])
    assert same > other
