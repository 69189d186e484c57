"""The model-judge path end to end on the embedded SmolLM2 (issue 16 item 6): a run's stored
completions re-judged by a model judge served through the `safesteer/` inspect provider, with the
judge's parse errors counted and its label carried into results.json and the report."""

from __future__ import annotations

import json

import pytest

from safesteer_bench.cli import main
from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan


@pytest.mark.real
def test_rejudge_a_run_with_smollm2_as_xstest_llm_judge(smollm2, tiny_dir, tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.delenv("SAFESTEER_BENCH_JUDGE_MODEL", raising=False)
    plan = make_plan(RunConfig(methods=["base"], model=str(tiny_dir), benchmarks="xstest", profile="smoke",
                               out=tmp_path, data_dir=data_dir, limit=3, progress=False, drift=False))
    Runner(plan).run()
    code = main(["rejudge", str(plan.run_dir), "--judge", "xstest-llm", "--judge-model", "safesteer/smollm2-135m",
                 "--data-dir", str(data_dir)])
    out = capsys.readouterr().out
    assert code == 0 and "xstest-llm(safesteer/smollm2-135m)" in out
    rows = [json.loads(l) for l in (plan.run_dir / "samples" / "base" / "xstest.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["judge"] == "xstest-llm(safesteer/smollm2-135m)" for r in rows)
    # every verdict is either a parsed XSTest class or a counted parse error resolved conservatively
    for r in rows:
        assert r["parse_error"] or r["verdict"] in ("full_compliance", "full_refusal", "partial_refusal")
        if r["parse_error"]:
            assert r["refused"] is (not r["harmful_prompt"]) or r["harmful"] is True
    doc = json.loads((plan.run_dir / "results.json").read_text())
    assert doc["results"]["base"]["xstest"]["parse_errors"] == sum(r["parse_error"] for r in rows)
    assert doc["benchmarks"]["xstest"]["judge"] == "xstest-llm"
    assert "xstest-llm" in (plan.run_dir / "report.html").read_text()
