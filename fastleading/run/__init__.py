"""A run's files and output: atomic writes (:mod:`.io`), checkpoint files (:mod:`.checkpoint`), the
run folder and its rules (:mod:`.folder`), which evaluation counts as the best (:mod:`.selection`),
experiment tracking (:mod:`.tracking`) and the terminal (:mod:`.console`).

The bottom of the package above ``config`` and ``errors``: it imports nothing else of ours.
"""
