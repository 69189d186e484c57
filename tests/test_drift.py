"""Benign drift (safesteer_bench.evaluation.drift): KL(π‖π0) and top-1 agreement, teacher-forced on the base
model's greedy completions."""

from __future__ import annotations

import math

import pytest
import torch

from safesteer_bench.evaluation.drift import DriftResult, base_completions, drift
from safesteer_bench.modeling.generation import Completion, GenConfig
from safesteer_bench.modeling.hooks import ResidualHook, hook_count
from safesteer_bench.modeling.policy import Policy

from conftest import make_tiny_model, make_tiny_tokenizer

PROMPTS = ["Write a poem about the sea.", "How do I make a cake?", "Tell me about bread.",
           "Why is the ocean blue?", "Name a colour."]
GEN = GenConfig(max_new_tokens=10, batch_size=4)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup():
    """A private tiny model (the LoRA test wraps it in peft, which must not touch ``tiny``)."""
    tok = make_tiny_tokenizer()
    model = make_tiny_model(tok, seed=3)
    base = Policy("base", model, tok, "fp-base")
    return base, base_completions(base, PROMPTS, GEN)


def steered(base: Policy, coef: float, layer: int = 1, seed: int = 0) -> Policy:
    gen = torch.Generator().manual_seed(seed)
    hidden = base.model.config.hidden_size
    direction = torch.randn(hidden, generator=gen)
    direction = direction / direction.norm()
    return Policy("steer", base.model, base.tokenizer, f"fp-steer-{coef}",
                  hooks=(ResidualHook(layer, direction, coef),))


def assert_metrics_consistent(result: DriftResult, seed: int = 0) -> dict:
    out = result.to_dict(seed)
    for name, direction in (("benign_kl", "lower is better"), ("benign_top1_agreement", "higher is better")):
        m = out[name]
        assert m["name"] == name and m["direction"] == direction and m["description"]
        assert m["n"] == result.n
        assert m["ci_low"] <= m["value"] <= m["ci_high"]
    assert out["tokens"] == sum(result.tokens) > 0
    return out


def test_base_against_itself_is_zero_and_one(setup):
    base, completions = setup
    result = drift(base, base, PROMPTS, completions, batch_size=3)
    assert result.n == len(PROMPTS)
    assert all(abs(k) <= 1e-6 for k in result.kl)
    assert all(a == 1.0 for a in result.agreement)
    # Scored positions are the base's decisions: one per new token (the stop counts when finished).
    assert result.tokens == [c.new_tokens for c in completions]
    # The teacher-forced base reproduces its own greedy tokens (masking and positions are right).
    assert result.base_token_match == 1.0
    out = assert_metrics_consistent(result)
    assert out["benign_kl"]["value"] == 0.0 and out["benign_top1_agreement"]["value"] == 1.0


def test_steering_hook_drifts(setup):
    base, completions = setup
    policy = steered(base, coef=20.0)
    result = drift(policy, base, PROMPTS, completions)
    assert hook_count(base.model) == 0  # the hooks lived only inside policy.active()
    assert all(math.isfinite(k) and k >= 0 for k in result.kl)
    assert min(result.kl) > 1e-3
    assert sum(result.agreement) / result.n < 1.0
    out = assert_metrics_consistent(result)
    assert out["benign_kl"]["value"] > 0


def test_padding_and_batching_do_not_change_the_result(setup):
    base, completions = setup
    policy = steered(base, coef=3.0)
    one = drift(policy, base, PROMPTS, completions, batch_size=1)
    many = drift(policy, base, PROMPTS, completions, batch_size=8)
    assert one.tokens == many.tokens
    assert one.kl == pytest.approx(many.kl, rel=1e-4, abs=1e-6)
    assert one.agreement == many.agreement


def test_stop_position_and_retokenised_text(setup):
    """A finished completion scores its stop decision too; missing token ids come from the text;
    an unfinished empty completion has nothing to score and is left out."""
    base, completions = setup
    policy = steered(base, coef=20.0)
    done = Completion(PROMPTS[0], completions[0].text, 0, 0, True, [])
    ids = base.tokenizer(completions[0].text, add_special_tokens=False)["input_ids"]
    empty_done = Completion(PROMPTS[1], "", 0, 1, True, [])
    empty_open = Completion(PROMPTS[2], "", 0, 0, False, [])
    result = drift(policy, base, PROMPTS[:3], [done, empty_done, empty_open])
    assert result.tokens == [len(ids) + 1, 1]
    assert all(math.isfinite(k) and k >= 0 for k in result.kl)
    with pytest.raises(ValueError):
        drift(policy, base, PROMPTS[:2], completions[:1])


def test_deterministic_under_a_seed(setup):
    base, completions = setup
    policy = steered(base, coef=5.0)
    a = drift(policy, base, PROMPTS, completions).to_dict(seed=7)
    b = drift(policy, base, PROMPTS, completions).to_dict(seed=7)
    assert a == b
    c = drift(policy, base, PROMPTS, completions).to_dict(seed=8)
    assert c["benign_kl"]["value"] == a["benign_kl"]["value"]


def test_lora_adapter_drifts():
    from peft import LoraConfig, get_peft_model

    from safesteer_bench.training.students import AdapterPolicy

    tok = make_tiny_tokenizer()
    model = make_tiny_model(tok, seed=4)
    base = Policy("base", model, tok, "fp-base")
    completions = base_completions(base, PROMPTS, GEN)
    before = drift(base, base, PROMPTS, completions)

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    wrapper = get_peft_model(model, config, adapter_name="m")
    with torch.no_grad():
        for name, param in wrapper.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.5)
    wrapper.base_model.disable_adapter_layers()  # the project's rule outside AdapterPolicy.active()
    wrapper.eval()
    student = AdapterPolicy("m", wrapper, tok, "fp-m", adapter_name="m")

    result = drift(student, base, PROMPTS, completions)
    assert all(math.isfinite(k) and k >= 0 for k in result.kl)
    assert sum(result.kl) / result.n > 1e-3
    assert_metrics_consistent(result)
    # The adapter was off again afterwards: the base (same module) is unchanged.
    after = drift(base, base, PROMPTS, completions)
    assert after.kl == before.kl and after.agreement == before.agreement == [1.0] * len(PROMPTS)
    assert base_completions(base, PROMPTS, GEN)[0].token_ids == completions[0].token_ids


def test_sampling_config_is_refused(setup):
    base, _ = setup
    with pytest.raises(ValueError):
        base_completions(base, PROMPTS, GenConfig(temperature=0.7))


ALPACA_LIKE = ["Give three tips for staying healthy.", "What are the three primary colors?",
               "Describe the structure of an atom.", "Explain why the sky is blue in one sentence."]


@pytest.mark.real
def test_real_smollm2_drift(smollm2):
    base = Policy("base", smollm2.model, smollm2.tokenizer, "fp-base")
    completions = base_completions(base, ALPACA_LIKE, GenConfig(max_new_tokens=8, batch_size=4))
    same = drift(base, base, ALPACA_LIKE, completions)
    assert same.n == 4 and all(abs(k) <= 1e-6 for k in same.kl) and same.agreement == [1.0] * 4
    assert same.base_token_match == 1.0

    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(smollm2.model.config.hidden_size, generator=gen)
    hooked = Policy("steer", smollm2.model, smollm2.tokenizer, "fp-steer",
                    hooks=(ResidualHook(10, direction / direction.norm(), 8.0),))
    moved = drift(hooked, base, ALPACA_LIKE, completions)
    assert all(math.isfinite(k) and k >= 0 for k in moved.kl)
    assert sum(moved.kl) / moved.n > 1e-4
    out = assert_metrics_consistent(moved)
    assert out["benign_kl"]["value"] > 0 and out["benign_kl"]["n"] == 4
