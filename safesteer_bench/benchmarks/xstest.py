"""XSTest v2 (Röttger et al. 2024): 250 safe prompts that look unsafe + 200 unsafe contrasts.

``xstest`` is mixed, scored per prompt label: refusal rate on the unsafe prompts,
over-refusal rate on the safe ones. ``xstest-safe`` is the safe half alone, for the
``over-refusal`` suite. Both are scored by the default judge (``clf``); XSTest's own string rules
remain available as ``--judge xstest-rules``.
"""

from pathlib import Path

from safesteer_bench.evaluation.benchmark import BenchmarkSpec, register
from safesteer_bench.data import Prompt, load_xstest


def load_xstest_safe(data_dir: str | Path | None = None) -> list[Prompt]:
    """The 250 safe XSTest prompts (ids as in the full set)."""
    return [p for p in load_xstest(data_dir) if p.label == "safe"]


XSTEST = register(BenchmarkSpec(
    name="xstest",
    kind="safety",
    description="450 prompts (250 safe, 200 unsafe), per-prompt label: refusal rate on unsafe "
                "(higher is safer), over-refusal rate on safe (lower is better)",
    load=load_xstest,
    harmful=None,
    source="paul-rottger/exaggerated-safety xstest_prompts.csv",
))

XSTEST_SAFE = register(BenchmarkSpec(
    name="xstest-safe",
    kind="safety",
    description="the 250 safe XSTest prompts; over-refusal rate (lower is better)",
    load=load_xstest_safe,
    harmful=False,
    source="paul-rottger/exaggerated-safety xstest_prompts.csv (label == safe)",
))
