"""The training Budget shared by every training method of a run, and spent-compute accounting.

docs/architecture.md §2: the Budget is the part of a config that must be identical across training methods in
one run — the training prompts (same list, same order, same seed), optimizer steps, samples per
prompt, max new tokens, learning-rate schedule, LoRA rank/targets or full fine-tuning. Each method
also reports what it actually *spent* (:class:`Spent`): generated tokens, trained tokens, forward
tokens, wall time and peak memory. The report shows both.

``make_budget`` builds the run's Budget from a profile: the default pool is GPTFuzzer's 100
harmful questions; pool prompts whose normalised text equals an evaluation prompt (``exclude``)
are dropped and their ids recorded; the rest are put in a seeded training order; one epoch is
``ceil(n_prompts / prompts_per_step)`` optimizer steps.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from safesteer_bench.data import Prompt, load_gptfuzzer_questions, normalize_text, seeded_subset
from safesteer_bench.errors import UserError
from safesteer_bench.profiles import Profile

ADAPTERS = ("lora", "full")
ALL_LINEAR = "all-linear"  # peft's shorthand: every nn.Linear except the output head


@dataclass(frozen=True)
class Budget:
    """What every training method of one run gets, identically.

    ``prompt_ids`` / ``prompts`` are the training prompts in training order (step ``s`` uses
    ``prompts[s*prompts_per_step : (s+1)*prompts_per_step]``). ``excluded_ids`` are pool prompts
    dropped because they overlap an evaluation set. The learning rate follows ``schedule`` with a
    linear warm-up over the first ``warmup_steps`` steps; gradients are clipped to ``grad_clip``.
    """

    prompt_ids: tuple[str, ...]
    prompts: tuple[str, ...]
    seed: int
    steps: int
    prompts_per_step: int
    samples_per_prompt: int
    max_new_tokens: int
    learning_rate: float
    schedule: str = "cosine"
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    adapter: str = "lora"  # "lora" | "full"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = (ALL_LINEAR,)
    pool: str = "gptfuzzer-questions"
    excluded_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.prompt_ids) != len(self.prompts):
            raise ValueError("prompt_ids and prompts differ in length")
        if self.adapter not in ADAPTERS:
            raise UserError(f"unknown adapter '{self.adapter}'", "use --adapter lora or --adapter full")
        if self.schedule != "cosine":
            raise UserError(f"unknown schedule '{self.schedule}'", "only 'cosine' is implemented")
        if self.steps < 1 or self.prompts_per_step < 1 or self.samples_per_prompt < 1:
            raise UserError("the training budget is empty (no prompts, steps or samples)",
                            "check the profile's train_prompts / prompts_per_step / samples_per_prompt")

    @property
    def warmup_steps(self) -> int:
        return math.ceil(self.warmup_ratio * self.steps)

    @property
    def peft_targets(self) -> str | list[str]:
        """``target_modules`` for peft's LoraConfig."""
        return ALL_LINEAR if self.lora_targets == (ALL_LINEAR,) else list(self.lora_targets)

    def step_prompts(self, step: int) -> list[str]:
        """The prompts of optimizer step ``step`` (0-based); the last step may hold fewer."""
        k = self.prompts_per_step
        return list(self.prompts[step * k:(step + 1) * k])

    def step_prompt_ids(self, step: int) -> list[str]:
        k = self.prompts_per_step
        return list(self.prompt_ids[step * k:(step + 1) * k])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["prompt_ids"] = list(self.prompt_ids)
        data["prompts"] = list(self.prompts)
        data["lora_targets"] = list(self.lora_targets)
        data["excluded_ids"] = list(self.excluded_ids)
        data["warmup_steps"] = self.warmup_steps
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Budget":
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("prompt_ids", "prompts", "lora_targets", "excluded_ids"):
            if name in data:
                data[name] = tuple(data[name])
        return cls(**data)

    def key(self) -> str:
        """A short hash of everything above: two methods trained under one key got the same budget."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        extra = f", {len(self.excluded_ids)} excluded (eval overlap)" if self.excluded_ids else ""
        adapter = (f"LoRA r={self.lora_rank} alpha={self.lora_alpha} on {'/'.join(self.lora_targets)}"
                   if self.adapter == "lora" else "full fine-tuning")
        return (f"{len(self.prompts)} prompts{extra}, {self.steps} steps x {self.prompts_per_step} prompts x "
                f"{self.samples_per_prompt} samples x {self.max_new_tokens} tokens, lr {self.learning_rate:g} "
                f"{self.schedule} (warm-up {self.warmup_steps}), clip {self.grad_clip}, {adapter}")


def make_budget(profile: Profile, data_dir: str | Path | None = None, seed: int = 0, adapter: str = "lora",
                exclude: Sequence[Prompt] = (), pool: Sequence[Prompt] | None = None,
                **overrides: Any) -> Budget:
    """The run's Budget from ``profile``.

    ``pool`` defaults to GPTFuzzer's 100 harmful questions. Pool prompts whose normalised text
    equals any prompt of ``exclude`` (the run's evaluation prompts) are dropped and recorded in
    ``excluded_ids``. ``profile.train_prompts`` of the rest are drawn with a seeded subset (all
    when None) and put in a seeded training order. ``overrides`` replace any Budget field
    (e.g. ``learning_rate``, ``lora_alpha``).
    """
    if adapter not in ADAPTERS:
        raise UserError(f"unknown adapter '{adapter}'", "use --adapter lora or --adapter full")
    pool = list(pool) if pool is not None else load_gptfuzzer_questions(data_dir)
    banned = {normalize_text(p.text) for p in exclude}
    banned.discard("")
    kept = [p for p in pool if normalize_text(p.text) not in banned]
    dropped = tuple(p.id for p in pool if normalize_text(p.text) in banned)
    chosen = seeded_subset(kept, profile.train_prompts, seed)
    order = list(range(len(chosen)))
    random.Random(f"budget-order-{seed}").shuffle(order)
    chosen = [chosen[i] for i in order]
    if not chosen:
        raise UserError("no training prompts left after excluding evaluation overlap",
                        "use a different training pool or fewer evaluation sets")
    steps = math.ceil(len(chosen) / profile.prompts_per_step)
    fields: dict[str, Any] = dict(
        prompt_ids=tuple(p.id for p in chosen), prompts=tuple(p.text for p in chosen), seed=seed,
        steps=steps, prompts_per_step=profile.prompts_per_step,
        samples_per_prompt=profile.samples_per_prompt, max_new_tokens=profile.train_max_new_tokens,
        learning_rate=profile.learning_rate, adapter=adapter, lora_rank=profile.lora_rank,
        lora_alpha=2 * profile.lora_rank, pool=chosen[0].source if chosen else "gptfuzzer-questions",
        excluded_ids=dropped,
    )
    fields.update(overrides)
    return Budget(**fields)


# --------------------------------------------------------------------------------------------
# Spent compute
# --------------------------------------------------------------------------------------------


@dataclass
class Spent:
    """What one method actually spent while training.

    ``generated_tokens``: tokens sampled (on-policy rollouts, SFT targets, token-set samples).
    ``trained_tokens``: completion tokens that carry a loss (forward + backward through the
    student). ``forward_tokens``: every token position through any forward pass (student with grad,
    teacher without, prompts included). ``peak_memory_bytes``: CUDA ``max_memory_allocated`` on a
    GPU; on CPU the process's peak resident set size (``peak_memory_kind`` says which), with
    ``start_memory_bytes`` the same measure when tracking began, so the difference is what the
    training added.
    """

    generated_tokens: int = 0
    trained_tokens: int = 0
    forward_tokens: int = 0
    steps: int = 0
    wall_seconds: float = 0.0
    peak_memory_bytes: int = 0
    start_memory_bytes: int = 0
    peak_memory_kind: str = ""
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase (sample/teacher/...)

    def add_time(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phases"] = {k: round(v, 3) for k, v in self.phases.items()}
        data["wall_seconds"] = round(self.wall_seconds, 3)
        data["peak_memory_mb"] = round(self.peak_memory_bytes / 2**20, 1)
        data["added_memory_mb"] = round((self.peak_memory_bytes - self.start_memory_bytes) / 2**20, 1)
        return data

    def summary(self) -> str:
        return (f"{self.steps} steps, {self.generated_tokens} generated / {self.trained_tokens} trained tokens, "
                f"{self.wall_seconds:.1f}s, peak {self.peak_memory_kind} "
                f"{self.peak_memory_bytes / 2**20:.0f} MiB (+{(self.peak_memory_bytes - self.start_memory_bytes) / 2**20:.0f})")


def _rss_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def _rss_now_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return _rss_peak_bytes()


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0), so the peak is this phase's own."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class SpentTracker:
    """Context manager filling a :class:`Spent` with wall time and peak memory.

    ``with SpentTracker(device) as spent: ...; spent.generated_tokens += n``. On CUDA the peak is
    ``torch.cuda.max_memory_allocated`` (reset on entry). On CPU it is ``getrusage``'s peak RSS;
    on Linux the high-water mark is reset on entry (``/proc/self/clear_refs``) so an earlier,
    larger phase of the process does not mask this one — where that is not possible the figure
    is the process-lifetime peak (``peak_memory_kind`` then says ``cpu_rss_peak_process``).
    Entering again with the same ``spent`` (several phases of one method) keeps the first start
    figure and the largest peak.
    """

    def __init__(self, device: Any = "cpu", spent: Spent | None = None) -> None:
        self.device = str(device)
        self.spent = spent or Spent()
        self._start = 0.0

    def __enter__(self) -> Spent:
        self._start = time.perf_counter()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.spent.start_memory_bytes = self.spent.start_memory_bytes or torch.cuda.memory_allocated()
            self.spent.peak_memory_kind = "cuda_max_allocated"
        else:
            reset = _reset_rss_peak()
            self.spent.start_memory_bytes = self.spent.start_memory_bytes or _rss_now_bytes()
            self.spent.peak_memory_kind = "cpu_rss_peak" if reset else "cpu_rss_peak_process"
        return self.spent

    def __exit__(self, *exc: Any) -> None:
        self.spent.wall_seconds += time.perf_counter() - self._start
        self.spent.peak_memory_bytes = max(self.spent.peak_memory_bytes, self.peak_now())

    def peak_now(self) -> int:
        if self.device.startswith("cuda"):
            import torch

            return int(torch.cuda.max_memory_allocated())
        return _rss_peak_bytes()


class Timer:
    """``with Timer(spent, "teacher"): ...`` adds the block's seconds to ``spent.phases``."""

    def __init__(self, spent: Spent, phase: str) -> None:
        self.spent, self.phase, self._start = spent, phase, 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.spent.add_time(self.phase, time.perf_counter() - self._start)


def iter_steps(budget: Budget) -> Iterator[tuple[int, list[str]]]:
    """``(step, prompts)`` for one epoch in training order."""
    for step in range(budget.steps):
        yield step, budget.step_prompts(step)
