"""The torch modules and the language model: where LM weights come from (:mod:`.hub`), the LM
encoder (:mod:`.lm`), encoding node sets with it (:mod:`.encode`, :mod:`.encode_backend`), the
implicit APPNP and the head (:mod:`.appnp`) and the downstream GNNs (:mod:`.gnn`).

Models know no dataset, trainer, run folder layout or command (``tests/test_layout.py``).
"""
