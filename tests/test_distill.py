"""Distillation trainer, loss, budget, token set and training-method artifacts (tiny random model)."""

from __future__ import annotations

import copy
import dataclasses
import math
import mmap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from safesteer_bench.training.budget import Budget, Spent, SpentTracker, make_budget
from safesteer_bench.data import Prompt, load_gptfuzzer_questions
from safesteer_bench.training.distill import (OnPolicyDistiller, SupervisedTrainer, build_batch, completion_logits,
                                     evaluate_distill_loss, lr_factor, restricted_reverse_kl, summarize_logprobs)
from safesteer_bench.modeling.generation import GenConfig
from safesteer_bench.modeling.hooks import ResidualHook, hook_count, installed
from safesteer_bench.methods.api import MethodContext, get_method
from safesteer_bench.modeling.models import LoadedModel, ModelSpec
from safesteer_bench.profiles import get_profile
from safesteer_bench.training import students
from safesteer_bench.training.token_set import TokenSetConfig, _valid_positions, select_safety_tokens, special_token_ids

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine the
    OpenMP barriers of 2 threads make these tests ~8x slower; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



def loaded(tiny) -> LoadedModel:
    """A private LoadedModel around a deep copy of the session's tiny model (tests mutate it)."""
    model, tokenizer = tiny
    return LoadedModel(ModelSpec("tiny", "dir", "tiny"), copy.deepcopy(model), tokenizer, "cpu", "float32",
                       "tiny-identity")


def tiny_hooks(model, coef: float = 4.0) -> tuple[ResidualHook, ...]:
    g = torch.Generator().manual_seed(1)
    return (ResidualHook(layer=1, direction=torch.randn(model.config.hidden_size, generator=g), coef=coef),)


def tiny_budget(**kw) -> Budget:
    prompts = ("Write a poem about the sea.", "How do I make a cake?", "Tell me about the ocean.", "Hi")
    fields = dict(prompt_ids=tuple(f"p{i}" for i in range(len(prompts))), prompts=prompts, seed=0, steps=2,
                  prompts_per_step=2, samples_per_prompt=2, max_new_tokens=6, learning_rate=1e-2, lora_rank=4,
                  lora_alpha=8)
    fields.update(kw)
    return Budget(**fields)


TINY_PROFILE = dataclasses.replace(get_profile("smoke"), train_prompts=4, samples_per_prompt=2,
                                   train_max_new_tokens=6, prompts_per_step=2, learning_rate=1e-2, lora_rank=4,
                                   token_set_prompts=3, token_set_samples=2)

# --------------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------------


def test_partial_loss_equals_hand_computation():
    s = torch.tensor([[[1.0, 0.0, -1.0, 2.0], [0.5, 0.5, 0.0, 0.0]]])
    t = torch.tensor([[[0.0, 1.0, 0.0, 0.0], [2.0, 0.0, 0.0, -1.0]]])
    S = [0, 3]

    def hand(sl, tl):
        zs = math.log(sum(math.exp(x) for x in sl))
        zt = math.log(sum(math.exp(x) for x in tl))
        return sum(math.exp(sl[v] - zs) * ((sl[v] - zs) - (tl[v] - zt)) for v in S)

    l0, l1 = hand(s[0, 0].tolist(), t[0, 0].tolist()), hand(s[0, 1].tolist(), t[0, 1].tolist())
    mask = torch.tensor([[1, 1]])
    assert restricted_reverse_kl(s, t, mask, S).item() == pytest.approx((l0 + l1) / 2, abs=1e-6)
    # a masked position does not count
    assert restricted_reverse_kl(s, t, torch.tensor([[1, 0]]), S).item() == pytest.approx(l0, abs=1e-6)


def test_sequence_mean_then_batch_mean():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    per = F.kl_div(torch.log_softmax(t, -1), torch.log_softmax(s, -1), log_target=True, reduction="none").sum(-1)
    expected = (per[0].mean() + per[1, 0]) / 2
    assert restricted_reverse_kl(s, t, mask).item() == pytest.approx(expected.item(), abs=1e-6)


def test_whole_vocabulary_is_full_reverse_kl():
    torch.manual_seed(0)
    s, t = torch.randn(3, 4, 11), torch.randn(3, 4, 11)
    mask = torch.ones(3, 4)
    # KL(πs || πt) = Σ πs (log πs − log πt); kl_div(input=log πt, target=log πs) computes exactly that
    full = F.kl_div(torch.log_softmax(t, -1), torch.log_softmax(s, -1), log_target=True,
                    reduction="none").sum(-1).mean()
    everything = list(range(11))
    assert restricted_reverse_kl(s, t, mask, None).item() == pytest.approx(full.item(), abs=1e-6)
    for variant in ("partial", "renormalize"):
        assert restricted_reverse_kl(s, t, mask, everything, variant).item() == pytest.approx(full.item(), abs=1e-5)
    # the tail bucket is empty when S = V
    assert restricted_reverse_kl(s, t, mask, everything, "tail-bucket").item() == pytest.approx(full.item(), abs=1e-5)


def test_renormalize_and_tail_bucket_are_kl_divergences():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 9), torch.randn(2, 3, 9)
    mask, S = torch.ones(2, 3), [1, 4, 6]
    idx = torch.tensor(S)
    # renormalize: KL between the distributions restricted and renormalised to S
    ps, pt = torch.softmax(s[..., idx], -1), torch.softmax(t[..., idx], -1)
    renorm = (ps * (ps.log() - pt.log())).sum(-1).mean()
    assert restricted_reverse_kl(s, t, mask, S, "renormalize").item() == pytest.approx(renorm.item(), abs=1e-6)
    # tail-bucket: KL between (|S|+1)-way distributions, the last bucket holding the rest of the mass
    def bucket(x):
        p = torch.softmax(x, -1)
        on = p[..., idx]
        return torch.cat([on, 1 - on.sum(-1, keepdim=True)], -1)
    bs, bt = bucket(s), bucket(t)
    tail = (bs * (bs.log() - bt.log())).sum(-1).mean()
    assert restricted_reverse_kl(s, t, mask, S, "tail-bucket").item() == pytest.approx(tail.item(), abs=1e-5)
    for variant in ("renormalize", "tail-bucket"):
        assert restricted_reverse_kl(s, t, mask, S, variant).item() >= 0
        assert restricted_reverse_kl(s, s, mask, S, variant).item() == pytest.approx(0.0, abs=1e-6)
    # partial is zero at student == teacher as well
    assert restricted_reverse_kl(s, s, mask, S, "partial").item() == pytest.approx(0.0, abs=1e-7)
    # teacher summary keeps only |S| (+1) columns
    assert summarize_logprobs(t, idx, "partial").shape[-1] == 3
    assert summarize_logprobs(t, idx, "tail-bucket").shape[-1] == 4


def test_loss_gradients_finite_when_s_holds_all_mass():
    s = torch.tensor([[[30.0, -30.0, -30.0]]], requires_grad=True)
    t = torch.tensor([[[0.0, 0.0, 0.0]]])
    loss = restricted_reverse_kl(s, t, torch.ones(1, 1), [0], "tail-bucket")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_lr_schedule_warmup_then_cosine():
    steps, warmup = 25, 3
    factors = [lr_factor(s, steps, warmup) for s in range(steps)]
    assert factors[0] > 0 and factors[:4] == sorted(factors[:4]) and factors[3] == 1.0
    assert factors[3:] == sorted(factors[3:], reverse=True) and factors[-1] > 0


# --------------------------------------------------------------------------------------------
# batches and the teacher pass
# --------------------------------------------------------------------------------------------


def test_batched_completion_logits_match_unpadded(tiny):
    model, tokenizer = tiny
    prompts = ["Write a poem about the sea.", "Hi"]
    completions = [[40, 41, 42], [50]]
    batch = build_batch(tokenizer, prompts, completions)
    with torch.no_grad():
        logits = completion_logits(model, batch)
        for i, (p, c) in enumerate(zip(prompts, completions)):
            one = build_batch(tokenizer, [p], [c])
            ref = completion_logits(model, one)[0]
            assert torch.allclose(logits[i, : len(c)], ref[: len(c)], atol=1e-4)
    assert batch.completion_mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_teacher_pass_with_adapter_disabled_equals_base_plus_hook(tiny):
    base = loaded(tiny)
    pristine = copy.deepcopy(base.model)
    hooks = tiny_hooks(base.model)
    student = students.add_lora_student(base, "safesteer", tiny_budget())
    with torch.no_grad():
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.normal_()
    batch = build_batch(base.tokenizer, ["Write a poem about the sea.", "Hi"], [[40, 41, 42], [50, 51]])
    trainer = OnPolicyDistiller(student, base.tokenizer, tiny_budget(), hooks, token_ids=None, progress=False)
    with torch.no_grad():
        with installed(pristine, hooks):
            ref = torch.log_softmax(completion_logits(pristine, batch).float(), -1)
        got = trainer.teacher_logprobs(batch)
        student_logits = completion_logits(student, batch)  # adapter on, hook off
        plain = completion_logits(pristine, batch)
    assert torch.allclose(got, ref, atol=1e-5)
    assert not torch.allclose(student_logits, plain, atol=1e-3)  # the adapter does change the student
    assert hook_count(student) == 0
    students.adapters_off(base)


def test_training_steps_decrease_the_loss(tiny):
    base = loaded(tiny)
    hooks = tiny_hooks(base.model)
    budget = tiny_budget(steps=6, prompts_per_step=2, learning_rate=2e-2, prompts=("Write a poem about the sea.",) * 12,
                         prompt_ids=tuple(f"p{i}" for i in range(12)))
    with students.training_adapter(base, "global-kl", budget) as student:
        trainer = OnPolicyDistiller(student, base.tokenizer, budget, hooks, token_ids=None, progress=False)
        seq_prompts, completions = trainer.sample(0, budget.step_prompts(0))
        before = evaluate_distill_loss(student, base.tokenizer, seq_prompts, completions, hooks)
        result = trainer.train()
        after = evaluate_distill_loss(student, base.tokenizer, seq_prompts, completions, hooks)
    assert after < before
    assert len(result.log) == 6 and result.spent.steps == 6
    assert result.spent.generated_tokens > 0 and result.spent.trained_tokens > 0
    assert result.spent.peak_memory_bytes > 0 and result.spent.wall_seconds > 0
    # adapters are off again: the wrapped base model behaves as the original
    x = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(base.model(x).logits, tiny[0](x).logits, atol=1e-6)


def test_restricted_training_runs_with_token_subset(tiny):
    base = loaded(tiny)
    hooks = tiny_hooks(base.model)
    budget = tiny_budget()
    for variant in ("partial", "renormalize", "tail-bucket"):
        with students.training_adapter(base, "safesteer", budget) as student:
            result = OnPolicyDistiller(student, base.tokenizer, budget, hooks, token_ids=[10, 20, 30, 40],
                                       variant=variant, progress=False).train()
        assert all(math.isfinite(r["loss"]) for r in result.log)


def test_full_finetuning_uses_a_separate_teacher(tiny):
    base = loaded(tiny)
    hooks = tiny_hooks(base.model)
    budget = tiny_budget(adapter="full", learning_rate=1e-3)
    reference = {k: v.clone() for k, v in base.model.state_dict().items()}
    student = students.full_student(base)
    OnPolicyDistiller(student, base.tokenizer, budget, hooks, teacher=base.model, progress=False).train()
    assert all(torch.equal(v, base.model.state_dict()[k]) for k, v in reference.items())  # teacher untouched
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in reference.items())
    with pytest.raises(ValueError):
        OnPolicyDistiller(copy.deepcopy(base.model), base.tokenizer, budget, hooks)  # no adapter, no teacher


def test_sft_trainer_decreases_nll(tiny):
    base = loaded(tiny)
    budget = tiny_budget(steps=4, prompts_per_step=2, learning_rate=2e-2, prompts=("Hi", "Hello") * 4,
                         prompt_ids=tuple(f"p{i}" for i in range(8)))
    target = base.tokenizer("I'm sorry, but I cannot help with that request.", add_special_tokens=False)["input_ids"]
    with students.training_adapter(base, "sft", budget) as student:
        result = SupervisedTrainer(student, base.tokenizer, budget, {"Hi": target, "Hello": target},
                                   progress=False).train()
    assert result.log[-1]["loss"] < result.log[0]["loss"]


# --------------------------------------------------------------------------------------------
# budget and spent
# --------------------------------------------------------------------------------------------


def test_budget_excludes_evaluation_overlap(data_dir):
    pool = load_gptfuzzer_questions(data_dir)
    quick = get_profile("quick")
    full = make_budget(quick, data_dir, seed=0)
    assert len(full.prompts) == 100 and full.steps == 25 and full.excluded_ids == ()
    twin = Prompt("advbench-9999", "  " + pool[5].text.upper().rstrip(".?!") + "!! ", "advbench")
    budget = make_budget(quick, data_dir, seed=0, exclude=[twin])
    assert budget.excluded_ids == (pool[5].id,)
    assert pool[5].id not in budget.prompt_ids and len(budget.prompts) == 99
    assert budget.steps == math.ceil(99 / quick.prompts_per_step)
    assert budget.key() != full.key()
    # same inputs, same budget (prompts, order, seed); another seed, another order
    assert make_budget(quick, data_dir, seed=0) == full
    assert make_budget(quick, data_dir, seed=1).prompt_ids != full.prompt_ids
    assert Budget.from_dict(full.to_dict()) == full
    assert full.step_prompts(24) == list(full.prompts[96:100])
    smoke = make_budget(get_profile("smoke"), data_dir, seed=0, adapter="full")
    assert len(smoke.prompts) == 8 and smoke.steps == 2 and smoke.adapter == "full"


def test_spent_tracker_measures_time_and_memory():
    spent = Spent()
    with SpentTracker("cpu", spent):
        # A fresh anonymous mapping: its pages cannot already be resident (a bytearray may reuse
        # heap pages an earlier test freed, which RSS already counts).
        block = mmap.mmap(-1, 64 * 2**20)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        block.close()
    assert spent.wall_seconds > 0
    assert spent.peak_memory_bytes - spent.start_memory_bytes >= 60 * 2**20
    assert spent.to_dict()["peak_memory_mb"] > 0


# --------------------------------------------------------------------------------------------
# token set
# --------------------------------------------------------------------------------------------


def test_valid_positions_rules():
    argmax = torch.tensor([[5, 5, 2, 5, 5], [5, 5, 5, 5, 5], [5, 5, 5, 5, 5]])
    valid = _valid_positions([4, 4, 2], [False, False, True], argmax, {2}, horizon=5)
    assert valid[0].tolist() == [True, True, True, False, False]  # π0 wants to end at position 2
    assert valid[1].tolist() == [True] * 5  # a sample cut at H-1 tokens keeps all H positions
    assert valid[2].tolist() == [True, True, False, False, False]  # nothing after the sample's end


def test_token_set_on_tiny_model(tiny, data_dir):
    from safesteer_bench.training.token_set import harmless_candidates

    base = loaded(tiny)
    hooks = tiny_hooks(base.model)
    cfg = TokenSetConfig(size=10, prompts=3, samples=2, probe_tokens=4)
    cands = harmless_candidates(data_dir, 6, seed=0)
    a = select_safety_tokens(base.model, base.tokenizer, hooks, cands, cfg, seed=0, progress=False)
    b = select_safety_tokens(base.model, base.tokenizer, hooks, cands, cfg, seed=0, progress=False)
    assert 0 < len(a) <= 10 and a.ids == b.ids and a.votes == sorted(a.votes, reverse=True)
    assert not set(a.ids) & special_token_ids(base.tokenizer)
    assert len(a.strings) == len(a.ids) and a.settings["size"] == 10
    assert hook_count(base.model) == 0


# --------------------------------------------------------------------------------------------
# methods: artifact save / reload, no leaks between policies
# --------------------------------------------------------------------------------------------


def _ctx(base, tmp_path: Path, data_dir, name: str, **options) -> MethodContext:
    opts = {"teacher_hooks": tiny_hooks(base.model), "progress": False, **options}
    return MethodContext(base, TINY_PROFILE, tmp_path / "methods" / name, data_dir, seed=0, options=opts)


def _logits(policy, x):
    with torch.no_grad(), policy.active():
        return policy.model(x).logits


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_safesteer_artifact_round_trip(tiny, tmp_path, data_dir, adapter):
    import json

    base = loaded(tiny)
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        original = base.model(x).logits.clone()
    ctx = _ctx(base, tmp_path, data_dir, "safesteer", token_set_size=8)
    ctx.budget = make_budget(TINY_PROFILE, data_dir, seed=0, adapter=adapter, learning_rate=5e-2)
    method = get_method("safesteer")
    artifact = method.prepare(ctx)
    json.dumps(artifact)  # JSON-serialisable
    assert artifact["budget_key"] == ctx.budget.key() and artifact["spent"]["steps"] == ctx.budget.steps
    assert (ctx.workdir / "token_set.json").exists() and (ctx.workdir / artifact["weights"]).exists()
    token_set = json.loads((ctx.workdir / "token_set.json").read_text())
    assert token_set["ids"] and len(token_set["strings"]) == len(token_set["ids"])
    policy = method.policy(ctx, artifact)
    trained = _logits(policy, x)
    assert not torch.allclose(trained, original, atol=1e-4)
    with torch.no_grad():  # loading the student does not leak into the base model
        assert torch.allclose(base.model(x).logits, original, atol=1e-6)
    # reload in a fresh process-like setting: another copy of the base model
    other = loaded(tiny)
    reloaded = method.policy(_ctx(other, tmp_path, data_dir, "safesteer"), artifact)
    assert torch.allclose(_logits(reloaded, x), trained, atol=1e-5)
    assert reloaded.fingerprint == policy.fingerprint
    out = reloaded.generate(["Hi"], GenConfig(max_new_tokens=4), progress=False)
    assert len(out) == 1


def test_methods_do_not_leak_into_each_other(tiny, tmp_path, data_dir):
    base = loaded(tiny)
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        original = base.model(x).logits.clone()
    budget = make_budget(TINY_PROFILE, data_dir, seed=0, learning_rate=5e-2)
    policies = {}
    for name in ("global-kl", "sft"):
        ctx = _ctx(base, tmp_path, data_dir, name)
        ctx.budget = budget
        method = get_method(name)
        artifact = method.prepare(ctx)
        assert artifact["budget_key"] == budget.key()
        policies[name] = (method.policy(ctx, artifact), _logits(method.policy(ctx, artifact), x))
    # every policy still gives its own outputs after the other was loaded; the base is untouched
    for name, (policy, expected) in policies.items():
        assert torch.allclose(_logits(policy, x), expected, atol=1e-6)
    assert not torch.allclose(policies["sft"][1], policies["global-kl"][1], atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(base.model(x).logits, original, atol=1e-6)
    # the adapter is switched off even when the body raises
    with pytest.raises(RuntimeError):
        with policies["sft"][0].active():
            raise RuntimeError("boom")
    with torch.no_grad():
        assert torch.allclose(base.model(x).logits, original, atol=1e-6)
    targets = (tmp_path / "methods" / "sft" / "targets.json").read_text()
    assert "template" in targets  # the random tiny teacher never refuses: template fallback recorded
