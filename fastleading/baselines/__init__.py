"""The fixed-feature baselines (``pretrained``, ``shallow``) and downstream GNNs on exported
embeddings (:mod:`.downstream`); their link prediction counterpart is :mod:`fastleading.link.baseline`.

Baselines import nothing of the trainer but :mod:`fastleading.trainer.model` (``tests/test_layout.py``).
"""
