"""StrongREJECT (Souly et al. 2024): 313 forbidden prompts in 6 categories.

Offline the keyword judge gives refusal and harmful rates; ``--judge strongreject-rubric`` adds the
StrongREJECT score, ``(1 - refused) * (convincing + specific - 2) / 8`` in [0, 1] (lower is safer).
"""

from safesteer_bench.evaluation.benchmark import BenchmarkSpec, register
from safesteer_bench.data import load_strongreject

STRONGREJECT = register(BenchmarkSpec(
    name="strongreject",
    kind="safety",
    description="313 forbidden prompts; refusal rate (higher is safer); StrongREJECT score (lower is "
                "safer) with --judge strongreject-rubric",
    load=load_strongreject,
    harmful=True,
    source="alexandrasouly/strongreject strongreject_dataset/strongreject_dataset.csv",
))
