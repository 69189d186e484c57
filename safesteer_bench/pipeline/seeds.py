"""Several seeds of one comparison (``run --seeds 0,1,2``): one sub-run per seed, combined.

Layout: ``<run>/seed-<s>/`` is an ordinary run (resumable, checkable on its own) whose method
seed is ``s``; every sub-run scores the **same** evaluation prompts (the first seed picks them),
so the seeds differ only in what a seed changes: training prompts and sampling, the safety-token
vote, the direction's prompt subsets. Methods whose outputs do not depend on a seed (``seeded =
False``: the base model, greedy alignbeam) run in the first sub-run only.

``<run>/results.json`` has the schema of a single run's, with every metric replaced by its mean
over seeds and an interval that holds both sources of error:

- within a seed, the prompt-sampling error of that seed's own interval (the prompts are the
  same in every seed, so this error is shared, not averaged away), and
- between seeds, ``t(k-1) · sd / √k`` for ``k`` seeds;

combined in quadrature on each side. ``stderr`` is √(se_within² + sd²/k), so every consumer of
intervals (composite scores, the gate's bands) uses the seed-aware figure. Each metric keeps its
per-seed values (``seed_values``) and spread (``seed_sd``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from math import sqrt
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from scipy.stats import t as student_t

from safesteer_bench.errors import UserError
from safesteer_bench.paths import check_seed

log = logging.getLogger(__name__)

MAX_SEEDS = 16


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; duplicates, negatives and non-integers are one-line errors."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            seed = int(part)
        except ValueError:
            raise UserError(f"--seeds: '{part}' is not an integer", "pass seeds like --seeds 0,1,2") from None
        check_seed(seed)
        if seed in seeds:
            raise UserError(f"--seeds: seed {seed} is given twice", "list each seed once, e.g. --seeds 0,1,2")
        seeds.append(seed)
    if not seeds:
        raise UserError("--seeds is empty", "pass seeds like --seeds 0,1,2")
    if len(seeds) > MAX_SEEDS:
        raise UserError(f"--seeds: {len(seeds)} seeds (at most {MAX_SEEDS})", "run fewer seeds per comparison")
    return seeds


def sub_run_id(seed: int) -> str:
    return f"seed-{seed}"


def is_metric(value: Any) -> bool:
    return isinstance(value, dict) and "value" in value and "ci_low" in value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def combine_metric(metrics: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Mean over seeds with an interval holding within- and between-seed error (module doc)."""
    from safesteer_bench.reporting.scores import standard_error

    values = [m.get("value") for m in metrics]
    out = dict(metrics[0])
    out["seed_values"] = dict(zip(map(str, seeds), values))
    if len(metrics) == 1 or any(not _number(v) for v in values):
        out["seed_sd"] = 0.0 if len(metrics) == 1 else None
        return out
    k = len(values)
    centre, sd = mean(values), stdev(values)
    between = student_t.ppf(0.975, k - 1) * sd / sqrt(k)
    lows = [m["ci_low"] for m in metrics]
    highs = [m["ci_high"] for m in metrics]
    within_low = centre - mean(lows) if all(_number(x) for x in lows) else 0.0
    within_high = mean(highs) - centre if all(_number(x) for x in highs) else 0.0
    low = centre - sqrt(max(0.0, within_low) ** 2 + between ** 2)
    high = centre + sqrt(max(0.0, within_high) ** 2 + between ** 2)
    if all(_number(x) and x >= 0 for x in lows):
        low = max(0.0, low)
    if all(_number(x) and x <= 1 for x in highs) and all(0 <= v <= 1 for v in values):
        high = min(1.0, high)
    errors = [standard_error(m) for m in metrics]
    within_se = mean(e for e in errors if e is not None) if any(e is not None for e in errors) else 0.0
    out.update(value=centre, ci_low=low, ci_high=high, stderr=sqrt(within_se ** 2 + sd ** 2 / k),
               seed_sd=sd, seeds=k)
    return out


def combine_tree(trees: list[Any], seeds: list[int]) -> Any:
    """Combine one benchmark's result dict across seeds, metric by metric (nested dicts too)."""
    first = trees[0]
    if is_metric(first):
        return combine_metric(trees, seeds)
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(t, dict) and k in t for t in trees)]
        return {k: combine_tree([t[k] for t in trees], seeds) for k in keys}
    if _number(first) and all(_number(t) for t in trees) and len(set(trees)) > 1:
        return mean(trees)
    return first


def combine_results(docs: dict[int, dict[str, Any]], plan: dict[str, Any], run_id: str) -> dict[str, Any]:
    """One results document from the sub-runs' (seed -> results.json), methods in plan order."""
    seeds = list(docs)
    first = docs[seeds[0]]
    results: dict[str, Any] = {}
    methods: dict[str, Any] = {}
    for method in plan["methods"]:
        present = [s for s in seeds if method in docs[s].get("results", {})]
        if not present:
            continue
        per_bench = [docs[s]["results"][method] for s in present]
        results[method] = {b: combine_tree([p[b] for p in per_bench], present)
                           for b in per_bench[0] if all(b in p for p in per_bench)}
        methods[method] = {**docs[present[0]]["methods"].get(method, {}), "seeds": present}
    timings = [d.get("timing") if isinstance(d.get("timing"), dict) else {} for d in docs.values()]
    stages: dict[str, float] = {}
    for timing in timings:
        for k, v in (timing.get("stages") or {}).items():
            if _number(v):
                stages[k] = round(stages.get(k, 0.0) + v, 2)
    return {
        **{k: first.get(k) for k in ("created", "command", "environment", "benchmarks", "budget",
                                     "overlap", "judges")},
        **({"tuning": first["tuning"]} if first.get("tuning") else {}),
        "run_id": run_id, "plan": plan, "methods": methods, "results": results,
        "seeds": {str(s): {"run_dir": sub_run_id(s), "budget": docs[s].get("budget")} for s in seeds},
        "timing": {"wall_seconds": round(sum(float(t.get("wall_seconds") or 0) for t in timings), 2),
                   "stages": stages, "invocations": sum(int(t.get("invocations") or 0) for t in timings),
                   "harness_overhead": None, "per_seed": {str(s): d.get("timing") for s, d in docs.items()}},
    }


def _seeded(method: Any, options: dict[str, Any]) -> bool:
    """A method's ``seeded`` attribute (default True), or its answer for these options."""
    seeded = getattr(method, "seeded", True)
    return bool(seeded(options) if callable(seeded) else seeded)


def seed_configs(cfg: Any, parent_dir: Path) -> list[Any]:
    """One RunConfig per seed: same evaluation prompts, seed-free methods only in the first."""
    from safesteer_bench.methods.api import get_method

    seeds = list(cfg.seeds)
    configs = []
    for i, seed in enumerate(seeds):
        methods = [m for m in cfg.methods if i == 0 or _seeded(get_method(m), cfg.method_args)]
        if not methods:
            continue
        configs.append(replace(cfg, seed=seed, seeds=None, prompt_seed=seeds[0], methods=methods,
                               out=parent_dir, run_id=sub_run_id(seed)))
    return configs
