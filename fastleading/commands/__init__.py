"""What the command line and the Python API run: every ``train.method`` behind one call
(:mod:`.methods`), predictions (:mod:`.predict`), exports of the fine-tuned LM (:mod:`.export`),
studies (:mod:`.study`) and plots (:mod:`.plot`).

Nothing below imports these; ``fastleading.cli`` and ``fastleading.api`` are their front ends.
"""
