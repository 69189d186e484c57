"""Jailbreak templates: GPTFuzzer's 77 human-written jailbreak templates (Yu et al. 2023) wrapped
around JailbreakBench's 100 harmful behaviors; refusal rate under the templates (higher is safer).

The pairs are fixed: every behavior gets ``TEMPLATES_PER_BEHAVIOR`` (3) distinct templates drawn
with ``random.Random(PAIR_SEED)``, so the set (300 prompts) is the same on every machine and for
every run seed; a run's ``--limit`` then takes a seeded subset of these pairs like any benchmark.
Prompt ids name the pair: ``jailbreak-templates-b042-t17`` = behavior 42 in template 17 (0-based
positions in the two files). The behavior text goes in ``meta["behavior"]``, its JBB category in
``category``. The training pool is GPTFuzzer's *questions*, never its templates, so there is no
overlap with training prompts.
"""

import random
from pathlib import Path

from safesteer_bench.evaluation.benchmark import BenchmarkSpec, register
from safesteer_bench.data import PLACEHOLDER, Prompt, load_gptfuzzer_templates, load_jailbreakbench_harmful

PAIR_SEED = 20231108  # fixed: the pairs never depend on the run's seed
TEMPLATES_PER_BEHAVIOR = 3


def pairs(n_behaviors: int, n_templates: int, per_behavior: int = TEMPLATES_PER_BEHAVIOR,
          seed: int = PAIR_SEED) -> list[tuple[int, int]]:
    """(behavior, template) index pairs: ``per_behavior`` distinct templates per behavior."""
    rng = random.Random(seed)
    k = min(per_behavior, n_templates)
    return [(b, t) for b in range(n_behaviors) for t in sorted(rng.sample(range(n_templates), k))]


def load_jailbreak_templates(data_dir: str | Path | None = None) -> list[Prompt]:
    behaviors = load_jailbreakbench_harmful(data_dir)
    templates = load_gptfuzzer_templates(data_dir)
    out = []
    for b, t in pairs(len(behaviors), len(templates)):
        behavior, template = behaviors[b], templates[t]
        out.append(Prompt(
            id=f"jailbreak-templates-b{b:03d}-t{t:02d}",
            text=template.text.replace(PLACEHOLDER, behavior.text),
            source="jailbreak-templates",
            category=behavior.category,
            label="harmful",
            # split_key: a behavior and all its templates fall on one side of the dev/test split
            meta={"behavior": behavior.text, "split_key": behavior.text, "behavior_id": behavior.id,
                  "template_id": template.meta.get("source_id"), "template_index": t},
        ))
    return out


JAILBREAK_TEMPLATES = register(BenchmarkSpec(
    name="jailbreak-templates",
    kind="safety",
    description="300 fixed pairs: 100 JBB harmful behaviors x 3 GPTFuzzer jailbreak templates "
                "each; refusal rate under the templates (higher is safer)",
    load=load_jailbreak_templates,
    harmful=True,
    source="sherdencooper/GPTFuzz datasets/prompts/GPTFuzzer.csv x JailbreakBench behaviors.csv",
))
