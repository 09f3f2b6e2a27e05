"""One non-finite value must not poison the implicit histories or the bank for good: rows are
written only when finite, a step whose loss or gradients are non-finite is skipped, and
``train.max_bad_steps`` consecutive bad steps stop the run with one clear line."""

import pytest
import torch

from fastleading.errors import FastleadingError
from fastleading.graph import build_csr
from fastleading.nn import ImplicitAPPNP
from fastleading.trainer import loop, steps
from fastleading.trainer.loop import train

from test_train import small_config, tiny_bert  # noqa: F401  (fixture)


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
    assert all(torch.equal(a, b) for a, b in zip(weights[1], weights[2]))
    assert not all(torch.equal(a, b) for a, b in zip(weights[2], weights[3]))
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
