"""What every benchmark program under ``benchmarks/`` does around its measurement: check that the
real data it reads is there, name the code it measured, and write its result file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def git_commit() -> str:
    """The commit measured: ``HEAD``, with ``+uncommitted`` when tracked files differ from it;
    ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")


def require_dataset(root: str | Path, folder: str, prog: str) -> bool:
    """Whether ``root/folder`` (a dataset under ``../shared/data``) exists; if not, say so in one
    line on stderr, prefixed with ``prog``."""
    if (Path(root) / folder).is_dir():
        return True
    print(f"{prog}: error: {folder} not found under {root}", file=sys.stderr)
    return False


def write_result(path: str | Path | None, result: dict) -> None:
    """Write ``result`` as indented JSON to ``path`` (parents created; nothing when None) and say where."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
