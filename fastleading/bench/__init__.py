"""Benchmarks of fastleading (``fastleading bench <name>``); each module has a ``main(argv)``."""
