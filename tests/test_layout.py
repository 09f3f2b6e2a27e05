"""The package layout: every module imports on its own, no module of the package imports itself
through others (no import cycle, lazy imports inside functions and ``TYPE_CHECKING`` imports
included), ``config`` is the bottom of the graph, and the trainer and the downstream baselines do
not import each other (docs/architecture.md), but for the head warm-up, which trains the head with
the pretrained baseline's own functions."""

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
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; write fastleading.... in full")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastleading"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fastleading"))
    return found


def import_graph() -> dict[str, set[str]]:
    """Each module of the package -> the modules of the package it names in an import statement
    (top level, inside functions, under ``TYPE_CHECKING``): ``from fastleading.data import tag``
    names ``fastleading.data.tag``, ``from fastleading.data import prepare`` names
    ``fastleading.data``. A submodule's implicit import of its parent package is not an edge."""
    names = set(modules())
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastleading"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    edges.add(sub if sub in names else node.module)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name.startswith("fastleading"))
        graph[name] = {m for m in edges if m in names and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"b", "c"}}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"y"}}) == ["y", "z", "y"]


def test_no_import_cycle_anywhere_in_the_package():
    graph = import_graph()
    assert {"fastleading.config", "fastleading.trainer.loop", "fastleading.data.link_split"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_config_is_the_bottom_of_the_import_graph():
    assert import_graph()["fastleading.config"] == {"fastleading.errors"}


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
    # one exception, by design: the head warm-up IS the pretrained baseline's training (its epoch 0
    # is that baseline by construction), so it calls the baseline's own functions and nothing else
    shared = {"fastleading.downstream", "fastleading.downstream.fit_frozen_head", "fastleading.downstream_link",
              "fastleading.downstream_link.fit_link_gnn_cfg"}
    for path in (PACKAGE / "trainer").glob("*.py"):
        allowed = shared if path.name == "warmup.py" else set()
        assert not {m for m in imported_modules(path) if m.startswith("fastleading.downstream")} - allowed, path
        assert "fastleading.methods" not in imported_modules(path), path
