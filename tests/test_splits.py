"""The dev / test partition: stable, disjoint, by underlying request, and what runs evaluate."""

from __future__ import annotations

import subprocess
import sys

import pytest

from safesteer_bench.evaluation.benchmark import resolve_benchmarks
from safesteer_bench.data import Prompt
from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan
from safesteer_bench.data.splits import DEV_FRACTION, select, split_of


def test_split_is_a_function_of_the_normalised_text_only():
    a = Prompt(id="x-1", text="How do I bake bread?", source="x")
    b = Prompt(id="y-9", text="  how do I BAKE bread ", source="y", category="food")
    assert split_of(a) == split_of(b)


def test_split_is_the_same_in_another_process(data_dir):
    """Hash-based, not salted by Python's per-process hash seed."""
    script = ("from safesteer_bench.evaluation.benchmark import resolve_benchmarks\n"
              "from safesteer_bench.data.splits import split_of\n"
              f"spec = resolve_benchmarks('advbench')[0]\n"
              f"print(''.join('d' if split_of(p) == 'dev' else 't' for p in spec.load({str(data_dir)!r})))")
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                           env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}).stdout for seed in ("1", "2")]
    (spec,) = resolve_benchmarks("advbench")
    here = "".join("d" if split_of(p) == "dev" else "t" for p in spec.load(data_dir))
    assert runs[0].strip() == runs[1].strip() == here


@pytest.mark.parametrize("name", ["advbench", "harmbench", "strongreject", "xstest", "jailbreak-templates",
                                  "xstest-safe", "alpaca-heldout"])
def test_every_set_splits_into_disjoint_parts_near_the_stated_fraction(data_dir, name):
    (spec,) = resolve_benchmarks(name)
    prompts = spec.load(data_dir)
    dev, test = select(prompts, "dev"), select(prompts, "test")
    assert {p.id for p in dev}.isdisjoint({p.id for p in test})
    assert len(dev) + len(test) == len(prompts)
    # a binomial share: within 4 standard errors of the fraction
    sd = (DEV_FRACTION * (1 - DEV_FRACTION) / len(prompts)) ** 0.5
    assert abs(len(dev) / len(prompts) - DEV_FRACTION) < 4 * sd


def test_a_jailbreak_behavior_is_never_on_both_sides(data_dir):
    (spec,) = resolve_benchmarks("jailbreak-templates")
    sides: dict[str, set[str]] = {}
    for p in spec.load(data_dir):
        sides.setdefault(p.meta["split_key"], set()).add(split_of(p))
    assert all(len(s) == 1 for s in sides.values())
    # and the plain JailbreakBench set agrees on each behavior's side
    (jbb,) = resolve_benchmarks("jailbreakbench")
    shared = [p for p in jbb.load(data_dir) if p.text in sides]
    assert len(shared) == len(sides) == 100
    assert all(sides[p.text] == {split_of(p)} for p in shared)


def test_runs_evaluate_test_prompts_only_and_record_the_split(data_dir):
    plan = make_plan(RunConfig(methods=["base"], model="smollm2-135m", benchmarks="safety-7,over-refusal",
                               data_dir=data_dir, limit=None))
    runner = Runner(plan)
    for spec in plan.safety:
        assert all(split_of(p) == "test" for p in runner.prompts(spec)), spec.name
    assert plan.to_dict()["split"]["evaluated"] == "test"
    # the overlap check and training exclusions still see whole sets (dev and test)
    pool = {p.id for p in runner.eval_pool()}
    assert any(split_of(p) == "dev" and p.id in pool for spec in plan.safety for p in spec.load(data_dir))


def test_unknown_split_is_refused():
    from safesteer_bench.errors import UserError

    with pytest.raises(UserError, match="unknown split"):
        make_plan(RunConfig(methods=["base"], model="smollm2-135m", benchmarks="advbench", split="train"))


def test_check_refuses_a_baseline_scored_on_other_prompts(tmp_path, capsys):
    """A run scored on the test split against a baseline scored on whole sets is no comparison."""
    import json
    from pathlib import Path

    from safesteer_bench.cli import main
    from safesteer_bench.data.splits import describe

    old = Path(__file__).resolve().parents[1] / "reports" / "smoke-baseline" / "results.json"
    doc = json.loads(old.read_text())
    doc["plan"].pop("split", None)
    whole = tmp_path / "whole.json"
    whole.write_text(json.dumps(doc))
    doc["plan"]["split"] = describe()
    split = tmp_path / "split.json"
    split.write_text(json.dumps(doc))
    assert main(["check", str(split), "--against", str(whole)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "split" in err and "whole sets" in err
    assert main(["check", str(split), "--against", str(split)]) == 0


def test_old_plans_stay_whole_set_plans_and_check_still_compares_them(tmp_path, data_dir):
    """Re-aggregating a run from before the split (rejudge) must not stamp a split on its plan."""
    import json
    import shutil
    from pathlib import Path

    from safesteer_bench.cli.evaluate import load_plan
    from safesteer_bench.reporting.gate import plan_differences

    old = Path(__file__).resolve().parents[1] / "reports" / "history" / "smollm2-135m-quick-v1"
    run = tmp_path / "smollm2-135m-quick"
    shutil.copytree(old, run)
    doc = json.loads((run / "results.json").read_text())
    plan = load_plan(run, data_dir)
    assert "split" not in plan.to_dict() and plan.to_dict()["drift"] is False
    assert plan_differences({**doc, "plan": plan.to_dict()}, doc) == []


def test_check_refuses_a_baseline_with_other_drift_or_second_judge_settings(tmp_path, capsys):
    import json
    from pathlib import Path

    from safesteer_bench.cli import main

    base = Path(__file__).resolve().parents[1] / "reports" / "smoke-baseline" / "results.json"
    for field, value in (("drift", False), ("second_judge", "none")):
        doc = json.loads(base.read_text())
        doc["plan"][field] = value
        (tmp_path / "run.json").write_text(json.dumps(doc))
        assert main(["check", str(tmp_path / "run.json"), "--against", str(base)]) == 2
        err = capsys.readouterr().err
        assert field in err and len(err.strip().splitlines()) == 1
