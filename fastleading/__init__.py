"""fastleading: efficient end-to-end LM fine-tuning on text-attributed graphs (LEADING)."""

# Let the installed package's compiled parts (fastleading._native, fastleading.kernels) be found
# when a source checkout of the package shadows it on sys.path (pytest from the repo root).
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

from fastleading.errors import FastleadingError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["FastleadingError", "__version__"]
