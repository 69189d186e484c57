"""The Python API: run a comparison and read its results for analysis (docs/architecture.md §9).

    import safesteer_bench as ssb

    results = ssb.run(methods=["base", "safesteer"], model="smollm2-135m", benchmarks="advbench,xstest",
                      profile="smoke", limit=10)
    frame = ssb.load_results("runs/<run-id>")   # one row per (method, benchmark, metric)

``run`` takes the fields of :class:`~safesteer_bench.pipeline.runner.RunConfig` (the same fields
``plan.json`` records and ``run --config run.yaml`` reads), validates them exactly as the command
line does, and returns the run's ``results.json`` as a dict. A ``UserError`` names a bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from safesteer_bench.errors import UserError

#: RunConfig fields a config file or ``run(...)`` may set (the rest are set by the harness).
CONFIG_FIELDS = ("methods", "model", "benchmarks", "profile", "out", "judge", "data_dir", "device", "dtype",
                 "seed", "seeds", "limit", "run_id", "adapter", "method_args", "capability_limit",
                 "capability_generate_limit", "allow_code_execution", "split", "second_judge", "drift",
                 "model_args", "progress")
_PLAN_ONLY = {"profile_settings", "stage_seconds", "method_options", "tuning", "prompt_seed", "benchmark_files",
              "command", "index", "limit_resolved"}


def config_fields(doc: Mapping[str, Any], source: str) -> dict[str, Any]:
    """RunConfig keyword arguments from a mapping with plan.json's fields (a ``--config`` file or a
    finished run's ``plan.json``): lists or comma strings for methods/benchmarks, ``profile`` as a
    name or plan.json's dict. An unknown key is a UserError listing the valid ones."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _PLAN_ONLY:
            continue
        if key not in CONFIG_FIELDS:
            raise UserError(f"{source}: unknown field '{key}'", f"valid fields: {', '.join(CONFIG_FIELDS)}")
        if key == "profile" and isinstance(value, dict):
            value = value.get("name")
        if key == "split" and isinstance(value, dict):  # plan.json describes the split it scored
            value = value.get("evaluated")
        if key == "benchmarks" and isinstance(value, list):
            value = ",".join(map(str, value))
        if key == "methods" and isinstance(value, str):
            value = [m.strip() for m in value.split(",") if m.strip()]
        if key in ("out", "data_dir") and value is not None:
            value = Path(str(value))
        out[key] = value
    return out


def read_config(path: str | Path) -> dict[str, Any]:
    """A ``run --config`` file (YAML or JSON, plan.json's fields) as RunConfig keyword arguments."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist", "pass the path of a run.yaml (or a plan.json)")
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} cannot be read ({str(exc).splitlines()[0]})",
                        "write a YAML or JSON mapping with plan.json's fields") from None
    if not isinstance(doc, dict):
        raise UserError(f"config file {path} is not a mapping", "write `methods: [base, safesteer]` and so on")
    return config_fields(doc, str(path))


def run(methods: list[str] | str, model: str = "smollm2-135m", *, dry_run: bool = False,
        **fields: Any) -> dict[str, Any]:
    """Plan, validate and run (or resume) a comparison; its ``results.json`` as a dict
    (``dry_run``: the plan's ``plan.json`` fields, nothing run or written)."""
    from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan

    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    kwargs = config_fields({"methods": methods, "model": model, **fields}, "run()")
    seeds = kwargs.pop("seeds", None)
    cfg = RunConfig(**kwargs)
    if seeds:
        cfg.seed, cfg.seeds = seeds[0], (list(seeds) if len(seeds) > 1 else None)
    plan = make_plan(cfg)
    if dry_run:
        return plan.to_dict()
    from safesteer_bench.pipeline.estimate import check_fits

    if cfg.seeds:
        from safesteer_bench.pipeline.seed_runner import SeedRunner

        runner: Any = SeedRunner(plan)
    else:
        runner = Runner(plan)
    runner.check_data()
    check_fits(runner.estimate())
    return runner.run()


def load_results(run: str | Path) -> Any:
    """Every metric of a run as a pandas DataFrame: columns method, benchmark, metric, value,
    ci_low, ci_high, stderr, n (one row per method x benchmark x metric)."""
    import pandas as pd

    from safesteer_bench.pipeline.store import read_json_dict

    path = Path(run)
    path = path / "results.json" if path.is_dir() else path
    doc = read_json_dict(path)
    if doc is None or not isinstance(doc.get("results"), dict):
        raise UserError(f"no results at {path}", "pass a run directory or its results.json")
    rows = []
    for method, benchmarks in doc["results"].items():
        for benchmark, metrics in (benchmarks or {}).items():
            for metric, entry in (metrics or {}).items():
                if isinstance(entry, dict) and "value" in entry:
                    rows.append({"method": method, "benchmark": benchmark, "metric": metric,
                                 **{k: entry.get(k) for k in ("value", "ci_low", "ci_high", "stderr", "n")}})
    return pd.DataFrame(rows, columns=["method", "benchmark", "metric", "value", "ci_low", "ci_high", "stderr", "n"])


__all__ = ["run", "load_results", "read_config", "config_fields"]
