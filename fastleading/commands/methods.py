"""Every method of ``train.method`` behind one call.

The LM methods (``leading``, ``coupled``, ``supervised``) run the trainer
(:func:`fastleading.trainer.loop.train`); the fixed-feature baselines (``pretrained``,
``shallow``) train a GNN on features fixed beforehand
(:func:`fastleading.baselines.downstream.train_fixed_features`). Both write the same ``summary.json``.
This module is the only one that imports both, so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

from fastleading.config import Config


def train_method(cfg: Config, out_dir: str | Path, resume: bool = False, quiet: bool = False,
                 overwrite: bool = False, caller: str = "cli") -> dict:
    """Train ``cfg.train.method`` into ``out_dir``; returns the summary dict. ``resume``
    continues an LM method's run from its checkpoint (the fixed-feature baselines train in
    one go and have none); a folder that holds a run is refused unless ``resume`` or
    ``overwrite`` (its run files removed first) is given (:mod:`fastleading.run.folder`;
    ``caller``, ``cli`` or ``api``, picks how its messages name these two).
    ``quiet``: nothing but errors on the terminal, third-party output included
    (:func:`fastleading.run.console.output`). Once the run has ended, ``train.keep=best`` removes the
    checkpoint and ``train.keep_optimizer_state=false`` (the default) the optimizer moments in it
    (:func:`fastleading.run.folder.apply_keep`). The kernel backend (``train.kernels``, process state of
    :mod:`fastleading.engine.ops`) is the run's own for the call and given back after it: a run never
    inherits another's."""
    from fastleading.baselines.downstream import FIXED_FEATURE_METHODS, train_fixed_features
    from fastleading.engine import ops
    from fastleading.run import console, folder, tracking

    tracking.require(cfg.train.report_to)  # a missing tracker package fails before anything trains
    fixed = cfg.train.method in FIXED_FEATURE_METHODS
    with console.output(quiet):
        folder.prepare_run_folder(Path(out_dir), cfg, resume, overwrite, checkpoints=not fixed, caller=caller)
        with ops.use_backend(cfg.train.kernels):
            if fixed:
                summary = train_fixed_features(cfg, Path(out_dir), quiet=quiet)
            else:
                from fastleading.trainer.loop import train

                summary = train(cfg, out_dir, resume=resume, quiet=quiet)
        folder.apply_keep(Path(out_dir), cfg.train.keep, cfg.train.keep_optimizer_state, summary.get("stopped", ""))
    return summary
