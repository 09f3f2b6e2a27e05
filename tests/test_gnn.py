"""Downstream GNNs (fastleading.models.gnn): shapes, learning on a toy graph, RevGAT's depth-independent
activation memory, GAMLP's hop features against a dense float64 reference, and the
`fastleading downstream --gnn revgat|gamlp` command on CiteSeer-TAG."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fastleading.baselines import downstream as downstream_module
from fastleading.baselines.downstream import train_gnn
from fastleading.cli import main as cli_main
from fastleading.config import ModelConfig
from fastleading.engine.graph import build_csr
from fastleading.models.gnn import GAMLP, GNN, KINDS, RevGAT, edge_index_of, propagated_hops

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def toy_graph(n: int = 300, classes: int = 3, degree: int = 6, homophily: float = 0.9, noise: float = 2.0,
              dim: int = 16, seed: int = 0):
    """Homophilous random graph whose features alone separate the classes poorly (a centre per
    class plus noise of twice its scale) and whose neighbourhoods separate them well."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    src = torch.randint(0, n, (n * degree // 2,), generator=g)
    same_class = torch.randint(0, n // classes, (len(src),), generator=g) * classes + labels[src]
    anywhere = torch.randint(0, n, (len(src),), generator=g)
    dst = torch.where(torch.rand(len(src), generator=g) < homophily, same_class, anywhere)
    rowptr, col = build_csr(src, dst, n)
    x = torch.randn(classes, dim, generator=g)[labels] + noise * torch.randn(n, dim, generator=g)
    perm = torch.randperm(n, generator=g)
    graph = types.SimpleNamespace(rowptr=rowptr, col=col, labels=labels, num_classes=classes, num_nodes=n)
    split = types.SimpleNamespace(train=perm[:30], valid=perm[30:130], test=perm[130:])
    return graph, x, split


@pytest.fixture(scope="module")
def toy():
    return toy_graph()


@pytest.fixture(autouse=True)
def one_thread():
    """These graphs are tiny: one intra-op thread is fastest, and by far so on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = dict(hidden=32, layers=2, hops=3)


def test_kinds_are_the_config_choices():
    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(ModelConfig)}["gnn"]
    assert tuple(choices) == KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_gives_logits_of_the_requested_nodes(toy, kind):
    graph, x, split = toy
    torch.manual_seed(0)
    model = GNN(kind, x.shape[1], graph.num_classes, SMALL["hidden"], 0.5, 0.1, 5, SMALL["layers"], SMALL["hops"])
    inputs = model.inputs(graph, x, "cpu")
    ids = split.valid[:17]
    for training in (True, False):
        model.train(training)
        assert model(inputs, ids).shape == (17, graph.num_classes)
    assert model.mini_batched == (kind == "gamlp")
    if kind == "gamlp":
        assert inputs.hops.shape == (graph.num_nodes, SMALL["hops"] + 1, x.shape[1])
        assert inputs.hops.dtype == torch.float16
        # nodes are independent: a node's logits do not depend on the batch it is in
        model.eval()
        with torch.no_grad():
            whole = model(inputs, torch.arange(graph.num_nodes))
            assert torch.allclose(model(inputs, ids), whole[ids], atol=1e-5)
    else:
        assert model(inputs).shape == (graph.num_nodes, graph.num_classes)


def test_revgat_and_gamlp_modules_shapes():
    rowptr, col = build_csr(torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 4]), 5)
    out = RevGAT(7, 3, hidden=16, layers=4, dropout=0.2)(torch.randn(5, 7), edge_index_of(rowptr, col))
    assert out.shape == (5, 3)
    assert GAMLP(7, 3, hops=2, hidden=16, dropout=0.2)(torch.randn(5, 3, 7)).shape == (5, 3)
    with pytest.raises(ValueError, match=r"\[B, 3, F\]"):
        GAMLP(7, 3, hops=2, hidden=16, dropout=0.2)(torch.randn(5, 4, 7))


def test_bad_settings_name_the_config_key():
    from fastleading.errors import FastleadingError

    with pytest.raises(FastleadingError, match="model.gnn'"):
        GNN("gin", 4, 2, 16, 0.5, 0.1, 2)
    with pytest.raises(FastleadingError, match="head_hidden"):
        GNN("revgat", 4, 2, 12, 0.5, 0.1, 2)
    with pytest.raises(FastleadingError, match="model.gnn_hops"):
        GNN("gamlp", 4, 2, 16, 0.5, 0.1, 2, hops=-1)


# ----------------------------------------------------------------------------- learning
def _untrained_test_accuracy(graph, x, split, kind: str) -> float:
    torch.manual_seed(0)
    model = GNN(kind, x.shape[1], graph.num_classes, SMALL["hidden"], 0.5, 0.1, 10, SMALL["layers"], SMALL["hops"])
    model.eval()
    with torch.no_grad():
        pred = model(model.inputs(graph, x, "cpu"), split.test).argmax(-1)
    return float((pred == graph.labels[split.test]).float().mean())


@pytest.mark.parametrize("kind", ["revgat", "gamlp"])
def test_learns_a_homophilous_toy_graph(toy, kind):
    graph, x, split = toy
    trained = train_gnn(graph, x, split, kind, 40, batch_size=16, **SMALL)
    mlp = train_gnn(graph, x, split, "mlp", 40, hidden=SMALL["hidden"])  # features alone, no graph
    untrained = _untrained_test_accuracy(graph, x, split, kind)
    assert trained["gnn"] == kind and 1 <= trained["epoch"] <= 40
    # chance is 1/3; features alone reach ~0.7; the neighbourhoods carry the rest
    assert trained["test"] >= 0.85, trained
    assert trained["test"] >= untrained + 0.3, (trained, untrained)
    assert trained["test"] >= mlp["test"] + 0.1, (trained, mlp)


def test_gamlp_trains_in_mini_batches_of_training_nodes(toy, monkeypatch):
    graph, x, split = toy
    seen: list[tuple[bool, list[int]]] = []

    class Recording(GNN):
        def forward(self, inputs, ids=None):
            seen.append((self.training, ids.tolist()))
            return super().forward(inputs, ids)

    monkeypatch.setattr(downstream_module, "GNN", Recording)
    train_gnn(graph, x, split, "gamlp", 2, batch_size=8, **SMALL)
    train_calls = [ids for training, ids in seen if training]
    assert len(train_calls) == 2 * math.ceil(30 / 8)
    assert all(len(ids) <= 8 for ids in train_calls)
    epoch1, epoch2 = train_calls[:4], train_calls[4:]
    for epoch in (epoch1, epoch2):  # every training node once per epoch
        assert sorted(sum(epoch, [])) == sorted(split.train.tolist())
    assert sum(epoch1, []) != sum(epoch2, [])  # in a fresh order


def test_full_batch_kinds_take_one_step_per_epoch(toy, monkeypatch):
    graph, x, split = toy
    seen: list[bool] = []

    class Recording(GNN):
        def forward(self, inputs, ids=None):
            seen.append(self.training)
            return super().forward(inputs, ids)

    monkeypatch.setattr(downstream_module, "GNN", Recording)
    train_gnn(graph, x, split, "revgat", 3, **SMALL)
    assert seen == [True, False] * 3


# ----------------------------------------------------------------------------- RevGAT memory
def _forward_memory(model: torch.nn.Module, x: torch.Tensor, edge_index: torch.Tensor) -> tuple[int, int]:
    """(bytes of the tensors autograd saves for backward, seen by saved_tensors_hooks;
    bytes of every tensor alive after the forward, saved or held elsewhere (an
    InvertibleFunction keeps its tensors as ctx attributes, which the hooks do not see)),
    counting each storage once and leaving out the parameters and the inputs."""
    def storages(tensors):
        return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}

    def live():
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # isinstance() on deprecated torch module attributes
            return storages(o for o in gc.get_objects() if isinstance(o, torch.Tensor))

    excluded = set(storages([*model.parameters(), x, edge_index])) | set(live())
    saved: dict[int, int] = {}

    def pack(t):
        saved.update(storages([t]))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x, edge_index)
    alive = {**live(), **saved}
    out.sum().backward()  # the graph was whole
    return (sum(v for k, v in saved.items() if k not in excluded),
            sum(v for k, v in alive.items() if k not in excluded))


def test_revgat_activation_memory_does_not_grow_with_depth():
    graph, x, _ = toy_graph(n=200, dim=16)
    edge_index = edge_index_of(graph.rowptr, graph.col)
    mem = {}
    for reversible in (True, False):
        for layers in (2, 6):
            torch.manual_seed(0)
            model = RevGAT(16, 3, hidden=32, layers=layers, dropout=0.5, reversible=reversible).train()
            mem[reversible, layers] = _forward_memory(model, x, edge_index)
    for kind in (0, 1):  # saved tensors, and everything alive
        assert mem[True, 6][kind] == mem[True, 2][kind], mem
        # the same blocks without reversibility keep every block's activations
        assert mem[False, 6][kind] > 2 * mem[False, 2][kind], mem
        assert mem[False, 6][kind] - mem[False, 2][kind] > 4 * 200 * 32 * 4 * 4, mem  # > 4 blocks x [N, 32] x 4 fp32
        assert mem[True, 6][kind] < mem[False, 2][kind], mem


def test_revgat_gradients_equal_those_of_the_plain_stack():
    graph, x, _ = toy_graph(n=120, dim=8)
    edge_index = edge_index_of(graph.rowptr, graph.col)
    grads = []
    for reversible in (True, False):
        torch.manual_seed(0)
        model = RevGAT(8, 3, hidden=16, layers=4, dropout=0.3, reversible=reversible).train()
        torch.manual_seed(1)  # the same dropout masks
        xr = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(xr, edge_index), graph.labels).backward()
        grads.append([xr.grad] + [p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- GAMLP hops
def _dense_hops(graph, x: torch.Tensor, hops: int) -> torch.Tensor:
    n = graph.num_nodes
    a = torch.zeros(n, n, dtype=torch.float64)
    row = torch.repeat_interleave(torch.arange(n), graph.rowptr[1:] - graph.rowptr[:-1])
    a[row, graph.col.long()] = 1.0
    a += torch.eye(n, dtype=torch.float64)
    dinv = a.sum(1).rsqrt()
    a_hat = dinv[:, None] * a * dinv[None, :]
    out, h = [x.double()], x.double()
    for _ in range(hops):
        h = a_hat @ h
        out.append(h)
    return torch.stack(out, dim=1)


def test_gamlp_hop_features_equal_a_dense_float64_reference():
    graph, x, _ = toy_graph(n=90, dim=5)
    ref = _dense_hops(graph, x, 4)
    exact = propagated_hops(x.double(), graph.rowptr, graph.col, 4, dtype=torch.float64)
    assert exact.shape == (90, 5, 5) and exact.dtype == torch.float64
    assert torch.allclose(exact, ref, rtol=1e-12, atol=1e-12)
    before = x.clone()
    stored = propagated_hops(x, graph.rowptr, graph.col, 4)  # default: fp32 compute, fp16 storage
    assert torch.equal(x, before)  # the working buffers are never the caller's features
    assert stored.dtype == torch.float16
    assert torch.allclose(stored.double(), ref, rtol=2e-3, atol=2e-3 * float(ref.abs().max()))
    assert torch.equal(propagated_hops(x, graph.rowptr, graph.col, 0)[:, 0], x.half())


def test_hops_out_of_fp16_range_are_stored_in_bf16():
    graph, x, _ = toy_graph(n=60, dim=4)
    big = x * 1e6
    stored = propagated_hops(big, graph.rowptr, graph.col, 2)
    assert stored.dtype == torch.bfloat16 and torch.isfinite(stored.float()).all()
    ref = _dense_hops(graph, big, 2)
    assert torch.allclose(stored.double(), ref, rtol=1e-2, atol=1e-2 * float(ref.abs().max()))


# ----------------------------------------------------------------------------- CLI on CiteSeer-TAG
@pytest.mark.skipif(not (SHARED / "citeseer-tag").is_dir(),
                    reason=f"real data folder {SHARED / 'citeseer-tag'} is absent")
@pytest.mark.parametrize("gnn", ["revgat", "gamlp"])
def test_downstream_cli_on_citeseer_tag(gnn, tmp_path, capsys):
    emb = tmp_path / "emb.npy"
    np.save(emb, np.random.default_rng(0).standard_normal((3186, 16)).astype(np.float32))
    out = tmp_path / "out"
    rc = cli_main(["downstream", "--quiet", "--dataset", "citeseer-tag", "--embeddings", str(emb), "--gnn", gnn,
                   "--device", "cpu", "--out", str(out), f"data.root={SHARED}", f"data.cache_dir={tmp_path / 'cache'}",
                   "train.downstream_epochs=3", "model.head_hidden=16"])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((out / f"downstream-{gnn}.json").read_text())
    assert result["gnn"] == gnn and result["dataset"] == "citeseer-tag" and result["split"] == "low-0"
    assert 1 <= result["epoch"] <= 3
    assert all(0.0 <= result[k] <= 1.0 for k in ("train", "valid", "test"))
    assert json.loads(capsys.readouterr().out) == result
