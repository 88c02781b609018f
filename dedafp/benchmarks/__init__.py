"""Benchmarks of dedafp's components (each module runnable with ``python -m dedafp.benchmarks.<name>``)."""
