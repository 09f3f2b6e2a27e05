"""Fresh encodings in the bank's frame (``train.align_to_bank``).

Found on arxiv-2023 (benchmarks/results/arxiv-embedding-probe-cpu-2026-12-07.json): after one
fine-tuning epoch the run's own head scored 68.6 on the fine-tuned LM's embeddings and 76.7 on
the frozen ones, while a fresh head did as well on the fine-tuned ones as on the frozen (77.9 /
77.4). 54% of the embeddings' move was one shift shared by every node: targets trained fresh
against neighbours that stayed stale in the bank, so the LM learned to translate every
embedding, which the bank did not follow until the evaluation re-encoded it all. Aligned, a
batch of fresh rows keeps the mean of the rows it replaces: the LM gets no gradient toward a
shared shift.
"""

import pytest
import torch
from test_train import small_config

from fastleading.engine.bank import MemoryBank
from fastleading.models.encode import encode_all
from fastleading.trainer.evaluate import encode_graph, evaluate
from fastleading.trainer.loop import build_trainer
from fastleading.trainer.steps import leading_step


def test_in_frame_keeps_the_replaced_rows_mean_and_projects_the_shared_gradient_out():
    g = torch.Generator().manual_seed(0)
    bank = MemoryBank(50, 8, torch.float64)
    bank.refresh(torch.arange(50), torch.randn(50, 8, generator=g, dtype=torch.float64), step=0)
    ids = torch.randperm(50, generator=g)[:12]
    rows = torch.randn(12, 8, generator=g, dtype=torch.float64, requires_grad=True)
    out = bank.in_frame(ids, rows)
    # float64 reference: the rows' differences are kept, their mean is the bank rows'
    reference = rows.detach() - rows.detach().mean(0) + bank.emb[ids].mean(0)
    torch.testing.assert_close(out.detach(), reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.detach().mean(0), bank.emb[ids].mean(0), rtol=0, atol=1e-12)
    # any loss: the gradient reaching the fresh rows is the loss's minus its batch mean
    weight = torch.randn(12, 8, generator=g, dtype=torch.float64)
    (out * weight).pow(2).sum().backward()
    direct = 2 * out.detach() * weight.pow(2)
    torch.testing.assert_close(rows.grad, direct - direct.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(rows.grad.sum(0), torch.zeros(8, dtype=torch.float64), rtol=0, atol=1e-12)


def test_in_frame_counts_only_rows_written_before():
    """A bank not (fully) filled: the shift is the written rows' mean move; with none written
    the rows come back as they are (a bank filled by pipeline 2 alone has no frame to keep)."""
    g = torch.Generator().manual_seed(2)
    bank = MemoryBank(30, 4, torch.float64)
    rows = torch.randn(10, 4, generator=g, dtype=torch.float64)
    ids = torch.arange(10)
    torch.testing.assert_close(bank.in_frame(ids, rows), rows, rtol=0, atol=0)
    bank.refresh(ids[:4], torch.randn(4, 4, generator=g, dtype=torch.float64), step=3)
    out = bank.in_frame(ids, rows)
    shift = bank.emb[:4].mean(0) - rows[:4].mean(0)
    torch.testing.assert_close(out, rows + shift, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[:4].mean(0), bank.emb[:4].mean(0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("align", [True, False])
def test_a_leading_step_gives_the_lm_no_gradient_toward_a_shift_of_every_embedding(tiny_bert, tmp_path, align):
    """The bias of the LM's last LayerNorm moves every mean-pooled embedding by the same vector:
    aligned, a LEADING step gives it no gradient (while the LM's other weights learn); not
    aligned, it does (with neighbours as stale as after an epoch: the bank shifted)."""
    cfg = small_config(tiny_bert, tmp_path / "c", "model.pooling=mean", "data.split=high-0",
                       f"train.align_to_bank={str(align).lower()}", "model.head_dropout=0")
    tr = build_trainer(cfg, tmp_path / "r")
    run = tr.run
    encode_graph(tr, "fill bank", "fill")
    run.bank.emb.add_(0.5 * torch.randn(run.bank.emb.shape[1], generator=torch.Generator().manual_seed(1)))
    targets = tr.split.train[:16]
    run.optim.optimizer.zero_grad(set_to_none=True)
    leading_step(run, targets, refresh_ids=tr.split.valid[:8])
    lm = run.model.encoder.model
    shift = lm.encoder.layer[-1].output.LayerNorm.bias.grad
    other = lm.encoder.layer[-1].output.dense.weight.grad
    assert other is not None and float(other.abs().max()) > 1e-6
    if align:
        assert float(shift.abs().max()) < 1e-6 * max(1.0, float(other.abs().max())), shift
    else:
        assert float(shift.abs().max()) > 1e-4, shift


def test_aligned_refresh_rows_keep_the_bank_mean_of_the_rows_they_replace(tiny_bert, tmp_path):
    """Pipeline 2's rows enter the bank in its frame too: the refreshed rows' mean is what it was."""
    cfg = small_config(tiny_bert, tmp_path / "c", "model.pooling=mean", "data.split=high-0")
    tr = build_trainer(cfg, tmp_path / "r")
    run = tr.run
    encode_graph(tr, "fill bank", "fill")
    run.bank.emb.add_(0.5)  # stale: another frame than the LM's
    refresh = tr.split.valid[:20]
    before = run.bank.emb[refresh].double().mean(0)
    leading_step(run, tr.split.train[:16], refresh_ids=refresh)
    torch.testing.assert_close(run.bank.emb[refresh].double().mean(0), before, rtol=0, atol=1e-5)
    assert bool((run.bank.stamp[refresh] == run.step).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_frame_is_the_mean_of_the_written_rows_and_moves_back_in_one_rounding(dtype):
    g = torch.Generator().manual_seed(3)
    bank = MemoryBank(23, 5, dtype)
    assert bank.frame() is None  # nothing written: no frame
    written = torch.randperm(23, generator=g)[:17]
    bank.refresh(written, torch.randn(17, 5, generator=g) + 2.0, step=0)
    reference = bank.emb[written].double().mean(0)
    torch.testing.assert_close(bank.frame(chunk=4).double(), reference, rtol=0, atol=1e-6)  # chunks of 4 rows
    # a full-graph encode writes every row in another frame; moving it back: the old frame
    # again, each row its fresh value plus one shift, summed in fp32 and rounded once
    before = bank.frame()
    fresh = torch.randn(23, 5, generator=g) - 1.0
    bank.refresh(torch.arange(23), fresh, step=1)
    stored = bank.emb.clone()
    shift = bank.move_frame(before, chunk=4)
    torch.testing.assert_close(shift.double(), before.double() - stored.double().mean(0), rtol=0, atol=1e-6)
    assert torch.equal(bank.emb, (stored.float() + shift).to(dtype))
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(bank.frame().double(), before.double(), rtol=0, atol=tol)


def test_an_lm_change_that_moves_every_embedding_alike_leaves_the_evaluation_as_it_was(tiny_bert, tmp_path):
    """The bias of the LM's last LayerNorm moves every mean-pooled embedding by one vector: the
    evaluation re-encodes every node, moves the rows back into the bank's frame and scores the
    same logits as before the change; the model keeps the shift (``frame_shift``), and inference
    on the LM's own embeddings plus that shift gives the evaluation's logits."""
    from fastleading.trainer.evaluate import full_graph_logits

    cfg = small_config(tiny_bert, tmp_path / "c", "model.pooling=mean", "data.split=high-0", "model.eval_tol=1e-9",
                       "model.eval_iters=500")
    tr = build_trainer(cfg, tmp_path / "r")
    run = tr.run
    encode_graph(tr, "fill bank", "fill")
    frame = run.bank.frame()
    run.model.head.apply(lambda m: torch.nn.init.normal_(m.weight) if isinstance(m, torch.nn.Linear) else None)
    with torch.no_grad():
        rowptr, col = tr.graph.rowptr, tr.graph.col
        before, _, _ = full_graph_logits(run.model, run.bank.emb, rowptr, col, cfg, run.precision)
        move = torch.randn(run.bank.emb.shape[1], generator=torch.Generator().manual_seed(4))
        run.model.encoder.model.encoder.layer[-1].output.LayerNorm.bias.add_(move)
    tr.progress.eval_solution = None
    evaluate(tr)
    torch.testing.assert_close(run.bank.frame(), frame, rtol=0, atol=1e-5)
    torch.testing.assert_close(run.model.frame_shift, -move, rtol=0, atol=1e-4)
    after, _, _ = full_graph_logits(run.model, run.bank.emb, rowptr, col, cfg, run.precision)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-4)
    own = encode_all(run.model.encoder, run.tokens, tr.graph.num_nodes, run.device, run.precision, 128)
    inferred, _, _ = full_graph_logits(run.model, run.model.to_head_frame_(own), rowptr, col, cfg, run.precision)
    torch.testing.assert_close(inferred, after, rtol=1e-5, atol=1e-5)  # CG from a cold start


def test_without_alignment_the_evaluation_keeps_the_lms_own_frame(tiny_bert, tmp_path):
    cfg = small_config(tiny_bert, tmp_path / "c", "model.pooling=mean", "train.align_to_bank=false")
    tr = build_trainer(cfg, tmp_path / "r")
    encode_graph(tr, "fill bank", "fill")
    with torch.no_grad():
        tr.run.model.encoder.model.encoder.layer[-1].output.LayerNorm.bias.add_(1.0)
    evaluate(tr)
    assert float(tr.run.model.frame_shift.abs().max()) == 0.0
    own = encode_all(tr.run.model.encoder, tr.run.tokens, tr.graph.num_nodes, tr.run.device, tr.run.precision, 128)
    torch.testing.assert_close(tr.run.bank.emb, own, rtol=0, atol=1e-6)


def test_a_checkpoint_written_before_the_frame_was_kept_resumes_with_a_zero_shift(tiny_bert, tmp_path):
    from fastleading.run import checkpoint
    from fastleading.trainer.loop import train

    cfg = small_config(tiny_bert, tmp_path / "c", "model.pooling=mean", "train.epochs=1")
    train(cfg, tmp_path / "run", quiet=True)
    path = tmp_path / "run" / checkpoint.CHECKPOINT
    state = checkpoint.load(path)
    assert float(state["frame_shift"].abs().max()) > 0  # the evaluation after fine-tuning moved the rows back
    del state["frame_shift"], state["model"]["frame_shift"]  # as the older version wrote it
    checkpoint.save(path, state)
    summary = train(small_config(tiny_bert, tmp_path / "c", "model.pooling=mean", "train.epochs=2"), tmp_path / "run",
                    resume=True, quiet=True)
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
