"""The runner's benign-drift stage: stored per method, filed under 'benign-drift', resumable."""

from __future__ import annotations

import json

import pytest

from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan


def _cfg(tiny_dir, tmp_path, data_dir, **kw):
    return RunConfig(**{**dict(methods=["base"], model=str(tiny_dir), benchmarks="advbench", profile="smoke",
                               out=tmp_path, data_dir=data_dir, limit=4, progress=False), **kw})


def test_base_drift_is_zero_and_resume_loads_no_model(tiny_dir, tmp_path, data_dir, monkeypatch):
    plan = make_plan(_cfg(tiny_dir, tmp_path, data_dir))
    results = Runner(plan).run()
    drift = results["results"]["base"]["benign-drift"]
    assert drift["benign_kl"]["value"] == pytest.approx(0, abs=1e-6)
    assert drift["benign_top1_agreement"]["value"] == 1.0 and drift["benign_kl"]["n"] == 4
    assert drift["base_token_match"] == 1.0  # teacher forcing reproduced the stored greedy tokens
    assert results["benchmarks"]["benign-drift"]["kind"] == "drift"
    stored = json.loads((plan.run_dir / "drift" / "_completions.json").read_text())
    assert len(stored["rows"]) == 4 and all(r["token_ids"] for r in stored["rows"])
    page = (plan.run_dir / "report.html").read_text()
    assert "Refusal vs capability tax: benign drift" in page and "top-1 agreement with base" in page
    import safesteer_bench.pipeline.runner as runner_mod

    monkeypatch.setattr(runner_mod, "load_model", lambda *a, **k: pytest.fail("model loaded on resume"))
    again = Runner(make_plan(_cfg(tiny_dir, tmp_path, data_dir))).run()
    assert again["results"]["base"]["benign-drift"] == drift


def test_a_hooked_policy_drifts_and_no_drift_skips_the_stage(tiny_dir, tmp_path, data_dir, monkeypatch):
    import torch

    from safesteer_bench.modeling.hooks import ResidualHook
    from safesteer_bench.modeling.policy import Policy

    plan = make_plan(_cfg(tiny_dir, tmp_path, data_dir))
    runner = Runner(plan)
    base = runner.policy("base")
    hidden = base.model.config.hidden_size
    hooked = Policy("pushed", base.model, base.tokenizer, "pushed-fp",
                    hooks=(ResidualHook(layer=1, direction=torch.ones(hidden) / hidden ** 0.5, coef=20.0),))
    runner.run_drift("pushed", hooked)
    metrics = json.loads((plan.run_dir / "drift" / "pushed.json").read_text())["metrics"]
    assert metrics["benign_kl"]["value"] > 0 and metrics["benign_top1_agreement"]["value"] < 1
    off = make_plan(_cfg(tiny_dir, tmp_path / "off", data_dir, drift=False))
    results = Runner(off).run()
    assert "benign-drift" not in results["results"]["base"] and not (off.run_dir / "drift").exists()


def test_drift_is_redone_when_its_completions_or_the_artifact_change(tiny_dir, tmp_path, data_dir):
    plan = make_plan(_cfg(tiny_dir, tmp_path, data_dir))
    Runner(plan).run()
    runner = Runner(make_plan(_cfg(tiny_dir, tmp_path, data_dir)))
    assert runner._drift("base") is not None
    completions = plan.run_dir / "drift" / "_completions.json"
    doc = json.loads(completions.read_text())
    completions.write_text(json.dumps({**doc, "key": "other-base"}))
    assert runner._drift("base") is None  # measured on other completions: not trusted
    completions.write_text(json.dumps(doc))
    artifact = plan.run_dir / "methods" / "base" / "artifact.json"
    artifact.write_text(json.dumps({**json.loads(artifact.read_text()), "retrained": True}))
    assert runner._drift("base") is None  # other weights: not trusted


def test_rejudge_without_the_drift_prompts_still_completes(tiny_dir, tmp_path, data_dir, capsys):
    from safesteer_bench.cli import main

    plan = make_plan(_cfg(tiny_dir, tmp_path / "runs", data_dir))
    Runner(plan).run()
    partial = tmp_path / "data"
    partial.mkdir()
    for entry in data_dir.iterdir():
        if entry.name != "alpaca":
            (partial / entry.name).symlink_to(entry)
    assert main(["rejudge", str(plan.run_dir), "--judge", "xstest-rules", "--data-dir", str(partial)]) == 0
    doc = json.loads((plan.run_dir / "results.json").read_text())
    assert doc["rejudge"][-1]["judge"] == "xstest-rules"
    assert doc["results"]["base"]["advbench"]["n"] == 4
