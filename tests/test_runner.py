"""The runner end to end on a tiny model saved as a local directory: stages, resume, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from safesteer_bench.training.budget import Budget
from safesteer_bench.cli import main
from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan



def _config(tiny_dir: Path, out: Path, data_dir: Path, **kw) -> RunConfig:
    return RunConfig(methods=["base"], model=str(tiny_dir), benchmarks="advbench", profile="smoke",
                     out=out, data_dir=data_dir, limit=6, progress=False, **kw)


def test_run_writes_samples_results_report(tiny_dir, tmp_path, data_dir):
    plan = make_plan(_config(tiny_dir, tmp_path, data_dir))
    results = Runner(plan).run()
    samples = plan.run_dir / "samples" / "base" / "advbench.jsonl"
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 6 and all("completion" in r and "verdict" in r for r in rows)
    metric = results["results"]["base"]["advbench"]["harmful_rate"]
    assert 0 <= metric["ci_low"] <= metric["value"] <= metric["ci_high"] <= 1
    assert json.loads((plan.run_dir / "results.json").read_text())["run_id"] == plan.run_id
    assert (plan.run_dir / "report.html").read_text().count("advbench") >= 1


def test_rerun_skips_finished_stages(tiny_dir, tmp_path, data_dir, monkeypatch):
    plan = make_plan(_config(tiny_dir, tmp_path, data_dir))
    Runner(plan).run()
    # A second run of the same plan must not load the model or generate again.
    import safesteer_bench.pipeline.runner as runner_mod

    monkeypatch.setattr(runner_mod, "load_model", lambda *a, **k: pytest.fail("model loaded on resume"))
    again = make_plan(_config(tiny_dir, tmp_path, data_dir))
    assert again.run_dir == plan.run_dir
    Runner(again).run()


def test_generation_checkpoint_resumes_after_interrupt(tiny_dir, tmp_path, data_dir, monkeypatch):
    """Kill mid-generation (simulated by an exception after the first chunk): finished chunks stay."""
    import safesteer_bench.evaluation.evaluate as evaluate

    cfg = _config(tiny_dir, tmp_path, data_dir)
    cfg.limit = 10
    cfg.drift = False  # counts generate calls: the drift stage's base completions would add some
    plan = make_plan(cfg)
    calls = {"n": 0}
    real = evaluate.Policy.generate

    def flaky(self, prompts, gen_cfg, progress=True):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, prompts, gen_cfg, progress)

    monkeypatch.setattr(evaluate.Policy, "generate", flaky)
    monkeypatch.setattr(evaluate, "CHUNK_PROMPTS", 4)
    with pytest.raises(KeyboardInterrupt):
        Runner(plan).run()
    checkpoint = plan.run_dir / "samples" / "base" / "advbench.gen.jsonl"
    assert len(checkpoint.read_text().splitlines()) == 4
    monkeypatch.setattr(evaluate.Policy, "generate", real)
    seen = []
    monkeypatch.setattr(evaluate.Policy, "generate",
                        lambda self, p, c, progress=True: seen.extend(p) or real(self, p, c, progress))
    Runner(make_plan(cfg)).run()
    assert len(seen) == 6  # only the unfinished prompts were generated


@pytest.mark.parametrize("argv, needle", [
    (["run", "--methods", "nope"], "unknown method 'nope'"),
    (["run", "--methods", "base", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["run", "--methods", "base", "--benchmarks", "nobench"], "unknown benchmark 'nobench'"),
    (["run", "--methods", "base", "--profile", "huge"], "unknown profile 'huge'"),
])
def test_bad_names_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_data_file_exit_2(tmp_path, tiny_dir, monkeypatch, capsys):
    monkeypatch.setenv("SAFESTEER_BENCH_OFFLINE", "1")
    monkeypatch.setenv("SAFESTEER_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SAFESTEER_BENCH_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["run", "--methods", "base", "--model", str(tiny_dir), "--data-dir", str(empty),
                 "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "advbench" in err and "--data-dir" in err and len(err.splitlines()) == 1


def test_offline_hub_model_exit_2_and_debug_shows_traceback(tmp_path, data_dir):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "SAFESTEER_BENCH_CACHE": str(tmp_path / "c")}
    cmd = [sys.executable, "-m", "safesteer_bench", "run", "--methods", "base", "--model",
           "nobody/not-a-model", "--out", str(tmp_path), "--limit", "1", "--data-dir", str(data_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2, out.stderr
    lines = [l for l in out.stderr.strip().splitlines() if l.startswith("error:")]
    assert lines and "nobody/not-a-model" in lines[0] and "Traceback" not in out.stderr
    debug = subprocess.run(cmd[:3] + ["--debug"] + cmd[3:], capture_output=True, text=True, env=env, timeout=300)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


@pytest.mark.real
def test_smoke_run_on_real_model(smollm2, tmp_path, data_dir):
    """The first vertical slice on SmolLM2: base on AdvBench, keyword judge, results with a CI."""
    code = main(["run", "--methods", "base", "--model", "smollm2-135m", "--benchmarks", "advbench",
                 "--profile", "smoke", "--limit", "6", "--data-dir", str(data_dir), "--out", str(tmp_path)])
    assert code == 0
    (results_file,) = tmp_path.glob("*/results.json")
    metric = json.loads(results_file.read_text())["results"]["base"]["advbench"]["refusal_rate"]
    assert metric["n"] == 6 and metric["ci_low"] <= metric["value"] <= metric["ci_high"]
    # SmolLM2 refuses few harmful requests out of the box (DESIGN §3; 8 % of the quick reference's).
    assert metric["value"] <= 0.5


def test_train_command_writes_a_reloadable_artifact(tiny_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "train"
    args = ["train", "--method", "sft", "--model", str(tiny_dir), "--profile", "smoke", "--out", str(out),
            "--data-dir", str(data_dir)]
    assert main(args) == 0
    artifact = json.loads((out / "methods" / "sft" / "artifact.json").read_text())
    budget = json.loads((out / "budget.json").read_text())
    assert artifact["method"] == "sft" and artifact["budget_key"] == Budget.from_dict(budget).key()
    assert (out / "methods" / "sft" / artifact["weights"]).exists()
    assert main(args) == 0 and "already trained" in capsys.readouterr().out
    assert main(["train", "--method", "base", "--model", str(tiny_dir)]) == 2
