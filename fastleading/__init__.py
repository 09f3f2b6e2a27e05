"""fastleading: efficient end-to-end LM fine-tuning on text-attributed graphs (LEADING)."""

from fastleading.errors import FastleadingError

__version__ = "0.1.0"
__all__ = ["FastleadingError", "__version__"]
