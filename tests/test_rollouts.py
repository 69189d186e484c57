"""The on-policy trainers' rollout engine (training/rollouts.py): option, refusals, and the
trainer's use of the engine it is given. vLLM itself is exercised in tests/test_vllm_engine.py
(`make test-vllm`): there the synced rollouts equal HF's greedy outputs step after step."""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest
import torch

from safesteer_bench.errors import UserError
from safesteer_bench.training.rollouts import check_rollout_engine

from conftest import make_tiny_model, make_tiny_tokenizer

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="module")
def fresh():
    """A tiny model of this module's own: the session's ``tiny`` may carry LoRA layers other
    tests injected, and these tests compare against the plain architecture."""
    tokenizer = make_tiny_tokenizer()
    return make_tiny_model(tokenizer), tokenizer


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("adapter, world, fix", [
    ("full", 1, "rollout_engine=hf with --adapter full"),
    ("lora", 2, "rollout_engine=hf under accelerate launch"),
])
def test_rollout_engine_vllm_is_refused_where_it_cannot_apply(adapter, world, fix):
    with pytest.raises(UserError) as err:
        check_rollout_engine("vllm", adapter, world)
    assert fix in err.value.fix
    check_rollout_engine("hf", adapter, world)  # the default always applies
    check_rollout_engine("vllm", "lora", 1)


def test_only_the_on_policy_methods_take_it_and_the_default_keeps_method_keys():
    from safesteer_bench.methods.api import get_method
    from safesteer_bench.options import options_class

    takes = {name: "rollout_engine" in options_class(get_method(name)).keys()
             for name in ("safesteer", "global-kl", "spec-distill", "sft", "steering")}
    assert takes == {"safesteer": True, "global-kl": True, "spec-distill": True, "sft": False, "steering": False}
    for name in ("safesteer", "global-kl", "spec-distill"):
        assert "rollout_engine" not in options_class(get_method(name))().to_dict()
        if HAS_VLLM:
            assert options_class(get_method(name))(rollout_engine="vllm").to_dict()["rollout_engine"] == "vllm"


@pytest.mark.skipif(HAS_VLLM, reason="checks the error shown where vLLM is missing; it is installed here")
def test_rollout_engine_vllm_without_vllm_fails_in_the_dry_run(tiny_dir, tmp_path, capsys):
    from safesteer_bench.cli import main

    code = main(["run", "--methods", "safesteer", "--model", str(tiny_dir), "--benchmarks", "advbench",
                 "--method-args", "rollout_engine=vllm", "--dry-run", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "rollout_engine=vllm: vLLM is not installed" in err and "rollout_engine=hf" in err


class CountingEngine:
    """A GenerationEngine that delegates to HF on the student and records what the trainer asked."""

    def __init__(self, student, tokenizer):
        from safesteer_bench.modeling.generation import HFEngine

        self.inner = HFEngine(student, tokenizer)
        self.calls: list[tuple[int, float, int]] = []
        self.closed = False

    def generate(self, prompts, cfg, progress=True):
        self.calls.append((len(prompts), cfg.temperature, cfg.seed))
        return self.inner.generate(prompts, cfg, progress)

    def close(self):
        self.closed = True


def test_the_distiller_samples_with_the_engine_it_is_given_and_closes_it(fresh):
    """Same rollouts, same loss as the default HF engine (the engine here delegates to HF), every
    step through the given engine, at temperature 1 with the step's seed, closed after training."""
    from safesteer_bench.modeling.models import LoadedModel, ModelSpec
    from safesteer_bench.training.budget import Budget
    from safesteer_bench.training.distill import OnPolicyDistiller
    from safesteer_bench.training.students import training_adapter

    model, tokenizer = fresh
    prompts = ("Write a poem about the sea.", "How do I make a cake?", "Tell me about the ocean.", "Hi")
    budget = Budget(prompt_ids=tuple(f"p{i}" for i in range(4)), prompts=prompts, seed=0, steps=2,
                    prompts_per_step=2, samples_per_prompt=2, max_new_tokens=6, learning_rate=1e-2, lora_rank=4,
                    lora_alpha=8)
    losses = []
    for use_engine in (False, True):
        base = LoadedModel(ModelSpec("tiny", "dir", "tiny"), copy.deepcopy(model), tokenizer, "cpu", "float32", "t")
        with training_adapter(base, "s", budget) as student:
            engine = CountingEngine(student, tokenizer) if use_engine else None
            trainer = OnPolicyDistiller(student, tokenizer, budget, (), engine=engine, progress=False)
            losses.append([row["loss"] for row in trainer.train().log])
    assert engine.calls == [(4, 1.0, trainer.sample_seed(0)), (4, 1.0, trainer.sample_seed(1))]
    assert engine.closed
    assert all(math.isfinite(x) for x in losses[1]) and losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_lora_mode_follows_the_device_and_the_environment(monkeypatch):
    from safesteer_bench.modeling.vllm_engine import lora_mode

    monkeypatch.delenv("SAFESTEER_BENCH_VLLM_LORA", raising=False)
    assert lora_mode() == ("adapter" if torch.cuda.is_available() else "merged")
    monkeypatch.setenv("SAFESTEER_BENCH_VLLM_LORA", "adapter")
    assert lora_mode() == "adapter"
    monkeypatch.setenv("SAFESTEER_BENCH_VLLM_LORA", "fused")
    with pytest.raises(UserError, match="SAFESTEER_BENCH_VLLM_LORA='fused'") as err:
        lora_mode()
    assert "merged or adapter" in err.value.fix


def test_merged_weights_are_the_students_and_leave_it_untouched(fresh, tmp_path):
    """What the merged sync and the merged evaluation folder hand vLLM: the base model's names,
    no LoRA tensors, and a plain model loading them computes the student's logits; the other
    adapters of the shared wrapper and the student's own weights are not changed."""
    from safesteer_bench.modeling.models import LoadedModel, ModelSpec
    from safesteer_bench.modeling.vllm_engine import merged_state_dict
    from safesteer_bench.training.budget import Budget
    from safesteer_bench.training.students import training_adapter

    model, tokenizer = fresh
    base = LoadedModel(ModelSpec("tiny", "dir", "tiny"), copy.deepcopy(model), tokenizer, "cpu", "float32", "t")
    plain = copy.deepcopy(model)
    budget = Budget(prompt_ids=("a",), prompts=("a",), seed=0, steps=1, prompts_per_step=1, samples_per_prompt=1,
                    max_new_tokens=4, learning_rate=1e-3, lora_rank=4, lora_alpha=8)
    ids = torch.tensor([tokenizer("Write a poem about the sea.")["input_ids"]])
    with training_adapter(base, "other", budget), training_adapter(base, "s", budget) as student:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, param in student.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=g) * 0.1)
        student.set_adapter("s")
        student.base_model.enable_adapter_layers()
        before = {k: v.clone() for k, v in student.state_dict().items()}
        state = merged_state_dict(student, "s", torch.float32)
        assert not any("lora_" in k or "base_layer" in k for k in state)
        assert set(state) <= set(plain.state_dict()) and len(state) >= len(plain.state_dict()) - 1
        missing, unexpected = plain.load_state_dict(state, strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}
        with torch.no_grad():
            want = student(input_ids=ids).logits
            got = plain(input_ids=ids).logits
            base_logits = model(input_ids=ids).logits
        assert not torch.allclose(want, base_logits, atol=1e-4)  # the adapter matters
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
