"""Diversity and coherence measures, the style stage of a run, and its report columns."""

from __future__ import annotations

import json
import math

import pytest
import torch

from safesteer_bench.evaluation import diversity as d


def test_distinct_n_sample_and_set_level_exact():
    texts = ["the cat the cat", "the dog ran"]
    # "the cat the cat": 2 unique of 4 words, 2 unique bigrams (the cat, cat the) of 3
    assert d.distinct_n(texts[0], 1) == 0.5 and d.distinct_n(texts[0], 2) == pytest.approx(2 / 3)
    assert d.sample_distinct(texts, 1) == pytest.approx((0.5 + 1.0) / 2)
    # set: words the, cat, dog, ran = 4 unique of 7; bigrams: "the cat" twice, so 4 unique of 5
    assert d.set_distinct(texts, 1) == pytest.approx(4 / 7)
    assert d.set_distinct(texts, 2) == pytest.approx(4 / 5)
    assert d.tokens("I can't, sorry!") == ["i", "can", "'", "t", ",", "sorry", "!"]
    assert d.distinct_n("", 1) == 0.0 and math.isnan(d.set_distinct([""], 2))


def test_self_bleu_exact_on_hand_made_sets():
    same = ["I am sorry but I cannot help with that request today ."] * 4
    assert d.self_bleu(same) == pytest.approx(1.0)
    assert d.self_bleu(["alpha beta gamma delta", "one two three four", "red green blue cyan"]) == 0.0
    from sacrebleu.metrics import BLEU

    pair = ["the quick brown fox jumps over the lazy dog", "the quick brown fox sleeps under the lazy cat"]
    bleu = BLEU(effective_order=True, smooth_method="exp")
    expected = (bleu.sentence_score(pair[0], [pair[1]]).score + bleu.sentence_score(pair[1], [pair[0]]).score) / 200
    assert d.self_bleu(pair) == pytest.approx(expected) and 0 < expected < 1
    assert math.isnan(d.self_bleu(["only one"]))


def test_harmonic_mean_and_coherence():
    assert d.harmonic_mean([1.0, 1.0, 1.0]) == 1.0
    assert d.harmonic_mean([0.5, 1.0, 1.0]) == pytest.approx(3 / (2 + 1 + 1))
    assert d.harmonic_mean([0.9, 0.0, 1.0]) == 0.0
    assert d.coherence(2.0, 2.5) == 1.0 and d.coherence(3.0, 2.0) == pytest.approx(math.exp(-1))


def _manual_nll(model, tok, prompt, completion):
    from safesteer_bench.modeling.generation import chat_text

    p = tok(chat_text(tok, prompt), add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(torch.tensor([p + c])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    return float(-sum(logp[len(p) - 1 + i, t] for i, t in enumerate(c)) / len(c))


def test_batched_left_padded_nll_equals_one_sequence_at_a_time(tiny):
    from safesteer_bench.modeling.policy import Policy

    torch.set_num_threads(1)
    model, tok = tiny
    policy = Policy("base", model, tok, "tiny")
    prompts = ["Write a poem about the sea.", "How do I make a cake?", "Hi"]
    completions = ["The ocean is deep and blue.", "Sure, here is how to bake bread. Mix it.", ""]
    nlls = d.completion_nll(policy, prompts, completions, batch_size=2)
    assert nlls[2] is None  # an empty completion has no token to score
    for i in range(2):
        assert nlls[i] == pytest.approx(_manual_nll(model, tok, prompts[i], completions[i]), abs=1e-4)
    assert d.perplexity(nlls) == pytest.approx(math.exp((nlls[0] + nlls[1]) / 2))


def test_style_stage_in_a_run_results_report_and_resume(tiny_dir, tmp_path, data_dir, monkeypatch):
    from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan

    cfg = dict(methods=["base"], model=str(tiny_dir), benchmarks="advbench,xstest-safe", profile="smoke",
               out=tmp_path, data_dir=data_dir, limit=3, progress=False, drift=False)
    plan = make_plan(RunConfig(**cfg))
    results = Runner(plan).run()
    harmful, benign = results["results"]["base"]["style-harmful"], results["results"]["base"]["style-benign"]
    for part in (harmful, benign):
        assert set(part) == {"refusal_quality", "distinct_1", "distinct_2", "set_distinct_1", "set_distinct_2",
                             "self_bleu", "perplexity"}
        assert 0 <= part["refusal_quality"]["value"] <= 1 and part["refusal_quality"]["n"] == 3
        assert part["perplexity"]["value"] > 1  # a random model is far from certain of its own text
    samples = [json.loads(line) for line in (plan.run_dir / "samples" / "base" / "advbench.jsonl").open()]
    from safesteer_bench.evaluation.rbr import grade_rows

    assert harmful["refusal_quality"]["value"] == pytest.approx(sum(grade_rows(samples)) / 3)
    assert results["style"]["metrics"][0] == "refusal_quality"
    page = (plan.run_dir / "report.html").read_text()
    assert 'id="style-table"' in page and "self-BLEU" in page and "refusal quality (rbr" in page
    import safesteer_bench.pipeline.runner as runner_mod

    monkeypatch.setattr(runner_mod, "load_model", lambda *a, **k: pytest.fail("model loaded on resume"))
    again = Runner(make_plan(RunConfig(**cfg))).run()
    assert again["results"]["base"]["style-harmful"] == harmful


def test_report_shows_style_and_diversity_columns(tmp_path):
    from test_report import make_results, parse

    from safesteer_bench.reporting.report import render_report, style_table

    results, samples = make_results()

    def metric(name, value):
        return {"name": name, "value": value, "ci_low": None, "ci_high": None, "n": 5, "direction": "higher is better"}

    results["results"]["safesteer"]["style-harmful"] = {
        "refusal_quality": metric("refusal_quality", 0.75), "distinct_2": metric("distinct_2", 0.5),
        "self_bleu": metric("self_bleu", 0.125), "perplexity": metric("perplexity", 12.345)}
    table = style_table(results)
    assert list(table) == ["safesteer"] and table["safesteer"]["harmful_quality"] == 0.75
    path = render_report(results, samples, tmp_path / "report.html")
    text = " ".join(parse(path).text)
    for column in ("refusal quality", "distinct-1", "distinct-2", "set distinct-2", "self-BLEU", "perplexity"):
        assert column in text
    assert "75.0" in text and "12.5" in text and "12.3" in text  # quality and self-BLEU in %, perplexity raw


def test_coef_rule_harmonic_trades_refusal_for_diversity(tiny, monkeypatch):
    """The generations are canned per coefficient (the rule is under test, not the tiny model's
    steering); self-BLEU and the base model's perplexity are computed for real."""
    from safesteer_bench.inference import steering
    from safesteer_bench.modeling.models import LoadedModel, ModelSpec

    torch.set_num_threads(1)
    model, tok = tiny
    base = LoadedModel(ModelSpec("tiny", "dir", "tiny"), model, tok, "cpu", "float32", "tiny-identity")
    varied = ["The ocean is deep and blue.", "Sure, here is how to bake bread.", "I'm sorry, but I cannot help."]
    same = ["I'm sorry, but I cannot help with that request."] * 3
    canned = {None: (0.0, varied), 0.5: (1 / 3, varied), 1.0: (1.0, same), 1.5: (2 / 3, varied)}
    monkeypatch.setattr(steering, "refusal_rate", lambda m, t, prompts, hooks, *a, **k:
                        canned[hooks[0].coef if hooks else None])
    direction = steering.SteeringDirection(1, -1, torch.ones(32), 1.0, "responses", "auto", [], "x")
    prompts = ["a", "b", "c"]
    coef, _ = steering.choose_coef(base, direction, prompts, grid=(0.5, 1.0, 1.5), target=0.8)
    assert coef == 1.0  # threshold: the first c reaching 0.8, though every answer is the same
    coef, tried = steering.choose_coef(base, direction, prompts, grid=(0.5, 1.0, 1.5), rule="harmonic")
    assert coef == 1.5 and [t["coef"] for t in tried] == [0.5, 1.0, 1.5]
    by_coef = {t["coef"]: t for t in tried}
    assert by_coef[1.0]["diversity"] == pytest.approx(0.0, abs=1e-9) and by_coef[1.0]["harmonic"] == 0.0
    assert by_coef[1.5]["coherence"] == pytest.approx(1.0)  # the unsteered answers' own perplexity
    assert by_coef[1.5]["harmonic"] == pytest.approx(
        d.harmonic_mean([2 / 3, by_coef[1.5]["coherence"], by_coef[1.5]["diversity"]]))
    assert by_coef[1.5]["harmonic"] > by_coef[0.5]["harmonic"] > 0


def test_coef_rule_option_reaches_the_direction_request_only_when_set():
    from types import SimpleNamespace

    from safesteer_bench.errors import UserError
    from safesteer_bench.inference.steering import SteeringOptions, _request

    def ctx(options):
        return SimpleNamespace(options=options, profile=SimpleNamespace(name="smoke", direction_prompts=16,
                                                                        direction_val_prompts=8), seed=0)

    assert "coef_rule" not in _request(ctx({}))  # default: directions saved before the option are reused
    assert _request(ctx({"coef_rule": "harmonic", "coef": "auto"}))["coef_rule"] == "harmonic"
    with pytest.raises(UserError, match="coef_rule"):
        SteeringOptions.parse({"coef_rule": "median"}, "steering")


@pytest.mark.real
def test_real_smollm2_finds_its_fluent_answer_more_coherent_than_shuffled_words(smollm2):
    """The coherence proxy on the real model: a fluent answer has a far lower perplexity than the
    same words shuffled."""
    import random

    from safesteer_bench.modeling.policy import Policy

    torch.set_num_threads(1)
    policy = Policy("base", smollm2.model, smollm2.tokenizer, "smollm2")
    fluent = "The capital of France is Paris. It is known for the Eiffel Tower and its museums."
    words = fluent.split()
    random.Random(0).shuffle(words)
    nlls = d.completion_nll(policy, ["What is the capital of France?"] * 2, [fluent, " ".join(words)])
    assert math.exp(nlls[1]) > 5 * math.exp(nlls[0])
    assert d.distinct_n("Paris Paris Paris Paris", 1) == 0.25
