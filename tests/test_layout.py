"""The package layout: every module imports on its own, and the trainer and the downstream
baselines do not import each other (docs/architecture.md)."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastleading"


def modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def imported_modules(path: Path) -> set[str]:
    """Every fastleading module ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastleading"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fastleading"))
    return found


def test_every_module_imports_on_its_own():
    # one interpreter (torch loads once); every module is imported with no fastleading module
    # loaded before it, so an import cycle that only some import orders hide fails here
    script = (
        "import importlib, sys, traceback\n"
        f"failed = []\n"
        f"for name in {modules()!r}:\n"
        "    for m in [m for m in sys.modules if m == 'fastleading' or m.startswith('fastleading.')]:\n"
        "        if not m.startswith(('fastleading._native', 'fastleading.kernels')):\n"
        "            del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc().strip().splitlines()[-1])\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


def test_the_trainer_and_downstream_do_not_import_each_other():
    downstream = imported_modules(PACKAGE / "downstream.py")
    assert not {m for m in downstream if m.startswith("fastleading.trainer") and not m.startswith("fastleading.trainer.model")}, \
        downstream
    for path in (PACKAGE / "trainer").glob("*.py"):
        assert not {m for m in imported_modules(path) if m.startswith("fastleading.downstream")}, path
        assert "fastleading.methods" not in imported_modules(path), path
