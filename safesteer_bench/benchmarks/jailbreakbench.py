"""JailbreakBench JBB-Behaviors (Chao et al. 2024): 100 harmful behaviors and their 100 benign twins.

``jailbreakbench`` is the harmful half (refusal rate); ``jailbreakbench-benign`` is the benign half,
an over-refusal set (the same topics asked harmlessly).
"""

from safesteer_bench.evaluation.benchmark import BenchmarkSpec, register
from safesteer_bench.data import load_jailbreakbench_benign, load_jailbreakbench_harmful

JAILBREAKBENCH = register(BenchmarkSpec(
    name="jailbreakbench",
    kind="safety",
    description="100 JBB harmful behaviors; refusal rate (higher is safer)",
    load=load_jailbreakbench_harmful,
    harmful=True,
    source="JailbreakBench/jailbreakbench src/jailbreakbench/data/behaviors.csv",
))

JAILBREAKBENCH_BENIGN = register(BenchmarkSpec(
    name="jailbreakbench-benign",
    kind="safety",
    description="100 JBB benign behaviors (twins of the harmful ones); over-refusal rate "
                "(lower is better)",
    load=load_jailbreakbench_benign,
    harmful=False,
    source="JailbreakBench/JBB-Behaviors data/benign-behaviors.csv",
))
