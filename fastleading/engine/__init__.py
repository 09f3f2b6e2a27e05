"""The machinery of a step, with no model in it: graph operators and their kernels (:mod:`.ops`),
the CSR and the neighbour sampler (:mod:`.graph`, :mod:`.sampler`), the memory bank (:mod:`.bank`),
host-to-device copies (:mod:`.transfer`), precision (:mod:`.precision`), CUDA-stream overlap
(:mod:`.overlap`), ranks and collectives (:mod:`.distributed`), DeepSpeed ZeRO (:mod:`.zero`) and
per-phase timing (:mod:`.profiling`).

It imports nothing above it: no model, dataset, trainer or command (``tests/test_layout.py``).
"""
