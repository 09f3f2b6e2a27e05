"""The ordering guarantee of the overlapped pipelines (fastleading/engine/overlap.py), checked on CPU
by running a real LEADING step with a fake CUDA stream API that records, for every bank and
encoder operation, which stream it was enqueued on and which waits came before it."""

import contextlib

import pytest
import torch
from test_train import small_config

from fastleading.engine import overlap as overlap_mod
from fastleading.trainer.loop import build_trainer
from fastleading.trainer.steps import leading_step


class FakeStream:
    def __init__(self, name, log, device=None):
        self.name, self.log, self.device = name, log, device

    def wait_stream(self, other):
        self.log.append(("wait_stream", self.name, other.name))

    def wait_event(self, event):
        self.log.append(("wait_event", self.name, event.recorded_on))


class FakeCuda:
    """Stands in for torch.cuda's stream API: tracks the current stream, logs waits/records,
    and records every device a stream was asked for (None: "the current device")."""

    def __init__(self):
        self.log = []
        self.devices = []
        self.main = FakeStream("main", self.log)
        self.current = self.main

    def Stream(self, device=None):
        self.devices.append(device)
        return FakeStream("side", self.log, device)

    def current_stream(self, device=None):
        self.devices.append(device)
        return self.current

    @contextlib.contextmanager
    def stream(self, s):
        previous, self.current = self.current, s
        try:
            yield
        finally:
            self.current = previous

    def Event(self):
        cuda = self

        class Event:
            recorded_on = None

            def record(self, stream=None):
                self.recorded_on = (stream or cuda.current).name
                cuda.log.append(("record", self.recorded_on))
        return Event()


def overlapped_run(tiny_bert, tmp_path, monkeypatch, device="cuda:1", *overrides: str):
    """A real LEADING run whose overlap runs on the fake stream API of ``device`` (the
    computation itself stays on the CPU)."""
    tr = build_trainer(small_config(tiny_bert, tmp_path / "cache", "data.split=high-0", *overrides), tmp_path / "run")
    fake = FakeCuda()
    monkeypatch.setattr(overlap_mod.torch, "cuda", fake)
    tr.run.overlap = overlap_mod.RefreshStream(torch.device(device), enabled=True)
    assert tr.run.overlap.overlapped
    return tr, fake


def trace_pipelines(run, fake) -> None:
    """Log every bank lookup / refresh and every encode of ``run`` in ``fake.log`` with the
    stream it was enqueued on."""
    def traced(name, fn):
        def wrapper(*args, **kwargs):
            fake.log.append((name, fake.current.name))
            return fn(*args, **kwargs)
        return wrapper

    run.bank.lookup = traced("lookup", run.bank.lookup)
    run.bank.refresh = traced("refresh", run.bank.refresh)
    run.encode_nograd = traced("encode-refresh", run.encode_nograd)
    run.encode = traced("encode-grad", run.encode)


def test_refresh_runs_on_side_stream_and_never_races_lookups(tiny_bert, tmp_path, monkeypatch):
    tr, fake = overlapped_run(tiny_bert, tmp_path, monkeypatch)
    run, stream, log = tr.run, tr.run.overlap, fake.log
    trace_pipelines(run, fake)

    leading_step(run, tr.split.train[:8], torch.arange(8))
    stream.join()

    def at(entry):
        return log.index(entry)

    # 1. the side stream first waits for the main stream (same weights as pipeline 1)
    assert at(("wait_stream", "side", "main")) < at(("encode-refresh", "side"))
    # 2. the refresh encode is enqueued on the side stream, pipeline 1 on the main stream
    assert ("encode-grad", "main") in log and ("lookup", "main") in log
    # 3. the refresh scatter is on the side stream, behind an event recorded on the main stream
    #    after the lookups and the target-row refresh
    refreshes = [i for i, e in enumerate(log) if e[0] == "refresh"]
    assert [log[i][1] for i in refreshes] == ["main", "side"]
    assert refreshes[0] < at(("record", "main")) and at(("lookup", "main")) < at(("record", "main"))
    assert at(("record", "main")) < at(("wait_event", "side", "main")) < refreshes[1]
    # 4. the main stream waits for the side stream before the optimizer step
    assert log[-1] == ("wait_stream", "main", "side")


def one_traced_step(tiny_bert, tmp_path, monkeypatch, fake, device, enabled):
    """A fresh run (same seed each time) whose overlap is RefreshStream(device, enabled) on the
    fake stream API, one LEADING step with every bank and encoder call logged with the stream it
    ran on; returns what the step computed."""
    tr = build_trainer(small_config(tiny_bert, tmp_path / "cache", "data.split=high-0"), tmp_path / "run")
    run = tr.run
    trace_pipelines(run, fake)
    with monkeypatch.context() as patch:  # after the build: the fake replaces torch.cuda everywhere
        patch.setattr(overlap_mod.torch, "cuda", fake)
        run.overlap = overlap_mod.RefreshStream(torch.device(device), enabled=enabled)
        loss = leading_step(run, tr.split.train[:8], torch.arange(40))
        run.overlap.join()
    return {"loss": loss.detach(), "bank": run.bank.emb.clone(), "stamps": run.bank.stamp.clone(),
            "x_history": run.model.appnp.x_history.clone(), "g_history": run.model.appnp.g_history.clone(),
            "grads": [p.grad.clone() for p in run.model.parameters() if p.grad is not None]}


@pytest.mark.parametrize("device, enabled", [("cuda:1", False), ("cpu", True)])
def test_overlap_disabled_or_cpu_runs_everything_on_one_stream_and_computes_the_same(tiny_bert, tmp_path,
                                                                                      monkeypatch, device, enabled):
    """Overlap off (on a GPU) or on a CPU: no stream is made, waited on or recorded, every encode
    and bank call runs on the one (main) stream, a CPU run never touches the CUDA API, and the step
    computes exactly what the overlapped path computes."""
    fake = FakeCuda()
    single = one_traced_step(tiny_bert, tmp_path / "a", monkeypatch, fake, device, enabled)
    assert not [e for e in fake.log if e[0] in ("wait_stream", "wait_event", "record")], fake.log
    ops_seen = [e for e in fake.log if e[0] in ("lookup", "refresh", "encode-refresh", "encode-grad")]
    assert {name for name, _ in ops_seen} == {"lookup", "refresh", "encode-refresh", "encode-grad"}
    assert {stream for _, stream in ops_seen} == {"main"}
    if device == "cpu":
        assert fake.devices == []
    fake.log.clear()
    overlapped = one_traced_step(tiny_bert, tmp_path / "b", monkeypatch, fake, "cuda:1", True)
    assert ("encode-refresh", "side") in fake.log  # the reference really took the overlapped path
    for key in ("loss", "bank", "stamps", "x_history", "g_history"):
        assert torch.equal(single[key], overlapped[key]), key
    assert len(single["grads"]) == len(overlapped["grads"]) > 0
    assert all(torch.equal(a, b) for a, b in zip(single["grads"], overlapped["grads"], strict=True))


def test_every_stream_and_event_is_the_runs_device(tiny_bert, tmp_path, monkeypatch):
    # train.device=cuda:1 in one process: no call may fall back to the current device (cuda:0)
    tr, fake = overlapped_run(tiny_bert, tmp_path, monkeypatch, device="cuda:1")
    leading_step(tr.run, tr.split.train[:8], torch.arange(8))
    tr.run.overlap.join()
    assert fake.devices and all(d == torch.device("cuda", 1) for d in fake.devices), fake.devices


def test_lookups_see_the_previous_steps_refresh_and_never_this_steps(tiny_bert, tmp_path, monkeypatch):
    """Two real LEADING steps through the overlapped path (fake streams): pipeline 2 refreshes
    every node in step 0; step 0's lookups must see none of those rows (stamp -1, the empty
    bank), step 1's must see exactly the embeddings pipeline 2 computed in step 0."""
    # the bank then holds pipeline 2's rows as encoded (train.align_to_bank would shift them all
    # by one vector, tests/test_bank_frame.py): what this test compares the lookups with
    tr, _ = overlapped_run(tiny_bert, tmp_path, monkeypatch, "cuda:1", "train.align_to_bank=false")
    run, n = tr.run, tr.graph.num_nodes
    refreshed, seen = [], []
    encode_nograd, lookup = run.encode_nograd, run.bank.lookup

    def traced_encode(ids):
        out = encode_nograd(ids)
        refreshed.append((ids.clone(), out.clone()))
        return out

    def traced_lookup(ids, *args, **kwargs):
        seen.append((ids.clone(), run.bank.stamp[ids].clone(), run.bank.emb[ids].clone()))
        return lookup(ids, *args, **kwargs)

    run.encode_nograd, run.bank.lookup = traced_encode, traced_lookup
    targets = [tr.split.train[:8], tr.split.train[8:16]]
    for step in range(2):
        run.step = step
        leading_step(run, targets[step], torch.arange(n) if step == 0 else torch.arange(1))
        run.overlap.join()
    step0_ids, step0_emb = refreshed[0]
    by_node = dict(zip(step0_ids.tolist(), step0_emb, strict=True))
    ids0, stamps0, _ = seen[0]
    others0 = ~torch.isin(ids0, targets[0])
    assert others0.any() and (stamps0[others0] == -1).all()  # step 0's refresh not visible in step 0
    ids1, stamps1, rows1 = seen[1]
    others1 = ~torch.isin(ids1, torch.cat(targets))
    assert others1.any() and (stamps1[others1] == 0).all()   # step 0's refresh visible in step 1
    for node, row in zip(ids1[others1].tolist(), rows1[others1], strict=True):
        torch.testing.assert_close(row, by_node[node].to(row.dtype), rtol=0, atol=0)
