"""The ordering guarantee of the overlapped pipelines (fastleading/overlap.py), checked on CPU
by running a real LEADING step with a fake CUDA stream API that records, for every bank and
encoder operation, which stream it was enqueued on and which waits came before it."""

import contextlib

import pytest
import torch

from fastleading import overlap as overlap_mod
from fastleading.train import build_run, leading_step

from test_train import small_config, tiny_bert  # noqa: F401  (fixture)


class FakeStream:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def wait_stream(self, other):
        self.log.append(("wait_stream", self.name, other.name))

    def wait_event(self, event):
        self.log.append(("wait_event", self.name, event.recorded_on))


class FakeCuda:
    """Stands in for torch.cuda's stream API: tracks the current stream, logs waits/records."""

    def __init__(self):
        self.log = []
        self.main = FakeStream("main", self.log)
        self.current = self.main

    def Stream(self, device=None):
        return FakeStream("side", self.log)

    def current_stream(self):
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

            def record(self):
                self.recorded_on = cuda.current.name
                cuda.log.append(("record", cuda.current.name))
        return Event()


def test_refresh_runs_on_side_stream_and_never_races_lookups(tiny_bert, tmp_path, monkeypatch):
    run = build_run(small_config(tiny_bert, tmp_path / "cache", "data.split=high-0"), tmp_path / "run")
    fake = FakeCuda()
    monkeypatch.setattr(overlap_mod.torch, "cuda", fake)
    stream = overlap_mod.RefreshStream(torch.device("cpu"), enabled=True)
    stream.stream = fake.Stream()  # as on a GPU
    run.overlap = stream
    log = fake.log

    def traced(name, fn):
        def wrapper(*args, **kwargs):
            log.append((name, fake.current.name))
            return fn(*args, **kwargs)
        return wrapper

    run.bank.lookup = traced("lookup", run.bank.lookup)
    run.bank.refresh = traced("refresh", run.bank.refresh)
    run.encode_nograd = traced("encode-refresh", run.encode_nograd)
    run.encode = traced("encode-grad", run.encode)

    leading_step(run, run.split.train[:8], torch.arange(8))
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


def test_overlap_disabled_or_cpu_runs_everything_on_one_stream():
    s = overlap_mod.RefreshStream(torch.device("cpu"), enabled=True)
    assert not s.overlapped
    with s.encode():
        pass
    s.lookups_done()
    with s.scatter():
        pass
    s.join()
