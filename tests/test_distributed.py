"""fastleading.engine.distributed: two gloo ranks on loopback against single-process references.

One spawn of two ranks runs every collective scenario and saves what each rank ends with;
the tests compare the ranks with each other and with a single process that applies the
union of both ranks' work (the bank, the implicit histories, a data-parallel trajectory).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from fastleading.engine import distributed as D
from fastleading.engine.bank import MemoryBank
from fastleading.engine.graph import build_csr
from fastleading.errors import FastleadingError
from fastleading.models.appnp import ImplicitAPPNP

WORLD = 2
NUM_NODES, DIM, BANK_STEPS = 40, 6, 5
CHANNELS, HISTORY_STEPS, SUBGRAPH = 4, 4, 12
DP_STEPS, DP_BATCH = 6, 7  # 7 targets over 2 ranks: shards of 4 and 3
GATHER_SIZES = [(3, 0), (2, 5), (0, 0), (4, 4)]  # rows per rank in each allgather_rows call


# -- the per-rank inputs (functions of the step and rank only, so the parent can replay them) --

def _gen(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(sum(k * 1000**i for i, k in enumerate(key)))


def _gather_input(case: int, rank: int):
    m = GATHER_SIZES[case][rank]
    g = _gen(1, case, rank)
    return torch.randint(0, 1000, (m,), generator=g), torch.randn(m, 3, generator=g)


def _bank_input(step: int, rank: int):
    """Different ids per rank, overlapping across ranks (the higher rank must win everywhere)."""
    g = _gen(2, step, rank)
    ids = torch.randperm(NUM_NODES, generator=g)[:8 + 3 * rank]
    return ids, torch.randn(len(ids), DIM, generator=g)


def _subgraph(step: int, rank: int):
    """A rank's sampled subgraph: global ids, local CSR, input features and an output weight."""
    g = _gen(3, step, rank)
    node_ids = torch.randperm(NUM_NODES, generator=g)[:SUBGRAPH]
    src, dst = torch.randint(0, SUBGRAPH, (2, 30), generator=g)
    rowptr, col = build_csr(src.numpy(), dst.numpy(), SUBGRAPH)
    x_in = torch.randn(SUBGRAPH, CHANNELS, generator=g)
    weight = torch.randn(SUBGRAPH, CHANNELS, generator=g)
    return node_ids, torch.as_tensor(rowptr), torch.as_tensor(col), x_in, weight


def _history_step(layer: ImplicitAPPNP, step: int, rank: int) -> torch.Tensor:
    """Forward + backward of the implicit layer on rank's subgraph (writes both histories)."""
    node_ids, rowptr, col, x_in, weight = _subgraph(step, rank)
    x_in.requires_grad_(True)
    (layer(x_in, rowptr, col, node_ids) * weight).sum().backward()
    return node_ids


def _dp_batch(step: int):
    """Fresh inputs each step, labels from a fixed linear rule (so the loss can go down)."""
    x = torch.randn(DP_BATCH, 5, generator=_gen(4, step))
    rule = torch.randn(5, 3, generator=_gen(5))
    return x, (x @ rule).argmax(1)


def _dp_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


# -- the rank worker ------------------------------------------------------------------------------

def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    env = D.init_distributed("gloo")
    res: dict = {"env": env, "rank": D.get_rank(), "world": D.get_world_size(), "main": D.is_main()}

    res["gathered"] = [D.allgather_rows(*_gather_input(case, rank)) for case in range(len(GATHER_SIZES))]
    # as under NCCL: the counts go through a gloo group of their own (CPU tensors); the ids and
    # rows through the default group
    calls, all_gather, get_backend = [], torch.distributed.all_gather, torch.distributed.get_backend
    torch.distributed.all_gather = lambda out, t, group=None, **k: (
        calls[-1].append((t.device.type, group)), all_gather(out, t, group=group, **k))[1]
    torch.distributed.get_backend = lambda group=None: "nccl"
    res["gathered_host_group"] = []
    for case in range(len(GATHER_SIZES)):
        calls.append([])
        res["gathered_host_group"].append(D.allgather_rows(*_gather_input(case, rank)))
    torch.distributed.all_gather, torch.distributed.get_backend = all_gather, get_backend
    count_groups = [c[0][1] for c in calls]
    res["counts_on_their_own_group"] = (all(c[0][0] == "cpu" for c in calls) and None not in count_groups
                                       and len(set(count_groups)) == 1
                                       and all(group is None for c in calls for _, group in c[1:]))
    res["exchanges_per_call"] = [len(c) for c in calls]
    res["mean"] = D.all_reduce_mean(torch.tensor([rank + 1.0, 10.0 * rank]))
    res["sum"] = D.all_reduce_sum(torch.tensor([rank + 1, 7]))

    for dtype in (torch.float32, torch.bfloat16):
        bank = MemoryBank(NUM_NODES, DIM, dtype)
        for step in range(BANK_STEPS):
            D.sync_bank_rows(bank, *_bank_input(step, rank), step)
        res[f"bank_{dtype}"] = (bank.emb.clone(), bank.stamp.clone())

    layer = ImplicitAPPNP(0.2, 3, NUM_NODES, CHANNELS)
    for step in range(HISTORY_STEPS):
        _history_step(layer, step, rank)  # the backward syncs the rows it wrote
    res["history"] = {name: table.clone() for name, table in layer.histories_state().items()}

    # a parameter with a gradient on rank 0 only counts as zero on rank 1
    p = torch.nn.Parameter(torch.zeros(3))
    if rank == 0:
        p.grad = torch.full((3,), 2.0)
    D.all_reduce_gradients([p])
    res["lonely_grad"] = p.grad.clone()

    model = _dp_model(seed=rank)  # different init per rank: the broadcast must align them
    D.broadcast_module_(model)
    frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    losses = []
    for step in range(DP_STEPS):
        x, y = _dp_batch(step)
        local = D.shard(torch.arange(DP_BATCH), rank, WORLD)
        loss = torch.nn.functional.cross_entropy(model(x[local]), y[local])
        (loss * D.shard_weight(len(local), DP_BATCH, WORLD)).backward()
        # a tiny bucket forces several flushes; the frozen parameter is skipped
        D.all_reduce_gradients(list(model.parameters()) + [frozen], bucket_bytes=64)
        opt.step()
        opt.zero_grad()
        losses.append(float(D.all_reduce_mean(loss.detach() * D.shard_weight(len(local), DP_BATCH, WORLD))))
    res["dp_losses"], res["dp_state"] = losses, {k: v.clone() for k, v in model.state_dict().items()}
    res["frozen_grad"] = frozen.grad
    had_host_group = D._host_group is not None
    D.shutdown()  # every rank waits for the others, then leaves (rank 0 serves the store)
    res["left"] = had_host_group and D._host_group is None and not torch.distributed.is_initialized()
    D.shutdown()  # a second call does nothing
    torch.save(res, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(D.free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# -- two ranks ------------------------------------------------------------------------------------

def test_environment_and_reductions(ranks):
    for r, res in enumerate(ranks):
        assert res["env"] == D.DistEnv(r, WORLD, r, "127.0.0.1", res["env"].master_port)
        assert (res["rank"], res["world"], res["main"]) == (r, WORLD, r == 0)
        torch.testing.assert_close(res["mean"], torch.tensor([1.5, 5.0]), rtol=0, atol=0)
        assert res["sum"].tolist() == [3, 14]
        assert res["left"]  # shutdown destroyed the group and forgot the host group


def test_allgather_rows_with_unequal_sizes(ranks):
    for case in range(len(GATHER_SIZES)):
        ids, rows = zip(*(_gather_input(case, r) for r in range(WORLD)), strict=True)
        for res in ranks:
            for got_ids, got_rows in (res["gathered"][case], res["gathered_host_group"][case]):
                assert got_ids.dtype == torch.int64 and got_rows.shape == (sum(GATHER_SIZES[case]), 3)
                assert torch.equal(got_ids, torch.cat(ids)) and torch.equal(got_rows, torch.cat(rows))


def test_allgather_rows_reads_no_count_from_the_device(ranks):
    """Under NCCL (simulated: the default group reports 'nccl') the row counts are CPU tensors
    exchanged over a gloo group of their own, so reading them waits for no device; ids and rows
    go through the default group (nothing when every rank has none)."""
    for res in ranks:
        assert res["counts_on_their_own_group"]
        assert res["exchanges_per_call"] == [1 if sum(sizes) == 0 else 3 for sizes in GATHER_SIZES]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_rank_holds_the_bank_of_the_union_of_refreshes(ranks, dtype):
    reference = MemoryBank(NUM_NODES, DIM, dtype)
    for step in range(BANK_STEPS):
        ids, rows = zip(*(_bank_input(step, r) for r in range(WORLD)), strict=True)
        reference.refresh(torch.cat(ids), torch.cat(rows), step)
    assert (reference.stamp == BANK_STEPS - 1).any() and (reference.stamp >= 0).sum() > NUM_NODES // 2
    for res in ranks:
        emb, stamp = res[f"bank_{dtype}"]
        assert torch.equal(emb, reference.emb) and torch.equal(stamp, reference.stamp)


def test_every_rank_holds_the_same_histories_as_a_replay(ranks):
    """Replay: each step both ranks start from the same (synced) histories; their rows are then
    written in rank order, the higher rank winning on shared nodes."""
    layer = ImplicitAPPNP(0.2, 3, NUM_NODES, CHANNELS)
    tables = layer.histories_state()  # x_history, g_history and (warm_start=delta) input_history
    assert set(tables) == set(ranks[0]["history"]) and len(tables) == 3
    for step in range(HISTORY_STEPS):
        start = {name: table.clone() for name, table in tables.items()}
        updates = []
        for r in range(WORLD):
            layer.load_histories(start)
            ids = _history_step(layer, step, r)
            updates.append((ids, {name: table[ids].clone() for name, table in tables.items()}))
        layer.load_histories(start)
        for ids, rows in updates:
            for name, table in tables.items():
                table[ids] = rows[name]
    assert layer.g_history.abs().sum() > 0
    first = ranks[0]["history"]
    for res in ranks:
        for name, table in res["history"].items():
            assert torch.equal(table, first[name]), name  # identical across ranks, bit for bit
            torch.testing.assert_close(table, tables[name], rtol=1e-6, atol=1e-6)


def test_gradient_all_reduce_of_a_missing_gradient(ranks):
    for res in ranks:
        assert res["lonely_grad"].tolist() == [1.0, 1.0, 1.0]


def test_data_parallel_matches_one_process_on_the_union_of_the_shards(ranks):
    model = _dp_model(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    losses = []
    for step in range(DP_STEPS):
        x, y = _dp_batch(step)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    for res in ranks:
        assert res["frozen_grad"] is None
        torch.testing.assert_close(torch.tensor(res["dp_losses"]), torch.tensor(losses), rtol=1e-5, atol=1e-6)
        for k, v in model.state_dict().items():
            torch.testing.assert_close(res["dp_state"][k], v, rtol=1e-5, atol=1e-6)
    assert sum(losses[-2:]) < sum(losses[:2])


# -- single process -------------------------------------------------------------------------------

def test_shard_is_a_disjoint_cover_in_rank_order():
    ids = torch.randperm(23, generator=torch.Generator().manual_seed(0))
    for world in (1, 2, 3, 5):
        parts = [D.shard(ids, r, world) for r in range(world)]
        assert torch.equal(torch.cat(parts), ids)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        weights = [D.shard_weight(len(p), len(ids), world) for p in parts]
        assert sum(weights) == pytest.approx(world)
    with pytest.raises(ValueError):
        D.shard(ids, 2, 2)


def test_dist_env_from_environment():
    assert D.DistEnv.from_environ({}) == D.DistEnv()
    env = D.DistEnv.from_environ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1",
                                  "MASTER_PORT": "29500"})
    assert env == D.DistEnv(3, 4, 1, "10.0.0.1", 29500) and env.is_distributed
    assert env.device(torch.device("cuda")) == torch.device("cuda", 1)
    assert env.device(torch.device("cpu")) == torch.device("cpu")
    assert D.DistEnv.from_environ({"RANK": "0", "WORLD_SIZE": "1"}).local_rank == 0
    bad = [({"RANK": "1"}, "WORLD_SIZE is not set"),
           ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
           ({"RANK": "2", "WORLD_SIZE": "2"}, "0 <= RANK < WORLD_SIZE"),
           ({"RANK": "0", "WORLD_SIZE": "2"}, "needs MASTER_ADDR and MASTER_PORT")]
    for environ, message in bad:
        with pytest.raises(FastleadingError, match=message):
            D.DistEnv.from_environ(environ)


def test_single_process_degrades_to_no_collectives(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert D.init_distributed() == D.DistEnv() and not torch.distributed.is_initialized()
    assert D.is_main() and D.get_world_size() == 1 and not D.is_distributed()
    ids, rows = torch.tensor([4, 1]), torch.randn(2, 3)
    got_ids, got_rows = D.allgather_rows(ids, rows)
    assert torch.equal(got_ids, ids) and got_rows is rows
    bank = MemoryBank(6, 3)
    D.sync_bank_rows(bank, ids, rows, step=2)
    assert torch.equal(bank.emb[ids], rows) and bank.stamp.tolist() == [-1, 2, -1, -1, 2, -1]
    t = torch.tensor([2.0])
    assert D.all_reduce_mean(t) is t and t.item() == 2.0
