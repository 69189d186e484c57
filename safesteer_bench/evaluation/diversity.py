"""Diversity and coherence of a set of completions (issue 19 item 4).

Steering strength trades diversity for refusal success; a steered teacher that answers every
prompt with the same sentence teaches its student little. Measured on stored completions (no
generation):

``distinct_1`` / ``distinct_2``          sample level: per completion, unique n-grams / n-grams,
                                         averaged over completions (a completion that repeats
                                         itself scores low); higher is more diverse
``set_distinct_1`` / ``set_distinct_2``  set level: unique n-grams of the whole set / its n-grams
                                         (every completion saying the same thing scores low)
``self_bleu``                            mean over completions of BLEU-4 of one against all the
                                         others as references (sacrebleu, exponential smoothing,
                                         effective order), in [0, 1]; lower is more diverse.
                                         O(n²): at most :data:`MAX_SELF_BLEU` completions, evenly
                                         spaced, are compared
``perplexity``                           coherence proxy: the base model's perplexity of each
                                         completion given its chat-templated prompt,
                                         teacher-forced (no hooks, adapter off: the ``base``
                                         policy), batched; the geometric mean over completions
                                         (exp of the mean per-token NLL per completion, averaged);
                                         lower is more fluent. At most :data:`MAX_PERPLEXITY`
                                         completions, evenly spaced, each after at most
                                         :data:`MAX_CONTEXT` prompt tokens

n-grams are over lower-cased words and punctuation marks (:func:`tokens`). Empty completions have
no n-grams: they count as 0 in the sample-level mean and add nothing to the set.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

MAX_SELF_BLEU = 100
MAX_PERPLEXITY = 64
#: Prompt tokens kept before a completion when scoring its perplexity: the end of the templated
#: prompt (the request's tail and the assistant header). Jailbreak templates run to ~1,000 tokens,
#: and the prompt, not the completion, then set the stage's cost (80 s CPU per method for 128 rows).
MAX_CONTEXT = 256
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def ngrams(toks: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]


def distinct_n(text: str, n: int) -> float:
    """Unique n-grams / n-grams of one completion (0 when it has none)."""
    grams = ngrams(tokens(text), n)
    return len(set(grams)) / len(grams) if grams else 0.0


def sample_distinct(texts: Sequence[str], n: int) -> float:
    """Mean of :func:`distinct_n` over ``texts`` (nan for an empty set)."""
    return sum(distinct_n(t, n) for t in texts) / len(texts) if texts else math.nan


def set_distinct(texts: Sequence[str], n: int) -> float:
    """Unique n-grams of the set / all its n-grams (nan when the set has none)."""
    grams = [g for t in texts for g in ngrams(tokens(t), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def evenly_spaced(items: Sequence[Any], k: int) -> list[Any]:
    """At most ``k`` items, evenly spaced (deterministic, keeps the set's order)."""
    if len(items) <= k:
        return list(items)
    return [items[int(i * len(items) / k)] for i in range(k)]


def self_bleu(texts: Sequence[str], limit: int = MAX_SELF_BLEU) -> float:
    """Mean sentence BLEU-4 of each completion against the others, in [0, 1] (nan under 2 texts)."""
    from sacrebleu.metrics import BLEU

    chosen = evenly_spaced([t for t in texts if t.strip()], limit)
    if len(chosen) < 2:
        return math.nan
    bleu = BLEU(effective_order=True, smooth_method="exp")
    scores = [bleu.sentence_score(hyp, chosen[:i] + chosen[i + 1:]).score for i, hyp in enumerate(chosen)]
    return sum(scores) / len(scores) / 100.0


def text_diversity(texts: Sequence[str]) -> dict[str, float]:
    """Every text-only measure of the module docstring."""
    return {"distinct_1": sample_distinct(texts, 1), "distinct_2": sample_distinct(texts, 2),
            "set_distinct_1": set_distinct(texts, 1), "set_distinct_2": set_distinct(texts, 2),
            "self_bleu": self_bleu(texts)}


def completion_nll(policy: Any, prompts: Sequence[str], completions: Sequence[str],
                   batch_size: int = 8) -> list[float | None]:
    """Mean per-token negative log-likelihood (nats) of each completion given its prompt under
    ``policy`` (teacher-forced, ``policy.active()``); None for an empty completion."""
    import torch

    from safesteer_bench.evaluation.drift import _batch_inputs, _Row
    from safesteer_bench.modeling.generation import chat_text

    tok = policy.tokenizer
    prompt_ids = tok([chat_text(tok, p) for p in prompts], add_special_tokens=False)["input_ids"]
    rows = []
    for i, (p_ids, text) in enumerate(zip(prompt_ids, completions)):
        c_ids = tok(text, add_special_tokens=False)["input_ids"] if text.strip() else []
        if c_ids:
            rows.append(_Row(i, list(p_ids)[-MAX_CONTEXT:] + c_ids, c_ids, len(c_ids)))
    rows.sort(key=lambda r: len(r.ids), reverse=True)  # similar lengths together: less padding
    out: list[float | None] = [None] * len(completions)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    device = next(policy.model.parameters()).device
    with torch.inference_mode(), policy.active():
        for start in range(0, len(rows), max(1, batch_size)):
            batch = rows[start:start + max(1, batch_size)]
            keep = max(len(r.completion) for r in batch) + 1
            inputs = _batch_inputs(batch, pad, device)
            try:  # the vocabulary projection only where completion tokens are predicted (prompts can be long)
                logits = policy.model(**inputs, logits_to_keep=keep, use_cache=False).logits[:, -keep:]
            except TypeError:  # a model class without logits_to_keep: full logits
                logits = policy.model(**inputs, use_cache=False).logits[:, -keep:]
            logp = torch.log_softmax(logits.float(), dim=-1)
            for b, row in enumerate(batch):
                n = len(row.completion)
                # logits at position t predict token t + 1: the completion's tokens are the last n
                picked = logp[b, keep - n - 1:keep - 1].gather(-1, torch.tensor(row.completion, device=device)[:, None])
                out[row.index] = float(-picked.mean())
    return out


def perplexity(nlls: Sequence[float | None]) -> float:
    """Geometric-mean perplexity over completions: exp(mean of their per-token NLLs)."""
    values = [v for v in nlls if v is not None]
    return math.exp(sum(values) / len(values)) if values else math.nan


def coherence(nll: float, reference_nll: float) -> float:
    """Perplexity ratio to a reference, capped at 1: exp(−max(0, NLL − NLL_ref)) in (0, 1]."""
    if math.isnan(nll) or math.isnan(reference_nll):
        return math.nan
    return math.exp(-max(0.0, nll - reference_nll))


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean of values in [0, 1]; 0 when any is 0 (or nan)."""
    if any(not v > 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)
