"""``safesteer-bench tune``: every method's options chosen on **dev** prompts, at equal trials.

Each method declares ``search_space`` (search_space.py) beside its options. For each method an
Optuna study (TPE sampler, median pruner; SQLite storage under the study folder, so an
interrupted search resumes where it stopped) runs the same number of trials. The first trial of
every study is the method's defaults, so tuning can only match or beat them on dev. Options fixed
with ``--method-args`` leave the space; when what is left is a grid of choices no larger than the
trials, the grid is searched exhaustively (Optuna's GridSampler) instead.

A trial is an ordinary run of that one method (runner.py) on the **dev** split of the tuning
benchmarks (``split="dev"``: test prompts are never loaded), scored by one criterion:

    dev safety − dev over-refusal   (scores.method_scores, the same composites the report uses)

Trials are cheap: training methods use ``budget_fraction`` of the budget's steps. Evaluation
comes in two rungs (half the dev prompts, then all of them, resumed from the first rung's
completions); after the first rung the median pruner stops trials below the median of earlier
trials at that rung.

The study folder holds ``optuna.sqlite3``, every trial's run under ``trials/``, and
``tuned.json``: per method the chosen options and every trial (settings, dev scores, state).
``run --tuned <study>/tuned.json`` applies the chosen options per method and shows the trials in
the report.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safesteer_bench.errors import UserError
from safesteer_bench.modeling.policy import fingerprint
from safesteer_bench.tuning.search_space import describe, suggest
from safesteer_bench.pipeline.store import read_json_dict, write_json_atomic

log = logging.getLogger(__name__)

CRITERION = "dev refusal rate on harmful prompts − dev over-refusal"
FORMAT = "safesteer-bench/tuned/1"
DEFAULT_BENCHMARKS = "advbench,xstest"


@dataclass
class TuneConfig:
    methods: list[str]
    model: str = "smollm2-135m"
    profile: str = "smoke"
    benchmarks: str = DEFAULT_BENCHMARKS
    trials: int = 6
    out: Path = Path("runs")
    study_id: str = "tune"
    data_dir: Path | None = None
    device: str | None = None
    dtype: str | None = None
    seed: int = 0
    judge: str | None = None
    limit: int | None = None  # dev prompts per benchmark (default: the profile's)
    budget_fraction: float = 0.5  # of the training budget's steps, per trial
    method_args: dict[str, Any] = field(default_factory=dict)  # fixed options of every trial
    progress: bool = True


def space_of(method: str, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's declared search space, less the options fixed by --method-args."""
    from safesteer_bench.methods.api import get_method

    space = dict(getattr(get_method(method), "search_space", {}) or {})
    return {k: d for k, d in space.items() if k not in (fixed or {})}


def _grid(space: dict[str, Any], trials: int) -> dict[str, list[Any]] | None:
    """The full grid when every searched option is a choice and ``trials`` covers it (then the
    search is exhaustive rather than sampled), else None."""
    from safesteer_bench.tuning.search_space import Choice

    if not space or not all(isinstance(d, Choice) for d in space.values()):
        return None
    size = math.prod(len(d.values) for d in space.values())
    return {k: list(d.values) for k, d in space.items()} if size <= trials else None


def _run_config(cfg: TuneConfig, method: str, args: dict[str, Any], limit: int | None) -> Any:
    from safesteer_bench.pipeline.runner import RunConfig

    run_id = f"{method}-{fingerprint(method, args)[:10]}"
    return RunConfig(methods=[method], model=cfg.model, benchmarks=cfg.benchmarks, profile=cfg.profile,
                     out=cfg.out / cfg.study_id / "trials", judge=cfg.judge, data_dir=cfg.data_dir,
                     device=cfg.device, dtype=cfg.dtype, seed=cfg.seed, limit=limit, run_id=run_id,
                     progress=cfg.progress, method_args=args, split="dev", second_judge="none", drift=False,
                     index=False, command=f"tune trial of {method}",
                     shared_dir=cfg.out / cfg.study_id / "shared")


def score(results: dict[str, Any], method: str) -> dict[str, float | None]:
    """The criterion and its parts from one trial run's results."""
    from safesteer_bench.reporting.scores import method_scores

    s = method_scores(results).get(method, {})
    refusal, over = s.get("refusal"), s.get("over_refusal")
    value = None if refusal is None else refusal - (over or 0.0)
    return {"value": value, "refusal": refusal, "over_refusal": over}


class Tuner:
    """Runs the studies; ``base`` (a LoadedModel) is shared by every trial's Runner."""

    def __init__(self, cfg: TuneConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.out / cfg.study_id
        self._base: Any = None
        self._limit: int | None = None

    # -- set-up -----------------------------------------------------------------------------------
    def validate(self) -> None:
        """Every name and value checked before any model loads (a dry run of one trial per method)."""
        from safesteer_bench.pipeline.runner import make_plan

        if self.cfg.trials < 1:
            raise UserError(f"--trials must be at least 1 (got {self.cfg.trials})", "pass e.g. --trials 6")
        if not 0 < self.cfg.budget_fraction <= 1:
            raise UserError(f"--budget-fraction must be in (0, 1] (got {self.cfg.budget_fraction})",
                            "pass e.g. --budget-fraction 0.5")
        for method in self.cfg.methods:
            plan = make_plan(_run_config(self.cfg, method, dict(self.cfg.method_args), self.cfg.limit))
            self._limit = plan.limit
            if not plan.safety:
                raise UserError("tune needs safety or over-refusal benchmarks", "pass e.g. --benchmarks advbench,xstest")

    @property
    def base(self) -> Any:
        if self._base is None:
            from safesteer_bench.modeling.models import load_model, resolve_model

            self._base = load_model(resolve_model(self.cfg.model), self.cfg.device, self.cfg.dtype)
        return self._base

    def _rungs(self) -> list[int | None]:
        limit = self._limit
        if limit is None or limit < 4:
            return [limit]
        return [math.ceil(limit / 2), limit]

    # -- one trial ----------------------------------------------------------------------------------
    def run_trial(self, method: str, args: dict[str, Any], limit: int | None) -> dict[str, Any]:
        from safesteer_bench.pipeline.runner import Runner, make_plan

        runner = Runner(make_plan(_run_config(self.cfg, method, args, limit)))
        runner._base = self.base  # one model load for the whole search
        return runner.run()

    def trial_args(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        from safesteer_bench.methods.api import get_method

        args = {**self.cfg.method_args, **{k: _text(v) for k, v in params.items()}}
        if get_method(method).kind == "training" and self.cfg.budget_fraction < 1:
            args["budget_fraction"] = _text(self.cfg.budget_fraction)
        return args

    def objective(self, method: str, trial: Any) -> float:
        import optuna

        n_layers = getattr(self.base.model.config, "num_hidden_layers", None)
        params = {k: suggest(trial, k, d, n_layers) for k, d in space_of(method, self.cfg.method_args).items()}
        args = self.trial_args(method, params)
        rungs = self._rungs()
        result: dict[str, Any] = {}
        for step, limit in enumerate(rungs):
            result = score(self.run_trial(method, args, limit), method)
            trial.set_user_attr(f"rung{step}", {**result, "limit": limit})
            if result["value"] is None:
                raise UserError(f"{method}: a trial produced no refusal rate on harmful prompts",
                                "tune on benchmarks with harmful prompts, e.g. --benchmarks advbench,xstest")
            if step < len(rungs) - 1:
                trial.report(result["value"], step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        trial.set_user_attr("scores", result)
        trial.set_user_attr("run_id", _run_config(self.cfg, method, args, None).run_id)
        return float(result["value"])

    # -- studies --------------------------------------------------------------------------------------
    def study(self, method: str, space: dict[str, Any]) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.dir.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(self.dir / 'optuna.sqlite3').resolve()}"
        grid = _grid(space, self.cfg.trials)
        sampler = (optuna.samplers.GridSampler(grid, seed=self.cfg.seed) if grid is not None
                   else optuna.samplers.TPESampler(seed=self.cfg.seed))
        return optuna.create_study(
            study_name=method, storage=storage, direction="maximize", load_if_exists=True, sampler=sampler,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))

    def tune_method(self, method: str) -> dict[str, Any]:
        import optuna
        from optuna.trial import TrialState

        space = space_of(method, self.cfg.method_args)
        study = self.study(method, space)
        if not space:  # nothing to choose: its dev scores still give the other studies a reference
            if "scores" not in study.user_attrs:
                args = dict(self.cfg.method_args)
                study.set_user_attr("scores", score(self.run_trial(method, args, self._limit), method))
            return self.summary(method, study, space)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # left running by an interrupted search: its run folder resumes when it is asked again
            study.enqueue_trial(t.params, skip_if_exists=False)
            study.tell(t.number, state=TrialState.FAIL)
        if not study.trials and _grid(space, self.cfg.trials) is None:  # a grid holds the defaults already
            study.enqueue_trial({k: v for k, v in self.defaults(method).items() if k in space})
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        remaining = self.cfg.trials - done
        if remaining > 0:
            log.info("%s: %d trial(s) to run (%s)", method, remaining,
                     "; ".join(f"{k} in {describe(d)}" for k, d in space.items()))
            study.optimize(lambda trial: self.objective(method, trial), n_trials=remaining,
                           catch=(), gc_after_trial=True)
        return self.summary(method, study, space)

    def defaults(self, method: str) -> dict[str, Any]:
        """The fixed default values of searched options, for the first (enqueued) trial. Options
        whose default is chosen automatically (the steering block) are sampled in that trial."""
        from safesteer_bench.methods.api import get_method
        from safesteer_bench.profiles import get_profile

        declared = dict(getattr(get_method(method), "defaults", {}) or {})
        return {"learning_rate": get_profile(self.cfg.profile).learning_rate, "train_fraction": 1.0, **declared}

    def summary(self, method: str, study: Any, space: dict[str, Any]) -> dict[str, Any]:
        from optuna.trial import TrialState

        trials = []
        for t in study.get_trials(deepcopy=False):
            if t.state == TrialState.FAIL:
                continue
            trials.append({"number": t.number, "state": t.state.name.lower(), "params": t.params,
                           "value": t.value, "scores": t.user_attrs.get("scores"),
                           "rungs": {k: v for k, v in t.user_attrs.items() if k.startswith("rung")},
                           "run_id": t.user_attrs.get("run_id")})
        complete = [t for t in trials if t["state"] == "complete"]
        defaults = {k: v for k, v in self.defaults(method).items() if k in space}

        def is_default(t: dict[str, Any]) -> bool:
            return all(_text(t["params"].get(k)) == _text(v) for k, v in defaults.items())

        # Ties go to the defaults (a change needs a dev gain), then to the earlier trial.
        best = (max(complete, key=lambda t: (round(t["value"], 9), is_default(t), -t["number"]))
                if complete else None)
        return {"space": {k: describe(d) for k, d in space.items()}, "trials": trials,
                **({"scores": study.user_attrs["scores"]} if "scores" in study.user_attrs else {}),
                "chosen": {k: _text(v) for k, v in best["params"].items()} if best else {},
                "chosen_trial": best["number"] if best else None,
                "value": best["value"] if best else None}

    def run(self) -> dict[str, Any]:
        from safesteer_bench.pipeline.store import run_lock

        self.validate()
        self.dir.mkdir(parents=True, exist_ok=True)
        with run_lock(self.dir):
            doc = {"format": FORMAT, "criterion": CRITERION, "split": "dev", "model": self.cfg.model,
                   "profile": self.cfg.profile, "benchmarks": self.cfg.benchmarks, "seed": self.cfg.seed,
                   "trials_per_method": self.cfg.trials, "budget_fraction": self.cfg.budget_fraction,
                   "dev_prompts_per_benchmark": self._limit, "fixed_method_args": self.cfg.method_args,
                   "methods": {}}
            for method in self.cfg.methods:
                doc["methods"][method] = self.tune_method(method)
                write_json_atomic(self.dir / "tuned.json", doc)  # progress survives an interrupt
            return doc


def _text(value: Any) -> str:
    """An option value as --method-args carries it (floats without float noise)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def load_tuned(path: Path, methods: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(per-method options, the tuned.json document) for ``run --tuned``; one-line errors."""
    doc = read_json_dict(path)
    if doc is None:
        raise UserError(f"{path} is missing or not a JSON object", "pass the tuned.json a `tune` run wrote")
    if doc.get("format") != FORMAT or not isinstance(doc.get("methods"), dict):
        raise UserError(f"{path} is not a tuned.json written by `safesteer-bench tune`",
                        "pass <out>/<study-id>/tuned.json")
    options: dict[str, dict[str, Any]] = {}
    for method in methods:
        entry = doc["methods"].get(method)
        chosen = entry.get("chosen") if isinstance(entry, dict) else None
        if isinstance(chosen, dict) and chosen:
            options[method] = {str(k): str(v) for k, v in chosen.items()}
    return options, doc


