"""Per-phase timing with NVTX ranges, and the optional torch.profiler trace.

Every phase of a step (sample, encode-refresh, encode-grad, bank-lookup, head, propagate,
loss, backward, optimizer, bank-refresh) runs inside ``phases("name")``: an NVTX range
(seen by Nsight Systems / Compute; a no-op without a GPU) and a wall-clock accumulator.
With ``sync=True`` (profiling runs) each phase synchronises the GPU so its time is its own.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections import defaultdict
from pathlib import Path

import torch

try:
    import nvtx as _nvtx
except ImportError:  # nvtx is a declared dependency; stay usable without it
    _nvtx = None


class Phases:
    def __init__(self, device: torch.device, sync: bool = False):
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.sync = sync and device.type == "cuda"
        self.device = device

    @contextlib.contextmanager
    def __call__(self, name: str):
        rng = _nvtx.start_range(message=name, domain="fastleading") if _nvtx is not None else None
        record = torch.profiler.record_function(name)
        record.__enter__()
        if self.sync:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize(self.device)
            self.totals[name] += time.perf_counter() - start
            self.counts[name] += 1
            record.__exit__(None, None, None)
            if rng is not None:
                _nvtx.end_range(rng)

    def table(self) -> str:
        total = sum(self.totals.values()) or 1.0
        lines = [f"{'phase':<16}{'calls':>8}{'total s':>10}{'ms/call':>10}{'share':>8}"]
        for name, t in sorted(self.totals.items(), key=lambda kv: -kv[1]):
            n = self.counts[name]
            lines.append(f"{name:<16}{n:>8}{t:>10.3f}{1000 * t / n:>10.2f}{100 * t / total:>7.1f}%")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in self.totals.items()}


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of the run: allocated on ``device`` when it is a GPU, else this process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class StepProfiler:
    """torch.profiler over ``active`` steps after ``warmup`` steps; writes a Chrome/Perfetto trace."""

    def __init__(self, out_dir: Path, enabled: bool, warmup: int = 2, active: int = 3):
        self.enabled = enabled
        self.trace_path = Path(out_dir) / "trace.json"
        self._prof = None
        if enabled:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._prof = torch.profiler.profile(
                activities=activities,
                schedule=torch.profiler.schedule(wait=0, warmup=warmup, active=active, repeat=1),
                on_trace_ready=self._save, record_shapes=False)
            self._prof.__enter__()

    def _save(self, prof) -> None:
        self.trace_path.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.trace_path))

    def step(self) -> None:
        if self._prof is not None:
            self._prof.step()

    def close(self) -> None:
        if self._prof is not None:
            self._prof.__exit__(None, None, None)
            self._prof = None
