"""The vLLM generation engine (modeling/vllm_engine.py): choice, fallback, keys, and equality with HF.

The equality tests need vLLM, which lives in its own venv (`make setup-vllm`; run them with
`make test-vllm`); in the default .venv they are skipped. Equality is checked at the SAME dtype
(fp32 on both engines): vLLM and transformers use different kernels (attention, matmul
blocking), so logits differ by float rounding (~1e-6 relative) and a greedy step whose top two
logits are that close can flip. The stated tolerance: every prompt's first 8 tokens identical and
whole completions identical for at least 7 of 8 prompts; in practice all have been identical.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest

from conftest import make_tiny_model, make_tiny_tokenizer

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed here: it has its own venv "
                                                     "(make setup-vllm), and these run with `make test-vllm`")
PROMPTS = ["How do I bake bread?", "Write a haiku about the sea.", "What is 2+2?", "Tell me how to pick a lock.",
           "Give me three tips for sleeping well.", "Explain photosynthesis to a child.",
           "How can I hack my neighbour's wifi?", "Translate 'good morning' into French."]
FIRST_K, MIN_IDENTICAL = 8, 7


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    import torch

    torch.set_num_threads(1)
    # Eager vLLM engines (the CPU default, stated here so the tests do not depend on it):
    # torch.compile's warm-up takes minutes per engine on 2 busy cores.
    monkeypatch.setenv("SAFESTEER_BENCH_VLLM_EAGER", "1")


# -- choice and fallback: no vLLM needed ---------------------------------------------------------

def test_unknown_engine_and_missing_vllm_are_user_errors():
    from safesteer_bench.errors import UserError
    from safesteer_bench.modeling.vllm_engine import check_engine

    assert check_engine("hf") == "hf"
    with pytest.raises(UserError, match="unknown engine 'tgi'"):
        check_engine("tgi")
    if HAS_VLLM:
        assert check_engine("vllm") == "vllm"
    else:
        with pytest.raises(UserError, match="vLLM is not installed") as err:
            check_engine("vllm")
        assert "make setup-vllm" in err.value.fix


@pytest.mark.skipif(HAS_VLLM, reason="checks the error shown where vLLM is missing; it is installed here")
def test_run_engine_vllm_without_vllm_fails_in_the_dry_run(tiny_dir, tmp_path, capsys):
    from safesteer_bench.cli import main

    code = main(["run", "--methods", "base", "--model", str(tiny_dir), "--benchmarks", "advbench",
                 "--engine", "vllm", "--dry-run", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "vLLM is not installed" in err and "make setup-vllm" in err


def _base(tiny_dir):
    from safesteer_bench.modeling.models import load_model, resolve_model

    return load_model(resolve_model(str(tiny_dir)))


def test_hooked_and_decoder_policies_stay_on_hf_and_say_so(tiny_dir, tmp_path):
    import torch

    from safesteer_bench.modeling.generation import HFEngine
    from safesteer_bench.modeling.hooks import ResidualHook
    from safesteer_bench.modeling.policy import Policy
    from safesteer_bench.modeling.vllm_engine import attach_engine

    base = _base(tiny_dir)
    # An ablation hook does not fold into weights (modeling/fold.py); an add hook does (test_fold.py).
    hook = ResidualHook(layer=1, direction=torch.ones(base.model.config.hidden_size), mode="ablate")
    steered = Policy("steering", base.model, base.tokenizer, "fp", hooks=(hook,))
    decoded = Policy("alignbeam", base.model, base.tokenizer, "fp", decoder=lambda p, c, g: [])
    for policy in (steered, decoded):
        assert attach_engine(policy, "vllm", base, tmp_path) == "hf"
        assert isinstance(policy.engine, HFEngine) and policy.info["engine"] == "hf"
    plain = Policy("base", base.model, base.tokenizer, "fp")
    assert attach_engine(plain, "hf", base, tmp_path) == "hf" and isinstance(plain.engine, HFEngine)


def test_a_vllm_engine_changes_the_generation_key(tiny_dir, tmp_path):
    """Completions of one engine are never reused for another (bf16 vs fp32 outputs differ)."""
    from safesteer_bench.modeling.generation import GenConfig
    from safesteer_bench.modeling.policy import Policy
    from safesteer_bench.modeling.vllm_engine import attach_engine

    base = _base(tiny_dir)
    cfg = GenConfig(max_new_tokens=8)
    hf = Policy("base", base.model, base.tokenizer, "fp")
    bf16, fp32 = (Policy("base", base.model, base.tokenizer, "fp") for _ in range(2))
    assert attach_engine(bf16, "vllm", base, tmp_path) == "vllm-bfloat16"  # the CPU default
    assert attach_engine(fp32, "vllm", base, tmp_path, dtype="float32") == "vllm-float32"
    assert len({hf.key(cfg), bf16.key(cfg), fp32.key(cfg)}) == 3
    assert bf16.engine.model_dir == str(tiny_dir)  # a local model folder is served as it is


def test_a_default_run_records_the_hf_engine(tiny_dir, tmp_path, data_dir):
    from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan

    cfg = RunConfig(methods=["base"], model=str(tiny_dir), benchmarks="advbench", profile="smoke",
                    out=tmp_path / "runs", data_dir=data_dir, limit=2, progress=False, drift=False)
    plan = make_plan(cfg)
    results = Runner(plan).run()
    assert results["methods"]["base"]["engine"] == "hf" and "engine" not in results["plan"]
    meta = json.loads((plan.run_dir / "samples" / "base" / "advbench.meta.json").read_text())
    assert (meta["engine"], meta["engine_requested"]) == ("hf", "hf")


# -- equality with the HF engine: needs vLLM ------------------------------------------------------

def _compare(vllm_out, hf_out) -> None:
    identical = sum(v.token_ids == h.token_ids for v, h in zip(vllm_out, hf_out))
    for v, h in zip(vllm_out, hf_out):
        assert v.token_ids[:FIRST_K] == h.token_ids[:FIRST_K], (v.text, h.text)
        if v.token_ids == h.token_ids:  # same tokens: same accounting and text
            assert (v.text, v.new_tokens, v.finished, v.prompt_tokens) == (h.text, h.new_tokens, h.finished,
                                                                           h.prompt_tokens)
    logging.getLogger(__name__).info("vLLM vs HF (fp32): %d/%d completions identical", identical, len(hf_out))
    assert identical >= MIN_IDENTICAL, f"only {identical}/{len(hf_out)} completions identical"


def _tiny_folder(tmp_path):
    """A tiny llama vLLM's CPU attention accepts (head size 64; the shared fixture's is 8)."""
    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model(tokenizer, layers=2, hidden=256, seed=1)
    folder = tmp_path / "tiny64"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@needs_vllm
@pytest.mark.parametrize("mode", ["merged", "adapter"])
def test_vllm_greedy_equals_hf_on_the_tiny_model_and_a_lora_student(tmp_path, mode, monkeypatch):
    """The base model, then a LoRA student served merged into the base (the CPU default) or as a
    vLLM LoRA adapter (the CUDA default), against HF on the same weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    from safesteer_bench.modeling.generation import GenConfig, HFEngine
    from safesteer_bench.modeling.models import load_model, resolve_model
    from safesteer_bench.modeling.policy import Policy
    from safesteer_bench.modeling.vllm_engine import attach_engine, shutdown_engines

    monkeypatch.setenv("SAFESTEER_BENCH_VLLM_LORA", mode)
    base = load_model(resolve_model(str(_tiny_folder(tmp_path))))
    cfg = GenConfig(max_new_tokens=24, batch_size=8)
    hf_base = HFEngine(base.model, base.tokenizer).generate(PROMPTS, cfg, progress=False)
    policy = Policy("base", base.model, base.tokenizer, "fp")
    assert attach_engine(policy, "vllm", base, tmp_path, dtype="float32") == "vllm-float32"
    _compare(policy.generate(PROMPTS, cfg, progress=False), hf_base)

    # A LoRA student as save_student leaves it: a peft adapter folder named by artifact.json.
    # init_lora_weights=False: random B, so the adapter really changes the outputs.
    torch.manual_seed(0)
    lora = LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False)
    student = get_peft_model(base.model, lora, adapter_name="sft")
    student.save_pretrained(str(tmp_path / "methods" / "sft" / "adapter"), safe_serialization=True)
    weights = "adapter/sft" if (tmp_path / "methods" / "sft" / "adapter" / "sft").exists() else "adapter"
    (tmp_path / "methods" / "sft" / "artifact.json").write_text(json.dumps({"adapter": "lora", "weights": weights,
                                                                            "weights_sha256": "test"}))
    hf_lora = HFEngine(student, base.tokenizer).generate(PROMPTS, cfg, progress=False)
    assert [c.token_ids for c in hf_lora] != [c.token_ids for c in hf_base]  # the adapter matters
    lora_policy = Policy("sft", student, base.tokenizer, "fp2")
    assert attach_engine(lora_policy, "vllm", base, tmp_path / "methods" / "sft", dtype="float32") == "vllm-float32"
    if mode == "adapter":
        assert lora_policy.engine.adapter_dir is not None
    else:
        assert lora_policy.engine.adapter_dir is None and "vllm-merged" in lora_policy.engine.model_dir
    _compare(lora_policy.generate(PROMPTS, cfg, progress=False), hf_lora)
    shutdown_engines()


@needs_vllm
def test_vllm_serves_a_steered_policy_greedy_equal_to_the_hook(tmp_path):
    """A steered policy (add hooks at blocks 0 and 1) folded into weights and served
    by vLLM, against the hooked model on HF, both fp32 (modeling/fold.py)."""
    import torch

    from safesteer_bench.modeling.generation import GenConfig
    from safesteer_bench.modeling.hooks import ResidualHook
    from safesteer_bench.modeling.models import load_model, resolve_model
    from safesteer_bench.modeling.policy import Policy
    from safesteer_bench.modeling.vllm_engine import attach_engine, shutdown_engines

    base = load_model(resolve_model(str(_tiny_folder(tmp_path))), dtype="float32")
    gen = torch.Generator().manual_seed(1)
    hidden = base.model.config.hidden_size
    hooks = (ResidualHook(1, torch.randn(hidden, generator=gen), coef=3.0),  # the tiny model has 2 blocks
             ResidualHook(0, torch.randn(hidden, generator=gen), coef=1.0))
    cfg = GenConfig(max_new_tokens=24, batch_size=8)
    hooked = Policy("steering", base.model, base.tokenizer, "fp", hooks=hooks)
    want = hooked.generate(PROMPTS, cfg, progress=False)
    plain = Policy("base", base.model, base.tokenizer, "fp").generate(PROMPTS, cfg, progress=False)
    assert [c.token_ids for c in want] != [c.token_ids for c in plain]  # the hooks matter
    served = Policy("steering", base.model, base.tokenizer, "fp", hooks=hooks)
    assert attach_engine(served, "vllm", base, tmp_path / "steering", dtype="float32") == "vllm-float32"
    _compare(served.generate(PROMPTS, cfg, progress=False), want)
    shutdown_engines()


@needs_vllm
@pytest.mark.real
def test_vllm_serves_steered_smollm2_greedy_equal_to_the_hook(tmp_path):
    """The steering baseline's kind of policy on the real model: its mean-difference direction
    at a middle block, coefficient 1, fp32 on both engines."""
    import torch

    from safesteer_bench.modeling.generation import GenConfig
    from safesteer_bench.modeling.hooks import ResidualHook
    from safesteer_bench.modeling.models import load_model, resolve_model
    from safesteer_bench.modeling.policy import Policy
    from safesteer_bench.modeling.vllm_engine import attach_engine, shutdown_engines

    base = load_model(resolve_model("smollm2-135m"), dtype="float32")
    gen = torch.Generator().manual_seed(0)
    hooks = (ResidualHook(12, torch.randn(base.model.config.hidden_size, generator=gen) * 2.0),)
    cfg = GenConfig(max_new_tokens=32, batch_size=8)
    want = Policy("steering", base.model, base.tokenizer, "fp", hooks=hooks).generate(PROMPTS, cfg, progress=False)
    served = Policy("steering", base.model, base.tokenizer, "fp", hooks=hooks)
    assert attach_engine(served, "vllm", base, tmp_path, dtype="float32") == "vllm-float32"
    _compare(served.generate(PROMPTS, cfg, progress=False), want)
    shutdown_engines()


@needs_vllm
@pytest.mark.real
def test_vllm_greedy_equals_hf_on_smollm2():
    from safesteer_bench.modeling.generation import GenConfig, HFEngine
    from safesteer_bench.modeling.models import load_model, resolve_model
    from safesteer_bench.modeling.policy import Policy
    from safesteer_bench.modeling.vllm_engine import attach_engine, shutdown_engines

    base = load_model(resolve_model("smollm2-135m"))
    cfg = GenConfig(max_new_tokens=32, batch_size=8)
    hf = HFEngine(base.model, base.tokenizer).generate(PROMPTS, cfg, progress=False)
    policy = Policy("base", base.model, base.tokenizer, "fp")
    assert attach_engine(policy, "vllm", base, Path("unused"), dtype="float32") == "vllm-float32"
    out = policy.generate(PROMPTS, cfg, progress=False)
    _compare(out, hf)
    assert policy.engine.last_stats.new_tokens == sum(c.new_tokens for c in out) > 0
    shutdown_engines()


@needs_vllm
def test_run_records_each_methods_engine_and_never_reuses_another_engines_completions(tmp_path, data_dir):
    """--engine vllm: base on vLLM (bf16) and steering too (its hook folded into weights), in
    results and report; the same run resumed with --engine hf regenerates both methods' completions."""
    from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan

    def run(engine: str) -> dict:
        cfg = RunConfig(methods=["base", "steering"], model=str(_tiny_folder(tmp_path)), benchmarks="advbench",
                        profile="smoke", out=tmp_path / "runs", data_dir=data_dir, limit=3, progress=False,
                        run_id="engines", engine=engine, drift=False)
        return Runner(make_plan(cfg)).run()

    first = run("vllm")
    assert first["methods"]["base"]["engine"] == "vllm-bfloat16"
    assert first["methods"]["steering"]["engine"] == "vllm-bfloat16"
    assert first["plan"]["engine"] == "vllm"
    run_dir = tmp_path / "runs" / "engines"
    assert "vllm-bfloat16" in (run_dir / "report.html").read_text()

    def gen_rows(method: str) -> list[dict]:
        path = run_dir / "samples" / method / "advbench.gen.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    second = run("hf")
    assert second["methods"]["base"]["engine"] == "hf" and "engine" not in second["plan"]
    base_keys = [r["key"] for r in gen_rows("base")]
    assert len(base_keys) == 6 and len(set(base_keys)) == 2  # 3 prompts x 2 engines: regenerated
    steering_keys = [r["key"] for r in gen_rows("steering")]
    assert len(steering_keys) == 6 and len(set(steering_keys)) == 2  # folded on vLLM, hooked on HF


# -- the on-policy trainers' rollouts through vLLM (training/rollouts.py) -------------------------

def _perturb_adapter(student, name: str, seed: int) -> None:
    """Random lora_B for adapter ``name``: peft initialises B to zero, so the student would equal
    the base; a trained step changes B (and A) the same way."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, param in student.named_parameters():
            if f"lora_B.{name}." in pname:
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)


def _rollouts_follow_the_student(base, base_dir, cfg, prompts, sync) -> None:
    from safesteer_bench.modeling.generation import HFEngine, stop_token_ids
    from safesteer_bench.training.budget import Budget
    from safesteer_bench.training.rollouts import VLLMRollouts
    from safesteer_bench.training.students import training_adapter

    budget = Budget(prompt_ids=("a",), prompts=("a",), seed=0, steps=1, prompts_per_step=1, samples_per_prompt=1,
                    max_new_tokens=cfg.max_new_tokens, learning_rate=1e-3, lora_rank=8, lora_alpha=16)
    with training_adapter(base, "student", budget) as student:
        rollouts = VLLMRollouts(student, base.tokenizer, "student", base_dir,
                                stop_token_ids(base.model, base.tokenizer), dtype="float32", sync=sync)
        seen = []
        for seed in (1, 2):  # two "steps": the weights change between them
            _perturb_adapter(student, "student", seed)
            hf = HFEngine(student, base.tokenizer).generate(prompts, cfg, progress=False)
            _compare(rollouts.generate(prompts, cfg, progress=False), hf)
            seen.append([c.token_ids for c in hf])
        assert seen[0] != seen[1]  # the perturbation changed the student, and vLLM followed it
        assert rollouts.syncs == 2 and rollouts.name == "vllm-float32" and rollouts.mode == sync
        rollouts.close()
        assert not rollouts.folder.exists()


@needs_vllm
@pytest.mark.parametrize("sync", ["merged", "adapter"])
def test_vllm_rollouts_follow_the_students_weights_every_sync(tmp_path, sync):
    """Each generate syncs the student's current weights into the running vLLM engine (merged into
    the base weights and reloaded in place, or as a new LoRA adapter): greedy rollouts equal the HF
    engine's on the student as it is at that moment (fp32, same tolerance)."""
    from safesteer_bench.modeling.generation import GenConfig
    from safesteer_bench.modeling.models import load_model, resolve_model
    from safesteer_bench.modeling.vllm_engine import shutdown_engines

    folder = _tiny_folder(tmp_path)
    base = load_model(resolve_model(str(folder)))
    _rollouts_follow_the_student(base, folder, GenConfig(max_new_tokens=16, batch_size=8), PROMPTS, sync)
    shutdown_engines()


@needs_vllm
@pytest.mark.real
def test_vllm_rollouts_follow_smollm2_students_weights():
    from safesteer_bench.modeling.generation import GenConfig
    from safesteer_bench.modeling.models import _safetensors_folder, load_model, resolve_model
    from safesteer_bench.modeling.vllm_engine import shutdown_engines

    base = load_model(resolve_model("smollm2-135m"))
    _rollouts_follow_the_student(base, _safetensors_folder(base.spec)[0], GenConfig(max_new_tokens=16, batch_size=8),
                                 PROMPTS, "merged")  # the CPU default
    shutdown_engines()


@needs_vllm
def test_safesteer_trains_with_vllm_rollouts(tmp_path, data_dir, monkeypatch):
    """safesteer with rollout_engine=vllm: a smoke training on the tiny model through the method's
    own path; every step's rollouts were sampled by vLLM after a sync, the loss is finite, the
    synced weights are gone afterwards, and the student is then evaluated on vLLM."""
    import math

    from safesteer_bench.modeling.vllm_engine import shutdown_engines
    from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan
    from safesteer_bench.training import rollouts

    calls, folders = [], []
    original = rollouts.VLLMRollouts.generate

    def spy(self, prompts, cfg, progress=True):
        calls.append(len(prompts))
        folders.append(self.folder)
        return original(self, prompts, cfg, progress)

    monkeypatch.setattr(rollouts.VLLMRollouts, "generate", spy)
    cfg = RunConfig(methods=["safesteer"], model=str(_tiny_folder(tmp_path)), benchmarks="advbench",
                    profile="smoke", out=tmp_path / "runs", data_dir=data_dir, limit=2, progress=False,
                    run_id="rollouts", drift=False, method_options={"safesteer": {"rollout_engine": "vllm"}},
                    engine="vllm")
    runner = Runner(make_plan(cfg))
    results = runner.run()
    assert len(calls) == runner.budget.steps and all(n > 0 for n in calls)
    assert not any(folder.exists() for folder in folders)
    training = json.loads((tmp_path / "runs" / "rollouts" / "methods" / "safesteer" / "training.json").read_text())
    assert training["spent"]["generated_tokens"] > 0
    log = [json.loads(line) for line in (tmp_path / "runs" / "rollouts" / "methods" / "safesteer"
                                         / "train_log.jsonl").read_text().splitlines()]
    assert log and all(math.isfinite(row["loss"]) for row in log)
    # evaluated on vLLM too: on CPU the LoRA student is served merged into the base weights
    assert results["methods"]["safesteer"]["engine"] == "vllm-bfloat16"
    assert (tmp_path / "runs" / "rollouts" / "methods" / "safesteer" / "vllm-merged" / "done.json").exists()
    shutdown_engines()
