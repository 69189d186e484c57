"""Benchmark specs, one module each; importable as ``safesteer_bench.benchmarks``.

Importing this package registers every benchmark and suite in ``safesteer_bench.evaluation.benchmark``.
"""

from . import advbench  # noqa: F401
from . import harmbench, strongreject, jailbreakbench, maliciousinstruct, xstest  # noqa: F401
from . import jailbreak_templates, alpaca_heldout, suites  # noqa: F401
from safesteer_bench.evaluation import model_judges  # noqa: F401,E402  (registers the model judges)
from . import capability  # noqa: F401
