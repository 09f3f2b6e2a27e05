"""The fine-tuning recipe: head warm-up on the frozen LM (LP-FT), layer-wise LR decay, the
evaluation schedule by encodes spent, and why a run stopped."""

import json
import math

import pytest
import torch
from test_train import small_config

from fastleading.trainer.evaluate import encode_graph
from fastleading.trainer.loop import build_trainer, train
from fastleading.trainer.optim import lm_depths, param_groups


def metrics_lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["leading", "supervised"])
@pytest.mark.parametrize("batches", ["full", "mini"])
def test_head_warmup_trains_the_head_on_the_frozen_lm_and_starts_from_its_best_epoch(tiny_bert, tmp_path,
                                                                                     monkeypatch, method, batches):
    from fastleading.trainer import evaluate as evaluate_module
    from fastleading.trainer import loop, warmup

    if batches == "mini":  # as on a graph whose full batch does not fit
        monkeypatch.setattr(warmup, "FULL_BATCH_BYTES", 0)
    # the full batch takes one step an epoch (at the frozen baseline's rate), mini-batches nine
    epochs = 40 if batches == "full" else 10
    cfg = small_config(tiny_bert, tmp_path / "c", f"train.method={method}", f"train.head_warmup_epochs={epochs}",
                       "train.epochs=1", "train.head_warmup_lr=1e-2", "data.split=high-0", "model.pooling=mean",
                       "data.synthetic_signal=0.8")
    seen = {}
    real_warmup = warmup.head_warmup

    def spy(tr, log, epochs):
        seen["lm"] = {k: v.clone() for k, v in tr.run.model.encoder.state_dict().items()}
        seen["head"] = [p.detach().clone() for p in warmup.head_parameters(tr.run.model)]
        seen["grad_encodes"] = tr.run.counter.totals["grad"]
        if tr.run.bank is not None:  # LEADING: the random head's accuracy on the frozen LM
            seen["untrained"], _ = evaluate_module.evaluate_embeddings(tr, tr.run.bank.emb)
            tr.progress.eval_solution = None
        best = real_warmup(tr, log, epochs)
        seen["lm_after"] = {k: v.clone() for k, v in tr.run.model.encoder.state_dict().items()}
        seen["head_after"] = [p.detach().clone() for p in warmup.head_parameters(tr.run.model)]
        seen["grad_encodes_after"] = tr.run.counter.totals["grad"]
        # what a fresh evaluation of this model computes: every node re-encoded by the frozen LM
        tr.progress.eval_solution = None
        seen["fresh"], _ = evaluate_module.evaluate(tr)
        tr.progress.eval_solution = None
        return best
    monkeypatch.setattr(loop, "head_warmup", spy)
    summary = train(cfg, tmp_path / "run", quiet=True)
    # the LM did not move and was not run with gradient; the head did move
    assert all(torch.equal(seen["lm"][k], seen["lm_after"][k]) for k in seen["lm"])
    assert seen["grad_encodes_after"] == seen["grad_encodes"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(seen["head"], seen["head_after"], strict=True))
    lines = metrics_lines(tmp_path / "run")
    warm = [{**rec, "eval": rec["warmup_eval"]} for rec in lines if "warmup_epoch" in rec]
    assert [rec["warmup_epoch"] for rec in warm] == list(range(1, epochs + 1))
    epoch0 = next(rec for rec in lines if rec.get("epoch") == 0 and "eval" in rec)
    # fine-tuning starts from the best warm-up epoch's head, and that evaluation on the bank is
    # the fresh evaluation of the frozen LM (full batch: the warm-up scored it with the baseline's
    # model.eval_iters unrolled steps, the run at the fixed point: a node of the 48 may differ)
    assert epoch0["eval"]["valid"] == pytest.approx(max(rec["eval"]["valid"] for rec in warm),
                                                    abs=0 if batches == "mini" or method == "supervised" else 1.01 / 48)
    assert seen["fresh"] == pytest.approx(epoch0["eval"], abs=1e-6)
    # the warm-up learned: its best head is far better than the random one (3 classes)
    untrained = seen.get("untrained", {"valid": 1 / 3})["valid"]
    assert epoch0["eval"]["valid"] >= untrained + 0.15, (untrained, [rec["eval"]["valid"] for rec in warm])
    assert summary["history"][0]["epoch"] == 0 and summary["head_warmup_epochs"] == epochs


def test_a_resumed_run_does_not_warm_the_head_up_again(tiny_bert, tmp_path, monkeypatch):
    from fastleading.trainer import loop

    calls = []
    real = loop.head_warmup
    monkeypatch.setattr(loop, "head_warmup", lambda tr, log, epochs: calls.append(epochs) or real(tr, log, epochs))
    cfg = small_config(tiny_bert, tmp_path / "c", "train.head_warmup_epochs=2", "train.epochs=2",
                       "data.split=low-0", "train.max_steps=5")
    train(cfg, tmp_path / "run", quiet=True)
    cfg.train.max_steps = 0
    summary = train(cfg, tmp_path / "run", resume=True, quiet=True)
    assert calls == [2] and summary["steps"] == 8 and summary["head_warmup_epochs"] == 2


def test_head_warmup_is_refused_where_it_does_not_apply(tiny_bert, tmp_path):
    from fastleading.errors import FastleadingError

    with pytest.raises(FastleadingError, match="'train.head_warmup_epochs': applies to train.method leading or "
                                               "supervised, not coupled"):
        small_config(tiny_bert, tmp_path / "c", "train.method=coupled", "train.head_warmup_epochs=2")
    # a study passes one override to every method: the fixed-feature ones, which train their head
    # to the end anyway, take it
    for method in ("pretrained", "shallow"):
        assert small_config(tiny_bert, tmp_path / "c", f"train.method={method}",
                            "train.head_warmup_epochs=2").train.head_warmup_epochs == 2


def test_layer_wise_lr_decay_gives_each_depth_its_rate(tiny_bert, tmp_path):
    cfg = small_config(tiny_bert, tmp_path / "c", "train.lr_layer_decay=0.5", "train.lr_lm=1e-3")
    tr = build_trainer(cfg, tmp_path / "r")
    encoder = tr.run.model.encoder
    depths = lm_depths(encoder)
    by_name = dict(encoder.named_parameters())
    # the tiny BERT has 2 blocks: block 1 (top) at depth 1, block 0 at 2, embeddings at 3, pooler 0
    assert {depths[n] for n in by_name if ".layer.1." in n} == {1}
    assert {depths[n] for n in by_name if ".layer.0." in n} == {2}
    assert {depths[n] for n in by_name if ".embeddings." in n} == {3}
    assert {depths[n] for n in by_name if ".pooler." in n} == {0}
    groups = tr.run.optim.optimizer.param_groups
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    for name, p in by_name.items():
        assert lr_of[id(p)] == pytest.approx(1e-3 * 0.5 ** depths[name]), name
    head = list(tr.run.model.head.parameters())
    assert all(lr_of[id(p)] == cfg.train.lr_head for p in head)
    # every trainable parameter in exactly one group
    assert sum(len(g["params"]) for g in groups) == len(lr_of) == len(by_name) + len(head)
    assert tr.run.optim.lm_lr() == pytest.approx(1e-3)  # the top's rate is what the log reports


def test_without_layer_decay_the_lm_is_one_group(tiny_bert, tmp_path):
    cfg = small_config(tiny_bert, tmp_path / "c")
    groups = param_groups(build_trainer(cfg, tmp_path / "r").run.model, cfg)
    assert len(groups) == 2 and groups[0]["lr"] == cfg.train.lr_lm and groups[1]["lr"] == cfg.train.lr_head


def test_auto_evaluation_waits_until_training_spent_one_evaluation_of_encodes(tiny_bert, tmp_path):
    """train.eval_every=0: a low-label epoch (60 targets of 240 nodes, scope of 1 hop) costs
    3 x 60 + the scope's refresh; evaluation (240 encodes) comes once that much was spent."""
    cfg = small_config(tiny_bert, tmp_path / "c", "train.eval_every=0", "train.epochs=9", "data.split=low-0",
                       "train.fanouts=2", "data.synthetic_avg_degree=2")
    summary = train(cfg, tmp_path / "run", quiet=True)
    evaluated = [h["epoch"] for h in summary["history"]]
    # replay the rule on the run's own counts: pipeline 2 rests in an epoch after an evaluation
    lines = metrics_lines(tmp_path / "run")
    assert evaluated[-1] == 9 and len(evaluated) < 9  # the last epoch always; not every epoch
    per_epoch_grad = 3 * 60
    scope = summary["refresh_batch_size"] * 4
    spent, expect, fresh = 0, [], True  # the bank fill makes epoch 1 fresh
    for epoch in range(1, 10):
        spent += per_epoch_grad + (0 if fresh else scope)
        fresh = False
        if spent >= 240 or epoch == 9:
            expect.append(epoch)
            spent, fresh = 0, True
    assert evaluated == expect, (evaluated, expect, [rec for rec in lines if "eval" in rec])


@pytest.mark.parametrize("overrides, reason", [
    (("train.epochs=2",), "epochs"),
    (("train.epochs=6", "train.max_steps=9"), "max_steps"),
])
def test_the_summary_says_why_the_run_stopped(tiny_bert, tmp_path, overrides, reason):
    summary = train(small_config(tiny_bert, tmp_path / "c", "data.split=low-0", *overrides), tmp_path / "run",
                    quiet=True)
    assert summary["stopped"] == reason
    # max_steps stops inside an epoch, after the last evaluation (that of epoch 2, step 8)
    assert summary["steps"] == (8 if reason == "epochs" else 9) and summary["history"][-1]["step"] == 8


def test_patience_stops_the_run_and_says_so(tiny_bert, tmp_path, monkeypatch):
    from fastleading.trainer import loop

    scores = iter([0.5, 0.6, 0.55, 0.58, 0.59, 0.7, 0.7])

    def fake_evaluate(tr):
        v = next(scores)
        return {"train": v, "valid": v, "test": v}, 1
    monkeypatch.setattr(loop, "evaluate", fake_evaluate)
    summary = train(small_config(tiny_bert, tmp_path / "c", "data.split=low-0", "train.epochs=7",
                                 "train.patience=3"), tmp_path / "run", quiet=True)
    # best at epoch 2, then three evaluations without a better one
    assert summary["stopped"] == "patience" and [h["epoch"] for h in summary["history"]] == [1, 2, 3, 4, 5]
    assert summary["best_epoch"] == 2 and summary["best_valid_acc"] == 0.6
    assert math.isclose(summary["epochs"], 5)


def test_a_run_patience_stopped_stays_stopped_on_resume_unless_patience_is_raised(tiny_bert, tmp_path, monkeypatch):
    from fastleading.trainer import loop

    scores = iter([0.6, 0.5, 0.5, 0.7, 0.7, 0.7])

    def fake_evaluate(tr):
        v = next(scores)
        return {"train": v, "valid": v, "test": v}, 1
    monkeypatch.setattr(loop, "evaluate", fake_evaluate)
    cfg = small_config(tiny_bert, tmp_path / "c", "data.split=low-0", "train.epochs=6", "train.patience=2")
    first = train(cfg, tmp_path / "run", quiet=True)
    assert first["stopped"] == "patience" and first["steps"] == 12
    again = train(cfg, tmp_path / "run", resume=True, quiet=True)
    assert again["stopped"] == "patience" and again["steps"] == 12  # nothing trained
    cfg.train.patience = 3  # one more evaluation allowed: epoch 4 improves, then two more without
    raised = train(cfg, tmp_path / "run", resume=True, quiet=True)
    assert raised["steps"] > 12 and raised["best_epoch"] == 4, raised["history"]


def test_the_warm_up_has_its_own_head_learning_rate(tiny_bert, tmp_path, monkeypatch):
    from fastleading.trainer import warmup

    rates = []
    real = torch.optim.AdamW

    def spy(*args, **kwargs):
        rates.append(kwargs.get("lr"))
        return real(*args, **kwargs)
    monkeypatch.setattr(warmup.torch.optim, "AdamW", spy)
    monkeypatch.setattr(warmup, "FULL_BATCH_BYTES", 0)  # the mini-batch warm-up has a rate of its own
    for warm_lr, want in ((0.0, 3e-4), (5e-3, 5e-3)):  # 0: the head's rate
        cfg = small_config(tiny_bert, tmp_path / "c", "train.head_warmup_epochs=1", "train.epochs=1",
                           "train.lr_head=3e-4", f"train.head_warmup_lr={warm_lr}", "data.split=low-0")
        tr = build_trainer(cfg, tmp_path / f"r{warm_lr}")
        encode_graph(tr, "fill", "fill")
        rates.clear()
        warmup.head_warmup(tr, type("Log", (), {"write": lambda self, r: None})(), 1)
        assert rates == [want]
        # fine-tuning's optimizer keeps train.lr_head for the head
        assert tr.run.optim.optimizer.param_groups[-1]["lr"] == pytest.approx(3e-4)


@pytest.mark.parametrize("method, split, overrides, epochs", [
    ("leading", "low-0", (), 200),            # 60 targets in batches of 16: 4 steps an epoch
    ("supervised", "high-0", (), 200),        # 144 targets: 9 steps an epoch, 1,800 steps
    ("coupled", "low-0", (), 0),              # no frozen-LM head step for the coupled baseline
    ("leading", "low-0", ("train.head_warmup_epochs=3",), 3),
    ("leading", "low-0", ("train.head_warmup_epochs=0",), 0),
])
def test_the_default_warm_up_trains_the_head_as_the_frozen_baseline(tiny_bert, tmp_path, method, split, overrides,
                                                                     epochs):
    from fastleading.config import Config
    from fastleading.trainer.batches import steps_per_epoch
    from fastleading.trainer.warmup import warmup_epochs

    cfg = small_config(tiny_bert, tmp_path / "c", f"train.method={method}", f"data.split={split}",
                       "train.head_warmup_epochs=-1", *overrides)
    assert Config().train.head_warmup_epochs == -1  # auto is the default
    tr = build_trainer(cfg, tmp_path / "r")
    assert warmup_epochs(cfg, steps_per_epoch(cfg, len(tr.split.train))) == epochs
    if not overrides and method == "leading":  # about 2,000 head steps at most, and at least one epoch
        assert warmup_epochs(cfg, 14) == 142 and warmup_epochs(cfg, 6145) == 1
    # full batch: the frozen baseline's epochs, whatever an epoch's steps
    if not overrides and method != "coupled":
        cfg.train.downstream_epochs = 123
        assert warmup_epochs(cfg, 6145, full=True) == 123


def test_the_auto_warm_up_keeps_the_best_of_its_200_epochs(tiny_bert, tmp_path, monkeypatch):
    """Scripted warm-up validation scores, the best at epoch 150: the auto warm-up runs its 200
    epochs (it ran a fixed 20 before: ~80 steps, too few for a link head), keeps the best epoch's
    head, and the summary says how many epochs it ran."""
    from fastleading.trainer import warmup

    scores = iter([0.40] * 149 + [0.60] + [0.55] * 50)
    real = warmup.evaluate_embeddings
    calls = []

    def scripted(tr, emb):
        metrics, iters = real(tr, emb)
        calls.append((metrics, [p.detach().clone() for p in warmup.head_parameters(tr.run.model)]))
        return {**metrics, "valid": next(scores, metrics["valid"])}, iters
    monkeypatch.setattr(warmup, "evaluate_embeddings", scripted)
    monkeypatch.setattr(warmup, "FULL_BATCH_BYTES", 0)  # mini-batches: the warm-up's own evaluations
    cfg = small_config(tiny_bert, tmp_path / "c", "train.head_warmup_epochs=-1", "train.epochs=1",
                       "data.split=low-0", "train.eval_every=1")
    summary = train(cfg, tmp_path / "run", quiet=True)
    lines = metrics_lines(tmp_path / "run")
    assert [rec["warmup_epoch"] for rec in lines if "warmup_epoch" in rec] == list(range(1, 201))
    assert summary["head_warmup_epochs"] == 200
    # the hand-over evaluates the kept head once more: epoch 150's, not the last epoch's
    assert len(calls) == 201
    assert all(torch.equal(a, b) for a, b in zip(calls[-1][1], calls[149][1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(calls[-1][1], calls[-2][1], strict=True))
    assert summary["history"][0]["epoch"] == 0 and summary["history"][0] == {"epoch": 0, "step": 0, **calls[149][0]}


def dropout_free_copy(model_dir: str, folder) -> str:
    """The tiny model of ``model_dir`` copied to ``folder`` with every dropout off: with the LM's
    rate at 0 its training forward is then the frozen LM's."""
    import shutil

    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize("warm_start", ["delta", "history", "input"])
def test_the_first_fine_tuning_step_starts_from_the_model_the_warm_up_selected(tiny_bert, tmp_path, monkeypatch,
                                                                               warm_start):
    """The hand-over from the head warm-up to fine-tuning: with the LM's (and the head's) rate
    at 0 and no dropout, the first fine-tuning step's loss is the selected warm-up model's loss
    on the same batch. Under delta and history that is the loss at the fixed point the warm-up
    head was selected at (the batch's full 2-hop neighbourhood is sampled, so two iterations from
    the fixed point stay there); before the hand-over restarted the histories, they held other
    heads' outputs and the first loss was several times the warm-up's (make train: 11.3 against
    0.25). Under input (no forward history) it is the LM-frozen head step's loss."""
    from fastleading.trainer import loop
    from fastleading.trainer.evaluate import full_graph_logits
    from fastleading.trainer.steps import leading_head_step

    model = dropout_free_copy(tiny_bert, tmp_path / "model")
    cfg = small_config(model, tmp_path / "c", f"model.warm_start={warm_start}", "train.head_warmup_epochs=60",
                       "train.lr_lm=0", "train.lr_head=0", "model.head_dropout=0", "train.fanouts=[64,64]",
                       "data.split=high-0", "train.epochs=1", "train.max_steps=1", "data.synthetic_signal=0.8",
                       "model.pooling=mean")
    seen = {}
    real_step = loop.STEPS["leading"]

    def first_step(run, targets, refresh):
        histories = {k: v.clone() for k, v in run.model.appnp.histories_state().items()}
        logits, _, _ = full_graph_logits(run.model, run.bank.emb, run.sampler.rowptr, run.sampler.col, run.cfg,
                                         run.precision)
        seen["fixed_point"] = float(torch.nn.functional.cross_entropy(logits[targets], run.labels[targets]))
        seen["head_step"] = float(leading_head_step(run, targets, None))
        run.optim.optimizer.zero_grad(set_to_none=True)
        run.model.appnp.load_histories(histories)  # the head step wrote them: the real step starts afresh
        seen["loss"] = float(real_step(run, targets, refresh))
        return torch.tensor(seen["loss"])
    monkeypatch.setitem(loop.STEPS, "leading", first_step)
    summary = train(cfg, tmp_path / "run", quiet=True)
    assert summary["history"][0]["valid"] > 0.5  # the warm-up learned (3 classes)
    assert seen["loss"] == pytest.approx(seen["head_step"], rel=1e-4, abs=1e-5)
    if warm_start != "input":
        assert seen["loss"] == pytest.approx(seen["fixed_point"], rel=1e-3, abs=1e-4), seen


def test_every_evaluation_restarts_the_forward_histories_at_its_fixed_point(tiny_bert, tmp_path):
    """After an evaluation (which encodes every node afresh into the bank), the implicit layer's
    forward histories are the fixed point that evaluation solved and, under warm_start=delta,
    the inputs it belongs to: training goes on from where the model was scored, not from the
    outputs of sampled, truncated rows."""
    from fastleading.trainer.evaluate import evaluate, head_logits

    cfg = small_config(tiny_bert, tmp_path / "c", "model.warm_start=delta", "data.split=low-0")
    tr = build_trainer(cfg, tmp_path / "r")
    appnp = tr.run.model.appnp
    appnp.x_history.normal_()  # what sampled steps left there
    appnp.input_history.normal_()
    evaluate(tr)
    solution = tr.progress.eval_solution
    assert solution is not None and torch.equal(appnp.x_history, solution.to(appnp.x_history.dtype))
    tr.run.model.eval()
    expected = head_logits(tr.run.model, tr.run.bank.emb, tr.run.precision)
    assert torch.allclose(appnp.input_history, expected.to(appnp.input_history.dtype), atol=1e-6)


@pytest.mark.parametrize("select_warmup", [True, False])
def test_with_nothing_trained_every_evaluation_is_epoch_0s_and_select_warmup_decides_the_best(
        tiny_bert, tmp_path, select_warmup):
    """LM and head at rate 0 after the warm-up: every fine-tuning evaluation repeats epoch 0's (the
    hand-over, the fresh encode and the bank's frame change nothing). By default epoch 0 stays
    the best (a tie does not replace it); ``train.select_warmup=false`` keeps the first fine-tuned
    evaluation instead, and best.pt holds it."""
    from fastleading.run import checkpoint

    cfg = small_config(tiny_bert, tmp_path / "c", "model.pooling=mean", "train.head_warmup_epochs=-1",
                       "train.lr_lm=0", "train.lr_head=0", "train.epochs=2",
                       f"train.select_warmup={str(select_warmup).lower()}")
    summary = train(cfg, tmp_path / "run", quiet=True)
    history = summary["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    for h in history[1:]:
        for split in ("train", "valid", "test"):
            assert h[split] == pytest.approx(history[0][split], abs=1e-9), (split, history)
    assert summary["best_epoch"] == (0 if select_warmup else 1)
    assert checkpoint.load(tmp_path / "run" / checkpoint.BEST)["epoch"] == summary["best_epoch"]
