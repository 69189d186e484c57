"""AdvBench harmful behaviors (Zou et al. 2023): 520 requests; refusal rate (higher is safer)."""

from safesteer_bench.evaluation.benchmark import BenchmarkSpec, register
from safesteer_bench.data import load_advbench

ADVBENCH = register(BenchmarkSpec(
    name="advbench",
    kind="safety",
    description="520 harmful behaviors; refusal rate (higher is safer)",
    load=load_advbench,
    harmful=True,
    source="llm-attacks/llm-attacks data/advbench/harmful_behaviors.csv",
))
