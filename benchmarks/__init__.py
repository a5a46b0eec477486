"""Benchmark scripts (``python benchmarks/quality.py``, ``python benchmarks/speed.py``), importable for
tests."""
