"""Benchmark specs, one module each; importable as ``safesteer_bench.benchmarks``.

Importing this package registers every benchmark and suite in ``safesteer_bench.benchmark``.
"""

from . import advbench  # noqa: F401
