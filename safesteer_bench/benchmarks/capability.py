"""Capability benchmarks (docs/architecture.md §5): lm-eval tasks run on the Policy by
``safesteer_bench.evaluation.capability.run_capability``, reading local files so they work offline.

Each ``task`` is a local lm-eval task (``safesteer_bench/evaluation/lmeval_tasks/ssb_*.yaml``) that mirrors
lm-eval's own task of the same name without the ``ssb_`` prefix (same prompts, shots, filters and
metrics). Every metric is higher-is-better. Suite ``capability-5`` is the original design's default; the small
profiles add ARC-Easy, where a 135M model is above chance: use :func:`capability_suite`.

In the small profiles (smoke, demo, quick) the capability *score* leaves out MMLU (a 135M model
answers "A": 0.298 for every method, at chance), ARC-Challenge (at chance), GSM8K and HumanEval
(0 for every method), IFEval, and TruthfulQA-MC2 (too costly to size on CPU, see below): they
still run and are reported per task, but they would only add noise to the composite. ``quick``
sizes the task that counts (ARC-Easy) for a 95 % interval of at most +-3 points (1,068
documents, ~4 min per policy on 2 cores; ``Profile.capability_halfwidth``); smoke and demo stay
CI-sized.
"""

from safesteer_bench.evaluation.benchmark import PROFILE_EXTRAS, SUITES, BenchmarkSpec, register

_LM_EVAL = "lm-eval"  # scored by lm-eval's own metrics, no judge

MMLU = register(BenchmarkSpec(
    name="mmlu", kind="capability", small_model_composite=False,
    task="ssb_mmlu", harmful=False, default_judge=_LM_EVAL,
    description="MMLU, 57 subjects, lm-eval `mmlu` format (0-shot, A-D log-likelihood); "
                "accuracy weighted by subject size (higher is better)",
    source="hendrycks/test via the local mmlu/test + mmlu/dev CSVs",
))
# ARC-Challenge is at chance at 135M (base SmolLM2 on 1,068 test questions: acc 0.248, acc_norm
# 0.265 [0.239, 0.292] against 0.25; seen on test questions, base model only, no method compared),
# so the small profiles' score leaves it out too.
ARC_CHALLENGE = register(BenchmarkSpec(
    name="arc-challenge", kind="capability", task="ssb_arc_challenge", harmful=False,
    small_model_composite=False,
    default_judge=_LM_EVAL,
    description="ARC-Challenge test (1172), lm-eval `arc_challenge` (0-shot); acc, acc_norm "
                "(higher is better)",
    source="allenai ARC-V1-Feb2018 ARC-Challenge-Test.jsonl",
))
ARC_EASY = register(BenchmarkSpec(
    name="arc-easy", kind="capability", task="ssb_arc_easy", harmful=False,
    default_judge=_LM_EVAL,
    description="ARC-Easy test (2376), lm-eval `arc_easy` (0-shot); acc, acc_norm "
                "(higher is better)",
    source="allenai ARC-V1-Feb2018 ARC-Easy-Test.jsonl",
))
GSM8K = register(BenchmarkSpec(
    name="gsm8k", kind="capability", small_model_composite=False,
    task="ssb_gsm8k", harmful=False, default_judge=_LM_EVAL,
    description="GSM8K test (1319), lm-eval `gsm8k` (5-shot, greedy; exemplars drawn from the "
                "test split minus the question itself); exact match, strict and flexible "
                "(higher is better)",
    source="openai/grade-school-math test.jsonl",
))
# TruthfulQA-MC2 stays out of the small profiles' score: its 6-shot primer makes every request
# ~500 tokens, so the whole task (needed for a worst-case +-3.4-point interval) took ~35 min per
# policy on 2 CPU cores (6,204 requests at ~2.9/s; ARC-Easy's 2,376 documents took 8 min).
TRUTHFULQA_MC2 = register(BenchmarkSpec(
    name="truthfulqa-mc2", kind="capability", task="ssb_truthfulqa_mc2", harmful=False,
    small_model_composite=False,
    default_judge=_LM_EVAL,
    description="TruthfulQA MC2 (817), lm-eval `truthfulqa_mc2` (6-shot QA primer); probability "
                "mass on true answers (higher is better)",
    source="sylinrl/TruthfulQA data/v1/mc_task.json",
))
HUMANEVAL = register(BenchmarkSpec(
    name="humaneval", kind="capability", small_model_composite=False,
    task="ssb_humaneval", harmful=False,
    default_judge=_LM_EVAL,
    description="HumanEval (164), lm-eval `humaneval` (0-shot, greedy); pass@1 (higher is "
                "better). Executes model-written code: skipped unless --allow-code-execution",
    source="openai/human-eval data/HumanEval.jsonl.gz",
))
IFEVAL = register(BenchmarkSpec(
    name="ifeval", kind="capability", small_model_composite=False,
    task="ssb_ifeval", harmful=False, default_judge=_LM_EVAL,
    description="IFEval (541), lm-eval `ifeval`; prompt/instruction-level strict/loose accuracy "
                "(higher is better). Needs langdetect, immutabledict and nltk punkt_tab: "
                "skipped with the reason when they are missing",
    source="google-research instruction_following_eval input_data.jsonl",
))

SUITES["capability-5"] = ["mmlu", "arc-challenge", "gsm8k", "truthfulqa-mc2", "humaneval"]

SMALL_PROFILES = ("smoke", "demo", "quick")
PROFILE_EXTRAS["capability-5"] = {profile: ["arc-easy"] for profile in SMALL_PROFILES}


def capability_suite(profile_name: str) -> list[str]:
    """``capability-5`` for ``profile_name``; the small profiles (smoke, demo, quick) add ARC-Easy."""
    names = list(SUITES["capability-5"])
    if profile_name in SMALL_PROFILES:
        names.append("arc-easy")
    return names
