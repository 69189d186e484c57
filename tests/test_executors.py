"""Executors (pipeline/executors.py): a run's jobs on Ray and submitit give the sequential run's
results, resume after an interrupted run, and are ordered after the shared artifacts they read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from safesteer_bench.errors import UserError
from safesteer_bench.pipeline.executors import SlurmExecutor, check_executor, plan_jobs
from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan

METHODS = ["base", "steering", "sft", "safesteer"]


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker is pinned: the same arithmetic, and 2 shared cores
    yield
    torch.set_num_threads(before)


def _config(tiny_dir: Path, data_dir: Path, out: Path, **kw) -> RunConfig:
    fields = dict(methods=list(METHODS), model=str(tiny_dir), benchmarks="advbench", profile="smoke", out=out,
                  data_dir=data_dir, limit=2, progress=False)
    return RunConfig(**{**fields, **kw})


def _samples(run_dir: Path) -> dict[str, list[dict]]:
    """Every judged and generated row of the run, less wall-clock fields."""
    rows = {}
    for path in sorted((run_dir / "samples").rglob("*.jsonl")):
        rows[str(path.relative_to(run_dir))] = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                                                 for line in path.read_text().splitlines()]
    return rows


def _numbers(results: dict) -> dict:
    """What must not depend on the executor: every metric, the plan, the budget (not timing)."""
    return {k: results.get(k) for k in ("run_id", "plan", "results", "budget", "overlap", "style")}


@pytest.fixture(scope="module")
def sequential(tiny_dir, data_dir, tmp_path_factory):
    """The reference: the same plan run by the sequential executor."""
    import torch

    torch.set_num_threads(1)
    plan = make_plan(_config(tiny_dir, data_dir, tmp_path_factory.mktemp("sequential")))
    results = Runner(plan).run()
    return plan, results


def test_ray_run_interrupted_then_resumed_equals_sequential(sequential, tiny_dir, data_dir, tmp_path):
    """Ctrl-C a Ray run from the command line once a job has finished (exit 130, Ray shut down),
    re-run it on Ray: finished stages are kept, the rest is made, and every completion and metric
    equals the sequential executor's."""
    pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install -e .[test])")
    seq_plan, seq_results = sequential
    out = tmp_path / "runs"
    argv = [sys.executable, "-m", "safesteer_bench.cli", "run", "--methods", ",".join(METHODS), "--model",
            str(tiny_dir), "--benchmarks", "advbench", "--profile", "smoke", "--limit", "2", "--out", str(out),
            "--data-dir", str(data_dir), "--executor", "ray", "--workers", "2"]
    run_dir = out / seq_plan.run_id  # the executor is not part of the plan: same run id
    first_done = run_dir / "samples" / "base" / "advbench.jsonl"
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not first_done.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, f"the run ended before it could be interrupted:\n{proc.stdout.read()}"
    proc.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert time.monotonic() - stopped < 30, "Ray was not shut down promptly after Ctrl-C"
    assert not (run_dir / "results.json").exists()
    kept = {p: p.stat().st_mtime_ns for p in (run_dir / "samples").rglob("*.jsonl") if not p.name.endswith(".gen.jsonl")}
    assert first_done in kept

    cfg = _config(tiny_dir, data_dir, out, executor="ray", workers=2)
    results = Runner(make_plan(cfg)).run()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "a finished stage was redone on resume"
    assert _numbers(results) == _numbers(seq_results)
    assert _samples(run_dir) == _samples(seq_plan.run_dir)
    assert results["timing"]["invocations"] == 2


def test_submitit_local_jobs_equal_sequential(sequential, tiny_dir, data_dir, tmp_path):
    """The same job list through submitit's local executor (one process per job, wave by wave)."""
    pytest.importorskip("submitit", reason="submitit (the 'slurm' extra) is not installed")
    seq_plan, seq_results = sequential
    runner = Runner(make_plan(_config(tiny_dir, data_dir, tmp_path, methods=["base", "steering"])))
    reference = {m: seq_results["results"][m] for m in ("base", "steering")}
    runner.begin()
    SlurmExecutor(workers=2, cluster="local").execute([runner])
    results = runner.finish()
    assert results["results"] == reference
    assert _samples(runner.dir) == {k: v for k, v in _samples(seq_plan.run_dir).items()
                                    if k.split("/")[1] in ("base", "steering")}
    assert results["timing"]["stages"]["generate"] > 0  # the workers' stage seconds reach the driver


def test_jobs_come_after_what_they_read(tiny_dir, data_dir, tmp_path):
    """Each method's job waits for its run's shared job (the steering direction, the drift's base
    completions) and alignbeam's for the method it is anchored on; seeds make separate sub-runs."""
    from safesteer_bench.pipeline.seed_runner import SeedRunner

    cfg = _config(tiny_dir, data_dir, tmp_path, methods=["alignbeam", "sft", "base"], seeds=[0, 1],
                  method_args={"anchor": "method:sft"})
    jobs = plan_jobs(list(SeedRunner(make_plan(cfg)).runners.values()))
    keys = [j.key for j in jobs]
    # base is seed-free: only the first sub-run has it
    assert sorted(keys) == sorted(["seed-0/shared", "seed-0/sft", "seed-0/alignbeam", "seed-0/base",
                                   "seed-1/shared", "seed-1/sft", "seed-1/alignbeam"])
    after = {j.key: j.after for j in jobs}
    assert after["seed-0/alignbeam"] == ("seed-0/shared", "seed-0/sft")
    assert after["seed-1/sft"] == ("seed-1/shared",) and after["seed-0/shared"] == ()
    assert all(keys.index(dep) < keys.index(j.key) for j in jobs for dep in j.after)
    assert not any(j.plan.config.progress for j in jobs)  # workers draw no interleaved progress bars


def test_ray_executor_without_ray_says_how_to_install(tiny_dir, data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without ray imports
    with pytest.raises(UserError, match=r"pip install 'safesteer-bench\[ray\]'"):
        make_plan(_config(tiny_dir, data_dir, tmp_path, executor="ray"))
    with pytest.raises(UserError, match="--address is only read by --executor ray"):
        check_executor(replace(_config(tiny_dir, data_dir, tmp_path), address="auto"))


def test_the_shared_job_finds_no_direction_for_a_spec_teacher(tiny_dir, data_dir, tmp_path, monkeypatch):
    """safesteer with teacher=spec has no hook: the shared job must not search a direction for it
    (the search is the costliest setup step), while a steered safesteer gets one."""
    from safesteer_bench.inference import steering
    from safesteer_bench.pipeline.executors import prepare_shared

    asked = []
    monkeypatch.setattr(steering, "shared_direction", lambda ctx, progress=True: asked.append(ctx.workdir.name))
    for teacher in ("spec", "steer"):
        cfg = _config(tiny_dir, data_dir, tmp_path / teacher, methods=["safesteer"], drift=False,
                      method_options={"safesteer": {"teacher": teacher}})
        runner = Runner(make_plan(cfg))
        prepare_shared(runner)
    assert asked == ["safesteer"]  # once: for the steered teacher only
