"""What a run folder holds on disk once its run has finished, under each retention setting.

Trains LEADING with the default model (all-MiniLM-L6-v2, full fine-tuning, AdamW) on the
built-in synthetic graph for one epoch (a few steps: the file sizes do not depend on how long
a run trains: weights, optimizer state and the [N, H] memory bank and histories have fixed
shapes), three times: with the defaults (the optimizer state leaves ``checkpoint.pt`` when the
run finishes), with ``train.keep_optimizer_state=true`` (what every run kept before) and with
``train.keep=best``; measures every file of each folder, what each part of the full
``checkpoint.pt`` weighs, and the full folder after ``fastleading clean``. Writes a JSON to
``benchmarks/results/``.

    python benchmarks/run_folder_sizes.py --nodes 200
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from fastleading.commands.methods import train_method
from fastleading.config import Config, apply_overrides
from fastleading.run import checkpoint
from fastleading.run.folder import drop_checkpoint
from fastleading.run.io import atomic_write_text


def folder_bytes(run: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(run.iterdir()) if p.is_file()}


def tensor_bytes(obj) -> int:
    """Bytes of every tensor inside a nested container."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=200)
    p.add_argument("--override", action="append", default=[], metavar="section.key=value")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    cfg = apply_overrides(Config(), [f"data.synthetic_nodes={args.nodes}", "data.max_length=32", "train.epochs=1",
                                     "train.device=cpu", *args.override])
    folders = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg.data.cache_dir = str(Path(tmp) / "cache")
        for name, overrides in (("default", []), ("keep_optimizer_state", ["train.keep_optimizer_state=true"]),
                                ("keep_best", ["train.keep=best"])):
            summary = train_method(apply_overrides(cfg, overrides), Path(tmp) / name, quiet=True)
            assert summary["stopped"] == "epochs", summary["stopped"]  # finished: what the settings act on
            folders[name] = folder_bytes(Path(tmp) / name)
        full = Path(tmp) / "keep_optimizer_state"
        state = checkpoint.load(full / "checkpoint.pt")
        parts = {key: tensor_bytes(value) for key, value in state.items()}
        optimizer_state = tensor_bytes(state["optim"]["optimizer"]["state"])
        params = sum(t.numel() for t in state["model"].values())
        steps = int(state["step"])
        drop_checkpoint(full)  # what `fastleading clean RUN` does
        cleaned = folder_bytes(full)
    result = {
        "what": "bytes of every file of a finished LEADING run folder with the defaults (optimizer state dropped "
                "at the end), with train.keep_optimizer_state=true and with train.keep=best; each part of the full "
                "checkpoint.pt; the full folder after `fastleading clean`",
        "model": cfg.model.name, "dataset": f"synthetic, {args.nodes} nodes", "max_length": cfg.data.max_length,
        "epochs": cfg.train.epochs, "steps": steps, "model_parameters": params,
        "files_bytes": {name: files for name, files in folders.items()},
        "total_bytes": {name: sum(files.values()) for name, files in folders.items()},
        "checkpoint_parts_bytes": parts, "optimizer_state_bytes": optimizer_state,
        "after_clean_bytes": cleaned, "after_clean_total_bytes": sum(cleaned.values()),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__},
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.date.today().isoformat(),
    }
    out = Path(args.out or f"benchmarks/results/run-folder-sizes-cpu-{result['date']}.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    mb = 1e6
    print("; ".join(f"{name} {total / mb:.1f} MB" for name, total in result["total_bytes"].items())
          + f"; full after clean {result['after_clean_total_bytes'] / mb:.1f} MB; {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
