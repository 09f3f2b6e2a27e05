"""GPU-suite dry run only: make this Python look like the GPU machine's, which lacks some packages.

Put this folder on PYTHONPATH and list top-level module names in FASTLEADING_SUITE_BLOCK
(comma-separated). Such a module (and its installed distribution, for ``importlib.metadata``)
is then found only under the folders of FASTLEADING_SUITE_ALLOW (os.pathsep-separated): the
``--target`` folder the suite installs the carried wheels into. Anywhere else (this machine's
virtual environment) it is "not installed": ``importlib.util.find_spec`` returns None and
``import`` raises ModuleNotFoundError, as on the GPU machine.
"""

import os
import sys
from importlib.machinery import PathFinder

_BLOCK = {n.strip() for n in os.environ.get("FASTLEADING_SUITE_BLOCK", "").split(",") if n.strip()}
_ALLOW = [os.path.realpath(p) for p in os.environ.get("FASTLEADING_SUITE_ALLOW", "").split(os.pathsep) if p]


def _allowed(location) -> bool:
    if not location:
        return False
    real = os.path.realpath(str(location))
    return any(real == a or real.startswith(a + os.sep) for a in _ALLOW)


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


if _BLOCK:
    # PathFinder.find_spec is a classmethod and find_distributions a staticmethod (CPython 3.11,
    # 3.12); each replacement keeps its original's kind, since callers (pytest's assertion
    # rewriter among them) store and call the bound attribute.
    def _original(name):
        raw = PathFinder.__dict__[name]
        if isinstance(raw, classmethod):
            return raw.__func__, classmethod
        if isinstance(raw, staticmethod):
            return raw.__func__, staticmethod
        raise RuntimeError(f"GPU-suite shim: unexpected PathFinder.{name}: {raw!r}")

    _find_spec, _spec_kind = _original("find_spec")
    _find_distributions, _dist_kind = _original("find_distributions")

    def find_spec(*args, **kwargs):
        spec = _find_spec(*args, **kwargs)
        fullname = args[1] if _spec_kind is classmethod else args[0]
        if spec is not None and "." not in fullname and fullname in _BLOCK:
            where = spec.origin if spec.origin not in (None, "namespace") else \
                next(iter(spec.submodule_search_locations or []), None)
            if not _allowed(where):
                return None
        return spec

    def find_distributions(*args, **kwargs):
        for dist in _find_distributions(*args, **kwargs):
            name = dist.metadata["Name"] or ""
            if _norm(name) in _BLOCK and not _allowed(getattr(dist, "_path", None)):
                continue
            yield dist

    PathFinder.find_spec = _spec_kind(find_spec)
    PathFinder.find_distributions = _dist_kind(find_distributions)
    # anything imported before this ran (nothing of the blocked set, normally) is left as it is
    for _name in list(sys.modules):
        if _name.partition(".")[0] in _BLOCK:
            raise RuntimeError(f"GPU-suite shim: {_name} was imported before sitecustomize")
