"""Overlap of pipeline 2 (no-gradient refresh encoder) with pipeline 1 on one GPU.

Ordering guarantee, per step k (S = the refresh stream, M = the main stream):

1. ``S`` waits for everything ``M`` enqueued before step k (the optimizer update of step
   k-1, hence the refresh encoder reads the same weights Θ^k as pipeline 1).
2. The refresh *encode* of step k runs on ``S`` while ``M`` samples, encodes the targets
   with gradient, looks up the bank, propagates and backpropagates.
3. The refresh *scatter* of step k is enqueued on ``S`` behind an event that ``M`` records
   right after step k's bank lookups and target-row refresh: it never races a lookup or a
   scatter of step k, and where both write a row, the refresh (pipeline 2) wins.
4. ``M`` waits for ``S`` before the optimizer step of step k: the refresh encoder has
   finished reading Θ^k before Θ^{k+1} overwrites it, and step k+1's lookups see step k's
   refreshed rows.

The sequential path (CPU, or ``train.overlap=false``) runs the same calls in the same
order on one stream, so both paths compute the same values: a refresh of step k becomes
visible to the lookups of step k+1 in both.

Every stream and event belongs to the run's device (``train.device=cuda:1`` in a single
process orders work on cuda:1, whatever the current device is).
"""

from __future__ import annotations

import contextlib

import torch


class RefreshStream:
    def __init__(self, device: torch.device, enabled: bool):
        self.device = device
        self.stream = torch.cuda.Stream(device) if enabled and device.type == "cuda" else None
        self._lookups_done: torch.cuda.Event | None = None

    def _main(self):
        """The run's device's current (main) stream."""
        return torch.cuda.current_stream(self.device)

    @property
    def overlapped(self) -> bool:
        return self.stream is not None

    @contextlib.contextmanager
    def encode(self):
        """Context for launching the refresh encoder (rule 1 and 2)."""
        if self.stream is None:
            yield
            return
        self.stream.wait_stream(self._main())
        with torch.cuda.stream(self.stream):
            yield

    def lookups_done(self) -> None:
        """Mark (on the main stream) that this step's lookups and target refresh are enqueued."""
        if self.stream is not None:
            self._lookups_done = torch.cuda.Event()
            self._lookups_done.record(self._main())

    @contextlib.contextmanager
    def scatter(self):
        """Context for the deferred refresh scatter (rule 3)."""
        if self.stream is None:
            yield
            return
        assert self._lookups_done is not None, "lookups_done() is called before scatter() (rule 3)"
        self.stream.wait_event(self._lookups_done)
        with torch.cuda.stream(self.stream):
            yield

    def join(self) -> None:
        """Main stream waits for the refresh stream (rule 4); call before the optimizer step."""
        if self.stream is not None:
            self._main().wait_stream(self.stream)
