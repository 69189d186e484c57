"""Executors: who carries out a run's jobs (docs/architecture.md §7, "Executors").

The driver (``Runner.run`` / ``SeedRunner.run``) keeps the run lock, writes ``plan.json`` and
``budget.json`` first, and aggregates and renders at the end; in between an executor does the
per-method work:

- :class:`SequentialExecutor`: in this process, method after method (the default, as always).
- :class:`RayExecutor`: each job a Ray remote task with a resource request (CPUs, a GPU when the
  plan's device is CUDA), scheduled by Ray on a local Ray it starts or on a cluster (``--address``).
- :class:`SlurmExecutor`: the same jobs through submitit (SLURM, or local processes without it).

A job is one method of one (sub-)run (``seed-<s>/`` of a ``--seeds`` plan): prepare or train,
generate, judge, capability, drift (``Runner.evaluate_method``). What several methods reuse (the
steering direction, the drift stage's base completions) is made by one ``shared`` job per
(sub-)run that the method jobs depend on, so no two jobs compute or write it at once. Jobs work
through the same store (a shared filesystem path), so an interrupted run resumes: a re-run skips
every finished stage, whichever executor ran it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Any

from safesteer_bench.errors import UserError

log = logging.getLogger(__name__)

EXECUTORS = ("sequential", "ray", "slurm")


@dataclass(frozen=True)
class Job:
    """One unit of work: ``method`` of the (sub-)run ``plan``, or its shared artifacts (method None)."""

    key: str  # "<run-id>/<method>" or "<run-id>/shared": unique within the run
    plan: Any  # the (sub-)run's Plan, shipped to the worker
    method: str | None
    after: tuple[str, ...] = ()  # keys of the jobs whose outputs this one reads


def executor_for(cfg: Any) -> Any:
    """The executor a RunConfig names (``executor``, ``address``, ``workers``)."""
    name = getattr(cfg, "executor", "sequential") or "sequential"
    if name == "sequential":
        return SequentialExecutor()
    if name == "ray":
        return RayExecutor(address=cfg.address, workers=cfg.workers)
    if name == "slurm":
        return SlurmExecutor(workers=cfg.workers)
    raise UserError(f"unknown executor '{name}'", f"use one of: {', '.join(EXECUTORS)}")


def check_executor(cfg: Any) -> None:
    """Before any model loads: a known executor whose library is installed."""
    name = getattr(cfg, "executor", "sequential") or "sequential"
    if name not in EXECUTORS:
        raise UserError(f"unknown executor '{name}'", f"use one of: {', '.join(EXECUTORS)}")
    if getattr(cfg, "address", None) and name != "ray":
        raise UserError("--address is only read by --executor ray", "add --executor ray or drop --address")
    if getattr(cfg, "workers", None) is not None and cfg.workers < 1:
        raise UserError(f"--workers must be at least 1 (got {cfg.workers})", "omit --workers to use every CPU")
    if name == "ray":
        _import("ray", "ray")
    elif name == "slurm":
        _import("submitit", "slurm")


def _import(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"--executor {extra} needs the '{module}' package, which is not installed",
                        f"pip install 'safesteer-bench[{extra}]' (or pip install {module})") from None


# -- the job list ---------------------------------------------------------------------------------
def plan_jobs(runners: list[Any]) -> list[Job]:
    """Every job of ``runners`` (one per sub-run), each listed after the jobs it depends on."""
    jobs: list[Job] = []
    for runner in runners:
        plan = _shippable(runner.plan)
        prefix = runner.plan.run_dir.name
        shared = f"{prefix}/shared"
        jobs.append(Job(shared, plan, None))
        methods = list(plan.config.methods)
        for name in _anchors_first(runner, methods):
            after = [shared, *(f"{prefix}/{m}" for m in _method_dependencies(runner, name) if m in methods)]
            jobs.append(Job(f"{prefix}/{name}", plan, name, tuple(after)))
    return jobs


def _shippable(plan: Any) -> Any:
    """The plan as workers get it: no progress bars (several workers would interleave them)."""
    return replace(plan, config=replace(plan.config, progress=False), stage_seconds={})


def _parsed_options(runner: Any, name: str) -> Any:
    """A method's parsed options without loading the model (as ``Runner.method_key`` reads them)."""
    from safesteer_bench.methods.api import get_method
    from safesteer_bench.options import method_args_for, options_class

    cfg = runner.plan.config
    own = method_args_for(name, {**cfg.method_args, **cfg.method_options.get(name, {})})
    return options_class(get_method(name)).parse(own, name)


def _method_dependencies(runner: Any, name: str) -> list[str]:
    """Methods whose stored artifact ``name`` reads: alignbeam's ``anchor=method:<m>``."""
    anchor = getattr(_parsed_options(runner, name), "anchor", None)
    return [anchor.split(":", 1)[1]] if isinstance(anchor, str) and anchor.startswith("method:") else []


def _anchors_first(runner: Any, methods: list[str]) -> list[str]:
    """``methods`` with every method after the ones it depends on (the order jobs are submitted)."""
    from graphlib import TopologicalSorter

    graph = {m: [d for d in _method_dependencies(runner, m) if d in methods] for m in methods}
    order = list(TopologicalSorter(graph).static_order())
    return sorted(methods, key=order.index)


def prepare_shared(runner: Any) -> None:
    """Make what several methods' jobs reuse, once: the steering direction of every method that
    steers (one per distinct request) and, with drift on, the base model's drift completions."""
    from safesteer_bench.evaluation.drift_stage import base_completions
    from safesteer_bench.inference.steering import SteeringOptions, shared_direction
    from safesteer_bench.methods.api import get_method
    from safesteer_bench.options import options_class, options_of

    methods = runner.plan.config.methods
    for name in methods:
        cls = options_class(get_method(name))
        if not issubclass(cls, SteeringOptions) or _finished(runner, name):
            continue
        ctx = runner.context(name)
        if getattr(options_of(ctx, cls), "teacher", "steer") != "spec":  # a spec teacher has no hook
            shared_direction(ctx, progress=False)
    if runner.plan.config.drift and any(runner._drift(m) is None for m in methods):
        prompts, gen, _ = runner._drift_setup()
        base_completions(runner.dir / "drift", runner.policy("base"), prompts, gen)


def _finished(runner: Any, name: str) -> bool:
    """True when every stage of ``name`` is stored (its job will not need the direction)."""
    plan = runner.plan
    return (all(runner._judged(name, s) is not None for s in plan.safety)
            and (not plan.capability or runner._capability(name) is not None)
            and (not plan.config.drift or runner._drift(name) is not None))


def run_job(plan: Any, method: str | None, threads: int, cwd: str, *_after: Any) -> dict[str, float]:
    """A worker's job (Ray task or submitit job): its stage seconds. ``_after`` are the results of
    the jobs it depends on; receiving them is what orders it after them."""
    import torch

    from safesteer_bench.pipeline.runner import Runner

    if os.path.isdir(cwd):
        os.chdir(cwd)  # relative --model, --data-dir and --out paths mean what they meant to the driver
    torch.set_num_threads(threads)
    runner = Runner(plan)
    if method is None:
        prepare_shared(runner)
    else:
        runner.evaluate_method(method)
    return dict(runner.plan.stage_seconds)


def _add_seconds(runners: list[Any], jobs: list[Job], seconds: list[dict[str, float]]) -> None:
    """Credit each job's stage seconds to its (sub-)run's timing (work summed over workers)."""
    by_dir = {r.plan.run_dir.name: r for r in runners}
    for job, spent in zip(jobs, seconds):
        runner = by_dir[job.key.split("/", 1)[0]]
        stages = runner.plan.stage_seconds
        for stage, value in (spent or {}).items():
            stages[stage] = stages.get(stage, 0.0) + value
        if runner._started is not None:  # persisted as the job ends, as Runner._tick does per stage
            runner._record_invocation(time.perf_counter() - runner._started, finished=False)


def _device_gpus(plan: Any) -> int:
    from safesteer_bench.modeling.models import default_device

    device = plan.config.device or default_device()
    return 1 if str(device).startswith("cuda") else 0


# -- executors ------------------------------------------------------------------------------------
class SequentialExecutor:
    """Today's behaviour: every method in this process, in the plan's order, sharing the loaded model."""

    name = "sequential"

    def execute(self, runners: list[Any]) -> None:
        for runner in runners:
            for method in runner.plan.config.methods:
                runner.evaluate_method(method)


@dataclass
class RayExecutor:
    """Jobs as Ray tasks. Without ``address`` a local Ray is started with ``workers`` CPUs
    (default: every CPU) and shut down at the end; with one, the cluster there is joined (its
    nodes must see the run directory at the same path)."""

    address: str | None = None
    workers: int | None = None
    threads: int = 1  # CPUs requested by (and torch threads of) each job
    name: str = "ray"

    def execute(self, runners: list[Any]) -> None:
        ray = _import("ray", "ray")
        jobs = plan_jobs(runners)
        started_here = self._connect(ray)
        refs: dict[str, Any] = {}
        try:
            task = ray.remote(run_job)
            for job in jobs:  # each after its dependencies: their refs are its arguments
                refs[job.key] = task.options(num_cpus=self.threads, num_gpus=_device_gpus(job.plan),
                                             name=job.key, max_retries=0).remote(
                    job.plan, job.method, self.threads, os.getcwd(), *(refs[k] for k in job.after))
            log.info("ray: %d jobs submitted (%s)", len(jobs), ", ".join(refs))
            self._wait(ray, runners, {ref: job for job, ref in zip(jobs, refs.values())})
        except BaseException:
            for ref in refs.values():  # Ctrl-C or a failed job: stop the rest at once
                ray.cancel(ref, force=True)
            raise
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Join or start Ray; True when this call started it (and so shuts it down)."""
        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address, logging_level=logging.WARNING)
        else:
            cpus = self.workers or os.cpu_count() or 1
            # A small object store: jobs pass only file paths and stage seconds through it.
            ray.init(num_cpus=cpus * self.threads, include_dashboard=False, logging_level=logging.WARNING,
                     object_store_memory=128 * 1024 ** 2)
        return True

    @staticmethod
    def _wait(ray: Any, runners: list[Any], jobs: dict[Any, Job]) -> None:
        """Collect jobs as they finish, crediting each one's stage seconds at once (so an
        interrupted invocation's timing.json keeps the work it finished, as a sequential one does)."""
        pending = list(jobs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                spent = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, UserError):
                    raise cause from None  # a bad input found in a worker reads as it does sequentially
                raise
            log.info("ray: %s done", jobs[done[0]].key)
            _add_seconds(runners, [jobs[done[0]]], [spent])


@dataclass
class SlurmExecutor:
    """Jobs through submitit: SLURM where ``sbatch`` exists, else local processes (``cluster``
    forces one of submitit's: "slurm", "local", "debug"). Jobs are submitted wave by wave, each
    wave the jobs whose dependencies have finished."""

    workers: int | None = None  # jobs running at once (SLURM array parallelism)
    threads: int = 1
    cluster: str | None = None
    timeout_min: int = 24 * 60
    name: str = "slurm"

    def execute(self, runners: list[Any]) -> None:
        from graphlib import TopologicalSorter

        submitit = _import("submitit", "slurm")
        jobs = {job.key: job for job in plan_jobs(runners)}
        folder = runners[0].plan.run_dir.parent / "slurm" if len(runners) > 1 else runners[0].plan.run_dir / "slurm"
        executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        gpus = _device_gpus(next(iter(jobs.values())).plan)
        executor.update_parameters(timeout_min=self.timeout_min, cpus_per_task=self.threads,
                                   **({"gpus_per_node": gpus} if gpus else {}),
                                   **({"slurm_array_parallelism": self.workers} if self.workers else {}))
        log.info("submitit (%s): %d jobs, logs in %s", executor.cluster, len(jobs), folder)
        order = TopologicalSorter({k: j.after for k, j in jobs.items()})
        order.prepare()
        while order.is_active():
            wave = list(order.get_ready())
            handles = [executor.submit(run_job, jobs[k].plan, jobs[k].method, self.threads, os.getcwd())
                       for k in wave]
            try:
                for key, handle in zip(wave, handles):
                    _add_seconds(runners, [jobs[key]], [handle.result()])
                    order.done(key)
            except BaseException:
                for handle in handles:
                    handle.cancel(check=False)
                raise
