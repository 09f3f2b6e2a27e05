"""Link prediction (``train.task=link``), all of it:

- :mod:`.split`     edge splits (seeded percentages or official), evaluation negatives, the training graph;
- :mod:`.metrics`   AUC, OGB ranks, MRR, Hits@K, the summary fields;
- :mod:`.decoder`   link decoders (dot, MLP), chunked pair scoring, a model's valid / test metrics;
- :mod:`.task`      the trainer's link task: ``LinkTask`` (the loop's hooks) and ``LinkRun`` (the step);
- :mod:`.baseline`  link GNNs on fixed features (the ``pretrained`` / ``shallow`` link baselines).

Each module sits at the level of its node-task counterpart: ``split`` beside the datasets (they
import it), ``metrics`` and ``decoder`` beside the models, ``task`` in the trainer, ``baseline``
with the baselines (``tests/test_layout.py``).
"""
