"""The trainer end to end on a small synthetic TAG with a tiny LM (CPU)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_models import save_tiny_model

from fastleading.commands.methods import train_method
from fastleading.config import Config, apply_overrides
from fastleading.engine import ops
from fastleading.errors import FastleadingError
from fastleading.run import checkpoint
from fastleading.trainer.loop import build_trainer, train
from fastleading.trainer.steps import STEPS


def small_config(model: str, cache: Path, *overrides: str) -> Config:
    return apply_overrides(Config(), [
        f"model.name={model}", f"data.cache_dir={cache}", "data.synthetic_nodes=240", "data.synthetic_classes=3",
        "data.synthetic_words=12", "data.max_length=16", "train.batch_size=16", "train.epochs=2",
        "train.eval_batch_size=128", "train.log_every=1", "model.head_hidden=32",
        # fp32 whatever the CPU: train.precision=auto is bf16 on CPUs with native bf16, and the
        # tests compare against fp32 / float64 references (tests/test_precision.py covers auto)
        "train.precision=fp32",
        # an evaluation every epoch and no head warm-up (so the head's rate of a run without
        # one): the schedule these tests count on (tests/test_recipe.py covers the defaults)
        "train.eval_every=1", "train.head_warmup_epochs=0", "train.lr_head=1e-3", *overrides])


def test_leading_run_writes_every_output(tiny_bert, tmp_path):
    # no bank fill: pipeline 2 runs in the first epoch (an evaluation makes the second fresh)
    cfg = small_config(tiny_bert, tmp_path / "cache", "train.fill_bank=false")
    summary = train(cfg, tmp_path / "run", quiet=True)
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "summary.json", "checkpoint.pt", "best.pt"):
        assert (run / name).is_file(), name
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("method", "dataset", "model", "best_valid_acc", "test_acc", "epochs", "encodes_per_node_per_epoch",
                "peak_memory_bytes", "wall_time_s", "phase_time_s"):
        assert key in summary, key
    for phase in ("sample", "encode-grad", "encode-refresh", "propagate", "backward", "optimizer", "eval-encode",
                  "eval-propagate"):
        assert summary["phase_time_s"][phase] > 0, phase
    assert summary["epochs"] == 2
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in lines if "loss" in rec] == list(range(1, summary["steps"] + 1))
    evals = [rec for rec in lines if "eval" in rec]
    assert len(evals) == 2
    best = max(evals, key=lambda rec: rec["eval"]["valid"])  # the summary reports the best-valid evaluation
    assert (summary["best_valid_acc"], summary["test_acc"], summary["best_epoch"]) == \
        (best["eval"]["valid"], best["eval"]["test"], best["epoch"])
    # no temporary files left behind by the atomic writes
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_encodes_per_node_per_epoch_about_two_for_leading_far_more_for_coupled(tiny_bert, tmp_path):
    # equal batch sizes in both pipelines (the default refresh re-encodes every node per epoch)
    common = ("train.epochs=1", "data.split=high-0", "train.fill_bank=false", "train.fanouts=10,5",
              "train.refresh_batch_size=16")
    leading = train(small_config(tiny_bert, tmp_path / "c", *common), tmp_path / "a", quiet=True)
    enc = leading["encodes_per_node_per_epoch"]
    assert enc["grad"] == pytest.approx(1.0) and enc["nograd"] == pytest.approx(1.0)
    coupled = train(small_config(tiny_bert, tmp_path / "c", *common, "train.method=coupled"),
                    tmp_path / "b", quiet=True)
    assert coupled["encodes_per_node_per_epoch"]["grad"] > 5.0


def test_each_node_is_encoded_without_gradient_once_per_epoch_and_no_row_is_older_than_an_epoch(
        tiny_bert, tmp_path, monkeypatch):
    """Defaults on a low-label split (60 targets of 240 nodes: 4 steps an epoch): the bank fill
    and each epoch's evaluation encode every node afresh and refresh the bank, so pipeline 2
    rests; every node costs one no-gradient encode per epoch and no bank row is ever read
    more than an epoch after it was written."""
    from fastleading.trainer import steps

    oldest = []
    real = steps.STEPS["leading"]

    def spy(run, targets, refresh_ids):
        oldest.append(run.step - int(run.bank.stamp.min()))  # the stalest row any lookup could read
        return real(run, targets, refresh_ids)
    monkeypatch.setitem(steps.STEPS, "leading", spy)
    summary = train(small_config(tiny_bert, tmp_path / "c", "data.split=low-0", "train.epochs=3"), tmp_path / "run",
                    quiet=True)
    assert summary["steps"] == 12 and len(oldest) == 12
    enc = summary["encodes_per_graph_node_per_epoch"]
    assert enc["nograd"] == 0.0 and enc["eval"] == pytest.approx(1.0) and enc["nograd_total"] == pytest.approx(1.0)
    assert enc["fill"] == pytest.approx(1 / 3)
    assert max(oldest) <= 4  # one epoch
    # every row was rewritten by the last evaluation (step 12)
    state = checkpoint.load(tmp_path / "run" / checkpoint.CHECKPOINT)
    assert int(state["bank"]["stamp"].min()) == 12


def test_products_shaped_split_costs_at_most_1_2_nograd_encodes_per_node_per_epoch(tiny_bert, tmp_path, monkeypatch):
    """Defaults on ogbn-products' proportions (8% of the nodes are targets: 19 of 240, 5 steps an
    epoch at batch 4): no-gradient encodes per graph node per epoch, evaluation included, <= 1.2
    (issue 11; before, pipeline 2 and the evaluation each encoded every node: 2.0), and no bank
    row read more than an epoch after it was written."""
    from fastleading.trainer import steps

    oldest = []
    real = steps.STEPS["leading"]

    def spy(run, targets, refresh_ids):
        oldest.append(run.step - int(run.bank.stamp.min()))
        return real(run, targets, refresh_ids)
    monkeypatch.setitem(steps.STEPS, "leading", spy)
    summary = train(small_config(tiny_bert, tmp_path / "c", "data.split=products", "train.batch_size=4",
                                 "train.epochs=3"), tmp_path / "run", quiet=True)
    per_epoch = summary["steps"] // 3
    assert per_epoch == 5 and len(oldest) == 15
    enc = summary["encodes_per_graph_node_per_epoch"]
    assert enc["nograd_total"] <= 1.2 and enc["eval"] == pytest.approx(1.0)
    assert max(oldest) <= per_epoch


def test_without_a_fresh_bank_pipeline_2_reencodes_every_node_once_in_the_epoch(tiny_bert, tmp_path):
    # no bank fill: the first epoch starts stale, so pipeline 2 takes 60 nodes a step (240 / 4 steps)
    cfg = small_config(tiny_bert, tmp_path / "c", "data.split=low-0", "train.fill_bank=false",
                       "train.refresh_scope=all")
    summary = train(cfg, tmp_path / "run", quiet=True)
    assert summary["refresh_batch_size"] == 60
    state = checkpoint.load(tmp_path / "run" / checkpoint.CHECKPOINT)
    refreshes = state["ranks"][0]["counter"]["per_node"]["refresh"]
    # epoch 1 refreshed every node once; its evaluation made epoch 2 fresh, so pipeline 2 rested
    assert torch.equal(refreshes, torch.ones(240, dtype=refreshes.dtype))
    assert summary["encodes_per_graph_node_per_epoch"]["nograd"] == pytest.approx(0.5)


def test_pipeline_2_reencodes_only_the_nodes_a_training_subgraph_can_look_up(tiny_bert, tmp_path, monkeypatch):
    """train.refresh_scope=reachable (the default): pipeline 2 re-encodes each node within
    len(fanouts) hops of a training target once an epoch, and no other node; every row a
    training step looks up is one of them, so training sees the same bank as with 'all'."""
    from fastleading.engine.graph import k_hop_nodes
    from fastleading.trainer import steps

    looked_up = set()
    real = steps.STEPS["leading"]

    def spy(run, targets, refresh_ids):
        looked_up.update(run.sample(targets).ids.tolist())
        return real(run, targets, refresh_ids)
    monkeypatch.setitem(steps.STEPS, "leading", spy)
    cfg = small_config(tiny_bert, tmp_path / "c", "data.split=low-0", "train.fill_bank=false", "train.fanouts=2",
                       "data.synthetic_avg_degree=2")
    tr = build_trainer(cfg, tmp_path / "probe")
    scope = k_hop_nodes(tr.graph.rowptr, tr.graph.col, tr.split.train, 1)
    assert 0 < len(scope) < 0.8 * tr.graph.num_nodes  # the test can tell the scopes apart
    summary = train(cfg, tmp_path / "run", quiet=True)
    assert summary["refresh_batch_size"] == math.ceil(len(scope) / 4)  # 4 steps an epoch
    refreshes = checkpoint.load(tmp_path / "run" / checkpoint.CHECKPOINT)["ranks"][0]["counter"]["per_node"]["refresh"]
    inside = torch.zeros(tr.graph.num_nodes, dtype=torch.bool)
    inside[scope] = True
    assert torch.equal(refreshes[inside], torch.ones(len(scope), dtype=refreshes.dtype))
    assert not refreshes[~inside].any()
    assert looked_up <= set(scope.tolist())


@pytest.mark.parametrize("norm", ["full-graph", "subgraph"])
def test_subgraph_norm_full_graph_gives_targets_their_full_graph_step(tiny_bert, tmp_path, norm):
    # one hop with every neighbour sampled: each target's row of Â is complete in the subgraph
    tr = build_trainer(small_config(tiny_bert, tmp_path / "c", "train.fanouts=1000", f"model.subgraph_norm={norm}"),
                       tmp_path / "run")
    targets = tr.split.train[:16]
    sub = tr.run.sample(targets)
    x = torch.randn(tr.graph.num_nodes, 3, dtype=torch.float64)
    full = ops.appnp_step(tr.graph.rowptr, tr.graph.col, x, x, 0.1)[targets]
    if norm == "full-graph":  # the full graph's degrees, gathered for the subgraph's nodes
        assert torch.equal(sub.dinv, ops.gcn_dinv(tr.graph.rowptr)[sub.ids])
        dinv = ops.gcn_dinv(tr.graph.rowptr, torch.float64)[sub.ids]
        got = ops.appnp_step(sub.rowptr, sub.col, x[sub.ids], x[sub.ids], 0.1, dinv)[:len(targets)]
        torch.testing.assert_close(got, full, rtol=1e-12, atol=1e-12)
    else:  # the neighbours' subgraph degrees are smaller than their full-graph ones
        got = ops.appnp_step(sub.rowptr, sub.col, x[sub.ids], x[sub.ids], 0.1)[:len(targets)]
        assert sub.dinv is None and (got - full).abs().max() > 1e-3


def saved_bytes_of_one_step(cfg: Config, out: Path) -> int:
    """Bytes of every tensor autograd saves for backward during one training step
    (activation memory, measured exactly and independently of the allocator)."""
    tr = build_trainer(cfg, out)
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    targets = tr.split.train[:16]
    refresh = torch.arange(16)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        STEPS[cfg.train.method](tr.run, targets, refresh)
    return total


def test_leading_activation_memory_flat_in_hops_and_iterations_coupled_grows(tmp_path):
    # An LM whose per-node activations dominate the head's, as any real LM's do (by 10^4 for
    # bert-base at 128 tokens); the graph is large enough that 5 hops do not cover it.
    model = save_tiny_model(tmp_path / "bert64", "bert", hidden=64)
    base = ("data.max_length=64", "data.synthetic_words=80", "data.synthetic_nodes=1000", "data.split=high-0",
            "data.synthetic_avg_degree=8")
    leading, coupled = {}, {}
    for hops in (2, 5):
        fan = ",".join(["2"] * hops)
        leading[hops] = saved_bytes_of_one_step(small_config(model, tmp_path / "c", *base, f"train.fanouts={fan}"),
                                                tmp_path / "r")
        coupled[hops] = saved_bytes_of_one_step(
            small_config(model, tmp_path / "c", *base, f"train.fanouts={fan}", "train.method=coupled"),
            tmp_path / "r")
    iters = {k: saved_bytes_of_one_step(small_config(model, tmp_path / "c", *base, f"model.num_iters={k}"),
                                        tmp_path / "r") for k in (2, 10)}
    assert leading[5] <= 1.10 * leading[2], leading
    assert iters[10] <= 1.01 * iters[2], iters
    assert coupled[5] > 3 * coupled[2], coupled
    assert coupled[2] > 2 * leading[2], (coupled, leading)


def test_profile_writes_trace_and_phase_table(tiny_bert, tmp_path, capsys):
    cfg = small_config(tiny_bert, tmp_path / "cache", "train.epochs=1", "train.profile=true", "train.fill_bank=false")
    train(cfg, tmp_path / "run", quiet=True)
    trace = json.loads((tmp_path / "run" / "trace.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"encode-grad", "propagate", "backward"} <= names
    out = capsys.readouterr().out
    assert "phase" in out and "encode-refresh" in out


def test_leading_learns_and_the_lm_gradient_path_matters(tiny_bert, tmp_path):
    """36 steps on 3 classes (chance 0.33): LEADING must reach a valid accuracy far above chance
    and clearly above the same run with the LM frozen (lr_lm=0), which a broken gradient path
    into the LM would reduce it to (measured: 0.79 vs 0.58).

    Without the bank's frame (``train.align_to_bank=false``): this LM is a random network whose
    embeddings' mean moves by about their norm in these 36 steps at lr 3e-3, and kept in the
    random network's frame the same run scores 0.67 (the frame is for pretrained LMs, whose
    drift is small: docs/training.md)."""
    common = ("data.split=high-0", "train.epochs=4", "train.lr_head=3e-3", "model.pooling=mean",
              "train.warmup_ratio=0", "data.synthetic_signal=0.8", "train.align_to_bank=false")
    tuned = train(small_config(tiny_bert, tmp_path / "c", *common, "train.lr_lm=3e-3"), tmp_path / "a", quiet=True)
    frozen = train(small_config(tiny_bert, tmp_path / "c", *common, "train.lr_lm=0"), tmp_path / "b", quiet=True)
    assert tuned["steps"] == 36
    assert tuned["best_valid_acc"] >= 0.65, tuned["history"]
    assert tuned["best_valid_acc"] >= frozen["best_valid_acc"] + 0.1, (tuned["history"], frozen["history"])


@pytest.mark.parametrize("method", ["supervised", "coupled", "pretrained", "shallow"])
def test_baselines_learn_and_report_the_same_metrics(tiny_bert, tmp_path, method):
    # 3 classes (chance 0.33); measured test accuracy for seeds 0 / 1: supervised 0.71 / 0.73,
    # coupled 0.79 / 0.90, pretrained 0.65 / 0.60, shallow 0.92 / 0.88
    cfg = small_config(tiny_bert, tmp_path / "cache", "data.split=high-0", "train.epochs=4", "train.lr_head=3e-3",
                       "train.lr_lm=3e-3", "model.pooling=mean", "train.warmup_ratio=0", "data.synthetic_signal=0.8",
                       f"train.method={method}", "train.downstream_epochs=40")
    summary = train_method(cfg, tmp_path / "run", quiet=True)
    assert summary["method"] == method and summary["test_acc"] >= 0.55, summary
    assert "encodes_per_node_per_epoch" in summary and "peak_memory_bytes" in summary


def _cli(*args, env=None):
    return [sys.executable, "-m", "fastleading.cli", *args]


def test_resume_after_sigkill_matches_uninterrupted_run(tiny_bert, tmp_path):
    args = ["train", "--quiet", f"model.name={tiny_bert}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.synthetic_nodes=240", "data.synthetic_classes=3", "data.synthetic_words=12", "data.max_length=16",
            "train.batch_size=8", "train.epochs=1", "train.eval_batch_size=128", "train.log_every=1",
            "model.head_hidden=32", "data.split=high-0", "train.checkpoint_every=3"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = subprocess.run(_cli(*args, "--out", str(tmp_path / "straight")), env=env, capture_output=True,
                              text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*args, "--out", str(killed)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        metrics = killed / "metrics.jsonl"
        steps = [json.loads(text)["step"] for text in metrics.read_text().splitlines()] if metrics.exists() else []
        if (killed / "checkpoint.pt").exists() and steps and max(steps) >= 7:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    checkpoint.load(killed / "checkpoint.pt")  # the checkpoint on disk is whole
    resumed = subprocess.run(_cli("train", "--quiet", "--resume", str(killed)), env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "Loading weights" not in resumed.stderr and "it/s" not in resumed.stderr  # --quiet: no bars at all
    a = [json.loads(text) for text in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(text) for text in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in a] == [x["step"] for x in b]
    for x, y in zip(a, b, strict=True):
        if "loss" in x:
            assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-6), (x, y)
    sa = json.loads((tmp_path / "straight" / "summary.json").read_text())
    sb = json.loads((killed / "summary.json").read_text())
    for x, y in zip(sa["history"], sb["history"], strict=True):
        assert x == pytest.approx(y)
    assert not [p for p in killed.iterdir() if p.name.endswith(".tmp")]


def test_lm_method_on_dataset_without_text_is_refused(tmp_path):
    root = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (root / "planetoid").is_dir():
        pytest.skip(f"real Planetoid data not found at {root}")
    cfg = apply_overrides(Config(), [f"data.root={root}", "data.dataset=planetoid-cora",
                                     f"data.cache_dir={tmp_path}"])
    with pytest.raises(FastleadingError, match="no node texts"):
        train(cfg, tmp_path / "run", quiet=True)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    # in a folder whose runs/default holds a run (after `make train`): the bad input is still what is named
    (tmp_path / "runs" / "default").mkdir(parents=True)
    (tmp_path / "runs" / "default" / "config.json").write_text("{}")
    for args, fragment in ((["train", "--method", "magic"], "'train.method': expected one of"),
                           (["train", "--dataset", "nope", f"data.cache_dir={tmp_path}"], "unknown dataset 'nope'"),
                           (["train", "--resume", str(tmp_path / "missing")], "cannot resume")):
        proc = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (args, proc.stderr)


@pytest.mark.parametrize("variant", ["grad_accum", "grad_scaler", "loss_weight"])
def test_g_history_is_kept_in_units_of_the_unscaled_mean_loss(tiny_bert, tmp_path, variant):
    """The same two steps (same targets: the second warm-starts from the first's gradient)
    with the loss divided by grad_accum, scaled by a GradScaler, or weighted as a rank's share
    must write the same g_history as the plain steps."""
    from fastleading.trainer.steps import leading_step

    def two_steps(*overrides, scaler=None, weight=1.0):
        tr = build_trainer(small_config(tiny_bert, tmp_path / "c", "data.split=high-0", "model.head_dropout=0",
                                        *overrides), tmp_path / "r")
        run = tr.run
        if scaler is not None:
            run.optim.scaler = scaler
        written = []
        for step in range(2):
            run.step, run.loss_weight = step, weight
            leading_step(run, tr.split.train[:16], torch.arange(16))
            written.append(run.model.appnp.g_history.clone())
            run.model.zero_grad()  # no optimizer step: the weights stay, so the gradients must match
        return written

    plain = two_steps()
    other = {"grad_accum": lambda: two_steps("train.grad_accum=4"),
             "grad_scaler": lambda: two_steps(scaler=torch.amp.GradScaler("cpu", init_scale=1024.0)),
             "loss_weight": lambda: two_steps(weight=0.25)}[variant]()
    for a, b in zip(plain, other, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-9)


def dense_a_hat(rowptr: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """float64 Â = D̃^{-1/2}(A+I)D̃^{-1/2} of a CSR."""
    n = len(rowptr) - 1
    a = torch.zeros(n, n, dtype=torch.float64)
    a[torch.repeat_interleave(torch.arange(n), rowptr[1:] - rowptr[:-1]), col.long()] = 1.0
    a += torch.eye(n, dtype=torch.float64)
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


@pytest.mark.parametrize("method", ["coupled", "leading"])
def test_each_method_is_evaluated_with_the_operator_it_trains(tiny_bert, tmp_path, method):
    # coupled trains num_iters unrolled steps from X_in; LEADING's implicit layer the fixed point
    from fastleading.trainer.evaluate import full_graph_logits

    cfg = small_config(tiny_bert, tmp_path / "c", f"train.method={method}", "model.num_iters=2",
                       "model.eval_iters=200", "model.eval_tol=1e-7")
    tr = build_trainer(cfg, tmp_path / "r")
    model, graph = tr.run.model, tr.graph
    emb = torch.randn(graph.num_nodes, model.encoder.hidden_size)
    got, _, iters = full_graph_logits(model, emb, graph.rowptr, graph.col, cfg, tr.run.precision)
    model.eval()
    with torch.no_grad():
        x_in = model.head(emb).double()
    a_hat, alpha = dense_a_hat(graph.rowptr, graph.col), cfg.model.alpha
    if method == "coupled":
        want = x_in
        for _ in range(2):
            want = (1 - alpha) * a_hat @ want + alpha * x_in
        assert iters == 2
    else:
        want = alpha * torch.linalg.solve(torch.eye(len(a_hat), dtype=torch.float64) - (1 - alpha) * a_hat, x_in)
        assert 2 < iters < 200
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_a_warm_started_evaluation_equals_a_cold_one(tiny_bert, tmp_path):
    from fastleading.trainer.evaluate import full_graph_logits

    cfg = small_config(tiny_bert, tmp_path / "c", "model.eval_tol=1e-6", "model.eval_iters=500")
    tr = build_trainer(cfg, tmp_path / "r")
    model, graph, precision = tr.run.model, tr.graph, tr.run.precision
    emb = torch.randn(graph.num_nodes, model.encoder.hidden_size)
    _, previous, _ = full_graph_logits(model, emb, graph.rowptr, graph.col, cfg, precision)
    moved = emb + 0.05 * torch.randn_like(emb)  # the LM moved a little since the last evaluation
    cold, _, cold_iters = full_graph_logits(model, moved, graph.rowptr, graph.col, cfg, precision)
    warm, _, warm_iters = full_graph_logits(model, moved, graph.rowptr, graph.col, cfg, precision, x0=previous)
    torch.testing.assert_close(warm, cold, rtol=1e-4, atol=1e-5)
    assert warm_iters < cold_iters


def test_each_run_selects_its_own_kernel_backend_and_gives_the_previous_one_back(tiny_bert, tmp_path,
                                                                                 monkeypatch):
    """The kernel backend is process state. A run with train.kernels=triton used to leave it set,
    and the fixed-feature run after it in the same process (a study; the test suite) ran its
    propagation through Triton's CPU interpreter: 45 min instead of 8 s for one test."""
    from fastleading.baselines import downstream

    seen = []
    real = downstream.fit_gnn
    monkeypatch.setattr(downstream, "fit_gnn", lambda *a, **k: seen.append(ops.get_backend()) or real(*a, **k))
    assert ops.get_backend() == "auto"
    leading = small_config(tiny_bert, tmp_path / "c", "train.kernels=triton", "train.max_steps=1")
    train_method(leading, tmp_path / "leading", quiet=True)
    assert ops.get_backend() == "auto"  # given back
    shallow = small_config(tiny_bert, tmp_path / "c", "train.method=shallow", "train.downstream_epochs=1")
    with ops.use_backend("triton"):  # whatever was selected before, the run uses its own
        train_method(shallow, tmp_path / "shallow", quiet=True)
    assert seen == ["auto"]
