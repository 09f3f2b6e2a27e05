"""One non-finite value must not poison the implicit histories or the bank for good: rows are
written only when finite, a step whose loss or gradients are non-finite is skipped, and
``train.max_bad_steps`` consecutive bad steps stop the run with one clear line. A diverged
model's evaluation (NaN / inf logits or link scores) scores as the worst, is never selected as
best, and ``train.max_bad_evals`` of them in a row stop the run; the evaluation's warm start
keeps only finite solutions."""

import types

import pytest
import torch
from test_train import small_config

from fastleading.engine.graph import build_csr
from fastleading.errors import FastleadingError
from fastleading.models.appnp import ImplicitAPPNP
from fastleading.trainer import evaluate as evaluate_module
from fastleading.trainer import loop, steps
from fastleading.trainer.loop import train


def ring(n: int):
    src = torch.arange(n)
    return build_csr(src.numpy(), ((src + 1) % n).numpy(), n)


@pytest.mark.parametrize("warm_start", ["history", "delta", "input"])
def test_a_non_finite_row_leaves_the_histories_as_they_were(warm_start):
    n, iters = 30, 3
    rowptr, col = ring(n)
    layer = ImplicitAPPNP(0.1, iters, n, 4, warm_start=warm_start)
    node_ids = torch.arange(n)

    def near(i, reach=iters):  # rows a non-finite value at row i reaches in `iters` steps
        d = (torch.arange(n) - i).remainder(n)
        return torch.minimum(d, n - d) < reach

    def visit(x_in, weight):
        x_in = x_in.clone().requires_grad_(True)
        (layer(x_in, rowptr, col, node_ids) * weight).sum().backward()

    visit(torch.randn(n, 4), torch.ones(n, 4))  # a clean visit fills both histories
    # a non-finite input row: its output spreads to the rows within iters-1 hops
    before = (layer.x_history.clone(), layer.g_history.clone(), layer.input_history.clone())
    x_in = torch.randn(n, 4)
    x_in[7, 2] = float("inf")
    visit(x_in, torch.ones(n, 4))
    # under history the input enters at the first step; delta and input also start from it
    bad = near(7, iters if warm_start == "history" else iters + 1)
    assert torch.isfinite(layer.x_history).all() and torch.isfinite(layer.input_history).all()
    if warm_start == "delta":  # the node's last input is kept, the others recorded
        assert torch.equal(layer.input_history[7], before[2][7])
        assert torch.equal(layer.input_history[:7], x_in[:7])
    assert torch.equal(layer.x_history[bad], before[0][bad])                  # kept their last good value
    assert (layer.x_history[~bad] != before[0][~bad]).any(1).all()           # every other row was written
    # a non-finite incoming gradient row: the same for the gradient history
    before = (layer.x_history.clone(), layer.g_history.clone())
    weight = torch.randn(n, 4)
    weight[20, 1] = float("nan")
    visit(torch.randn(n, 4), weight)
    bad = near(20)
    assert torch.isfinite(layer.g_history).all()
    assert torch.equal(layer.g_history[bad], before[1][bad])
    assert (layer.g_history[~bad] != before[1][~bad]).any(1).all()


def inject_inf_at(monkeypatch, bad_steps):
    """Make the LM embedding of the first target non-finite at the given (0-based) steps."""
    real = steps.Run.encode

    def encode(self, ids):
        x = real(self, ids)
        if self.step in bad_steps:
            x = x.clone()
            x[0, 0] = float("inf")
        return x
    monkeypatch.setattr(steps.Run, "encode", encode)


def test_a_non_finite_step_is_skipped_and_poisons_nothing(tiny_bert, tmp_path, monkeypatch):
    inject_inf_at(monkeypatch, {2})
    built = []
    build = loop.build_trainer
    monkeypatch.setattr(loop, "build_trainer", lambda *a, **k: built.append(build(*a, **k)) or built[-1])
    weights = []
    optim_step = None

    def spy_step(self):
        result = optim_step(self)
        weights.append([p.detach().clone() for p in self.optimizer.param_groups[0]["params"][:3]])
        return result
    from fastleading.trainer.optim import Optimization
    optim_step = Optimization.step
    monkeypatch.setattr(Optimization, "step", spy_step)
    cfg = small_config(tiny_bert, tmp_path / "cache", "data.split=high-0", "train.epochs=1", "train.max_steps=8")
    summary = train(cfg, tmp_path / "run", quiet=True)
    run = built[-1].run
    assert summary["steps"] == 8
    # step 2 (0-based) was skipped: the weights after it equal those after step 1; the others moved
    assert all(torch.equal(a, b) for a, b in zip(weights[1], weights[2], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(weights[2], weights[3], strict=True))
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    # five steps after the bad one, nothing non-finite is left anywhere the warm starts read
    assert torch.isfinite(run.model.appnp.x_history).all() and torch.isfinite(run.model.appnp.g_history).all()
    assert torch.isfinite(run.bank.emb).all()
    assert run.model.appnp.g_history.abs().sum() > 0
    assert int(run.optim.worst_streak) == 1 and int(run.optim.bad_streak) == 0


def test_consecutive_non_finite_steps_stop_the_run_with_one_line(tiny_bert, tmp_path, monkeypatch):
    inject_inf_at(monkeypatch, set(range(3, 100)))
    cfg = small_config(tiny_bert, tmp_path / "cache", "data.split=high-0", "train.epochs=1",
                       "train.max_bad_steps=4", "train.log_every=1")
    with pytest.raises(FastleadingError) as err:
        train(cfg, tmp_path / "run", quiet=True)
    msg = str(err.value)
    assert "\n" not in msg and "step 7:" in msg and "4 consecutive" in msg and "train.max_bad_steps=4" in msg
    assert "non-finite loss" in msg


# ----------------------------------------------------------------------------- evaluations
def test_a_node_with_non_finite_logits_counts_as_wrong():
    """argmax of a row holding NaN names the NaN's class: put it on the label, so that a plain
    argmax would count every poisoned node as right."""
    from fastleading.trainer.evaluate import accuracies

    g = torch.Generator().manual_seed(0)
    n, c = 90, 4
    logits, labels = torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)
    bad = torch.rand(n, generator=g) < 0.3
    for i in bad.nonzero().flatten().tolist():
        logits[i, labels[i]] = float("nan") if i % 2 else float("inf")
    split = types.SimpleNamespace(train=torch.arange(0, 30), valid=torch.arange(30, 60), test=torch.arange(60, 90))
    acc = accuracies(logits, labels, split)
    for name, idx in (("train", split.train), ("valid", split.valid), ("test", split.test)):
        right = [bool(torch.isfinite(logits[i]).all()) and int(logits[i].argmax()) == int(labels[i]) for i in idx]
        assert acc[name] == pytest.approx(sum(right) / len(right)), name
    assert acc["nonfinite"] == int(bad.sum()) > 0


def test_link_evaluation_counts_its_non_finite_scores():
    from fastleading.link.decoder import LinkDecoder, split_metrics

    g = torch.Generator().manual_seed(1)
    z = torch.randn(40, 8, generator=g)
    z[[3, 17]] = float("nan")
    split = types.SimpleNamespace(valid=torch.randint(0, 40, (2, 25), generator=g),
                                  valid_neg=torch.randint(0, 40, (25, 6), generator=g),
                                  test=torch.randint(0, 40, (2, 30), generator=g),
                                  test_neg=torch.randint(0, 40, (30, 6), generator=g))
    out = split_metrics(LinkDecoder("dot", 8), z, split, (1, 3), "mrr")
    expected = 0
    for pos, neg in ((split.valid, split.valid_neg), (split.test, split.test_neg)):
        for s, t, negs in zip(pos[0].tolist(), pos[1].tolist(), neg.tolist(), strict=True):
            expected += sum(not torch.isfinite((z[s] * z[u]).sum()) for u in [t, *negs])
    assert out["nonfinite"] == expected > 0


def link_toy():
    from test_gnn import toy_graph

    from fastleading.link.split import random_link_split, training_graph

    graph, x, _ = toy_graph()
    split = random_link_split(graph.rowptr, graph.col, "85/5/10", 0, 20)
    rowptr, col = training_graph(graph.rowptr, graph.col, split)
    return types.SimpleNamespace(rowptr=rowptr, col=col, num_nodes=graph.num_nodes), x, split


def test_a_diverged_link_gnn_is_never_selected_as_best():
    """lr 1e12: every evaluation's scores are NaN. Compared as numbers they ranked every positive
    first (MRR 1.0) and the epoch was kept as the best; now no epoch can be, and it says so."""
    from fastleading.link.baseline import train_link_gnn

    view, x, split = link_toy()
    sane = train_link_gnn(view, x, split, "gcn", 2, hidden=32, dim=16)
    assert sane["nonfinite"] == 0 and sane["epoch"] in (1, 2)
    with pytest.raises(FastleadingError, match="no epoch's evaluation had finite scores") as err:
        train_link_gnn(view, x, split, "gcn", 2, hidden=32, dim=16, lr=1e12)
    assert "\n" not in str(err.value)


def test_a_fixed_feature_gnn_never_selects_an_epoch_with_non_finite_logits(monkeypatch):
    """Logits poisoned at epoch 2 with NaN placed on each node's label (a plain argmax would score
    it 100%): the best epoch is another one; poisoned at every epoch, the run says so."""
    from test_gnn import toy_graph

    from fastleading.baselines import downstream
    from fastleading.models.gnn import GNN

    graph, x, split = toy_graph()
    calls = {"eval": 0}
    real_forward = GNN.forward

    def forward(self, inputs, batch=None):
        out = real_forward(self, inputs, batch)
        if self.training:
            return out
        calls["eval"] += 1
        if calls["eval"] in poisoned:
            out = out.clone()
            ids = batch if batch is not None else torch.arange(graph.num_nodes)
            out[torch.arange(len(out)), graph.labels[ids]] = float("nan")
        return out

    monkeypatch.setattr(GNN, "forward", forward)
    poisoned = {2}
    result = downstream.train_gnn(graph, x, split, "gcn", 3, hidden=32)
    assert result["epoch"] != 2 and result["nonfinite"] == 0 and result["valid"] < 1.0
    poisoned, calls["eval"] = {1, 2, 3}, 0
    with pytest.raises(FastleadingError, match="no epoch's evaluation had finite logits"):
        downstream.train_gnn(graph, x, split, "gcn", 3, hidden=32)


def poison_evaluations(monkeypatch, which: set[int], node_labels=None):
    """Make the logits (or link representations) of the given (1-based) evaluations non-finite.
    For node classification the NaN goes on each node's label, where a plain argmax would
    count it as right."""
    real = evaluate_module.full_graph_logits
    count = {"n": 0}

    def full_graph_logits(*args, **kwargs):
        logits, solution, iters = real(*args, **kwargs)
        count["n"] += 1
        if count["n"] in which:
            logits = logits.clone()
            if node_labels is None:
                logits[:] = float("nan")
            else:
                logits[torch.arange(len(logits)), node_labels()] = float("nan")
        return logits, solution, iters
    monkeypatch.setattr(evaluate_module, "full_graph_logits", full_graph_logits)
    return count


def test_a_node_evaluation_with_non_finite_logits_is_never_the_best(tiny_bert, tmp_path, monkeypatch):
    from fastleading.data import load_dataset
    from fastleading.run import checkpoint

    cfg = small_config(tiny_bert, tmp_path / "cache", "data.split=high-0", "train.epochs=2")
    labels = load_dataset(cfg.data).labels
    poison_evaluations(monkeypatch, {1}, lambda: labels)
    summary = train(cfg, tmp_path / "run", quiet=True)
    first, second = summary["history"]
    assert first["nonfinite"] == len(labels) and second["nonfinite"] == 0
    assert summary["best_epoch"] == 2 and summary["best_valid_acc"] == second["valid"] < 1.0
    assert checkpoint.load(tmp_path / "run" / "best.pt")["epoch"] == 2


def test_a_link_evaluation_with_nan_scores_is_never_the_best(tiny_bert, tmp_path, monkeypatch):
    """All-NaN scores ranked every positive first: MRR 1.0, the best epoch."""
    from test_link_train import link_config

    poison_evaluations(monkeypatch, {1})
    cfg = link_config(tiny_bert, tmp_path / "c", "train.epochs=2")
    summary = train(cfg, tmp_path / "run", quiet=True)
    first, second = summary["history"]
    assert first["nonfinite"] > 0 and first["valid_mrr"] < 0.1 and first["valid_auc"] == 0.0
    assert summary["best_epoch"] == 2 and summary["best_valid_mrr"] == second["valid_mrr"] < 1.0


def test_consecutive_non_finite_evaluations_stop_the_run_with_one_line(tiny_bert, tmp_path, monkeypatch):
    count = poison_evaluations(monkeypatch, {2, 3})
    cfg = small_config(tiny_bert, tmp_path / "cache", "data.split=high-0", "train.epochs=4", "train.max_bad_evals=2")
    with pytest.raises(FastleadingError) as err:
        train(cfg, tmp_path / "run", quiet=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("epoch 3: 2 consecutive evaluations") and "max_bad_evals=2" in msg
    assert count["n"] == 3  # stopped at the second bad evaluation in a row


# ----------------------------------------------------------------------------- evaluation warm start
def test_a_non_finite_warm_start_is_dropped_for_a_cold_start():
    """One NaN evaluation left 200 of 1,000 rows of the warm start NaN, and 50 iterations from it
    on finite inputs still had 200 NaN rows: the solve must start cold from such an x0."""
    from fastleading.models.appnp import solve_appnp

    n = 1000
    rowptr, col = ring(n)
    g = torch.Generator().manual_seed(3)
    x_in = torch.randn(n, 5, generator=g)
    x0 = torch.randn(n, 5, generator=g)
    x0[torch.randperm(n, generator=g)[:200]] = float("nan")
    cold, cold_iters = solve_appnp(x_in, rowptr, col, 0.1, 1e-6, 50)
    warm, warm_iters = solve_appnp(x_in, rowptr, col, 0.1, 1e-6, 50, x0)
    assert torch.isfinite(cold).all()
    assert torch.equal(warm, cold) and warm_iters == cold_iters


def test_a_non_finite_evaluation_is_neither_kept_as_warm_start_nor_checkpointed(tiny_bert, tmp_path, monkeypatch):
    """The first evaluation's embeddings hold NaN rows: its solution must not become the next
    evaluation's warm start or enter a checkpoint; the second evaluation equals a cold one."""
    real = evaluate_module.full_graph_logits
    calls = []

    def full_graph_logits(model, emb, rowptr, col, cfg, precision, x0=None):
        if not calls:
            emb = emb.clone()
            emb[::3] = float("nan")
        out = real(model, emb, rowptr, col, cfg, precision, x0)
        calls.append((x0, out[0], real(model, emb, rowptr, col, cfg, precision, None)[0]))
        return out
    monkeypatch.setattr(evaluate_module, "full_graph_logits", full_graph_logits)
    saved = []
    real_save = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda run, progress, *a: saved.append(progress.eval_solution)
                        or real_save(run, progress, *a))
    cfg = small_config(tiny_bert, tmp_path / "cache", "data.split=high-0", "train.epochs=2")
    summary = train(cfg, tmp_path / "run", quiet=True)
    assert summary["history"][0]["nonfinite"] > 0 and summary["history"][1]["nonfinite"] == 0
    assert calls[1][0] is None  # the second evaluation started cold
    torch.testing.assert_close(calls[1][1], calls[1][2], rtol=0, atol=1e-4)
    assert saved[0] is None and saved[-1] is not None and torch.isfinite(saved[-1]).all()
