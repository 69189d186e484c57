"""The runner: plan -> prepare (train) -> generate -> judge -> aggregate -> report (docs/architecture.md §7).

Every stage is keyed by fingerprints and written atomically under ``runs/<run-id>/``; re-running
the same command skips finished stages, so an interrupted run resumes without losing work. The run
id is derived from the plan, so "the same command" finds the same directory.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

from safesteer_bench.evaluation.benchmark import BenchmarkSpec, resolve_benchmarks
from safesteer_bench.data import Prompt
from safesteer_bench.evaluation.drift_stage import BENCHMARK as DRIFT_BENCHMARK
from safesteer_bench.evaluation.drift_stage import INFO as DRIFT_INFO
from safesteer_bench.evaluation.evaluate import chunk_prompts, generate_checkpointed, judge_rows, score_rows
from safesteer_bench.modeling.generation import GenConfig
from safesteer_bench.methods.api import MethodContext, get_method, method_context
from safesteer_bench.modeling.models import LoadedModel, ModelArgs, load_model, parse_model_args, resolve_model
from safesteer_bench.errors import UserError
from safesteer_bench.modeling.models import check_device, check_dtype
from safesteer_bench.options import check_method_args, options_class
from safesteer_bench.paths import check_output_dir, check_run_id, check_seed, safe_component
from safesteer_bench.modeling.policy import Policy, fingerprint
from safesteer_bench.profiles import ENV_PROFILE, Profile, default_profile, get_profile
from safesteer_bench.records import all_valid_judged
from safesteer_bench.data.splits import DEV_FRACTION, SPLITS
from safesteer_bench.data.splits import describe as describe_split
from safesteer_bench.pipeline.store import read_json_dict, read_jsonl, run_lock, write_json_atomic, write_jsonl_atomic

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    methods: list[str]
    model: str
    benchmarks: str = "safety-7,over-refusal"
    profile: str | None = None  # None: by device (profiles.default_profile)
    out: Path = Path("runs")
    judge: str | None = None  # None: each benchmark's default judge
    data_dir: Path | None = None
    device: str | None = None
    dtype: str | None = None
    seed: int = 0
    # Overrides the profile's prompts per benchmark: a count (int), or a fraction 0 < f <= 1 (float)
    # of each benchmark's split, resolved per benchmark to max(1, ceil(f * n)) (as lm-eval's --limit).
    limit: int | float | None = None
    run_id: str | None = None
    progress: bool = True
    command: str = ""
    adapter: str = "lora"  # training methods' adapter: lora | full (part of the shared budget)
    method_args: dict[str, Any] = field(default_factory=dict)  # options every method may read
    capability_limit: int | None = None  # overrides the profile's documents per capability task
    capability_generate_limit: int | None = None  # ... per generation task (default: the profile's cap)
    allow_code_execution: bool = False  # HumanEval runs model-written code only when asked
    # Which split of each evaluation set is scored: "test" for every reported number; "dev" only
    # for choices (selection code evaluates there, never on test). See splits.py.
    split: str | None = "test"  # None: whole sets (plans written before the split)
    # The judge that re-reads every safety verdict (disagreement.py): a name, "auto" or "none".
    second_judge: str = "auto"
    # Benign drift of every method from the base model (drift_stage.py): a capability tax at any scale.
    drift: bool = True
    # Several seeds (seeds.py): one sub-run per seed under the run directory, then combined.
    seeds: list[int] | None = None
    # The seed that picks evaluation prompts (prompt subsets, drift prompts, capability shots);
    # None: ``seed``. The sub-runs of one --seeds run share it, so they score the same prompts.
    prompt_seed: int | None = None
    index: bool = True  # file the finished run in the leaderboard (sub-runs of --seeds do not)
    # Options of one method only (``run --tuned``: what `tune` chose on dev), over method_args.
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    tuning: dict[str, Any] | None = None  # the tuned.json they came from, shown in the report
    # Folder for artifacts several methods reuse (the steering direction); None: <run>/methods/_shared.
    # `tune` points every trial at one folder, so the direction is searched once per study.
    shared_dir: Path | None = None
    # ``--model-args`` (revision, dtype, device_map, trust_remote_code; models.parse_model_args).
    model_args: dict[str, Any] = field(default_factory=dict)
    # Who runs the per-method jobs (pipeline/executors.py): sequential | ray | slurm. Not part of
    # the plan (results do not depend on it), so a run resumes under any executor.
    executor: str = "sequential"
    address: str | None = None  # --executor ray: a running cluster's address; None starts a local Ray
    workers: int | None = None  # jobs at once (a local Ray's CPUs); None: every CPU
    # Generation engine for safety/over-refusal completions: hf | vllm (modeling/vllm_engine.py);
    # steered policies go to vLLM with their hooks folded into weights where they fold
    # (modeling/fold.py); the rest and decoders use hf, and each method's engine is recorded.
    engine: str = "hf"

    @property
    def eval_seed(self) -> int:
        return self.seed if self.prompt_seed is None else self.prompt_seed

    @property
    def loading(self) -> ModelArgs:
        """The parsed ``model_args``."""
        return parse_model_args(self.model_args)


@dataclass
class Plan:
    config: RunConfig
    profile: Profile
    benchmarks: list[BenchmarkSpec]
    run_id: str
    run_dir: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # A fractional --limit resolved per benchmark (prompts of its split), filled as prompts load.
    resolved_limits: dict[str, int] = field(default_factory=dict)
    profile_reason: str = ""  # why this profile, when --profile was not given

    def to_dict(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "run_id": self.run_id, "model": cfg.model, "methods": cfg.methods,
            "benchmarks": [b.name for b in self.benchmarks], "profile": self.profile.to_dict(),
            **({"benchmark_files": files} if (files := {b.name: b.origin for b in self.benchmarks if b.origin})
               else {}),
            "judge": cfg.judge, "seed": cfg.seed, "limit": self.limit,
            "capability_limit": self.capability_limit,
            "capability_generate_limit": self.capability_generate_limit, "adapter": cfg.adapter,
            "method_args": cfg.method_args,
            # plans of runs from before the split (cfg.split None) keep having none: whole sets
            **({"split": {**describe_split(), "evaluated": cfg.split}} if cfg.split is not None else {}),
            "second_judge": cfg.second_judge, "drift": cfg.drift,
            **({"prompt_seed": cfg.prompt_seed} if cfg.prompt_seed is not None else {}),
            **({"seeds": list(cfg.seeds)} if cfg.seeds else {}),
            **({"method_options": cfg.method_options} if cfg.method_options else {}),
            # only when given, so plans (and run ids) without them are as before
            **({"model_args": margs} if (margs := parse_model_args(cfg.model_args).to_dict()) else {}),
            **({"engine": cfg.engine} if cfg.engine != "hf" else {}),  # hf: plans (and run ids) as before
            **({"limit_resolved": dict(self.resolved_limits)} if self.resolved_limits else {}),
        }

    @property
    def limit(self) -> int | float | None:
        """Prompts per benchmark: a count, a fraction of each split (see :meth:`limit_for`) or None (all)."""
        return self.config.limit if self.config.limit is not None else self.profile.eval_limit

    @property
    def limit_is_fraction(self) -> bool:
        return is_fraction(self.limit)

    def limit_for(self, n: int) -> int | None:
        """The prompts to take of a split of ``n``: the count, or a fraction's max(1, ceil(f * n))."""
        return fraction_count(self.limit, n) if self.limit_is_fraction else self.limit

    @property
    def capability_limit(self) -> int | None:
        cfg = self.config
        return cfg.capability_limit if cfg.capability_limit is not None else self.profile.capability_limit

    @property
    def capability_generate_limit(self) -> int | None:
        """Documents per generation task: the config's own, else ``--capability-limit`` when given,
        else the profile's cap (never above the profile's multiple-choice limit)."""
        if self.config.capability_generate_limit is not None:
            return self.config.capability_generate_limit
        if self.config.capability_limit is not None or self.profile.capability_generate_limit is None:
            return self.capability_limit
        return min(self.profile.capability_generate_limit, self.capability_limit or self.profile.capability_generate_limit)

    @property
    def safety(self) -> list[BenchmarkSpec]:
        return [b for b in self.benchmarks if b.kind != "capability"]

    @property
    def capability(self) -> list[BenchmarkSpec]:
        return [b for b in self.benchmarks if b.kind == "capability"]

    @property
    def capability_sized(self) -> dict[str, int]:
        """Documents of the multiple-choice tasks that count in the capability score, sized by the
        profile's ``capability_halfwidth`` (empty when the profile or --capability-limit sets none)."""
        from safesteer_bench.evaluation.capability import is_generation_task

        n = self.profile.sized_documents()
        if n is None or self.config.capability_limit is not None:
            return {}
        return {b.name: n for b in self.capability
                if (b.small_model_composite or not self.profile.small) and not is_generation_task(b.task)}

    @property
    def trains(self) -> bool:
        return any(get_method(m).kind == "training" for m in self.config.methods)

    def judge_for(self, spec: BenchmarkSpec) -> str:
        return self.config.judge or spec.default_judge

    def second_judge_for(self, spec: BenchmarkSpec) -> str | None:
        from safesteer_bench.evaluation.disagreement import second_judge_for

        return second_judge_for(self.judge_for(spec), self.config.second_judge)


def make_plan(cfg: RunConfig) -> Plan:
    """Validate every name and value up front (before any model loads) and fix the run directory."""
    cfg.methods = _unique_methods(cfg.methods)
    for name in cfg.methods:
        get_method(name)
    loading = parse_model_args(cfg.model_args)
    spec = resolve_model(cfg.model, loading.trust_remote_code, loading.revision)
    cfg.limit = check_limit(cfg.limit)
    for flag, value in (("--capability-limit", cfg.capability_limit),):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value})", f"omit {flag} to use the profile's count")
    check_seed(cfg.seed)
    for seed in [*(cfg.seeds or []), *([] if cfg.prompt_seed is None else [cfg.prompt_seed])]:
        check_seed(seed)
    if cfg.split not in SPLITS:
        raise UserError(f"unknown split '{cfg.split}'", f"use one of: {', '.join(SPLITS)}")
    check_method_args(cfg.method_args, list(cfg.methods))
    for name, options in cfg.method_options.items():
        if name in cfg.methods:  # chosen by `tune` for this method: every key must be its own
            options_class(get_method(name)).parse(options, name)
    _check_layer(cfg, spec)
    chunk_prompts()  # a bad $SAFESTEER_BENCH_CHUNK fails here, not after the model loads
    from safesteer_bench.modeling.vllm_engine import check_engine

    check_engine(cfg.engine)  # --engine vllm without vLLM installed fails in the dry run
    cfg.device = check_device(cfg.device)
    cfg.dtype = check_dtype(cfg.dtype)
    if loading.dtype is not None:
        if cfg.dtype is not None and cfg.dtype != loading.dtype:
            raise UserError(f"--dtype {cfg.dtype} and --model-args dtype={loading.dtype} disagree", "pass only one of them")
        cfg.dtype = loading.dtype
    if loading.device_map is not None:
        if cfg.device is not None:
            raise UserError(f"--device {cfg.device} and --model-args device_map={loading.device_map} both place the model",
                            "pass only one of them")
        if loading.device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
            check_device(loading.device_map)
    check_output_dir(Path(cfg.out))
    from safesteer_bench.pipeline.executors import check_executor

    check_executor(cfg)  # --executor ray without ray installed fails here, with the fix
    reason = ""
    if cfg.profile is None:
        cfg.profile, reason = _default_profile(cfg)
    profile = get_profile(cfg.profile)
    benchmarks = resolve_benchmarks(cfg.benchmarks, profile.name)
    from safesteer_bench.evaluation.judges import get_judge

    if cfg.judge:
        get_judge(cfg.judge)
    if cfg.second_judge not in ("auto", "none"):
        get_judge(cfg.second_judge)
    plan = Plan(cfg, profile, benchmarks, "", Path(), profile_reason=reason)
    if "alignbeam" in cfg.methods:  # its picker must not be a judge that scores the run (issue 19)
        from safesteer_bench.methods.alignbeam import check_picker

        check_picker(plan)
    plan.run_id = check_run_id(cfg.run_id) if cfg.run_id is not None else _default_run_id(plan)
    plan.run_dir = Path(cfg.out) / plan.run_id
    if plan.run_dir.exists() and not plan.run_dir.is_dir():
        raise UserError(f"{plan.run_dir} is a file, not a run directory", "remove it or pass another --run-id")
    return plan


def _check_layer(cfg: RunConfig, spec: Any) -> None:
    """A pinned ``layer`` beyond the blocks the direction search covers fails in the dry run
    (the block count is read from the model's files; unknown sizes are checked at search time)."""
    from safesteer_bench.inference.steering import MAX_LAYER_FRACTION
    from safesteer_bench.pipeline.estimate import model_shape

    pinned = [cfg.method_args.get("layer"), *(o.get("layer") for o in cfg.method_options.values())]
    pinned = [int(v) for v in pinned if v not in (None, "")]  # values were checked as integers already
    shape = model_shape(spec) if pinned else None
    if shape is None:
        return
    top = max(1, math.floor(MAX_LAYER_FRACTION * shape.layers))
    for layer in pinned:
        if layer >= top:
            raise UserError(f"layer={layer} is outside the searched blocks of {cfg.model} ({shape.layers} blocks; "
                            f"the search covers 0..{top - 1})", f"use --method-args layer=0..{top - 1}")


def _default_profile(cfg: RunConfig) -> tuple[str, str]:
    """The profile a plan without --profile gets on its device (a 7B model on CPU: smoke)."""
    from safesteer_bench.modeling.models import default_device
    from safesteer_bench.pipeline.estimate import model_shape

    device = cfg.device or default_device()
    shape = None
    if not device.startswith("cuda") and not os.environ.get(ENV_PROFILE):
        loading = parse_model_args(cfg.model_args)
        shape = model_shape(resolve_model(cfg.model, loading.trust_remote_code, loading.revision))
    return default_profile(device, shape.params if shape else None)


def is_fraction(limit: Any) -> bool:
    """True for a fractional limit (a float; counts are ints)."""
    return isinstance(limit, float)


def fraction_count(fraction: float, n: int) -> int:
    """max(1, ceil(f * n)), computed on the decimal the user wrote (0.1 * 30 is 3, not 4)."""
    return max(1, math.ceil(Fraction(str(fraction)) * n))


def check_limit(value: Any, flag: str = "--limit") -> int | float | None:
    """``value`` when it is a count (a whole number of at least 1) or a fraction 0 < f <= 1, else a UserError."""
    fix = f"give {flag} a count such as 20 or a fraction of each benchmark's test split such as 0.1, or omit it"
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value})", fix)
        return value
    if isinstance(value, float) and math.isfinite(value) and 0 < value <= 1:
        return value
    raise UserError(f"{flag} {value!r} is neither a count (a whole number >= 1) nor a fraction 0 < f <= 1", fix)


def _unique_methods(methods: list[str]) -> list[str]:
    """The methods in order, each once; none at all is an error (an empty run is no comparison)."""
    unique = list(dict.fromkeys(m.strip() for m in methods if m.strip()))
    if not unique:
        raise UserError("no method given", "pass --methods with at least one method, e.g. --methods base,safesteer "
                                           "(see `safesteer-bench methods`)")
    return unique


def _default_run_id(plan: Plan) -> str:
    data = plan.to_dict()
    data.pop("run_id")
    model = safe_component(plan.config.model.replace("/", "_"))
    return check_run_id(f"{model}-{plan.profile.name}-{fingerprint(data)[:8]}")


def describe_plan(plan: Plan) -> str:
    lines = [
        f"run {plan.run_id} -> {plan.run_dir}",
        f"  model     {plan.config.model}{_describe_model_args(plan.config)}   "
        f"profile {plan.profile.name} ({plan.profile.description})"
        + (f"\n            ({plan.profile_reason}; --profile to choose)" if plan.profile_reason else ""),
        f"  methods   {', '.join(plan.config.methods)}",
        f"  benchmarks {', '.join(f'{b.name}[{plan.judge_for(b)}]' for b in plan.benchmarks)}",
        f"  prompts per benchmark: {_describe_limit(plan)} of the {plan.config.split} split "
        f"(dev {int(DEV_FRACTION * 100)} % of each set, for choices only); max new tokens: {plan.profile.max_new_tokens}",
    ]
    for name, options in plan.config.method_options.items():
        if name in plan.config.methods:
            lines.append(f"  {name} options (chosen on dev): " + ", ".join(f"{k}={v}" for k, v in options.items()))
    if plan.config.seeds:
        lines.append(f"  seeds     {', '.join(map(str, plan.config.seeds))}: one sub-run each under "
                     f"{plan.run_dir}/seed-<s>/, same evaluation prompts (seed {plan.config.seeds[0]}'s)")
    lines.append(f"  second judge: {plan.config.second_judge}; benign drift: "
                 f"{'on' if plan.config.drift else 'off'}")
    if plan.capability:
        lines.append(f"  capability documents per task: {plan.capability_limit or 'all'} "
                     f"(generation tasks: {plan.capability_generate_limit or 'all'})")
        if plan.capability_sized:
            lines.append(f"  sized for +-{plan.profile.capability_halfwidth * 100:g} points (95 %): "
                         + ", ".join(f"{k} {v}" for k, v in plan.capability_sized.items()))
    return "\n".join(lines)


def _describe_model_args(cfg: RunConfig) -> str:
    given = cfg.loading.to_dict()
    return f" ({', '.join(f'{k}={v}' for k, v in given.items())})" if given else ""


def _describe_limit(plan: Plan) -> str:
    if not plan.limit_is_fraction:
        return str(plan.limit or "all")
    counts = ", ".join(f"{k} {v}" for k, v in plan.resolved_limits.items())
    return f"{plan.limit:g} ({counts})" if counts else f"{plan.limit:g}"


class Runner:
    """Executes a plan stage by stage; each stage is skipped when its output already exists."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.dir = plan.run_dir
        self._base: LoadedModel | None = None
        self._prompts: dict[str, list[Prompt]] = {}
        self._budget: Any = None
        self._budget_unsaved = False  # made by this process, not yet in budget.json
        self._started: float | None = None  # set by run(): the invocation's start
        self._invocation: int | None = None  # this invocation's index in timing.json
        self._engines: dict[str, str] = {}  # method -> engine its policy generates with (Runner.policy)

    # -- shared resources, loaded lazily so a fully finished run re-renders without a model ------
    @property
    def base(self) -> LoadedModel:
        if self._base is None:
            cfg = self.plan.config
            started = time.perf_counter()
            loading = cfg.loading
            self._base = load_model(resolve_model(cfg.model, loading.trust_remote_code, loading.revision),
                                    cfg.device, cfg.dtype, device_map=loading.device_map)
            self._tick("load", started)
        return self._base

    def estimate(self) -> Any:
        """What the plan needs on its device (pipeline/estimate.py), from the model's files only."""
        from safesteer_bench.pipeline.estimate import estimate

        cfg = self.plan.config
        loading = parse_model_args(cfg.model_args)
        spec = resolve_model(cfg.model, loading.trust_remote_code, loading.revision)
        prompts = sum(len(self.prompts(spec_)) for spec_ in self.plan.safety)
        return estimate(self.plan, spec, prompts)

    def prompts(self, spec: BenchmarkSpec) -> list[Prompt]:
        if spec.name not in self._prompts:
            cfg = self.plan.config
            limit = self.plan.limit
            if self.plan.limit_is_fraction:  # this benchmark's share of its own split
                limit = self.plan.limit_for(len(spec.prompts(cfg.data_dir, None, cfg.eval_seed, split=cfg.split)))
                self.plan.resolved_limits[spec.name] = limit
            self._prompts[spec.name] = spec.prompts(cfg.data_dir, limit, cfg.eval_seed,
                                                    split=cfg.split)
        return self._prompts[spec.name]

    def eval_pool(self) -> list[Prompt]:
        """Every prompt of the run's safety benchmarks (whole sets, not just the sampled subset)."""
        return [p for spec in self.plan.safety for p in spec.load(self.plan.config.data_dir)]

    @property
    def budget(self) -> Any:
        """The one Budget every training method of this run gets (None when nothing trains)."""
        if self._budget is None and self.plan.trains:
            from safesteer_bench.training.budget import Budget, make_budget

            saved = read_json_dict(self.dir / "budget.json")
            self._budget = _stored_budget(Budget, saved)
            if self._budget is None:
                cfg = self.plan.config
                self._budget = make_budget(self.plan.profile, cfg.data_dir, cfg.seed, adapter=cfg.adapter,
                                           exclude=self.eval_pool())
                self._budget_unsaved = True  # written by run(), never by a dry run
        return self._budget

    def _save_budget(self) -> None:
        if self.budget is not None and self._budget_unsaved:
            write_json_atomic(self.dir / "budget.json", self._budget.to_dict())
            self._budget_unsaved = False

    def check_data(self) -> None:
        """Load every evaluation set now, so a missing file fails before any model work."""
        for spec in self.plan.safety:
            self.prompts(spec)
        if self.plan.config.drift:
            self._drift_setup()  # the drift stage's benign prompts too

    def overlap(self) -> dict[str, Any]:
        """Pool prompts whose normalized text is in an evaluation set of the run, per (pool, set).

        Every one of them is excluded: the Budget drops them from training, the direction search
        drops TDC 2023 behaviors found in any safety set. Only pools the run's methods use count.
        """
        from safesteer_bench.data import load_gptfuzzer_questions, load_tdc2023, overlap

        data_dir = self.plan.config.data_dir
        pools = {}
        if self.plan.trains:
            pools["gptfuzzer-questions (training pool)"] = load_gptfuzzer_questions(data_dir)
        if any(m != "base" for m in self.plan.config.methods):
            pools["tdc2023 (direction prompts)"] = load_tdc2023(data_dir)
        report: dict[str, Any] = {}
        for pool_name, pool in pools.items():
            for spec in self.plan.safety:
                pairs = overlap(pool, spec.load(data_dir))
                if pairs:
                    report[f"{pool_name} × {spec.name}"] = len(pairs)
        return report

    def _tick(self, stage: str, started: float) -> None:
        self.plan.stage_seconds[stage] = self.plan.stage_seconds.get(stage, 0.0) + time.perf_counter() - started
        if self._started is not None:
            # Persist as each stage ends: a SIGKILLed invocation keeps the time of what it finished.
            self._record_invocation(time.perf_counter() - self._started, finished=False)

    # -- stages ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Every stage, under the run directory's lock (a second process on the same run fails)."""
        from safesteer_bench.training.parallel import data_parallel, train_before_run

        # Under `accelerate launch` every process trains first; only the main one evaluates (§8).
        if data_parallel().enabled and not train_before_run(self):
            return {}
        with run_lock(self.dir):
            return self._run_locked()

    def _run_locked(self) -> dict[str, Any]:
        from safesteer_bench.pipeline.executors import executor_for

        self.begin()
        executor_for(self.plan.config).execute([self])  # every method's stages (executors.py)
        return self.finish()

    def begin(self) -> None:
        """What the driver does before any method's job: plan.json and budget.json."""
        self._started = time.perf_counter()
        self.check_data()  # first: a fractional --limit is resolved per benchmark for plan.json
        keys = self._set_aside_changed_methods()
        write_json_atomic(self.dir / "plan.json", {**self.plan.to_dict(), "method_keys": keys})
        self._save_budget()

    def finish(self) -> dict[str, Any]:
        """What the driver does after every method's job: results.json, report.html, the index."""
        assert self._started is not None, "begin() first"
        results = self.aggregate(wall_seconds=time.perf_counter() - self._started)
        report = self.render(results)
        if self.plan.config.index:
            from safesteer_bench.reporting.leaderboard import index_quietly

            index_quietly(Path(self.plan.config.out), results, report)
        return results

    def evaluate_method(self, name: str) -> None:
        policy: Policy | None = None
        for spec in self.plan.safety:
            if self._judged(name, spec) is not None:
                continue
            policy = policy or self.policy(name)
            rows = self.generate(policy, spec)
            self.judge(name, spec, rows)
        if self.plan.capability and self._capability(name) is None:
            policy = policy or self.policy(name)
            self.run_capability(name, policy)
        if self.plan.config.drift and self._drift(name) is None:
            self.run_drift(name, policy or self.policy(name))
        if self._style(name) is None:
            self.run_style(name)

    # -- refusal style, diversity, coherence of stored completions (style_stage.py) ---------------
    def _style_inputs(self, name: str) -> tuple[dict[str, list[dict[str, Any]]], str] | None:
        from safesteer_bench.evaluation.style_stage import rows_by_set, style_key

        judged = [self._judged(name, spec) for spec in self.plan.safety]
        if not judged or any(rows is None for rows in judged):
            return None
        pooled = rows_by_set(judged)
        return pooled, style_key([self.plan.config.model, self.plan.config.model_args], pooled)

    def _style(self, name: str) -> dict[str, Any] | None:
        """Stored style figures of ``name`` for its current completions; None when missing or stale."""
        from safesteer_bench.evaluation.style_stage import stored_metrics

        inputs = self._style_inputs(name)
        return None if inputs is None else stored_metrics(self.dir / "style", name, inputs[1])

    def run_style(self, name: str) -> None:
        from safesteer_bench.evaluation.style_stage import measure

        inputs = self._style_inputs(name)
        if inputs is None:
            return
        started = time.perf_counter()
        base = self.policy("base")  # perplexity under the plain base model: no hooks, adapter off
        measure(self.dir / "style", name, inputs[0], base, inputs[1], self.plan.config.eval_seed)
        self._tick("style", started)

    # -- benign drift (drift_stage.py) ------------------------------------------------------------
    def _drift_setup(self) -> tuple[list[str], GenConfig, str]:
        from safesteer_bench.evaluation.drift_stage import drift_prompts, prompts_key

        cfg = self.plan.config
        limit = self.plan.resolved_limits.get(DRIFT_BENCHMARK, self.plan.limit)
        if self.plan.limit_is_fraction and DRIFT_BENCHMARK not in self.plan.resolved_limits:
            # a share of the drift prompts' own split, as for benchmarks
            from safesteer_bench.evaluation.drift_stage import MAX_PROMPTS, PROMPT_SET

            (spec,) = resolve_benchmarks(PROMPT_SET)
            limit = min(self.plan.limit_for(len(spec.prompts(cfg.data_dir, None, cfg.eval_seed, split="test"))),
                        MAX_PROMPTS)
            self.plan.resolved_limits[DRIFT_BENCHMARK] = limit
        prompts = drift_prompts(cfg.data_dir, limit, cfg.eval_seed)
        gen = GenConfig(max_new_tokens=self.plan.profile.max_new_tokens, batch_size=self.plan.profile.batch_size,
                        seed=cfg.seed)
        return prompts, gen, prompts_key(prompts, gen, cfg.seed)

    def _drift(self, name: str) -> dict[str, Any] | None:
        """Stored drift of ``name`` for this plan; None when missing, stale, or when its prompts
        cannot be loaded here (rejudge of a run whose data folder lacks them)."""
        from safesteer_bench.evaluation.drift_stage import stored_metrics

        try:
            key = self._drift_key(name)
        except UserError:
            return None
        return stored_metrics(self.dir / "drift", name, key)

    def _drift_key(self, name: str) -> str:
        from safesteer_bench.evaluation.drift_stage import method_key, stored_completions_key

        artifact = read_json_dict(self.dir / "methods" / name / "artifact.json")
        return method_key(self._drift_setup()[2], stored_completions_key(self.dir / "drift"), artifact)

    def run_drift(self, name: str, policy: Policy) -> None:
        from safesteer_bench.evaluation.drift_stage import base_completions, method_drift

        started = time.perf_counter()
        prompts, gen, _ = self._drift_setup()
        base = policy if name == "base" else self.policy("base")
        completions, _ = base_completions(self.dir / "drift", base, prompts, gen)
        method_drift(self.dir / "drift", name, policy, base, prompts, completions, self._drift_key(name),
                     self.plan.config.seed)
        self._tick("drift", started)

    def _capability_key(self, policy: Policy) -> str:
        cfg = self.plan.config
        sized = [self.plan.capability_sized] if self.plan.capability_sized else []  # old keys unchanged
        return fingerprint(policy.fingerprint, [b.name for b in self.plan.capability], self.plan.capability_limit,
                           self.plan.capability_generate_limit,
                           cfg.allow_code_execution, cfg.eval_seed, *sized)

    def run_capability(self, name: str, policy: Policy) -> None:
        from safesteer_bench.evaluation.capability import run_capability

        started = time.perf_counter()
        cfg = self.plan.config
        results = run_capability(policy, self.plan.capability, self.plan.capability_limit, cfg.data_dir,
                                 self.dir / "capability" / name, allow_code_execution=cfg.allow_code_execution,
                                 seed=cfg.eval_seed, generate_limit=self.plan.capability_generate_limit,
                                 limits=self.plan.capability_sized,
                                 generate_batch_size=self.plan.profile.batch_size)
        write_json_atomic(self.dir / "capability" / f"{name}.json",
                          {"key": self._capability_key(policy), "plan": self._capability_plan(), "results": results})
        self._tick("capability", started)

    def _capability(self, name: str) -> dict[str, Any] | None:
        """Stored capability results of ``name`` when they cover this plan's tasks and limit."""
        stored = read_json_dict(self.dir / "capability" / f"{name}.json")
        if stored is None or not isinstance(stored.get("results"), dict) \
                or not all(isinstance(v, dict) for v in stored["results"].values()) \
                or set(stored["results"]) != {b.name for b in self.plan.capability}:
            return None
        if stored.get("plan") not in (None, self._capability_plan()):
            return None
        return stored["results"]

    def _capability_plan(self) -> dict[str, Any]:
        cfg = self.plan.config
        sized = {"sized": self.plan.capability_sized} if self.plan.capability_sized else {}
        return {**sized, "limit": self.plan.capability_limit, "generate_limit": self.plan.capability_generate_limit,
                "code": cfg.allow_code_execution, "seed": cfg.eval_seed}

    def context(self, name: str) -> MethodContext:
        cfg = self.plan.config
        budget = self.budget if get_method(name).kind == "training" else None
        return method_context(name, self.base, self.plan.profile, self.dir / "methods" / name,
                              data_dir=cfg.data_dir, seed=cfg.seed, budget=budget, shared_dir=cfg.shared_dir,
                              options={**cfg.method_args, **cfg.method_options.get(name, {})})

    def method_key(self, name: str) -> str:
        """What a method's stored outputs were made from, known without loading the model: the
        model as named, its load arguments, the method's options with every default (a default
        changed in the code counts) and, for training methods, the budget."""
        from safesteer_bench.options import method_args_for

        cfg = self.plan.config
        method = get_method(name)
        own = method_args_for(name, {**cfg.method_args, **cfg.method_options.get(name, {})})
        options = options_class(method).parse(own, name).to_dict()
        budget = self.budget.key() if method.kind == "training" and self.budget is not None else None
        return fingerprint(name, cfg.model, cfg.model_args, options, budget)

    def _set_aside_changed_methods(self) -> dict[str, str]:
        """Each method's key; outputs stored for another key (or by a run that recorded none) are
        moved to ``stale/`` so the method is prepared, generated and judged again, never reused."""
        keys = {name: self.method_key(name) for name in self.plan.config.methods}
        old = read_json_dict(self.dir / "plan.json")
        if old is None:
            return keys  # a new run: nothing stored yet
        old_keys = old.get("method_keys") if isinstance(old.get("method_keys"), dict) else {}
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for name, key in keys.items():
            if old_keys.get(name) == key:
                continue
            stored = [self.dir / "samples" / name, self.dir / "methods" / name, self.dir / "capability" / name,
                      self.dir / "capability" / f"{name}.json", self.dir / "drift" / f"{name}.json"]
            moved = [p for p in stored if p.exists()]
            for path in moved:
                target = self.dir / "stale" / f"{name}-{stamp}" / path.relative_to(self.dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                path.rename(target)
            if moved:
                log.warning("%s: its stored outputs were made with other options, defaults, budget or model; "
                            "moved to %s and made again", name, self.dir / "stale" / f"{name}-{stamp}")
        return keys

    def policy(self, name: str) -> Policy:
        """The method's policy on the plan's engine (``--engine vllm``: vLLM unless its hooks do
        not fold or it has its own decoder, else HF); the engine used is kept for the judged rows' metadata."""
        from safesteer_bench.modeling.vllm_engine import attach_engine

        policy = self._prepared_policy(name)
        cfg = self.plan.config
        self._engines[name] = attach_engine(policy, cfg.engine, self.base, self.dir / "methods" / name, cfg.dtype)
        return policy

    def _prepared_policy(self, name: str) -> Policy:
        method = get_method(name)
        ctx = self.context(name)
        workdir = ctx.workdir
        done = read_json_dict(workdir / "artifact.json")
        key = self.method_key(name)
        if done is not None and done.get("request_key") != key:
            # Resuming after an option, a default or the budget changed: the stored artifact was
            # made for another request, so it is prepared again rather than silently reused.
            log.warning("%s: the stored artifact was prepared with other options or another budget; "
                        "preparing it again", name)
            done = None
        if done is not None:
            try:
                return method.policy(ctx, done)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                # A damaged artifact.json (fields missing or mistyped) is retrained, not trusted.
                log.warning("%s: stored artifact unusable (%s: %s); training again", name, type(exc).__name__, exc)
        started = time.perf_counter()
        artifact = {**method.prepare(ctx), "request_key": key}
        write_json_atomic(workdir / "artifact.json", artifact)
        self._tick("train", started)
        return method.policy(ctx, artifact)

    def gen_config(self, spec: BenchmarkSpec) -> GenConfig:
        profile = self.plan.profile
        return GenConfig(max_new_tokens=spec.max_new_tokens or profile.max_new_tokens,
                         batch_size=profile.batch_size, seed=self.plan.config.seed)

    def generate(self, policy: Policy, spec: BenchmarkSpec) -> list[dict[str, Any]]:
        started = time.perf_counter()
        checkpoint = self.dir / "samples" / policy.name / f"{spec.name}.gen.jsonl"
        rows = generate_checkpointed(policy, self.prompts(spec), self.gen_config(spec), checkpoint,
                                     self.plan.config.progress)
        self._tick("generate", started)
        self._record_throughput(policy, rows)
        return rows

    def _record_throughput(self, policy: Policy, rows: list[dict[str, Any]]) -> None:
        """What plain generation achieved here, for later dry runs' wall time (pipeline/throughput.py)."""
        if policy.decoder is not None:
            return  # alignbeam's decoding is not the engine's throughput
        from safesteer_bench.pipeline import throughput

        base = self.base
        engine = getattr(policy.engine, "name", "hf")
        params = sum(p.numel() for p in base.model.parameters())
        m = throughput.measure(base.device, base.dtype, engine, params, self.plan.profile.batch_size, rows)
        if m is not None:
            throughput.record(m)

    def judge(self, method: str, spec: BenchmarkSpec, rows: list[dict[str, Any]]) -> None:
        started = time.perf_counter()
        second = self.plan.second_judge_for(spec)
        judged = judge_rows(spec, self.prompts(spec), rows, self.plan.judge_for(spec), second)
        path = self.dir / "samples" / method / f"{spec.name}.jsonl"
        write_jsonl_atomic(path, judged)
        write_json_atomic(path.with_suffix(".meta.json"),
                          {"judge": self.plan.judge_for(spec), "second_judge": second, "n": len(judged),
                           "gen_key": rows[0].get("key") if rows else None,
                           "engine": self._engines.get(method, "hf"), "engine_requested": self.plan.config.engine})
        self._tick("judge", started)

    def _judged(self, method: str, spec: BenchmarkSpec) -> list[dict[str, Any]] | None:
        """The stored judged rows when complete, well-formed and judged by this plan's judge;
        None sends the benchmark back to judging (from the generation checkpoint)."""
        path = self.dir / "samples" / method / f"{spec.name}.jsonl"
        meta = read_json_dict(path.with_suffix(".meta.json"))
        if meta is None or meta.get("judge") != self.plan.judge_for(spec) \
                or meta.get("second_judge") != self.plan.second_judge_for(spec) \
                or meta.get("engine_requested", "hf") != self.plan.config.engine:
            # another --engine: judged again from the checkpoint, whose rows count only under
            # the same generation key (Policy.key includes a non-HF engine)
            return None
        rows = list(read_jsonl(path))
        expected = [p.id for p in self.prompts(spec)]
        if len(rows) != meta.get("n") or not all_valid_judged(rows) or [r["id"] for r in rows] != expected:
            return None
        return rows

    def _engine_used(self, method: str) -> str:
        """The engine(s) that generated ``method``'s judged completions, from their metadata."""
        used = {(read_json_dict(self.dir / "samples" / method / f"{spec.name}.meta.json") or {}).get("engine", "hf")
                for spec in self.plan.safety if self._judged(method, spec) is not None}
        return "+".join(sorted(used)) if used else "hf"

    def aggregate(self, wall_seconds: float) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for method in self.plan.config.methods:
            results[method] = {}
            for spec in self.plan.safety:
                rows = self._judged(method, spec) or []
                results[method][spec.name] = score_rows(rows, seed=self.plan.config.eval_seed)
            results[method].update(self._capability(method) or {})
            drift = self._drift(method) if self.plan.config.drift else None
            if drift is not None:
                results[method][DRIFT_BENCHMARK] = drift
            results[method].update(self._style(method) or {})  # style-harmful / style-benign
        doc = {
            "run_id": self.plan.run_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": self.plan.config.command,
            "environment": _environment(),
            "plan": self.plan.to_dict(),
            "benchmarks": {**{s.name: _benchmark_info(s, self.plan.judge_for(s), self.plan.profile)
                              for s in self.plan.benchmarks},
                           **({DRIFT_BENCHMARK: DRIFT_INFO} if self.plan.config.drift else {})},
            "methods": {m: {**_method_info(self.dir / "methods" / m, m), "engine": self._engine_used(m)}
                        for m in self.plan.config.methods},
            "results": results,
            "budget": self.budget.to_dict() if self.budget is not None else None,
            "overlap": self.overlap(),
            "style": _style_info(),
            "judges": _judge_agreement({j for s in self.plan.safety
                                        for j in (self.plan.judge_for(s), self.plan.second_judge_for(s)) if j},
                                       self.plan.config.data_dir),
            "timing": self._timing(wall_seconds),
            **({"tuning": cfg_tuning} if (cfg_tuning := self.plan.config.tuning) else {}),
        }
        write_json_atomic(self.dir / "results.json", doc)
        return doc

    def _timing_history(self) -> list[dict[str, Any]]:
        """timing.json's invocations, keeping only well-formed entries (a damaged file is not trusted)."""
        doc = read_json_dict(self.dir / "timing.json") or {}
        history = doc.get("invocations")
        if not isinstance(history, list):
            return []
        return [inv for inv in history if isinstance(inv, dict) and isinstance(inv.get("wall_seconds"), (int, float))
                and isinstance(inv.get("stages"), dict)
                and all(isinstance(v, (int, float)) for v in inv["stages"].values())]

    def _record_invocation(self, wall_seconds: float, finished: bool) -> list[dict[str, Any]]:
        """Write this invocation's wall and stage seconds into timing.json (one entry, updated)."""
        history = self._timing_history()
        entry = {"wall_seconds": round(wall_seconds, 3), "finished": finished,
                 "stages": {k: round(v, 3) for k, v in self.plan.stage_seconds.items()}}
        if self._invocation is not None and self._invocation < len(history):
            history[self._invocation] = entry
        else:
            self._invocation = len(history)
            history.append(entry)
        write_json_atomic(self.dir / "timing.json", {"invocations": history})
        return history

    def _timing(self, wall_seconds: float) -> dict[str, Any]:
        """Wall and stage seconds summed over every invocation of this run (resumes included,
        and invocations that were killed after finishing a stage)."""
        history = self._record_invocation(wall_seconds, finished=True)
        stages: dict[str, float] = {}
        for inv in history:
            for k, v in inv["stages"].items():
                stages[k] = round(stages.get(k, 0.0) + v, 2)
        wall = round(sum(inv["wall_seconds"] for inv in history), 2)
        work = sum(stages.get(k, 0.0) for k in ("load", "train", "generate", "judge", "capability", "drift", "style"))
        return {"wall_seconds": wall, "stages": stages, "invocations": len(history),
                "harness_overhead": round(wall / work, 3) if work else None, **_peak_memory()}

    def render(self, results: dict[str, Any]) -> Path:
        from safesteer_bench.reporting.report import render_report

        samples = {m: {s.name: self._judged(m, s) or [] for s in self.plan.safety}
                   for m in self.plan.config.methods}
        return render_report(results, samples, self.dir / "report.html")


def _peak_memory() -> dict[str, float]:
    """This invocation's peak resident memory, and the peak CUDA allocation where a GPU was used."""
    import resource

    import torch

    peak = {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 3)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    return peak


def _stored_budget(budget_cls: Any, saved: dict[str, Any] | None) -> Any:
    """The Budget in budget.json, or None when missing or damaged (then it is made again: it is
    deterministic in the plan, so every method still gets the identical one)."""
    if saved is None:
        return None
    try:
        return budget_cls.from_dict(saved)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("budget.json is damaged (%s); rebuilding it from the plan", exc)
        return None


def _style_info() -> dict[str, Any]:
    from safesteer_bench.evaluation.style_stage import INFO

    return INFO


def _judge_agreement(judges: set[str], data_dir: Path | None) -> dict[str, Any]:
    """Stored agreement with human labels for each judge used (see ``judges validate``)."""
    from safesteer_bench.evaluation.judge_agreement import stored_agreement

    return {name: a for name in sorted(judges) if (a := stored_agreement(name, data_dir)) is not None}


def _benchmark_info(spec: BenchmarkSpec, judge: str, profile: Profile | None = None) -> dict[str, Any]:
    info = {"kind": spec.kind, "description": spec.description, "judge": judge,
            "harmful": spec.harmful, "source": spec.source}
    if spec.kind == "capability":
        info["composite"] = spec.small_model_composite or not (profile is not None and profile.small)
    return info


def _method_info(workdir: Path, name: str) -> dict[str, Any]:
    method = get_method(name)
    from safesteer_bench.reporting.gate import SPENT_NUMBERS

    artifact = read_json_dict(workdir / "artifact.json") or {}
    spent = artifact.get("spent")
    # only the figures reports do arithmetic on must be numbers (spent also holds strings and dicts)
    if spent is not None and not (isinstance(spent, dict) and all(
            spent.get(k) is None or (isinstance(spent[k], (int, float)) and not isinstance(spent[k], bool))
            for k in SPENT_NUMBERS)):
        # A damaged record of spent compute is left out of results.json rather than copied in.
        log.warning("%s: artifact.json's 'spent' is malformed; left out of results.json", name)
        artifact = {k: v for k, v in artifact.items() if k != "spent"}
    return {"kind": method.kind, "description": method.description, "artifact": artifact}


# Libraries whose versions change numbers: generation, adapters, the two evaluation harnesses.
VERSIONED = ("transformers", "peft", "lm-eval", "inspect-ai", "scipy", "accelerate")


def _environment() -> dict[str, Any]:
    import torch
    from importlib.metadata import PackageNotFoundError, version

    env: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                           "platform": platform.platform(), "git_commit": _git_commit()}
    for package in VERSIONED:
        try:
            env[package] = version(package)
        except PackageNotFoundError:
            env[package] = None
    return env


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run(cfg: RunConfig) -> tuple[Plan, dict[str, Any]]:
    plan = make_plan(cfg)
    if cfg.seeds and len(cfg.seeds) > 1:
        from safesteer_bench.pipeline.seed_runner import SeedRunner

        return plan, SeedRunner(plan).run()
    return plan, Runner(plan).run()
