"""MaliciousInstruct (Huang et al. 2023): 100 malicious instructions in 10 intents."""

from safesteer_bench.evaluation.benchmark import BenchmarkSpec, register
from safesteer_bench.data import load_maliciousinstruct

MALICIOUSINSTRUCT = register(BenchmarkSpec(
    name="maliciousinstruct",
    kind="safety",
    description="100 malicious instructions; refusal rate (higher is safer)",
    load=load_maliciousinstruct,
    harmful=True,
    source="Princeton-SysML/Jailbreak_LLM data/MaliciousInstruct.txt",
))
