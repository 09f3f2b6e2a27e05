"""What fastleading, and the libraries it calls, print on the terminal.

- **Progress bars only on a terminal.** A bar is drawn when stderr is a terminal (or a notebook)
  and nothing asked for quiet (:func:`bars_enabled`, :func:`bar`). Redirected to a file, a log
  holds no carriage returns or cursor movements: libraries' bars are switched off and a training
  run prints plain lines instead (:class:`fastleading.trainer.display.StepDisplay`).
- **Quiet calls.** :func:`output` wraps a command (the CLI's ``--quiet``) or a Python call
  (``quiet=True`` of :func:`fastleading.commands.methods.train_method` and the exports): inside it with
  ``quiet`` fastleading prints no bars and no notices, transformers and huggingface_hub no bars
  and no log records below errors, DeepSpeed no log records below errors, and Python warnings
  are ignored. What it changed is given back when the call returns.
- **Libraries' deprecation notices** (``FutureWarning`` / ``DeprecationWarning`` raised inside
  transformers, torch, peft, DeepSpeed...) are not shown inside :func:`output`: they address
  fastleading's own calls, not anything a user can change.
- **DeepSpeed's CPU notice** (``[WARNING] ... Setting accelerator to CPU``, printed on stdout
  whenever transformers or accelerate import DeepSpeed on a machine without a GPU, e.g. in
  ``save_pretrained``) is dropped always: fastleading picks its device itself.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# libraries whose deprecation notices address fastleading's code, which a user cannot act on
THIRD_PARTY = r"(transformers|torch|torch_geometric|peft|deepspeed|accelerate|huggingface_hub|sentence_transformers)\b"
DEEPSPEED_LOGGER = "DeepSpeed"
DEEPSPEED_CPU_NOTICE = "Setting accelerator to CPU"

_quiet = False  # inside an output(quiet=True) call


def is_quiet() -> bool:
    return _quiet


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def bars_enabled(quiet: bool = False) -> bool:
    """Whether a progress bar may be drawn: not quiet (``quiet`` or an enclosing quiet
    :func:`output`) and stderr a terminal (or a notebook, where bars are widgets)."""
    if quiet or _quiet:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty()) or _in_notebook()


def bar(iterable=None, *, quiet: bool = False, **kwargs):
    """A ``tqdm.auto`` bar, disabled unless :func:`bars_enabled` (``kwargs`` go to tqdm)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not bars_enabled(quiet), **kwargs)


def notice(message: str) -> None:
    """One informational line on stderr (not inside a quiet call)."""
    if not _quiet:
        print(f"fastleading: {message}", file=sys.stderr, flush=True)


class _DeepSpeedFilter(logging.Filter):
    """On DeepSpeed's logger: drops its CPU-fallback notice always, and every record below
    ERROR inside a quiet call. Installed before DeepSpeed creates the logger (it keeps the
    filters of the logger object it configures)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _quiet and record.levelno < logging.ERROR:
            return False
        return DEEPSPEED_CPU_NOTICE not in record.getMessage()


def install_filters() -> None:
    """Put :class:`_DeepSpeedFilter` on DeepSpeed's logger (once; no DeepSpeed import)."""
    logger = logging.getLogger(DEEPSPEED_LOGGER)
    if not any(isinstance(f, _DeepSpeedFilter) for f in logger.filters):
        logger.addFilter(_DeepSpeedFilter())


@contextmanager
def _transformers_output(bars: bool, quiet: bool) -> Iterator[None]:
    """transformers' (and huggingface_hub's) bars on or off and, quiet, its logs at ERROR; the
    previous state is given back."""
    from transformers.utils import logging as hf_logging

    had_bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    if not bars:
        hf_logging.disable_progress_bar()
    if quiet:
        hf_logging.set_verbosity(hf_logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if had_bars and not bars:
            hf_logging.enable_progress_bar()


@contextmanager
def output(quiet: bool = False) -> Iterator[None]:
    """Run a command or call under the rules of the module docstring; ``quiet`` silences all
    but errors. Nested calls stay quiet when an outer one is."""
    global _quiet
    install_filters()
    previous = _quiet
    _quiet = previous or quiet
    try:
        with _transformers_output(bars_enabled(), _quiet), warnings.catch_warnings():
            for category in (FutureWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category, module=THIRD_PARTY)
            if _quiet:
                warnings.simplefilter("ignore")
            yield
    finally:
        _quiet = previous
