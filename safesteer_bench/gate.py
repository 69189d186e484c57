"""The CI regression gate: compare a run's metrics with a baseline results.json.

A metric fails when its new value falls outside the baseline's 95 % confidence interval widened by
``margin`` on each side (capability metrics: value ± 1.96·stderr), or, when ``tolerance`` is given,
when it moved by more than ``tolerance`` in absolute terms. A metric present in the baseline but
missing from the run fails too: a gate that silently skips what it cannot find checks nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

DEFAULT_MARGIN = 0.02


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


def load_results(path: Path) -> dict[str, Any]:
    """A results.json, given the file or the run directory holding it."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no results at {file}", "pass a run directory or its results.json") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{file} is not valid JSON (line {exc.lineno})", "re-run the run to rewrite it") from None
    if "results" not in doc:
        raise UserError(f"{file} holds no 'results' table", "pass a results.json written by safesteer-bench run")
    return doc


def _metrics(per_bench: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, metric in per_bench.items():
        if isinstance(metric, dict) and isinstance(metric.get("value"), (int, float)):
            yield name, metric


def _band(metric: dict[str, Any], margin: float, tolerance: float | None) -> tuple[float, float]:
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
                low, high = _band(base_metric, margin, tolerance)
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
    fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    header = f"{'method':<12} {'benchmark':<22} {'metric':<20} {'baseline':>9} {'run':>9} {'allowed band':>21}  status"
    lines = [header, "-" * len(header)]
    for c in rows:
        status = "ok" if c.ok else f"FAIL ({c.why})"
        lines.append(f"{c.method:<12} {c.benchmark:<22} {c.metric:<20} {fmt(c.baseline):>9} {fmt(c.value):>9} "
                     f"[{fmt(c.low)}, {fmt(c.high)}]  {status}")
    return "\n".join(lines)
