"""Composite scores: small profiles leave chance-level capability tasks out; drift counts in dominance."""

from __future__ import annotations

import pytest

from safesteer_bench.evaluation.benchmark import resolve_benchmarks
from safesteer_bench.profiles import get_profile
from safesteer_bench.pipeline.runner import _benchmark_info
from safesteer_bench.reporting.scores import dominated_by, method_scores


def _metric(value: float) -> dict:
    return {"value": value, "ci_low": value - 0.05, "ci_high": value + 0.05, "stderr": 0.02}


def _task(value: float) -> dict:
    return {"primary_metric": "acc", "acc": _metric(value)}


def _doc(profile: str, agreement: dict[str, float] | None = None) -> dict:
    specs = resolve_benchmarks("mmlu,arc-easy")
    benchmarks = {s.name: _benchmark_info(s, "lm-eval", get_profile(profile)) for s in specs}
    benchmarks["advbench"] = {"kind": "safety"}
    results = {}
    for method, (mmlu, arc, harmful) in {"base": (0.30, 0.40, 0.9), "other": (0.25, 0.45, 0.8)}.items():
        results[method] = {"mmlu": _task(mmlu), "arc-easy": _task(arc),
                           "advbench": {"harmful_rate": {**_metric(harmful), "n": 50}}}
        if agreement:
            results[method]["benign-drift"] = {"benign_top1_agreement": _metric(agreement[method])}
    return {"benchmarks": benchmarks, "results": results}


def test_small_profiles_leave_mmlu_out_of_the_capability_score():
    quick, paper = method_scores(_doc("quick")), method_scores(_doc("paper"))
    assert quick["base"]["capability"] == pytest.approx(0.40)  # ARC-Easy only
    assert paper["base"]["capability"] == pytest.approx(0.35)  # MMLU counts at paper size
    assert _doc("quick")["benchmarks"]["mmlu"]["composite"] is False
    assert _doc("quick")["benchmarks"]["arc-easy"]["composite"] is True


def test_benign_agreement_counts_in_dominance():
    # "other" is safer and more capable; it is undominated only because it drifts from the base
    assert dominated_by(method_scores(_doc("quick")))["base"] == ["other"]
    drifting = method_scores(_doc("quick", {"base": 1.0, "other": 0.7}))
    assert drifting["other"]["agreement"] == pytest.approx(0.7)
    assert drifting["other"]["ci"]["agreement"] == pytest.approx((0.65, 0.75))
    assert dominated_by(drifting) == {"base": [], "other": []}
