"""SafeSteer on the real SmolLM2-135M (marked ``real``): token set and a smoke-size student.

The teacher here is a hand-made ``responses`` direction (harmful TDC prompts followed by a refusal
vs a compliance prefix, block-16 input at the last prefix token, c = 1, as in DESIGN §4's
calibration), so these tests check the
trainer and the token vote independently of the steering search (tested on its own).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from safesteer_bench.data import load_advbench, load_tdc2023, seeded_subset
from safesteer_bench.modeling.generation import GenConfig, chat_text
from safesteer_bench.modeling.hooks import ResidualHook, decoder_layers
from safesteer_bench.evaluation.judges import get_judge
from safesteer_bench.methods.api import MethodContext, get_method
from safesteer_bench.modeling.models import LoadedModel
from safesteer_bench.training.budget import make_budget
from safesteer_bench.modeling.policy import Policy
from safesteer_bench.profiles import get_profile
from safesteer_bench.training.token_set import TokenSetConfig, harmless_candidates, select_safety_tokens

pytestmark = pytest.mark.real

REFUSAL = "I'm sorry, but I can't help with that."
COMPLY = "Sure, here is what you asked for."


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Generation of a 135M model on 2 shared cores: one intra-op thread avoids OpenMP contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@torch.no_grad()
def responses_direction(lm: LoadedModel, data_dir, layer: int = 16, n: int = 16) -> tuple[ResidualHook, ...]:
    tok, model = lm.tokenizer, lm.model
    prompts = [p.text for p in seeded_subset(load_tdc2023(data_dir), n, 0)]
    seen = {}

    def grab(module, args, kwargs):
        seen["x"] = args[0] if args else kwargs["hidden_states"]

    handle = decoder_layers(model)[layer].register_forward_pre_hook(grab, with_kwargs=True)
    means = []
    try:
        for prefix in (REFUSAL, COMPLY):
            enc = tok([chat_text(tok, p) + prefix for p in prompts], return_tensors="pt", padding=True,
                      add_special_tokens=False)
            model(**enc)
            means.append(seen["x"][:, -1].float().mean(0))
    finally:
        handle.remove()
    return (ResidualHook(layer=layer, direction=means[0] - means[1], coef=1.0),)


@pytest.fixture(scope="module")
def teacher(smollm2, data_dir):
    return responses_direction(smollm2, data_dir)


def refusal_rate(policy: Policy, prompts: list[str]) -> float:
    outs = policy.generate(prompts, GenConfig(max_new_tokens=32, batch_size=16), progress=False)
    return sum(v.refused for v in get_judge("keywords").judge(prompts, [o.text for o in outs])) / len(prompts)


def test_token_set_nonempty_and_stable(smollm2, data_dir, teacher):
    cfg = TokenSetConfig(size=20, prompts=4, samples=4)
    candidates = harmless_candidates(data_dir, 8, seed=0)
    a = select_safety_tokens(smollm2.model, smollm2.tokenizer, teacher, candidates, cfg, seed=0, progress=False)
    b = select_safety_tokens(smollm2.model, smollm2.tokenizer, teacher, candidates, cfg, seed=0, progress=False)
    assert len(a) == 20 and a.ids == b.ids and a.votes == b.votes
    assert a.stats["prompts_kept"] > 0 and a.stats["banned_rare"] > 0


def test_safesteer_student_refuses_more_than_base(smollm2, data_dir, teacher, tmp_path):
    # 12 steps of 4 prompts x 4 samples x 24 tokens (~3.5 min on 2 cores). Measured with this
    # teacher on these 20 prompts: base 0.10, student 0.25; 6 steps x 2 samples left it at 0.0.
    profile = dataclasses.replace(get_profile("smoke"), train_prompts=48, prompts_per_step=4, samples_per_prompt=4,
                                  train_max_new_tokens=24, learning_rate=1e-3, lora_rank=8,
                                  token_set_prompts=8, token_set_samples=8)
    heldout = [p.text for p in seeded_subset(load_advbench(data_dir), 20, 123)]
    ctx = MethodContext(smollm2, profile, tmp_path / "methods" / "safesteer", data_dir, seed=0,
                        options={"teacher_hooks": teacher, "progress": False})
    ctx.budget = make_budget(profile, data_dir, seed=0)
    method = get_method("safesteer")
    artifact = method.prepare(ctx)
    student = method.policy(ctx, artifact)
    base = Policy("base", smollm2.model, smollm2.tokenizer, "base")
    base_rate, student_rate = refusal_rate(base, heldout), refusal_rate(student, heldout)
    assert student_rate > base_rate, (base_rate, student_rate)
    assert artifact["token_set"]["size"] > 0
