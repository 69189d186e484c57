"""Generation engine and hooks: batching, padding, EOS, seeds, hook removal."""

from __future__ import annotations

import pytest
import torch

from safesteer_bench.modeling.generation import GenConfig, HFEngine, chat_text
from safesteer_bench.modeling.hooks import ResidualHook, decoder_layers, hook_count, installed
from safesteer_bench.modeling.policy import Policy


def test_batched_greedy_equals_one_by_one(tiny):
    model, tokenizer = tiny
    engine = HFEngine(model, tokenizer)
    prompts = ["Write a poem about the sea.", "Hi", "How do I make a cake for my friend tomorrow?"]
    cfg = GenConfig(max_new_tokens=8, batch_size=3)
    batched = engine.generate(prompts, cfg, progress=False)
    assert engine.last_stats.new_tokens == sum(c.new_tokens for c in batched)
    single = [engine.generate([p], GenConfig(max_new_tokens=8, batch_size=1), progress=False)[0] for p in prompts]
    assert [c.token_ids for c in batched] == [c.token_ids for c in single]
    assert [c.prompt for c in batched] == prompts  # original order restored after length sorting
    assert all(c.new_tokens <= 8 for c in batched)


def test_chat_template_applied(tiny):
    _, tokenizer = tiny
    text = chat_text(tokenizer, "hello")
    assert text.startswith("<|im_start|>user\nhello<|im_end|>") and text.endswith("<|im_start|>assistant\n")


def test_sampling_is_seeded(tiny):
    model, tokenizer = tiny
    engine = HFEngine(model, tokenizer)
    cfg = GenConfig(max_new_tokens=10, temperature=1.0, seed=3)
    a = engine.generate(["Write a poem."] * 2, cfg, progress=False)
    b = engine.generate(["Write a poem."] * 2, cfg, progress=False)
    c = engine.generate(["Write a poem."] * 2, GenConfig(max_new_tokens=10, temperature=1.0, seed=4), progress=False)
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]


def test_eos_stops_generation(tiny):
    model, tokenizer = tiny
    engine = HFEngine(model, tokenizer)
    # Make the end-of-turn token overwhelmingly likely: the completion must stop right away.
    with torch.no_grad():
        bias = torch.zeros(len(tokenizer))
        bias[tokenizer.eos_token_id] = 100.0
        model.lm_head.bias = torch.nn.Parameter(bias)
    try:
        out = engine.generate(["hello"], GenConfig(max_new_tokens=8), progress=False)[0]
    finally:
        model.lm_head.bias = None
    assert out.finished and out.text == "" and out.new_tokens == 1


def test_hooks_removed_after_exception(tiny):
    model, tokenizer = tiny
    hook = ResidualHook(layer=1, direction=torch.ones(model.config.hidden_size), coef=1.0)
    with pytest.raises(RuntimeError):
        with installed(model, [hook]):
            assert hook_count(model) == 1
            raise RuntimeError("boom")
    assert hook_count(model) == 0


def test_add_hook_changes_output_and_ablate_removes_component(tiny):
    model, tokenizer = tiny
    ids = tokenizer(["hello there"], return_tensors="pt")
    direction = torch.randn(model.config.hidden_size)
    seen = {}
    handle = decoder_layers(model)[2].register_forward_pre_hook(
        lambda m, a, k: seen.__setitem__("h", (a[0] if a else k["hidden_states"]).clone()), with_kwargs=True)
    try:
        with torch.no_grad():
            plain = model(**ids).logits
            with installed(model, [ResidualHook(2, direction, coef=4.0)]):
                steered = model(**ids).logits
            with installed(model, [ResidualHook(2, direction, mode="ablate")]):
                model(**ids)
    finally:
        handle.remove()
    assert not torch.allclose(plain, steered)
    # Hooks run in registration order; ours was registered after the observer, so check ablation directly.
    hidden = seen["h"]
    ablated = ResidualHook(2, direction, mode="ablate").apply(hidden)
    assert torch.allclose(ablated @ (direction / direction.norm()), torch.zeros(ablated.shape[:-1]), atol=1e-5)


def test_policy_installs_hooks_only_while_active(tiny):
    model, tokenizer = tiny
    hook = ResidualHook(layer=0, direction=torch.ones(model.config.hidden_size), coef=2.0)
    policy = Policy("steered", model, tokenizer, "fp", hooks=(hook,))
    with policy.active():
        assert hook_count(model) == 1
    assert hook_count(model) == 0
    policy.generate(["hi"], GenConfig(max_new_tokens=2), progress=False)
    assert hook_count(model) == 0


@pytest.mark.real
def test_real_model_generates_chat_answer(smollm2):
    engine = HFEngine(smollm2.model, smollm2.tokenizer)
    out = engine.generate(["What is 2+2?", "Name a colour."], GenConfig(max_new_tokens=24), progress=False)
    assert "4" in out[0].text
    assert all(c.text.strip() for c in out)
    assert all("<|im_end|>" not in c.text for c in out)


def test_token_batches_cap_padded_positions_and_rows():
    from safesteer_bench.modeling.generation import token_batches

    cfg = GenConfig(max_new_tokens=10, batch_size=4, max_batch_tokens=100)
    lengths = [5, 90, 40, 10, 10, 10, 10, 10, 40]
    batches = token_batches(lengths, cfg)
    assert batches[0] == [1]  # 90 + 10 fills the budget alone
    assert sorted(batches[1]) == [2, 8]  # 2 rows x (40 + 10) = 100
    assert [len(b) for b in batches[2:]] == [4, 2]  # short prompts: the row cap, 4 x 20 <= 100
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    too_long = token_batches([500], cfg)  # one prompt over the budget still gets a batch
    assert too_long == [[0]]


def test_token_budget_batching_keeps_greedy_outputs(tiny):
    model, tok = tiny
    engine = HFEngine(model, tok)
    prompts = ["a " * n for n in (1, 30, 3, 12, 60, 2)]
    wide = engine.generate(prompts, GenConfig(max_new_tokens=6, batch_size=8, max_batch_tokens=10**6), progress=False)
    narrow = engine.generate(prompts, GenConfig(max_new_tokens=6, batch_size=8, max_batch_tokens=80), progress=False)
    assert [c.token_ids for c in wide] == [c.token_ids for c in narrow]


def test_stop_strings_end_greedy_generation(tiny):
    model, tok = tiny
    engine = HFEngine(model, tok)
    free = engine.generate(["a b c"], GenConfig(max_new_tokens=12), progress=False)[0]
    stop = free.text.strip()[len(free.text.strip()) // 2:][:3]
    assert stop.strip()
    cut = engine.generate(["a b c"], GenConfig(max_new_tokens=12, stop_strings=(stop,)), progress=False)[0]
    assert stop in cut.text and len(cut.token_ids) < len(free.token_ids)
    assert free.token_ids[:len(cut.token_ids)] == cut.token_ids
    assert GenConfig().key() == {k: v for k, v in GenConfig(stop_strings=()).key().items()}
    assert "stop_strings" not in GenConfig().key() and GenConfig(stop_strings=("x",)).key()["stop_strings"] == ["x"]
