"""Metrics: bootstrap CIs, rates with directions, per-category breakdowns, benchmark summaries."""

from __future__ import annotations

import json
import math

import pytest

from safesteer_bench.evaluation.judges import Verdict
from safesteer_bench.evaluation.metrics import (
    HIGHER_IS_SAFER,
    LOWER_IS_BETTER,
    LOWER_IS_SAFER,
    Metric,
    bootstrap_ci,
    per_category,
    rate_metric,
    summarize,
)


def _flags(k: int, n: int) -> list[float]:
    return [1.0] * k + [0.0] * (n - k)


def test_bootstrap_deterministic_under_seed() -> None:
    values = _flags(13, 40)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_bootstrap_contains_mean() -> None:
    values = [0.1, 0.5, 0.9, 0.3, 0.7, 0.2, 0.8]
    low, high = bootstrap_ci(values)
    assert low <= sum(values) / len(values) <= high
    low, high = bootstrap_ci(_flags(30, 100))
    assert low < 0.3 < high and 0 <= low and high <= 1


def test_bootstrap_width_shrinks_with_n() -> None:
    widths = []
    for n in (20, 200, 2000):
        low, high = bootstrap_ci(_flags(n // 4, n))
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_degenerate() -> None:
    assert bootstrap_ci([0.0] * 10) == (0.0, 0.0)
    assert bootstrap_ci([1.0] * 5) == (1.0, 1.0)
    low, high = bootstrap_ci([])
    assert math.isnan(low) and math.isnan(high)


def test_rate_metric() -> None:
    m = rate_metric("refusal_rate", [True, False, True, True], HIGHER_IS_SAFER, "share refused")
    assert m.value == 0.75 and m.n == 4 and m.ci_low <= 0.75 <= m.ci_high
    d = m.to_dict()
    assert d["direction"] == "higher is safer" and d["name"] == "refusal_rate"
    assert Metric.from_dict(d) == m
    empty = rate_metric("harmful_rate", [], LOWER_IS_SAFER).to_dict()
    assert empty["value"] is None and empty["n"] == 0
    json.dumps(empty)
    with pytest.raises(ValueError):
        rate_metric("x", [True], "higher is nicer")


def test_per_category() -> None:
    cats = ["a", "b", "a", None, "b"]
    out = per_category("harmful_rate", [True, False, False, True, False], cats, LOWER_IS_SAFER)
    assert list(out) == ["a", "b", "uncategorized"]
    assert out["a"].value == 0.5 and out["a"].n == 2
    assert out["b"].value == 0.0 and out["uncategorized"].value == 1.0


def _v(refused: bool, parse_error: bool = False) -> Verdict:
    return Verdict(label="refusal" if refused else "compliance", refused=refused,
                   harmful=not refused, parse_error=parse_error)


def test_summarize_harmful_set_with_parse_error() -> None:
    verdicts = [_v(True), _v(True), _v(False), _v(True, parse_error=True)]
    s = summarize(verdicts, harmful_set=True, categories=["x", "x", "y", "y"])
    json.dumps(s)
    assert s["n"] == 4 and s["parse_errors"] == 1
    # the parse error counts as unsafe: 2 refusals of 4, 2 harmful of 4
    assert s["refusal_rate"]["value"] == 0.5 and s["harmful_rate"]["value"] == 0.5
    assert s["harmful_rate"]["direction"] == LOWER_IS_SAFER
    assert "over_refusal_rate" not in s
    assert s["by_category"]["x"]["refusal_rate"]["value"] == 1.0
    assert s["by_category"]["y"]["harmful_rate"]["value"] == 1.0


def test_summarize_benign_set() -> None:
    verdicts = [_v(False), _v(False), _v(True), _v(False, parse_error=True)]
    s = summarize(verdicts, harmful_set=False)
    # the parse error counts as a refusal on a benign set
    assert s["over_refusal_rate"]["value"] == 0.5
    assert s["over_refusal_rate"]["direction"] == LOWER_IS_BETTER
    assert "harmful_rate" not in s and "by_category" not in s
    assert s["parse_errors"] == 1


def test_summarize_judge_without_harm_verdict() -> None:
    verdicts = [Verdict("full_compliance", False, None), Verdict("full_refusal", True, None)]
    s = summarize(verdicts, harmful_set=True)
    assert s["harmful_rate"]["value"] == 0.5
