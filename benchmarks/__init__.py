"""Benchmarks, run from the repository root as ``python -m benchmarks.<kind>.<name>``."""
