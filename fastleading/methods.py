"""Every method of ``train.method`` behind one call.

The LM methods (``leading``, ``coupled``, ``supervised``) run the trainer
(:func:`fastleading.trainer.loop.train`); the fixed-feature baselines (``pretrained``,
``shallow``) train a GNN on features fixed beforehand
(:func:`fastleading.downstream.train_fixed_features`). Both write the same ``summary.json``.
This module is the only one that imports both, so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

from fastleading.config import Config


def train_method(cfg: Config, out_dir: str | Path, resume: bool = False, quiet: bool = False) -> dict:
    """Train ``cfg.train.method`` into ``out_dir``; returns the summary dict. ``resume``
    continues an LM method's run from its checkpoint (the fixed-feature baselines train in
    one go and have none). The kernel backend (``train.kernels``, process state of
    :mod:`fastleading.ops`) is the run's own for the call and given back after it: a run never
    inherits another's."""
    from fastleading import ops, tracking
    from fastleading.downstream import FIXED_FEATURE_METHODS, train_fixed_features

    tracking.require(cfg.train.report_to)  # a missing tracker package fails before anything trains
    with ops.use_backend(cfg.train.kernels):
        if cfg.train.method in FIXED_FEATURE_METHODS:
            return train_fixed_features(cfg, Path(out_dir), quiet=quiet)
        from fastleading.trainer.loop import train

        return train(cfg, out_dir, resume=resume, quiet=quiet)
