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
    small = Estimate("cuda", "bfloat16", None, [StageEstimate("training", 80 * 10**9)], None, 24 * 10**9, "full")
    with pytest.raises(UserError, match="needs ~80.00 GB for training but cuda has 24.00 GB") as err:
        check_fits(small)
    assert "--adapter lora" in err.value.fix and "--dtype" not in err.value.fix  # only remedies not yet taken
    with pytest.raises(UserError) as err:
        check_fits(dataclasses.replace(small, adapter="lora", dtype="float32"))
    assert "--dtype bfloat16" in err.value.fix and "--adapter" not in err.value.fix
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


# -- wall time from measured throughput (pipeline/throughput.py) ---------------------------------

def _m(**kw):
    from safesteer_bench.pipeline.throughput import Measurement, device_name

    base = dict(device=device_name("cpu"), dtype="float32", engine="hf", tokens_per_s=100.0,
                params=100_000_000, batch_size=16, when=1.0)
    return Measurement(**{**base, **kw})


def test_throughput_store_keeps_valid_measurements_and_drops_damage(tmp_path):
    from safesteer_bench.pipeline import throughput

    path = tmp_path / "throughput.json"
    throughput.record(_m(), path)
    throughput.record(_m(tokens_per_s=200.0, when=2.0), path)
    found, source = throughput.lookup("cpu", "float32", "hf", 100_000_000, path)
    assert found.tokens_per_s == 200.0 and source == "measured on this device"  # latest of equals
    path.write_text('{"measurements": [{"device": "cpu: x", "tokens_per_s": -1}, 5, "x"]}')
    found, source = throughput.lookup("cpu", "float32", "hf", 100_000_000, path)
    assert "checked-in CPU reference" in source and found.params == 134_515_008
    path.write_text("{not json")
    assert throughput.lookup("cpu", "float32", "hf", 10**8, path)[0] is not None  # falls back, not crashes


def test_throughput_lookup_prefers_this_device_then_the_nearest_model_size(tmp_path):
    from safesteer_bench.pipeline import throughput

    path = tmp_path / "t.json"
    throughput.record(_m(params=7_000_000_000, tokens_per_s=5.0), path)
    throughput.record(_m(params=135_000_000, tokens_per_s=150.0), path)
    throughput.record(_m(device="cpu: other x 64 threads", params=135_000_000, tokens_per_s=900.0, when=9.0), path)
    found, source = throughput.lookup("cpu", "float32", "hf", 8_000_000_000, path)
    assert found.tokens_per_s == 5.0 and source == "measured on this device"
    found, source = throughput.lookup("cpu", "bfloat16", "vllm", 135_000_000, path)
    assert found.tokens_per_s == 150.0 and "another dtype/engine" in source
    # no GPU measured: the wall time is unknown, not guessed from a spec sheet
    assert throughput.lookup("cuda", "bfloat16", "hf", 10**9, path)[0] is None or \
        throughput.device_name("cuda").startswith("cpu")


def test_throughput_scales_by_size_and_batch():
    from safesteer_bench.pipeline.throughput import tokens_per_second

    m = _m(tokens_per_s=100.0, params=100_000_000, batch_size=16)
    assert tokens_per_second(m, 200_000_000, 16) == pytest.approx(50.0)
    assert tokens_per_second(m, 100_000_000, 8) == pytest.approx(50.0)
    assert tokens_per_second(m, 100_000_000, 64) == pytest.approx(100.0)  # no gain assumed past the measured batch


def test_measure_reads_rows_and_skips_tiny_models():
    from safesteer_bench.pipeline.throughput import measure

    rows = [{"new_tokens": 100, "seconds": 0.5}] * 4 + [{"new_tokens": 7, "seconds": None}]
    m = measure("cpu", "float32", "hf", 135_000_000, 16, rows)
    assert m.tokens_per_s == pytest.approx(200.0)
    assert measure("cpu", "float32", "hf", 50_000, 16, rows) is None  # overhead-bound: not recorded
    assert measure("cpu", "float32", "hf", 135_000_000, 16, rows[:1]) is None  # too few tokens


def test_dry_run_wall_time_counts_rollouts_and_says_its_source(tiny_dir, tmp_path, monkeypatch):
    from safesteer_bench.pipeline import throughput

    monkeypatch.setenv("SAFESTEER_BENCH_CACHE", str(tmp_path / "cache"))
    spec = ModelSpec(name="tiny", kind="dir", source=str(tiny_dir))
    base_only = make_plan(RunConfig(methods=["base"], model=str(tiny_dir), benchmarks="advbench", device="cpu"))
    trained = make_plan(dataclasses.replace(base_only.config, methods=["base", "sft"]))
    a, b = estimate(base_only, spec, 50), estimate(trained, spec, 50)
    assert b.wall.tokens > 2 * a.wall.tokens  # sft: its own evaluation plus its rollouts
    assert "checked-in CPU reference" in a.wall.source
    throughput.record(_m(params=a.shape.params * 10**3, tokens_per_s=10.0))
    again = estimate(base_only, spec, 50)
    assert again.wall.source.startswith("measured on this device") and again.wall.seconds != a.wall.seconds
    assert "throughput from measured on this device" in describe_estimate(again)


def test_headline_command_dry_run_on_cpu_plans_smoke_and_refuses_what_cannot_fit(tmp_path, data_dir, capsys,
                                                                                 monkeypatch):
    """`run --methods safesteer,sft --model qwen2-7b` on a CPU machine: nothing downloaded, the
    published sizes give the plan (smoke for 7.6B on CPU), its memory and time; 24 GiB is too small."""
    from safesteer_bench.cli import main
    from safesteer_bench.pipeline import estimate as est_mod

    monkeypatch.delenv("SAFESTEER_BENCH_PROFILE", raising=False)
    monkeypatch.setattr(est_mod, "available_memory", lambda device: 24 * 2**30)
    code = main(["run", "--methods", "safesteer,sft", "--model", "qwen2-7b", "--device", "cpu", "--dry-run",
                 "--out", str(tmp_path / "r"), "--data-dir", str(data_dir)])
    captured = capsys.readouterr()
    assert code == 2 and "needs ~" in captured.err and "--dtype bfloat16" in captured.err
    assert "profile smoke" in captured.out and "7.6B model on CPU" in captured.out
    assert "7,616 M parameters, 28 blocks" in captured.out and "time      generation ~" in captured.out
    assert not (tmp_path / "r").exists()
    # in bf16 it fits in 24 GiB and the dry run succeeds
    assert main(["run", "--methods", "safesteer,sft", "--model", "qwen2-7b", "--device", "cpu", "--dtype", "bfloat16",
                 "--dry-run", "--out", str(tmp_path / "r"), "--data-dir", str(data_dir)]) == 0
