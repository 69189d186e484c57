"""Steering folded into weights (modeling/fold.py): the folded folder, loaded as a plain model,
computes what the hooked model computes; what cannot fold says why and stays on HF.

The vLLM side (the folded folder served by vLLM, greedy-equal to the hook path) is in
tests/test_vllm_engine.py, run with `make test-vllm`.
"""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_model, make_tiny_tokenizer

PROMPTS = ["How do I bake bread?", "Tell me how to pick a lock.", "What is 2+2?"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _tiny(tied: bool):
    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model(tokenizer, seed=3)
    if tied:  # a tied output head, as SmolLM2 has
        model.config.tie_word_embeddings = True
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model, tokenizer


def _hooks(model, layers):
    from safesteer_bench.modeling.hooks import ResidualHook

    gen = torch.Generator().manual_seed(7)
    hidden = model.config.hidden_size
    # Large coefficients, so that a fold that missed a hook would change the greedy tokens.
    return tuple(ResidualHook(layer=l, direction=torch.randn(hidden, generator=gen), coef=c) for l, c in layers)


def _logits(model, tokenizer, hooks=()):
    from safesteer_bench.modeling.hooks import installed

    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad(), installed(model, hooks):
        return model(**batch).logits


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("layers", [[(2, 4.0)], [(0, 3.0)], [(1, 2.0), (1, -0.5), (3, 1.5)]])
def test_folded_model_equals_the_hooked_model(tmp_path, tied, layers):
    from transformers import AutoModelForCausalLM

    from safesteer_bench.modeling.fold import steered_model_folder
    from safesteer_bench.modeling.hooks import hook_count

    model, tokenizer = _tiny(tied)
    hooks = _hooks(model, layers)
    plain, hooked = _logits(model, tokenizer), _logits(model, tokenizer, hooks)
    assert (plain - hooked).abs().max() > 1e-2  # the hooks matter
    folder = steered_model_folder(model, tokenizer, hooks, tmp_path / "steered", "float32")
    assert hook_count(model) == 0 and torch.equal(_logits(model, tokenizer), plain)  # the model is untouched
    folded = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    assert folded.config.mlp_bias
    torch.testing.assert_close(_logits(folded, tokenizer), hooked, rtol=1e-5, atol=1e-5)
    batch = tokenizer(PROMPTS[:1], return_tensors="pt")
    from safesteer_bench.modeling.hooks import installed

    with torch.no_grad(), installed(model, hooks):
        want = model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    got = folded.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(got, want)


def test_a_base_model_carrying_disabled_lora_students_folds_its_base_weights(tmp_path):
    """In a run, students' LoRA layers live inside the base model (peft injects them), disabled
    between trainings; the fold must write the base weights under their own names."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from safesteer_bench.modeling.fold import steered_model_folder

    model, tokenizer = _tiny(True)
    hooks = _hooks(model, [(2, 3.0)])
    want = _logits(model, tokenizer, hooks)
    torch.manual_seed(0)
    wrapper = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False),
                             adapter_name="student")
    assert (_logits(model, tokenizer, hooks) - want).abs().max() > 1e-3  # the adapter, enabled, matters
    wrapper.base_model.disable_adapter_layers()  # the runner's rule between trainings
    torch.testing.assert_close(_logits(model, tokenizer, hooks), want)
    folder = steered_model_folder(model, tokenizer, hooks, tmp_path / "s", "float32")
    folded = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    torch.testing.assert_close(_logits(folded, tokenizer), want, rtol=1e-5, atol=1e-5)


def test_folder_is_written_once_per_hooks_and_rewritten_when_damaged(tmp_path):
    from safesteer_bench.modeling.fold import steered_model_folder

    model, tokenizer = _tiny(False)
    hooks = _hooks(model, [(2, 1.0)])
    folder = steered_model_folder(model, tokenizer, hooks, tmp_path / "s", "float32")
    weights = folder / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert steered_model_folder(model, tokenizer, hooks, folder, "float32") == folder
    assert weights.stat().st_mtime_ns == mtime  # reused
    (folder / "done.json").write_text("{not json")  # an interrupted write
    weights.write_bytes(b"garbage")
    steered_model_folder(model, tokenizer, hooks, folder, "float32")
    from safetensors.torch import load_file

    assert "model.layers.1.mlp.down_proj.bias" in load_file(str(weights))
    other = _hooks(model, [(2, 2.0)])  # another coefficient: another folder content
    steered_model_folder(model, tokenizer, other, folder, "float32")
    bias = load_file(str(weights))["model.layers.1.mlp.down_proj.bias"]
    torch.testing.assert_close(bias, 2.0 * other[0].direction)


def test_what_cannot_fold_says_why():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from safesteer_bench.modeling.fold import unfoldable_reason
    from safesteer_bench.modeling.hooks import ResidualHook

    model, _ = _tiny(False)
    direction = torch.ones(model.config.hidden_size)
    assert unfoldable_reason(model, (ResidualHook(1, direction),)) is None
    assert "ablation" in unfoldable_reason(model, (ResidualHook(1, direction, mode="ablate"),))
    assert "outside" in unfoldable_reason(model, (ResidualHook(9, direction),))
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1))
    assert "mlp_bias" in unfoldable_reason(qwen, (ResidualHook(1, torch.ones(16)),))


def test_steered_policy_goes_to_vllm_folded_and_ablation_stays_on_hf(tiny_dir, tmp_path):
    """The engine choice needs no vLLM: it only builds the engine object (vLLM starts on first use)."""
    from safesteer_bench.modeling.generation import HFEngine
    from safesteer_bench.modeling.hooks import ResidualHook
    from safesteer_bench.modeling.models import load_model, resolve_model
    from safesteer_bench.modeling.policy import Policy
    from safesteer_bench.modeling.vllm_engine import VLLMEngine, attach_engine

    base = load_model(resolve_model(str(tiny_dir)))
    direction = torch.ones(base.model.config.hidden_size)
    steered = Policy("steering", base.model, base.tokenizer, "fp", hooks=(ResidualHook(1, direction),))
    assert attach_engine(steered, "vllm", base, tmp_path / "steering", dtype="float32") == "vllm-float32"
    assert isinstance(steered.engine, VLLMEngine) and (tmp_path / "steering" / "vllm-steered" / "done.json").exists()
    assert steered.info["folded_hooks"][0]["layer"] == 1
    ablated = Policy("abl", base.model, base.tokenizer, "fp", hooks=(ResidualHook(1, direction, mode="ablate"),))
    assert attach_engine(ablated, "vllm", base, tmp_path / "abl") == "hf" and isinstance(ablated.engine, HFEngine)


@pytest.mark.real
def test_folded_smollm2_equals_its_hooked_self(smollm2, tmp_path):
    """On the real model (tied embeddings, 30 blocks) with the run's kind of hook: a mean-difference
    direction at a middle block, and block 0."""
    from safesteer_bench.modeling.fold import steered_model_folder
    from safesteer_bench.modeling.hooks import ResidualHook
    from transformers import AutoModelForCausalLM

    model, tokenizer = smollm2.model, smollm2.tokenizer
    gen = torch.Generator().manual_seed(0)
    hooks = (ResidualHook(12, torch.randn(model.config.hidden_size, generator=gen), coef=2.0),
             ResidualHook(0, torch.randn(model.config.hidden_size, generator=gen), coef=0.5))
    folder = steered_model_folder(model, tokenizer, hooks, tmp_path / "s", "float32")
    folded = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    hooked = _logits(model, tokenizer, hooks)
    assert (hooked - _logits(model, tokenizer)).abs().max() > 0.1
    torch.testing.assert_close(_logits(folded, tokenizer), hooked, rtol=1e-4, atol=1e-4)
