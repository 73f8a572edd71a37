"""Benchmarks: `python -m benchmarks.train`, `python -m benchmarks.data`, `python -m benchmarks.gpu` (docs/benchmarks.md)."""
