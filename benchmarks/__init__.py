"""Benchmarks of the MirPanel provider against the sandbox panel: ``python -m benchmarks [--quick]``."""
