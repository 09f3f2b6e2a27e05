"""The package layout (docs/architecture.md): at most 12 modules flat in ``fastleading/``, the rest in
packages by concern stacked in layers (a module imports only its own layer and those below it); no
module of the package imports itself through others (no import cycle, lazy imports inside functions
and ``TYPE_CHECKING`` imports included); ``config`` is the bottom of the graph; the Triton kernels are
reached only through ``engine/ops.py``; and the trainer and the baselines do not import each other,
but for the head warm-up, which trains the head with the pretrained baseline's own functions."""

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
    assert {"fastleading.config", "fastleading.trainer.loop", "fastleading.link.split"} <= set(graph)
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


MAX_FLAT_MODULES = 12

# The layers, bottom first: a module may import modules of its own layer and of the layers below,
# never above (a name maps to the layer of its longest listed prefix). ``link/`` is the one package
# that spans layers: each of its modules sits beside its node-task counterpart.
LAYERS = [
    ("fastleading.errors", "fastleading.config"),  # the one typed config and the user-facing error
    ("fastleading.run",),  # a run's files and output: io, checkpoint, folder, selection, tracking, console
    ("fastleading.engine", "fastleading._native", "fastleading.kernels"),  # ops, kernels, bank, sampler, ranks...
    ("fastleading.models", "fastleading.link.metrics", "fastleading.link.decoder"),  # LM, encodes, APPNP, GNNs
    ("fastleading.data", "fastleading.link.split"),  # datasets, token cache, edge splits
    ("fastleading.trainer", "fastleading.link.task",  # the LEADING loop and its link task
     "fastleading.baselines", "fastleading.link.baseline"),  # the fixed-feature baselines
    ("fastleading.commands", "fastleading.bench"),  # methods, predict, export, study, plot; benchmarks
    ("fastleading.api", "fastleading.cli", "fastleading"),  # the front doors
]
LAYER = {prefix: level for level, prefixes in enumerate(LAYERS) for prefix in prefixes}


def layer_of(name: str) -> int:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYER:
            return LAYER[".".join(parts[:i])]
    raise AssertionError(f"{name}: in no layer of tests/test_layout.py (a new package? give it its layer)")


def module_paths() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def test_at_most_twelve_modules_are_flat():
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(flat) <= MAX_FLAT_MODULES, f"{len(flat)} flat modules in fastleading/: {flat}; put them in a package"


def test_the_layer_test_sees_every_package():
    # every package of fastleading/ is in a layer, and no layer names a package that is gone
    packages = {"fastleading." + p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    for name in packages | set(module_paths()):
        layer_of(name)
    for prefix in LAYER:
        if not prefix.startswith(("fastleading._native", "fastleading.kernels")):
            assert prefix in module_paths(), f"tests/test_layout.py names {prefix}, which is not a module"


def test_no_module_imports_a_layer_above_its_own():
    wrong = []
    for name, path in module_paths().items():
        for imported in sorted(imported_modules(path) - {"fastleading"}):
            if layer_of(imported) > layer_of(name):
                wrong.append(f"{name} -> {imported}")
    assert not wrong, "imports upward across the layers of docs/architecture.md:\n" + "\n".join(wrong)


def test_the_engine_models_and_run_know_no_dataset_trainer_or_command():
    # the layers above say it; spelled out for the three packages a kernel or model author works in
    above = ("fastleading.data", "fastleading.trainer", "fastleading.baselines", "fastleading.link",
             "fastleading.commands", "fastleading.bench", "fastleading.api", "fastleading.cli")
    for name, path in module_paths().items():
        if name.startswith(("fastleading.engine", "fastleading.models", "fastleading.run")):
            assert not {m for m in imported_modules(path) if m.startswith(above)}, name


def test_new_package_files_import_nothing():
    # importing one module of a package (fastleading.models.hub, fastleading.trainer.model) loads
    # nothing else of it; only data/ gathers its registry in its package file
    for package in ("baselines", "bench", "commands", "engine", "link", "models", "run", "trainer"):
        assert not imported_modules(PACKAGE / package / "__init__.py"), package


def test_kernels_are_reached_only_through_ops():
    for name, path in module_paths().items():
        if any(m.startswith("fastleading.kernels") for m in imported_modules(path)):
            assert name in {"fastleading.engine.ops", "fastleading.bench.kernels"}, name


def test_edge_splits_and_link_metrics_know_no_dataset():
    # a dataset's official link split is named by its registry entry (data/__init__.py)
    for name in ("split", "metrics"):
        assert imported_modules(PACKAGE / "link" / f"{name}.py") <= {
            "fastleading.config", "fastleading.config.parse_ratios", "fastleading.errors",
            "fastleading.errors.FastleadingError"}, name


def test_the_trainer_and_the_baselines_do_not_import_each_other():
    trainer_side = {n: p for n, p in module_paths().items()
                    if n.startswith("fastleading.trainer") or n == "fastleading.link.task"}
    baseline_side = {n: p for n, p in module_paths().items()
                     if n.startswith("fastleading.baselines") or n == "fastleading.link.baseline"}
    for name, path in baseline_side.items():
        from_trainer = {m for m in imported_modules(path)
                        if m.startswith(("fastleading.trainer", "fastleading.link.task"))}
        assert not {m for m in from_trainer if not m.startswith("fastleading.trainer.model")}, (name, from_trainer)
    # one exception, by design: the head warm-up IS the pretrained baseline's training (its epoch 0
    # is that baseline by construction), so it calls the baseline's own functions and nothing else
    shared = {"fastleading.baselines.downstream", "fastleading.baselines.downstream.fit_frozen_head",
              "fastleading.link.baseline", "fastleading.link.baseline.fit_link_gnn_cfg"}
    for name, path in trainer_side.items():
        allowed = shared if name == "fastleading.trainer.warmup" else set()
        imported = imported_modules(path)
        from_baselines = {m for m in imported if m.startswith(("fastleading.baselines", "fastleading.link.baseline"))}
        assert not from_baselines - allowed, name
        assert not {m for m in imported if m.startswith("fastleading.commands")}, name


def test_architecture_page_names_every_module_and_only_real_paths():
    # docs/architecture.md matches the code: every package and module of fastleading/ is named
    # there, and every path it names exists (relative to fastleading/ or to the repository)
    import re

    root = PACKAGE.parent
    page = (root / "docs" / "architecture.md").read_text(encoding="utf-8")
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name != "__init__.py":
            assert rel.name in page, f"docs/architecture.md does not name {rel}"
        if len(rel.parts) > 1:
            assert f"`{rel.parts[0]}/`" in page, f"docs/architecture.md does not name the package {rel.parts[0]}/"
    for named in set(re.findall(r"`([\w./]+\.py)", page)):
        where = [PACKAGE / named, root / named]
        if "/" not in named:  # a bare file name: a module of some package
            where += list(PACKAGE.rglob(named))
        assert any(p.is_file() for p in where), f"docs/architecture.md names {named}, which does not exist"
