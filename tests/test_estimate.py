"""The dry run's resource estimate: shapes read from files, memory per stage, refusal when it cannot fit."""

from __future__ import annotations

import dataclasses

import pytest

from safesteer_bench.errors import UserError
from safesteer_bench.modeling.models import ModelSpec, resolve_model
from safesteer_bench.pipeline.estimate import (Estimate, StageEstimate, _lora_params, check_fits, describe_estimate,
                                               estimate, model_shape)
from safesteer_bench.pipeline.runner import RunConfig, make_plan


def test_shape_of_a_local_model_is_exact(tiny_dir, tiny):
    model, _ = tiny
    shape = model_shape(ModelSpec(name="tiny", kind="dir", source=str(tiny_dir)))
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert (shape.layers, shape.hidden, shape.kv_width) == (4, 32, 16)


def test_lora_formula_counts_what_peft_trains(tiny_dir, tiny):
    from peft import LoraConfig, get_peft_model

    model, _ = tiny
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    wrapped = get_peft_model(model, LoraConfig(r=8, target_modules=targets, task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    shape = model_shape(ModelSpec(name="tiny", kind="dir", source=str(tiny_dir)))
    assert _lora_params(shape, 8) == trainable


@pytest.mark.real
def test_embedded_model_shape_and_quick_estimate(smollm2):
    spec = resolve_model("smollm2-135m")
    shape = model_shape(spec)
    assert shape.params == 134_515_008 and shape.layers == 30  # the GGUF's and safetensors' tensor count
    quick = make_plan(RunConfig(methods=["base", "safesteer"], model="smollm2-135m", profile="quick",
                                benchmarks="advbench", device="cpu"))
    smoke = make_plan(dataclasses.replace(quick.config, profile="smoke"))
    full = make_plan(dataclasses.replace(quick.config, adapter="full"))
    est = {name: estimate(plan, spec, 100) for name, plan in
           {"quick": quick, "smoke": smoke, "full": full}.items()}
    assert est["smoke"].peak < est["quick"].peak < est["full"].peak
    # the quick reference run's measured peak RSS was 3.24 GB (reports/smollm2-135m-quick/README.md)
    assert 1.5e9 < est["quick"].peak < 6.5e9
    text = describe_estimate(est["quick"])
    assert "135 M parameters" in text and "training: ~" in text and "generation: ~" in text


def test_a_plan_that_cannot_fit_is_refused_with_the_fix():
    small = Estimate("cuda", "bfloat16", None, [StageEstimate("training", 80 * 10**9)], None, 24 * 10**9)
    with pytest.raises(UserError, match="needs ~80.00 GB for training but cuda has 24.00 GB") as err:
        check_fits(small)
    assert "--adapter lora" in err.value.fix
    check_fits(dataclasses.replace(small, available_bytes=None))  # unknown memory: not refused
    check_fits(dataclasses.replace(small, stages=[StageEstimate("training", 10**9)]))


def test_the_default_profile_follows_the_device(monkeypatch, tiny_dir):
    from safesteer_bench.profiles import default_profile

    monkeypatch.delenv("SAFESTEER_BENCH_PROFILE", raising=False)
    assert default_profile("cuda", 7_000_000_000)[0] == "paper"
    assert default_profile("cpu", 135_000_000)[0] == "quick"
    name, why = default_profile("cpu", 7_600_000_000)
    assert name == "smoke" and "7.6B model on CPU" in why
    plan = make_plan(RunConfig(methods=["base"], model=str(tiny_dir), benchmarks="advbench", device="cpu"))
    assert plan.profile.name == "quick" and plan.profile_reason == "the default on CPU"
    assert make_plan(RunConfig(methods=["base"], model=str(tiny_dir), benchmarks="advbench",
                               profile="smoke")).profile_reason == ""
    monkeypatch.setenv("SAFESTEER_BENCH_PROFILE", "demo")
    assert make_plan(RunConfig(methods=["base"], model=str(tiny_dir), benchmarks="advbench")).profile.name == "demo"


def test_dry_run_prints_the_estimate(tiny_dir, tmp_path, data_dir, capsys):
    from safesteer_bench.cli import main

    assert main(["run", "--methods", "base,sft", "--model", str(tiny_dir), "--benchmarks", "advbench",
                 "--dry-run", "--out", str(tmp_path / "r"), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "device    cpu (float32)" in out and "memory    training: ~" in out and "memory    generation: ~" in out
    assert not (tmp_path / "r").exists()
