"""A second judge on every safety verdict: stored per row, scored as judge_disagreement, reported."""

from __future__ import annotations

import json

import pytest

from safesteer_bench.cli import main
from safesteer_bench.evaluation.disagreement import disagreement_metrics, disputed, second_judge_for
from safesteer_bench.evaluation.judges import JUDGES, Verdict
from safesteer_bench.records import valid_judged
from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan



def _row(harmful_prompt: bool, refused: bool, harmful: bool | None, s_refused: bool, s_harmful: bool | None) -> dict:
    return {"id": "p", "prompt": "q", "completion": "a", "harmful_prompt": harmful_prompt, "judge": "keywords",
            "verdict": "x", "refused": refused, "harmful": harmful, "score": None, "parse_error": False,
            "category": None, "second": {"judge": "other", "verdict": "y", "refused": s_refused,
                                         "harmful": s_harmful, "parse_error": False}}


def test_disputed_compares_the_outcome_the_headline_rates_count():
    # refusal decides on both kinds of prompt (the refusal rate and over-refusal); harm is not compared
    assert disputed(_row(True, True, False, False, True))
    assert disputed(_row(True, False, False, True, False))  # one refuses, one does not
    assert not disputed(_row(True, False, None, False, True))  # neither refuses; harm verdicts differ
    assert not disputed(_row(True, True, False, True, True))
    assert disputed(_row(False, True, False, False, False))
    assert not disputed(_row(False, False, False, False, True))


def test_disagreement_metric_counts_disputed_rows_with_a_wilson_interval():
    rows = [_row(True, True, False, False, True)] + [_row(True, True, False, True, False)] * 3
    out = disagreement_metrics(rows)
    m = out["judge_disagreement"]
    assert m["value"] == 0.25 and m["n"] == 4 and 0 < m["ci_low"] < 0.25 < m["ci_high"] < 1
    assert out["second_judge"]["judge"] == "other" and out["second_judge"]["harmful_rate"]["value"] == 0.25
    assert disagreement_metrics([{**rows[0], "second": None}]) == {}


def test_second_judge_choice():
    assert second_judge_for("keywords", "none") is None
    assert second_judge_for("keywords", "keywords") is None  # a judge never seconds itself
    assert second_judge_for("keywords", "xstest-rules") == "xstest-rules"
    auto = second_judge_for("keywords", "auto")
    assert auto != "keywords" and auto in JUDGES


def test_a_malformed_second_verdict_makes_the_row_invalid():
    row = _row(True, True, False, False, True)
    assert valid_judged(row)
    row["second"] = {"judge": "other", "refused": "yes"}
    assert not valid_judged(row)


class _RefuseAll:
    name = "refuse-all-second"
    description = "test judge: every response is a refusal"

    def judge(self, prompts, responses):
        return [Verdict("refusal", refused=True, harmful=False) for _ in responses]


def test_a_run_scores_and_reports_the_disagreement(tiny_dir, tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(JUDGES._items, _RefuseAll.name, _RefuseAll)  # noqa: SLF001 - a test-only judge
    plan = make_plan(RunConfig(methods=["base"], model=str(tiny_dir), benchmarks="advbench,xstest", profile="smoke",
                               out=tmp_path, data_dir=data_dir, limit=6, progress=False,
                               second_judge=_RefuseAll.name))
    results = Runner(plan).run()
    adv = results["results"]["base"]["advbench"]
    rows = [json.loads(l) for l in (plan.run_dir / "samples" / "base" / "advbench.jsonl").read_text().splitlines()]
    # the second judge refuses everything: it disputes exactly the rows the first judge does not call refusals
    expected = sum(not r["refused"] for r in rows) / len(rows)
    assert adv["judge_disagreement"]["value"] == pytest.approx(expected)
    assert adv["second_judge"]["judge"] == _RefuseAll.name and adv["second_judge"]["refusal_rate"]["value"] == 1.0
    page = (plan.run_dir / "report.html").read_text()
    assert 'id="disagreement"' in page and _RefuseAll.name in page
    # a second run with --second-judge none re-judges (the meta records the second judge) and drops it
    plan2 = make_plan(RunConfig(methods=["base"], model=str(tiny_dir), benchmarks="advbench,xstest", profile="smoke",
                                out=tmp_path, data_dir=data_dir, limit=6, progress=False, second_judge="none",
                                run_id=plan.run_id))
    again = Runner(plan2).run()
    assert "judge_disagreement" not in again["results"]["base"]["advbench"]


def test_rejudge_recomputes_the_second_judge(tiny_dir, tmp_path, data_dir, capsys):
    plan = make_plan(RunConfig(methods=["base"], model=str(tiny_dir), benchmarks="advbench", profile="smoke",
                               out=tmp_path, data_dir=data_dir, limit=4, progress=False, second_judge="auto"))
    Runner(plan).run()
    assert main(["rejudge", str(plan.run_dir), "--judge", "xstest-rules", "--data-dir", str(data_dir)]) == 0
    rows = [json.loads(l) for l in (plan.run_dir / "samples" / "base" / "advbench.jsonl").read_text().splitlines()]
    assert all(r["second"]["judge"] != "xstest-rules" for r in rows)  # never the primary itself
    doc = json.loads((plan.run_dir / "results.json").read_text())
    assert "judge_disagreement" in doc["results"]["base"]["advbench"]
