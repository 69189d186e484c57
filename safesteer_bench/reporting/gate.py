"""The CI regression gate: compare a run's metrics with a baseline results.json.

A metric fails when its new value falls outside the baseline's 95 % confidence interval widened by
``margin`` on each side (capability metrics: value ± 1.96·stderr), or, when ``tolerance`` is given,
when it moved by more than ``tolerance`` in absolute terms. Shares (rates, accuracies) are shown in
% and ``margin`` / ``tolerance`` are percentage points for them, as every table of the project
shows them; other metrics (perplexity, KL) keep their own units. A metric present in the baseline but
missing from the run fails too: a gate that silently skips what it cannot find checks nothing.
For the same reason :func:`check_run` refuses (UserError) a baseline or run with no metrics, and a
run planned differently from its baseline (other methods, benchmarks, profile or limits), where
every row would be "missing" for a reason that is not a regression.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from safesteer_bench.errors import UserError

DEFAULT_MARGIN = 2.0  # percentage points for shares, units for the other metrics


@dataclass
class Check:
    method: str
    benchmark: str
    metric: str
    baseline: float | None
    value: float | None
    low: float | None
    high: float | None
    ok: bool
    why: str


FIX_RESULTS = "pass a results.json written by `safesteer-bench run` (re-run the run to rewrite a damaged one)"
# The plan fields that decide which metrics a run has: runs that differ in them cannot be compared
# metric by metric (the other fields, e.g. the judge or the seed, move values, which is the gate's job).
PLAN_FIELDS = ("methods", "benchmarks", "profile", "limit", "capability_limit", "split", "second_judge", "drift")
# What a plan written before a field existed did: compared as that value, so a newer run that
# changed it is refused and one that kept it is not.
_PLAN_DEFAULTS = {"second_judge": "none", "drift": False}
# Fields of a metric that the gate and scores.py do arithmetic on.
_METRIC_NUMBERS = ("value", "ci_low", "ci_high", "stderr", "n")
# What scores.summary_rows formats as numbers from a method's artifact["spent"].
SPENT_NUMBERS = ("generated_tokens", "trained_tokens", "wall_seconds", "peak_memory_mb")
_MAX_DEPTH = 32  # deeper nesting than any results.json holds: hostile input, and recursion is bounded


def _one_line(text: Any) -> str:
    """Document text (run ids, commands) squeezed onto one line, as errors must be one line."""
    return " ".join(str(text).split())


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), type(value).__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # JSON true is not a rate


def _wrong(where: str, at: str, value: Any, expected: str) -> UserError:
    return UserError(f"{where} is not a results.json written by safesteer-bench: "
                     f"{at} is {_json_type(value)}, expected {expected}", FIX_RESULTS)


def _object(value: Any, where: str, at: str, nullable: bool = False) -> dict[str, Any]:
    if isinstance(value, dict) or (nullable and value is None):
        return value or {}
    raise _wrong(where, at, value, "an object" + (" or null" if nullable else ""))


def _validate_metrics(node: dict[str, Any], where: str, at: str, depth: int = 0) -> None:
    """A benchmark's entry: any object holding "value" is a metric whose numbers must be numbers
    (or null); other objects (by_category, requests) are searched the same way."""
    if depth > _MAX_DEPTH:
        raise UserError(f"{where} is not a results.json written by safesteer-bench: {at} is nested too deeply",
                        FIX_RESULTS)
    if "value" in node:
        for field in _METRIC_NUMBERS:
            if node.get(field) is not None and not _is_number(node[field]):
                raise _wrong(where, f"{at}.{field}", node[field], "a number or null")
    if "primary_metric" in node and not isinstance(node["primary_metric"], str):
        raise _wrong(where, f"{at}.primary_metric", node["primary_metric"], "a metric name (string)")
    for key, child in node.items():
        if isinstance(child, dict):
            _validate_metrics(child, where, f"{at}.{key}", depth + 1)


def _validate_methods(methods: Any, where: str) -> None:
    for name, info in _object(methods, where, "methods").items():
        artifact = _object(_object(info, where, f"methods.{name}", nullable=True).get("artifact"),
                           where, f"methods.{name}.artifact", nullable=True)
        spent = _object(artifact.get("spent"), where, f"methods.{name}.artifact.spent", nullable=True)
        for field in SPENT_NUMBERS:
            if spent.get(field) is not None and not _is_number(spent[field]):
                raise _wrong(where, f"methods.{name}.artifact.spent.{field}", spent[field], "a number or null")


def _validate_plan(plan: Any, where: str) -> None:
    plan = _object(plan, where, "plan")
    _object(plan.get("profile"), where, "plan.profile", nullable=True)
    for field in ("methods", "benchmarks"):
        names = plan.get(field)
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise _wrong(where, f"plan.{field}", names, "a list of names")


def validate_results(doc: Any, where: str) -> dict[str, Any]:
    """``doc`` itself when it has the shape check, summary and the leaderboard read (a "results"
    object of method → benchmark → metrics objects, numbers where they compute); else one
    UserError naming ``where`` and the first thing that is wrong."""
    if not isinstance(doc, dict):
        raise _wrong(where, "the top level", doc, "an object")
    if "results" not in doc:
        raise UserError(f"{where} holds no 'results' table", FIX_RESULTS)
    for method, benches in _object(doc["results"], where, "results").items():
        for bench, per in _object(benches, where, f"results.{method}").items():
            _validate_metrics(_object(per, where, f"results.{method}.{bench}"), where, f"results.{method}.{bench}")
    for bench, info in _object(doc.get("benchmarks", {}), where, "benchmarks").items():
        kind = _object(info, where, f"benchmarks.{bench}").get("kind")
        if kind is not None and not isinstance(kind, str):
            raise _wrong(where, f"benchmarks.{bench}.kind", kind, "a string")
    _validate_methods(doc.get("methods", {}), where)
    if "plan" in doc:
        _validate_plan(doc["plan"], where)
    if doc.get("run_id") is not None and not isinstance(doc["run_id"], str):
        raise _wrong(where, "run_id", doc["run_id"], "a string")
    return doc


def results_file(path: Path) -> Path:
    """The results.json meant by ``path``: the file itself or the run directory holding it."""
    path = Path(path)
    return path / "results.json" if path.is_dir() else path


def _not_json(name: str) -> Any:
    """NaN and ±Infinity are not JSON; a band built on them would pass or fail everything."""
    raise ValueError(f"{name} is not a JSON number")


def load_results(path: Path) -> dict[str, Any]:
    """A validated results.json, given the file or the run directory holding it."""
    file = results_file(path)
    try:
        doc = json.loads(file.read_text(encoding="utf-8"), parse_constant=_not_json)
    except FileNotFoundError:
        raise UserError(f"no results at {file}", "pass a run directory or its results.json") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{file} is not valid JSON (line {exc.lineno})", "re-run the run to rewrite it") from None
    except UnicodeDecodeError:
        raise UserError(f"{file} is not UTF-8 text", "pass a results.json written by safesteer-bench run") from None
    except RecursionError:  # json's own recursion on hostile nesting
        raise UserError(f"{file} is nested too deeply to be a results.json", FIX_RESULTS) from None
    except ValueError as exc:  # NaN / Infinity tokens, integers past Python's digit limit
        raise UserError(f"{file} holds a value that is not a finite JSON number ({str(exc)[:80]})",
                        FIX_RESULTS) from None
    except OSError as exc:
        raise UserError(f"cannot read {file} ({exc.strerror or exc})", "pass a readable results.json") from None
    return validate_results(doc, str(file))


def _metrics(per_bench: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, metric in per_bench.items():
        if isinstance(metric, dict) and _is_number(metric.get("value")):
            yield name, metric


def count_metrics(doc: dict[str, Any]) -> int:
    """How many metrics with a numeric value a validated results document holds."""
    return sum(1 for benches in doc["results"].values() for per in benches.values() for _ in _metrics(per))


def _plan_value(plan: dict[str, Any], field: str) -> Any:
    if field == "split":  # which prompts were scored; plans from before the split scored whole sets
        split = plan.get("split")
        if not isinstance(split, dict) or split.get("evaluated") is None:
            return "whole sets"
        return f"{split.get('evaluated')} split (dev fraction {split.get('dev_fraction')}, salt {split.get('salt')})"
    if field in _PLAN_DEFAULTS:
        return plan.get(field, _PLAN_DEFAULTS[field])
    value = plan[field]
    if field == "profile":
        return value.get("name") if isinstance(value, dict) else value
    if field in ("methods", "benchmarks"):  # which ones, not their order, decide the metrics
        return sorted(set(value or []))
    return value


def _show(value: Any) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


def plan_differences(run: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """"field run-value vs the baseline's value" for each :data:`PLAN_FIELDS` entry the two plans set
    differently; empty when either has no plan. A field only one plan has is not compared: older
    results.json files lack the newer fields, and that alone says nothing about the metrics."""
    if not isinstance(run.get("plan"), dict) or not isinstance(baseline.get("plan"), dict):
        return []
    diffs = []
    for field in PLAN_FIELDS:
        if (field in run["plan"] and field in baseline["plan"]) or (
                field in ("split", *_PLAN_DEFAULTS) and (field in run["plan"] or field in baseline["plan"])):
            mine, theirs = _plan_value(run["plan"], field), _plan_value(baseline["plan"], field)
            if mine != theirs:
                diffs.append(f"{field} {_show(mine)} vs the baseline's {_show(theirs)}")
    return diffs


def _label(doc: dict[str, Any], file: Path) -> str:
    """The run id and file: run and baseline usually share the id (both ci-smoke), not the file."""
    run_id = doc.get("run_id")
    return f"{_one_line(run_id)} ({file})" if isinstance(run_id, str) and run_id.strip() else str(file)


def check_run(run_path: Path, baseline_path: Path, margin: float = DEFAULT_MARGIN,
              tolerance: float | None = None) -> list[Check]:
    """Load and validate both results, refuse what cannot be a meaningful comparison (a side with
    no metrics passes vacuously; differently planned runs differ in which metrics exist), compare."""
    run_file, base_file = results_file(run_path), results_file(baseline_path)
    run, baseline = load_results(run_file), load_results(base_file)
    if count_metrics(baseline) == 0:
        raise UserError(f"baseline {base_file} holds no metrics, so nothing would be checked",
                        "pass a results.json written by `safesteer-bench run`, "
                        "e.g. reports/smoke-baseline/results.json")
    if count_metrics(run) == 0:
        raise UserError(f"run {run_file} holds no metrics, so nothing would be checked",
                        "pass the directory of a finished `safesteer-bench run` (or its results.json)")
    diffs = plan_differences(run, baseline)
    if diffs:
        command = baseline.get("command")
        how = f" (`{_one_line(command)}`)" if isinstance(command, str) and command.strip() else ""
        raise UserError(f"run {_label(run, run_file)} was planned differently from baseline "
                        f"{_label(baseline, base_file)} ({'; '.join(_one_line(d) for d in diffs)})",
                        f"re-run with the baseline's command{how}, or pass a baseline planned like this run")
    return compare(run, baseline, margin=margin, tolerance=tolerance)


def _band(metric: dict[str, Any], margin: float, tolerance: float | None, name: str = "") -> tuple[float, float]:
    """The allowed band of a baseline metric, in the metric's stored unit (a share's points / 100)."""
    from safesteer_bench.evaluation.metrics import is_share

    if is_share(name):
        margin, tolerance = margin / 100, None if tolerance is None else tolerance / 100
    value = metric["value"]
    if tolerance is not None:
        return value - tolerance, value + tolerance
    if metric.get("ci_low") is not None and metric.get("ci_high") is not None:
        return metric["ci_low"] - margin, metric["ci_high"] + margin
    stderr = metric.get("stderr") or 0.0
    return value - 1.96 * stderr - margin, value + 1.96 * stderr + margin


def compare(run: dict[str, Any], baseline: dict[str, Any], margin: float = DEFAULT_MARGIN,
            tolerance: float | None = None) -> list[Check]:
    checks = []
    for method, benches in baseline["results"].items():
        for bench, per in benches.items():
            got = run["results"].get(method, {}).get(bench, {})
            for name, base_metric in _metrics(per):
                low, high = _band(base_metric, margin, tolerance, name)
                new = got.get(name, {}).get("value") if isinstance(got.get(name), dict) else None
                if new is None:
                    checks.append(Check(method, bench, name, base_metric["value"], None, low, high, False, "missing"))
                    continue
                ok = low - 1e-12 <= new <= high + 1e-12
                why = "" if ok else ("below" if new < low else "above") + " the tolerance band"
                checks.append(Check(method, bench, name, base_metric["value"], new, low, high, ok, why))
    return checks


def format_checks(checks: list[Check], only_failures: bool = True) -> str:
    rows = [c for c in checks if not c.ok] if only_failures else checks
    from safesteer_bench.evaluation.metrics import is_share

    header = (f"{'method':<12} {'benchmark':<22} {'metric':<20} {'baseline':>9} {'run':>9} {'allowed band':>21}  "
              f"status  (shares in %)")
    lines = [header, "-" * len(header)]
    for c in rows:
        scale = 100 if is_share(c.metric) else 1
        fmt = lambda v: "—" if v is None else f"{scale * v:.2f}"  # noqa: E731
        status = "ok" if c.ok else f"FAIL ({c.why})"
        lines.append(f"{c.method:<12} {c.benchmark:<22} {c.metric:<20} {fmt(c.baseline):>9} {fmt(c.value):>9} "
                     f"[{fmt(c.low)}, {fmt(c.high)}]  {status}")
    return "\n".join(lines)
