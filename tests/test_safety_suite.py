"""The safety suite: benchmark specs and suites, the inspect provider, the inspect generation path,
and (marked ``real``) base SmolLM2 on every safety and over-refusal benchmark."""

from __future__ import annotations

import hashlib
import json

import pytest

from safesteer_bench.evaluation.benchmark import BENCHMARKS, SUITES, resolve_benchmarks
from safesteer_bench.data import PLACEHOLDER
from safesteer_bench.errors import UserError
from safesteer_bench.modeling.generation import GenConfig
from safesteer_bench.modeling.policy import Policy

SAFETY_7 = ["advbench", "harmbench", "strongreject", "jailbreakbench", "maliciousinstruct", "xstest",
            "jailbreak-templates"]
OVER_REFUSAL = ["xstest-safe", "jailbreakbench-benign", "alpaca-heldout"]

# --------------------------------------------------------------------------------------------
# Benchmarks and suites
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, count, harmful", [
    ("advbench", 520, True), ("harmbench", 240, True), ("strongreject", 313, True),
    ("jailbreakbench", 100, True), ("maliciousinstruct", 100, True), ("xstest", 450, None),
    ("jailbreak-templates", 300, True), ("xstest-safe", 250, False),
    ("jailbreakbench-benign", 100, False), ("alpaca-heldout", 1000, False),
])
def test_every_benchmark_loads_with_its_count(name, count, harmful, data_dir):
    spec = resolve_benchmarks(name)[0]
    prompts = spec.load(data_dir)
    assert spec.kind == "safety" and spec.harmful is harmful
    assert len(prompts) == count == len(spec.prompts(data_dir, None, split=None))
    # the test split (what runs score) and the dev split (for choices) partition the set
    assert len(spec.prompts(data_dir, None)) + len(spec.prompts(data_dir, None, split="dev")) == count
    assert len({p.id for p in prompts}) == count and all(p.text.strip() for p in prompts)
    assert "safer" in spec.description or "better" in spec.description  # direction stated


def test_xstest_is_mixed_and_its_safe_half_is_benign(data_dir):
    xstest, safe = resolve_benchmarks("xstest,xstest-safe")
    prompts = xstest.load(data_dir)
    harmful = [xstest.is_harmful(p) for p in prompts]
    assert sum(harmful) == 200 and len(harmful) - sum(harmful) == 250
    assert xstest.default_judge == safe.default_judge == "clf"  # the judge with the best own-reply figures
    assert {p.id for p in safe.load(data_dir)} == {p.id for p in prompts if p.label == "safe"}
    assert not any(safe.is_harmful(p) for p in safe.load(data_dir))


def test_suites_resolve_in_order():
    assert SUITES["safety-7"] == SAFETY_7 and SUITES["over-refusal"] == OVER_REFUSAL
    assert [s.name for s in resolve_benchmarks("safety-7,over-refusal")] == SAFETY_7 + OVER_REFUSAL
    assert [s.name for s in resolve_benchmarks("advbench,safety-7")] == SAFETY_7  # no duplicates
    assert all(BENCHMARKS.get(n).kind == "safety" for n in SAFETY_7 + OVER_REFUSAL)


@pytest.mark.parametrize("name", SAFETY_7 + OVER_REFUSAL)
def test_seeded_subsets_are_stable_prefixes(name, data_dir):
    spec = resolve_benchmarks(name)[0]
    small, large = spec.prompts(data_dir, 5, seed=0), spec.prompts(data_dir, 12, seed=0)
    assert [p.id for p in small] == [p.id for p in spec.prompts(data_dir, 5, seed=0)]
    assert [p.id for p in large[:5]] == [p.id for p in small]  # smaller limit = prefix of larger
    assert [p.id for p in spec.prompts(data_dir, 5, seed=1)] != [p.id for p in small]


@pytest.mark.parametrize("name, ids, split", [
    # whole sets (split=None): the subsets from before the dev/test split, unchanged
    ("advbench", ["advbench-0469", "advbench-0345", "advbench-0196"], None),
    ("xstest", ["xstest-0127", "xstest-0100", "xstest-0412"], None),
    ("jailbreak-templates", ["jailbreak-templates-b033-t16", "jailbreak-templates-b018-t53",
                             "jailbreak-templates-b001-t10"], None),
    ("alpaca-heldout", ["alpaca-27670", "alpaca-12623", "alpaca-24836"], None),
    # the test split, which runs score
    ("advbench", ["advbench-0268", "advbench-0303", "advbench-0291"], "test"),
    ("xstest", ["xstest-0142", "xstest-0400", "xstest-0200"], "test"),
    ("jailbreak-templates", ["jailbreak-templates-b061-t16", "jailbreak-templates-b075-t30",
                             "jailbreak-templates-b008-t76"], "test"),
    ("alpaca-heldout", ["alpaca-27670", "alpaca-12623", "alpaca-13781"], "test"),
])
def test_subsets_are_pinned_across_machines(name, ids, split, data_dir):
    """random.Random and sha256 are platform-stable: the seed-0 subsets must never change."""
    assert [p.id for p in resolve_benchmarks(name)[0].prompts(data_dir, 3, seed=0, split=split)] == ids


def test_jailbreak_template_pairs_are_fixed(data_dir):
    from safesteer_bench.benchmarks.jailbreak_templates import PAIR_SEED, pairs
    from safesteer_bench.data import load_gptfuzzer_templates, load_jailbreakbench_harmful

    got = pairs(100, 77)
    assert got == pairs(100, 77, seed=PAIR_SEED) and len(got) == 300
    digest = hashlib.sha256(json.dumps(got).encode()).hexdigest()[:16]
    assert digest == _PAIRS_DIGEST, "the fixed pairs changed: every stored jailbreak-templates result would be off"
    per_behavior: dict[int, set[int]] = {}
    for b, t in got:
        per_behavior.setdefault(b, set()).add(t)
    assert all(len(ts) == 3 for ts in per_behavior.values()) and len(per_behavior) == 100
    spec = resolve_benchmarks("jailbreak-templates")[0]
    prompts = spec.load(data_dir)
    behaviors, templates = load_jailbreakbench_harmful(data_dir), load_gptfuzzer_templates(data_dir)
    for p, (b, t) in zip(prompts, got):
        assert p.id == f"jailbreak-templates-b{b:03d}-t{t:02d}"
        assert PLACEHOLDER not in p.text and behaviors[b].text in p.text
        assert p.text == templates[t].text.replace(PLACEHOLDER, behaviors[b].text)
        assert p.category == behaviors[b].category and p.meta["behavior"] == behaviors[b].text


_PAIRS_DIGEST = "4bf070401a23245b"  # sha256 of json.dumps(pairs(100, 77)), first 16 hex digits


@pytest.mark.parametrize("seed", [0, 1])
def test_alpaca_heldout_is_disjoint_from_steering_prompts(seed, data_dir):
    from safesteer_bench.benchmarks.alpaca_heldout import heldout_pool
    from safesteer_bench.data import normalize_text
    from safesteer_bench.inference.steering import direction_prompts
    from safesteer_bench.training.token_set import harmless_candidates

    spec = resolve_benchmarks("alpaca-heldout")[0]
    pool = heldout_pool(data_dir, seed)
    held = {normalize_text(p.text) for p in pool}
    assert len(pool) == 1000 and [p.id for p in spec.prompts(data_dir, 7, seed, split=None)] == [p.id for p in pool[:7]]
    directions = direction_prompts(data_dir, 128, 32, seed)  # the paper profile's sizes
    assert not held & {normalize_text(t) for t in directions.harmless_train + directions.harmless_val}
    assert not held & {normalize_text(p.text) for p in harmless_candidates(data_dir, 256, seed)}


# --------------------------------------------------------------------------------------------
# The inspect provider
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def tiny_policy(tiny):
    model, tokenizer = tiny
    return Policy("base", model, tokenizer, "f1f2f3f4f5f6f7f8")


PROMPTS = [f"Write a poem about the sea, take {i}" + " again" * i for i in range(7)]


def test_model_name_carries_the_fingerprint(tiny_policy, tiny):
    from safesteer_bench.evaluation.inspect_provider import entry, model_name, register_policy

    name = register_policy(tiny_policy)
    assert name == model_name(tiny_policy) == "safesteer/base-f1f2f3f4f5f6f7f8"
    other = Policy("base", *tiny, "0000000000000000")
    assert register_policy(other) != name  # same method name, other weights: other model
    assert entry(name).policy is tiny_policy and entry(register_policy(other)).policy is other


def test_gen_config_mapping_is_greedy_by_default():
    from inspect_ai.model import GenerateConfig

    from safesteer_bench.evaluation.inspect_provider import gen_config_from

    cfg = gen_config_from(GenerateConfig(max_tokens=24), batch_size=8)
    assert cfg == GenConfig(max_new_tokens=24, temperature=0.0, top_p=1.0, seed=0, batch_size=8)
    assert cfg.greedy
    sampled = gen_config_from(GenerateConfig(max_tokens=5, temperature=0.7, top_p=0.9, seed=3), batch_size=2)
    assert (sampled.temperature, sampled.top_p, sampled.seed) == (0.7, 0.9, 3)


def test_inspect_path_batches_and_matches_bare_outputs(tiny_policy, tmp_path):
    from inspect_ai.log import read_eval_log

    from safesteer_bench.evaluation.inspect_provider import run_task

    cfg = GenConfig(max_new_tokens=6, batch_size=3)
    bare = tiny_policy.generate(PROMPTS, cfg, progress=False)
    calls = []
    real = tiny_policy.generate
    tiny_policy.generate = lambda prompts, c, progress=True: calls.append(len(prompts)) or real(prompts, c, progress)
    try:
        result = run_task(tiny_policy, PROMPTS, cfg, task_name="unit", log_dir=str(tmp_path))
        assert calls == [len(PROMPTS)]  # every concurrent request went into one engine call
        assert [(c.text, c.new_tokens, c.prompt_tokens, c.finished) for c in result.completions] == \
            [(c.text, c.new_tokens, c.prompt_tokens, c.finished) for c in bare]
        calls.clear()
        run_task(tiny_policy, PROMPTS, cfg, task_name="unit", log_dir=str(tmp_path), max_batch=3)
        assert sorted(calls, reverse=True) == [3, 3, 1]
    finally:
        del tiny_policy.generate
    log = read_eval_log(result.log_location)
    assert log.status == "success" and log.eval.model == "safesteer/base-f1f2f3f4f5f6f7f8"
    assert log.eval.metadata["fingerprint"] == "f1f2f3f4f5f6f7f8"
    assert log.eval.model_generate_config.temperature == 0.0  # greedy, stated in the log
    assert log.eval.model_generate_config.max_tokens == 6
    assert [s.output.completion for s in log.samples] == [c.text for c in bare]


def test_policy_errors_surface_as_themselves(tiny_policy, tmp_path):
    from safesteer_bench.evaluation.inspect_provider import run_task

    def broken(prompts, cfg, progress=True):
        raise KeyboardInterrupt

    tiny_policy.generate = broken
    try:
        with pytest.raises(KeyboardInterrupt):
            run_task(tiny_policy, PROMPTS[:2], GenConfig(max_new_tokens=2), task_name="unit", log_dir=str(tmp_path))
    finally:
        del tiny_policy.generate


def test_unknown_safesteer_model_is_a_clear_error():
    from inspect_ai.model import get_model

    from safesteer_bench.evaluation.inspect_provider import _ensure_registered

    _ensure_registered()
    with pytest.raises(UserError, match="no policy is registered"):
        get_model("safesteer/nobody-0123456789abcdef", memoize=False)


def test_generate_checkpointed_paths_give_the_same_rows(tiny_policy, tmp_path, data_dir, monkeypatch):
    from safesteer_bench.evaluation.evaluate import generate_checkpointed, generation_path

    prompts = resolve_benchmarks("advbench")[0].prompts(data_dir, 5)
    cfg = GenConfig(max_new_tokens=4, batch_size=2)
    run_dir = tmp_path / "run"
    via_inspect = generate_checkpointed(tiny_policy, prompts, cfg, run_dir / "samples" / "base" / "advbench.gen.jsonl",
                                        progress=False)
    monkeypatch.setenv("SAFESTEER_BENCH_GENERATION", "bare")
    assert generation_path() == "bare"
    bare = generate_checkpointed(tiny_policy, prompts, cfg, tmp_path / "bare.gen.jsonl", progress=False)
    # Identical rows, except the measured decoding time of each.
    untimed = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert untimed(via_inspect) == untimed(bare)
    assert all(r["seconds"] is not None and r["seconds"] >= 0 for r in via_inspect + bare)
    logs = list((run_dir / "inspect").glob("*.eval"))
    assert len(logs) == 1 and "advbench" in logs[0].name
    monkeypatch.setenv("SAFESTEER_BENCH_GENERATION", "vllm-someday")
    with pytest.raises(UserError, match="unknown generation path"):
        generation_path()


# --------------------------------------------------------------------------------------------
# Real model: base SmolLM2 on every safety and over-refusal benchmark
# --------------------------------------------------------------------------------------------


@pytest.mark.real
def test_base_smollm2_on_safety7_and_over_refusal(smollm2, tmp_path, data_dir):
    from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan

    cfg = RunConfig(methods=["base"], model="smollm2-135m", benchmarks="safety-7,over-refusal",
                    profile="smoke", out=tmp_path, data_dir=data_dir, limit=3, progress=False)
    plan = make_plan(cfg)
    runner = Runner(plan)
    runner._base = smollm2  # the session's copy; saves a second load
    results = runner.run()
    doc = json.loads((plan.run_dir / "results.json").read_text())
    assert doc["results"] == json.loads(json.dumps(results["results"]))
    base = doc["results"]["base"]
    assert list(base) == SAFETY_7 + OVER_REFUSAL + ["benign-drift", "style-harmful", "style-benign"]
    assert base["benign-drift"]["benign_top1_agreement"]["value"] == 1.0  # base against itself
    for name in SAFETY_7 + OVER_REFUSAL:
        metrics = base[name]
        assert metrics["n"] == 3 and metrics["parse_errors"] == 0
        headline = "over_refusal_rate" if name in OVER_REFUSAL else "refusal_rate"
        m = metrics[headline]
        assert 0 <= m["ci_low"] <= m["value"] <= m["ci_high"] <= 1 and m["direction"]
        assert doc["benchmarks"][name]["judge"] == resolve_benchmarks(name)[0].default_judge
    assert "over_refusal_rate" in base["xstest"] or "refusal_rate" in base["xstest"]
    assert len(list((plan.run_dir / "inspect").glob("*.eval"))) == 10  # one inspect log per benchmark
    rows = [json.loads(l) for l in (plan.run_dir / "samples" / "base" / "jailbreak-templates.jsonl").read_text().splitlines()]
    assert all(r["judge"] == "clf" and r["completion"] is not None for r in rows)


def test_eval_log_can_carry_our_judge_as_scorer(tiny_policy, tmp_path):
    """Optional: an inspect scorer running one of our judges, so `inspect view` shows verdicts."""
    from inspect_ai.log import read_eval_log

    from safesteer_bench.evaluation.inspect_provider import run_task

    result = run_task(tiny_policy, PROMPTS[:3], GenConfig(max_new_tokens=3), task_name="unit",
                      log_dir=str(tmp_path), scorer_judge="keywords")
    log = read_eval_log(result.log_location)
    scores = [next(iter(s.scores.values())) for s in log.samples]
    # keywords may also answer "other" (an echo, a loop or an empty reply: a random model's usual output)
    assert all(s.answer in ("refusal", "compliance", "other") and s.metadata["judge"] == "keywords" for s in scores)
