"""Benchmark specs and suites (docs/architecture.md §2, §5).

A benchmark is declared once, as data, in ``benchmarks/<name>.py`` (in the spirit of lm-eval's
task YAMLs): where its prompts come from, whether they are harmful, which judge scores it by
default, the direction of its metrics, and its generation cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from safesteer_bench.data import Prompt, seeded_subset
from safesteer_bench.errors import UserError
from safesteer_bench.registry import Registry


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    kind: str  # "safety" | "capability"
    description: str
    load: Callable[[Path | None], list[Prompt]] | None = None  # safety: the prompts
    # True: every prompt is harmful (score harmful/refusal rates); False: every prompt is benign
    # (score over-refusal); None: per prompt, from ``Prompt.label == "unsafe"`` (XSTest).
    harmful: bool | None = True
    # The judge with the best agreement on this project's own replies (reports/judges/own.md)
    default_judge: str = "clf"
    max_new_tokens: int | None = None  # None: the profile's cap
    source: str = ""
    task: str | None = None  # capability: the lm-eval task name (local YAML) it runs
    # capability: counted in the small profiles' capability score. False for tasks a ~100M model
    # cannot be above chance on (its score would only add noise to the composite) or that cannot be
    # sized to a useful interval on CPU (see profiles.Profile.capability_halfwidth).
    small_model_composite: bool = True
    origin: str | None = None  # a user benchmark's file (evaluation.user_benchmarks), re-read on resume

    def prompts(self, data_dir: Path | None, limit: int | None, seed: int = 0,
                split: str | None = "test") -> list[Prompt]:
        """A seeded, stable subset of one split (see :mod:`.splits`; ``None``: the whole set):
        the same limit, seed and split give the same prompts on every machine."""
        from safesteer_bench.data.splits import select

        if self.load is None:
            raise ValueError(f"benchmark {self.name} has no prompt loader (kind={self.kind})")
        return seeded_subset(select(self.load(data_dir), split), limit, seed)

    def is_harmful(self, prompt: Prompt) -> bool:
        return prompt.label == "unsafe" if self.harmful is None else self.harmful


BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark", "benchmarks")
SUITES: dict[str, list[str]] = {}
# Members a suite gains under some profiles: {suite: {profile: [extra benchmarks]}}.
PROFILE_EXTRAS: dict[str, dict[str, list[str]]] = {}


def register(spec: BenchmarkSpec) -> BenchmarkSpec:
    return BENCHMARKS.add(spec.name, spec)


def resolve_benchmarks(names: str, profile: str | None = None) -> list[BenchmarkSpec]:
    """Comma-separated benchmark and suite names -> specs, in order, without duplicates."""
    import safesteer_bench.benchmarks  # noqa: F401  (registers every spec)
    from safesteer_bench.registry import load_plugins

    load_plugins("safesteer_bench.benchmarks", BENCHMARKS)

    from safesteer_bench.evaluation.user_benchmarks import is_user_file, user_benchmark

    out: list[str] = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if is_user_file(name):
            name = user_benchmark(name).name  # registered for this process under its own name
        members = SUITES.get(name, [name]) + PROFILE_EXTRAS.get(name, {}).get(profile or "", [])
        for member in members:
            if member not in out:
                out.append(member)
    if not out:
        raise UserError("no benchmarks given", "pass --benchmarks, e.g. --benchmarks advbench")
    return [BENCHMARKS.get(n) for n in out]
