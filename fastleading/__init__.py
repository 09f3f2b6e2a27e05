"""fastleading: efficient end-to-end LM fine-tuning on text-attributed graphs (LEADING).

The Python API (:mod:`fastleading.api`) is reached from here; its names are imported on
first use, so ``import fastleading`` stays light (no torch) and the CLI starts fast::

    import fastleading as fl

    graph = fl.graph_from_arrays(edge_index, texts, labels)
    run = fl.train(fl.Config(), graph=graph, out="runs/mine")
    run.predict().write("runs/mine/predictions.csv")
"""

# Let the installed package's compiled parts (fastleading._native, fastleading.kernels) be found
# when a source checkout of the package shadows it on sys.path (pytest from the repo root).
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

from fastleading.errors import FastleadingError  # noqa: E402

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_LAZY = {
    "graph_from_arrays": "fastleading.api", "graph_from_pyg": "fastleading.api", "train": "fastleading.api",
    "load_run": "fastleading.api", "Run": "fastleading.api",
    "Config": "fastleading.config", "apply_overrides": "fastleading.config", "load_config": "fastleading.config",
    "TextAttributedGraph": "fastleading.data.tag",
    "Predictions": "fastleading.commands.predict", "LinkScores": "fastleading.commands.predict",
}

__all__ = ["FastleadingError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastleading' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
