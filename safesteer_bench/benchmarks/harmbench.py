"""HarmBench text test behaviors (Mazeika et al. 2024): 240 = 159 standard + 81 contextual.

The 80 copyright behaviors are excluded (they need HarmBench's hash-based judge). Contextual
behaviors are laid out as HarmBench does: context, a ``---`` rule, then the request.
"""

from safesteer_bench.evaluation.benchmark import BenchmarkSpec, register
from safesteer_bench.data import load_harmbench

HARMBENCH = register(BenchmarkSpec(
    name="harmbench",
    kind="safety",
    description="240 HarmBench test behaviors (standard + contextual, no copyright); "
                "refusal rate (higher is safer)",
    load=load_harmbench,
    harmful=True,
    source="centerforaisafety/HarmBench data/behavior_datasets/harmbench_behaviors_text_test.csv",
))
