"""Runs a ``--seeds`` plan: its sub-runs one after another, then the combined results (seeds.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from safesteer_bench.pipeline.seeds import combine_results, seed_configs
from safesteer_bench.pipeline.store import read_json_dict, run_lock, write_json_atomic

log = logging.getLogger(__name__)


class SeedRunner:
    """Each seed is an ordinary resumable run under ``<run>/seed-<s>/``; the parent directory
    holds the combined ``results.json`` and ``report.html``. Re-running resumes every sub-run."""

    def __init__(self, plan: Any) -> None:
        from safesteer_bench.pipeline.runner import Runner, make_plan

        self.plan = plan
        self.dir: Path = plan.run_dir
        self.runners = {cfg.seed: Runner(make_plan(cfg)) for cfg in seed_configs(plan.config, plan.run_dir)}
        for runner in self.runners.values():
            runner.plan.config.index = False  # the combined run is filed, not its parts

    def check_data(self) -> None:
        first = next(iter(self.runners.values()))
        first.check_data()
        # a fractional --limit, resolved per benchmark (every seed scores the same prompts)
        self.plan.resolved_limits.update(first.plan.resolved_limits)

    @property
    def budget(self) -> Any:
        return next(iter(self.runners.values())).budget

    def estimate(self) -> Any:
        """One sub-run's needs (they run one after another); wall time for all of them."""
        import dataclasses

        estimates = [runner.estimate() for runner in self.runners.values()]
        walls = [e.wall for e in estimates]
        if any(w is None for w in walls):
            return dataclasses.replace(estimates[0], wall=None)
        tokens = sum(w.tokens for w in walls)  # later seeds skip seed-free methods
        total = dataclasses.replace(walls[0], seconds=sum(w.seconds for w in walls), tokens=tokens)
        return dataclasses.replace(estimates[0], wall=total)

    def overlap(self) -> dict[str, Any]:
        return next(iter(self.runners.values())).overlap()

    def run(self) -> dict[str, Any]:
        with run_lock(self.dir):
            return self._run_locked()

    def _run_locked(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.check_data()  # first: plan.json records a fractional --limit's counts
        write_json_atomic(self.dir / "plan.json", self.plan.to_dict())
        docs: dict[int, dict[str, Any]] = {}
        if (self.plan.config.executor or "sequential") != "sequential":
            docs = self._run_jobs()  # every seed's jobs handed to the executor at once
        for seed, runner in self.runners.items():
            if seed in docs:
                continue
            log.info("seed %s: %s", seed, ", ".join(runner.plan.config.methods))
            runner.run()
            docs[seed] = read_json_dict(runner.dir / "results.json") or {}
        results = combine_results(docs, self.plan.to_dict(), self.plan.run_id)
        results["timing"]["parent_wall_seconds"] = round(time.perf_counter() - started, 2)
        write_json_atomic(self.dir / "results.json", results)
        report = self.render(results)
        from safesteer_bench.reporting.leaderboard import index_quietly

        index_quietly(Path(self.plan.config.out), results, report)
        return results

    def _run_jobs(self) -> dict[int, dict[str, Any]]:
        """Each sub-run locked and begun, all their jobs run by the plan's executor, each finished."""
        from contextlib import ExitStack

        from safesteer_bench.pipeline.executors import executor_for

        runners = list(self.runners.values())
        with ExitStack() as locks:
            for runner in runners:
                locks.enter_context(run_lock(runner.dir))
                runner.begin()
            executor_for(self.plan.config).execute(runners)
            return {seed: runner.finish() for seed, runner in self.runners.items()}

    def render(self, results: dict[str, Any]) -> Path:
        """The combined report; sample completions come from the first seed that ran each method."""
        from safesteer_bench.reporting.report import render_report

        samples: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for method in self.plan.config.methods:
            runner = next((r for r in self.runners.values() if method in r.plan.config.methods), None)
            if runner is not None:
                samples[method] = {s.name: runner._judged(method, s) or [] for s in runner.plan.safety}
        return render_report(results, samples, self.dir / "report.html")
