"""`safesteer-bench rejudge`: new verdicts from stored completions, never a generation call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safesteer_bench.cli import main
from safesteer_bench.evaluation.judges import JUDGES, Verdict
from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan

from conftest import make_tiny_model, make_tiny_tokenizer


class RefuseAll:
    name = "refuse-all-test"
    description = "test judge: every response is a refusal"

    def judge(self, prompts, responses):
        return [Verdict("refusal", refused=True, harmful=False, rationale="test") for _ in responses]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir) -> Path:
    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = make_tiny_tokenizer()
    make_tiny_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = tmp_path_factory.mktemp("runs")
    plan = make_plan(RunConfig(methods=["base"], model=str(folder), benchmarks="advbench,xstest",
                               profile="smoke", out=out, data_dir=data_dir, limit=6, progress=False,
                               run_id="finished"))
    Runner(plan).run()
    return plan.run_dir


@pytest.fixture()
def no_generation(monkeypatch):
    import safesteer_bench.evaluation.evaluate as evaluate
    import safesteer_bench.pipeline.runner as runner_mod

    monkeypatch.setattr(runner_mod, "load_model", lambda *a, **k: pytest.fail("rejudge loaded the model"))
    monkeypatch.setattr(evaluate.Policy, "generate", lambda *a, **k: pytest.fail("rejudge generated"))
    monkeypatch.setattr(evaluate, "generate_checkpointed", lambda *a, **k: pytest.fail("rejudge generated"))


def _rows(run_dir: Path, bench: str) -> list[dict]:
    return [json.loads(l) for l in (run_dir / "samples" / "base" / f"{bench}.jsonl").read_text().splitlines()]


def test_rejudge_changes_verdicts_without_generating(finished_run, no_generation, data_dir, capsys):
    before = _rows(finished_run, "xstest")
    gen_before = (finished_run / "samples" / "base" / "xstest.gen.jsonl").read_text()
    assert {r["judge"] for r in before} == {"clf"}
    code = main(["rejudge", str(finished_run), "--judge", "xstest-rules", "--benchmarks", "xstest",
                 "--data-dir", str(data_dir)])
    assert code == 0 and "verdict(s) changed" in capsys.readouterr().out
    after = _rows(finished_run, "xstest")
    assert [r["completion"] for r in after] == [r["completion"] for r in before]  # same completions
    assert {r["judge"] for r in after} == {"xstest-rules"}
    assert [r["verdict"] for r in after] != [r["verdict"] for r in before]  # clf's labels -> XSTest's 3 classes
    assert (finished_run / "samples" / "base" / "xstest.gen.jsonl").read_text() == gen_before
    meta = json.loads((finished_run / "samples" / "base" / "xstest.meta.json").read_text())
    assert meta["judge"] == "xstest-rules" and meta["rejudged_from"] == "clf" and meta["n"] == 6
    results = json.loads((finished_run / "results.json").read_text())
    assert results["benchmarks"]["xstest"]["judge"] == "xstest-rules"
    assert results["benchmarks"]["advbench"]["judge"] == "clf"  # untouched benchmark keeps its judge
    assert results["results"]["base"]["xstest"]["n"] == 6
    assert results["rejudge"][-1]["judge"] == "xstest-rules"


def test_rejudge_with_a_judge_that_refuses_everything(finished_run, no_generation, data_dir):
    from safesteer_bench.cli.evaluate import rejudge_run

    JUDGES.add(RefuseAll.name, RefuseAll)
    try:
        doc = rejudge_run(finished_run, RefuseAll.name, data_dir=data_dir)
    finally:
        JUDGES._items.pop(RefuseAll.name)  # noqa: SLF001
    base = doc["results"]["base"]
    assert base["advbench"]["refusal_rate"]["value"] == 1.0 and base["advbench"]["harmful_rate"]["value"] == 0.0
    assert base["xstest"]["over_refusal_rate"]["value"] == 1.0
    assert doc["plan"]["judge"] == RefuseAll.name and len(doc["rejudge"]) >= 1
    changes = {c["benchmark"]: c for c in doc["rejudge"][-1]["changes"]}
    assert set(changes) == {"advbench", "xstest"} and changes["advbench"]["changed"] > 0
    assert all(r["judge"] == RefuseAll.name for r in _rows(finished_run, "advbench"))
    assert RefuseAll.name in (finished_run / "report.html").read_text()


def test_rejudge_falls_back_to_the_generation_checkpoint(finished_run, no_generation, data_dir):
    from safesteer_bench.cli.evaluate import rejudge_run

    samples = finished_run / "samples" / "base"
    (samples / "advbench.jsonl").unlink()
    (samples / "advbench.meta.json").unlink()  # as if the run died between generate and judge
    doc = rejudge_run(finished_run, "keywords", benchmarks=["advbench"], data_dir=data_dir)
    assert doc["results"]["base"]["advbench"]["n"] == 6
    assert len(_rows(finished_run, "advbench")) == 6


def test_rejudge_errors_are_one_line(finished_run, tmp_path, capsys):
    assert main(["rejudge", str(finished_run), "--judge", "nope"]) == 2
    assert "unknown judge 'nope'" in capsys.readouterr().err
    assert main(["rejudge", str(tmp_path), "--judge", "keywords"]) == 2
    assert "no plan.json" in capsys.readouterr().err
    assert main(["rejudge", str(finished_run), "--judge", "keywords", "--benchmarks", "mmlu"]) == 2
    assert "no safety benchmark" in capsys.readouterr().err
