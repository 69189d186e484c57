"""Suites of safety benchmarks (capability suites live in ``capability.py``).

``safety-7``      the seven safety benchmarks of docs/architecture.md §5 (harmful prompts; XSTest mixed)
``over-refusal``  benign prompts only: XSTest's safe half, JBB benign, held-out Alpaca
"""

from safesteer_bench.evaluation.benchmark import SUITES

from . import (alpaca_heldout, advbench, harmbench, jailbreak_templates,  # noqa: F401
               jailbreakbench, maliciousinstruct, strongreject, xstest)

SUITES["safety-7"] = ["advbench", "harmbench", "strongreject", "jailbreakbench", "maliciousinstruct",
                      "xstest", "jailbreak-templates"]
SUITES["over-refusal"] = ["xstest-safe", "jailbreakbench-benign", "alpaca-heldout"]
