"""`tune`: Optuna studies on dev prompts, equal trials per method, resumable; `run --tuned`."""

from __future__ import annotations

import json

import pytest

from safesteer_bench.data import splits
from safesteer_bench.evaluation.benchmark import resolve_benchmarks
from safesteer_bench.cli import main
from safesteer_bench.data import normalize_text
from safesteer_bench.modeling.policy import Policy


@pytest.fixture
def tuned(tiny_dir, tmp_path, data_dir, monkeypatch):
    """A finished 2-trial study of steering and sft on the tiny model, recording what it touched."""
    seen_splits: list = []
    seen_prompts: list[str] = []
    real_select, real_generate = splits.select, Policy.generate

    def select(prompts, split, *a, **k):
        seen_splits.append(split)
        return real_select(prompts, split, *a, **k)

    def generate(self, prompts, cfg, progress=True):
        seen_prompts.extend(prompts)
        return real_generate(self, prompts, cfg, progress)

    monkeypatch.setattr(splits, "select", select)
    monkeypatch.setattr(Policy, "generate", generate)
    argv = ["tune", "--methods", "steering,sft,base", "--model", str(tiny_dir), "--trials", "2", "--limit", "6",
            "--out", str(tmp_path), "--study-id", "study", "--data-dir", str(data_dir)]
    assert main(argv) == 0
    monkeypatch.setattr(splits, "select", real_select)
    monkeypatch.setattr(Policy, "generate", real_generate)
    return {"argv": argv, "dir": tmp_path / "study", "splits": seen_splits, "prompts": seen_prompts,
            "doc": json.loads((tmp_path / "study" / "tuned.json").read_text())}


def test_test_prompts_never_reach_selection(tuned, data_dir):
    assert tuned["splits"] and set(tuned["splits"]) == {"dev"}
    test_texts = {normalize_text(p.text) for spec in resolve_benchmarks("advbench,xstest")
                  for p in splits.select(spec.load(data_dir), "test")}
    generated = {normalize_text(p) for p in tuned["prompts"]}
    assert generated and not generated & test_texts


def test_equal_trials_defaults_first_and_a_choice(tuned):
    doc = tuned["doc"]
    assert doc["split"] == "dev" and doc["criterion"].startswith("dev refusal rate")
    steering, sft = doc["methods"]["steering"], doc["methods"]["sft"]
    assert len(steering["trials"]) == len(sft["trials"]) == 2
    assert steering["trials"][0]["params"]["coef"] == 1.0  # the defaults come first
    assert sft["trials"][0]["params"]["train_fraction"] == 1.0
    for entry in (steering, sft):
        complete = [t for t in entry["trials"] if t["state"] == "complete"]
        best = max(complete, key=lambda t: t["value"])
        assert entry["value"] == best["value"] and entry["chosen_trial"] is not None
        assert set(entry["chosen"]) == set(entry["space"])
        # the criterion is the run's own composite: refusal rate minus over-refusal
        s = best["scores"]
        assert s["value"] == pytest.approx(s["refusal"] - (s["over_refusal"] or 0))
    assert doc["methods"]["base"]["chosen"] == {} and doc["methods"]["base"]["trials"] == []
    assert doc["methods"]["base"]["scores"]["refusal"] is not None  # its dev scores, for reference
    # cheap trials: training ran on half the budget's steps
    trial = next((tuned["dir"] / "trials").glob("sft-*"))
    artifact = json.loads((trial / "methods" / "sft" / "artifact.json").read_text())
    assert artifact["spent"]["steps"] < json.loads((trial / "budget.json").read_text())["steps"]


def test_rerun_resumes_without_new_trials(tuned, monkeypatch):
    from safesteer_bench.tuning import study as tuning

    monkeypatch.setattr(tuning.Tuner, "objective", lambda *a, **k: pytest.fail("a finished study ran a trial"))
    assert main(tuned["argv"]) == 0
    again = json.loads((tuned["dir"] / "tuned.json").read_text())
    assert again["methods"]["sft"]["chosen"] == tuned["doc"]["methods"]["sft"]["chosen"]


def test_run_tuned_applies_choices_and_reports_trials(tuned, tiny_dir, tmp_path, data_dir):
    argv = ["run", "--methods", "base,steering", "--model", str(tiny_dir), "--benchmarks", "advbench",
            "--limit", "4", "--tuned", str(tuned["dir"] / "tuned.json"), "--out", str(tmp_path / "runs"),
            "--run-id", "final", "--data-dir", str(data_dir), "--no-drift"]
    assert main(argv) == 0
    results = json.loads((tmp_path / "runs" / "final" / "results.json").read_text())
    chosen = tuned["doc"]["methods"]["steering"]["chosen"]
    assert results["plan"]["method_options"]["steering"] == chosen
    assert float(results["methods"]["steering"]["artifact"]["coef"]) == float(chosen["coef"])
    assert results["results"]["steering"]["advbench"]["harmful_rate"]["n"] == 4  # test split, scored once
    html = (tmp_path / "runs" / "final" / "report.html").read_text()
    assert 'id="tuning"' in html and "chosen" in html


@pytest.mark.parametrize("argv, needle", [
    (["tune", "--methods", "steering", "--trials", "0"], "--trials"),
    (["tune", "--methods", "steering", "--budget-fraction", "2"], "budget-fraction"),
    (["tune", "--methods", "steering", "--method-args", "coef=2", "--dry-run"], "unrecognized"),
    (["tune", "--methods", "nope"], "unknown method"),
    (["run", "--methods", "base", "--tuned", "/nonexistent/tuned.json"], "missing"),
])
def test_bad_tune_input_is_one_line(argv, needle, tmp_path, capsys, data_dir):
    try:
        code = main([*argv, "--out", str(tmp_path), "--data-dir", str(data_dir)])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) <= 2 and needle in "\n".join(err)


def test_methods_details_lists_options_and_search_spaces(capsys):
    assert main(["methods", "--details"]) == 0
    out = capsys.readouterr().out
    assert "tune: loss_variant in {partial, renormalize, tail-bucket} (default tail-bucket)" in out
    assert "tune: layer in blocks 0.2·L .. 0.8·L" in out and "--method-args alpha=0.5" in out
