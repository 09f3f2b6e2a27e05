"""The LEADING trainer, one concern per module (see docs/architecture.md for the data path of a step).

- :mod:`.model`     ``NodeClassifier``: LM encoder, head and implicit APPNP.
- :mod:`.steps`     ``Run`` (what a step touches) and the steps: ``leading_step`` (Algorithm 1),
                    ``coupled_step``, ``supervised_step``.
- :mod:`.optim`     AdamW with two learning rates, schedule, backward with loss scaling and the
                    optimizer step that skips non-finite steps on the device.
- :mod:`.batches`   which targets and which refresh nodes each step takes.
- :mod:`.evaluate`  full-graph evaluation.
- :mod:`.state`     the loop's progress, checkpoints and resume.
- :mod:`.metrics`   ``metrics.jsonl`` and ``summary.json``.
- :mod:`.loop`      ``build_trainer`` and ``train``: the loop, top to bottom.

This package file imports nothing, so that ``fastleading.trainer.model`` (needed to load a
trained model) can be imported without the loop.
"""
