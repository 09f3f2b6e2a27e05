"""Fault-injection figures: ``python benchmarks/faults.py [--kills 20] [--seed 0] [--out FILE]``.

Runs the harness of ``tests/fault_harness.py`` on its tiny LEADING run (SIGKILL at seeded random
points inside steps, checkpoint writes, evaluations and the bank fill; a full disk at random
checkpoint writes and metrics lines and in an export; every bad input) and writes the figures
(kills survived, faults injected, bad inputs refused, state lost) as JSON, by default to
``benchmarks/results/faults-cpu-<date>.json``. ``tests/test_faults.py`` runs a small
configuration of the same harness in CI.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import torch  # noqa: E402
from fault_harness import run_faults  # noqa: E402

from fastleading.bench.kernels import environment  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs, each kind of point in turn (default 20)")
    parser.add_argument("--disk-checkpoints", type=int, default=3, help="full disks at random checkpoint writes")
    parser.add_argument("--disk-metrics", type=int, default=3, help="full disks at random metrics lines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="fastleading-faults-") as root:
        tally = run_faults(Path(root), args.kills, args.seed, args.disk_checkpoints, args.disk_metrics)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=REPO).stdout.split("\n")
    t = tally
    result = {
        "benchmark": "faults", "env": environment(torch.device("cpu"), False),
        "uncommitted_files": [line[3:] for line in dirty if line.strip()], "seed": args.seed,
        "wall_s": round(time.time() - start, 1),
        "figures": {"kills_survived": f"{t.kills_survived} of {t.kills_injected}",
                    "disk_faults_survived": f"{t.disk_faults_survived} of {t.disk_faults_injected}",
                    "faults_injected": t.kills_injected + t.disk_faults_injected,
                    "bad_inputs_refused": f"{t.bad_inputs_refused} of {t.bad_inputs_tried}",
                    "state_lost": len(t.state_lost)},
        **t.as_dict(),
    }
    out = args.out or REPO / "benchmarks" / "results" / f"faults-cpu-{datetime.date.today():%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["figures"], indent=2))
    print(f"written: {out}")
    return 0 if not (t.failures or t.state_lost) else 1


if __name__ == "__main__":
    sys.exit(main())
