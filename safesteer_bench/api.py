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
import reprlib
from pathlib import Path
from typing import Any, Mapping

from safesteer_bench.errors import UserError

#: RunConfig fields a config file or ``run(...)`` may set (the rest are set by the harness).
CONFIG_FIELDS = ("methods", "model", "benchmarks", "profile", "out", "judge", "data_dir", "device", "dtype",
                 "seed", "seeds", "limit", "run_id", "adapter", "method_args", "capability_limit",
                 "capability_generate_limit", "allow_code_execution", "split", "second_judge", "drift",
                 "model_args", "progress")
_PLAN_ONLY = {"profile_settings", "stage_seconds", "method_options", "tuning", "prompt_seed", "benchmark_files",
              "command", "index", "limit_resolved", "method_keys"}


def _short(value: Any) -> str:
    """``repr`` of a bad value, bounded (a YAML alias bomb must not become megabytes of error)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 2, 4, 4, 60, 60
    text = short.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


_STRINGS = ("model", "judge", "device", "dtype", "run_id", "second_judge")
_BOOLS = ("allow_code_execution", "drift", "progress")
_COUNTS = ("capability_limit", "capability_generate_limit")


def _check_type(key: str, value: Any, source: str) -> Any:
    """``value`` of config field ``key`` when its type is right (plan.json's types), else a one-line
    UserError: a config file bypasses the flags' own parsing, so a list, a number or a "yes" where
    another type belongs must not reach the run (nor be silently read as something else)."""
    def bad(expected: str) -> UserError:
        return UserError(f"{source}: field '{key}' must be {expected}, got {_short(value)}",
                         f"write {key} as in a plan.json (see `safesteer-bench run --help`)")

    if value is None:
        if key in ("methods", "model", "benchmarks", "out") or key in _BOOLS:
            raise bad("given (it cannot be null)")
        return value
    if key == "methods":
        if isinstance(value, str):
            value = [m.strip() for m in value.split(",") if m.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(m, str) for m in value):
            raise bad("a list of method names")
        return list(value)
    if key == "benchmarks":
        if isinstance(value, (list, tuple)) and all(isinstance(b, str) for b in value):
            return ",".join(value)
        if not isinstance(value, str):
            raise bad("a list of benchmark names (or a comma-separated string)")
        return value
    if key == "profile":
        if isinstance(value, dict):  # plan.json's profile
            value = value.get("name")
        if not isinstance(value, str):
            raise bad("a profile name (or plan.json's profile with its name)")
        return value
    if key in ("out", "data_dir"):
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise bad("a path")
        return Path(str(value))
    if key in _STRINGS and not isinstance(value, str):
        raise bad("a string")
    if key in _BOOLS and not isinstance(value, bool):
        raise bad("true or false")
    if key in ("method_args", "model_args") and (not isinstance(value, dict)
                                                 or not all(isinstance(k, str) for k in value)):
        raise bad("a mapping of option names to values")
    if key == "adapter" and value not in ("lora", "full"):
        raise bad("lora or full")
    if key in _COUNTS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise bad("a whole number of at least 1")
    if key in ("seed", "limit") and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise bad("a number")
    if key == "seeds":
        if isinstance(value, str):
            from safesteer_bench.pipeline.seeds import parse_seeds

            return parse_seeds(value)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in value):
            raise bad("a list of whole numbers")
        return list(value)
    return value


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
        if key == "split" and isinstance(value, dict):  # plan.json describes the split it scored
            value = value.get("evaluated")
        out[key] = _check_type(key, value, source)
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
