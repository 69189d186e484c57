"""Run profiles: ``smoke`` (CI), ``demo`` (``make demo``), ``quick`` (CPU reference), ``paper`` (the defaults).

Profiles shrink counts — prompts per benchmark, tokens, training steps — and never change an
algorithm. Anything a method needs to size itself reads it from here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from safesteer_bench.errors import unknown_name


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    eval_limit: int | None  # prompts per benchmark (seeded stable subset); None = all
    max_new_tokens: int  # safety benchmarks' generation cap
    batch_size: int
    # Training budget (shared by every training method of a run).
    train_prompts: int | None  # None = the whole pool (GPTFuzzer's 100 questions)
    samples_per_prompt: int
    train_max_new_tokens: int
    prompts_per_step: int
    learning_rate: float
    lora_rank: int
    # Direction search and safety-token selection.
    direction_prompts: int  # harmful and harmless each (train split)
    direction_val_prompts: int
    token_set_prompts: int
    token_set_samples: int
    # Capability suites (lm-eval ``limit`` per task). ``quick`` keeps 50 / 10: at 100 / 20 its
    # capability stage alone took 93 of a 3-hour reference run (reports/history/smollm2-135m-quick-v1/RUN.md)
    # and GSM8K / HumanEval scored 0 for every method at 135M.
    capability_limit: int | None
    # Generation tasks (GSM8K, HumanEval, IFEval) cost ~100x a multiple-choice document on CPU
    # (5-shot prompts, up to 256 new tokens, and 4x that under alignbeam): they get a lower cap.
    capability_generate_limit: int | None = None  # None: same as capability_limit
    # Direction search cost control: screen every k-th layer, then refine around the best.
    direction_layer_stride: int = 1
    # Small-model profile: the capability score leaves out tasks marked small_model_composite=False.
    small: bool = True
    # Multiple-choice tasks that count in the capability score run enough documents for a 95 %
    # interval of at most +-this on any accuracy (n = (1.96 * 0.5 / h)^2, capped at the task's size),
    # instead of capability_limit. None: capability_limit for every task (smoke, demo: CI-sized).
    capability_halfwidth: float | None = None

    def sized_documents(self) -> int | None:
        """Documents for a worst-case (p = 0.5) 95 % half-width of ``capability_halfwidth``
        (lm-eval takes the whole task when it has fewer)."""
        if self.capability_halfwidth is None:
            return None
        return math.ceil((1.959964 * 0.5 / self.capability_halfwidth) ** 2)

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile("smoke", "CI and tests: minutes per method on 2 CPU cores", eval_limit=10,
                max_new_tokens=32, batch_size=16, train_prompts=8, samples_per_prompt=2,
                train_max_new_tokens=24, prompts_per_step=4, learning_rate=2e-4, lora_rank=8,
                direction_prompts=16, direction_val_prompts=8, token_set_prompts=4,
                token_set_samples=4, capability_limit=20, direction_layer_stride=4),
        Profile("demo", "make demo: six methods in ~15 min on 2 CPU cores; 8 training steps at a higher lr",
                eval_limit=20, max_new_tokens=32, batch_size=16, train_prompts=32, samples_per_prompt=4,
                train_max_new_tokens=24, prompts_per_step=4, learning_rate=1e-3, lora_rank=8,
                direction_prompts=16, direction_val_prompts=8, token_set_prompts=8,
                token_set_samples=8, capability_limit=20, direction_layer_stride=4),
        Profile("quick", "CPU reference on SmolLM2: all 100 training prompts, fewer samples/tokens",
                eval_limit=50, max_new_tokens=64, batch_size=64, train_prompts=None,
                samples_per_prompt=4, train_max_new_tokens=40, prompts_per_step=4,
                learning_rate=2e-4, lora_rank=16, direction_prompts=64, direction_val_prompts=16,
                token_set_prompts=16, token_set_samples=8, capability_limit=50,
                capability_generate_limit=10, direction_layer_stride=2, capability_halfwidth=0.03),
        Profile("paper", "the original design's defaults (GPU)", eval_limit=None, max_new_tokens=256,
                batch_size=32, train_prompts=None, samples_per_prompt=8, train_max_new_tokens=128,
                prompts_per_step=8, learning_rate=1e-4, lora_rank=16, direction_prompts=128,
                direction_val_prompts=32, token_set_prompts=32, token_set_samples=8,
                capability_limit=None, small=False),
    ]
}


ENV_PROFILE = "SAFESTEER_BENCH_PROFILE"  # the default profile of this machine or test session
LARGE_FOR_CPU = 1_000_000_000  # parameters above which a CPU run defaults to smoke


def default_profile(device: str, params: int | None) -> tuple[str, str]:
    """(profile, why) when ``--profile`` is not given: $SAFESTEER_BENCH_PROFILE, else paper on a GPU,
    quick on CPU, and smoke for a model over 1B parameters on CPU (quick would take days)."""
    import os

    if os.environ.get(ENV_PROFILE):
        return os.environ[ENV_PROFILE], f"from ${ENV_PROFILE}"
    if device.startswith("cuda"):
        return "paper", "the default on a GPU"
    if params is not None and params > LARGE_FOR_CPU:
        return "smoke", (f"the default for a {params / 1e9:.1f}B model on CPU: quick would take days")
    return "quick", "the default on CPU"


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise unknown_name("profile", name, list(PROFILES), "run --help")
    return PROFILES[name]
