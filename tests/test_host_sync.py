"""No hidden host synchronisation in the training step.

On a GPU any read of a device value on the host (``.item()``, ``int()``, ``float()``, ``bool()``,
``tolist()``, ``.cpu()``, ``numpy()``) stalls the CPU until the device has caught up, so the
next step cannot be enqueued while this one runs. This test runs real LEADING steps (sampling,
both pipelines, the Triton kernels through the interpreter, backward, optimizer step) on the
CPU with every tensor that would live on the GPU marked as a device tensor: the model, the
bank, the histories, the labels, every tensor that crosses :func:`fastleading.engine.transfer.to_device`,
and everything computed from them (propagated through a dispatch mode). Any host read of a
marked tensor fails the test. The Triton interpreter's own reads stand for device-side work
and are allowed; the loop's logging points are outside the step.
"""

import sys

import pytest
import torch
from test_train import small_config

from fastleading.engine import ops, transfer
from fastleading.trainer.loop import build_trainer
from fastleading.trainer.steps import leading_step


def device_run(tiny_bert, tmp_path, mode, *overrides):
    tr = build_trainer(small_config(tiny_bert, tmp_path / "cache", "data.split=high-0", "train.kernels=triton",
                                    *overrides), tmp_path / "run")
    run = tr.run
    for t in [*run.model.parameters(), *run.model.buffers(), run.bank.emb, run.bank.stamp, run.labels,
              run.graph_dinv, run.optim.bad_streak, run.optim.worst_streak, run.optim.last_bad_phase,
              run.optim._loss_bad]:
        mode.mark(t)
    return tr


def run_steps(tr, mode, steps: int = 3) -> None:
    run = tr.run
    with mode:
        for step in range(steps):
            run.step = step
            targets = tr.split.train[16 * step:16 * (step + 1)]
            leading_step(run, targets, torch.arange(32 * step, 32 * (step + 1)))
            run.overlap.join()
            run.optim.step()


def test_leading_steps_read_nothing_back_from_the_device(tiny_bert, tmp_path, guard):
    tr = device_run(tiny_bert, tmp_path, guard)
    run_steps(tr, guard)
    assert guard.reads == [], "\n".join(guard.reads)
    # the guard did watch the step: the loss, the bank and the histories are device tensors
    assert guard.is_device(tr.run.bank.emb) and guard.is_device(tr.run.model.appnp.g_history)


@pytest.mark.parametrize("regression", ["float(loss)", "plan from the device rowptr", "scatter scratch read"])
def test_the_guard_catches_the_reads_that_were_removed(tiny_bert, tmp_path, guard, monkeypatch, regression):
    """Each read the issue listed, put back, is caught (so the test above can fail)."""
    tr = device_run(tiny_bert, tmp_path, guard)
    from fastleading.trainer import steps

    if regression == "float(loss)":
        real_backward = steps.Run.backward
        monkeypatch.setattr(steps.Run, "backward", lambda self, loss: (float(loss), real_backward(self, loss))[1])
    elif regression == "plan from the device rowptr":
        monkeypatch.setattr(ops, "prepare_graph", lambda rowptr, host: None)
    else:
        from fastleading.kernels import bank as bank_kernels

        real = bank_kernels.last_occurrence
        monkeypatch.setattr(bank_kernels, "last_occurrence", lambda ids: (int(ids.max()), real(ids))[1])
    run_steps(tr, guard, steps=1)
    assert guard.reads, regression


def test_host_to_device_copies_are_pinned_and_non_blocking(monkeypatch):
    # no GPU here: record what to_device asks of the tensor on its way to "cuda"
    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: calls.append(("to", a, k)) or self)
    transfer.to_device(torch.arange(4), torch.device("cuda", 0))
    assert calls == ["pin", ("to", (torch.device("cuda", 0),), {"non_blocking": True})]
    calls.clear()
    t = torch.arange(4)
    assert transfer.to_device(t, torch.device("cpu")) is t and calls == []  # already there: no copy


def test_the_scatter_kernel_does_not_specialise_on_the_step():
    # a new step value must not compile a new kernel (Triton specialises ints on ==1 and %16 by
    # default); the compiled kernel object (not the interpreter's) says what it specialises on
    import os
    import subprocess

    script = ("from fastleading.kernels import bank\n"
              "k = bank._bank_scatter_kernel\n"
              "print(k.arg_names.index('step') in k.do_not_specialize or 'step' in k.do_not_specialize)\n")
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "TRITON_INTERPRET": "0"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("True"), done.stdout + done.stderr[-2000:]
