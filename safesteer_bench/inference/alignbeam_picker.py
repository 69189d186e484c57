"""ALIGNBEAM's LLM picker: a small LLM, prompted as a safety judge, picks the safest beam (docs/architecture.md §4).

The picker asks the picker model Llama Guard's question (the same instruction prompt as the
``llama-guard`` model judge, :func:`~safesteer_bench.evaluation.model_judges.llama_guard_instruction`,
in the picker model's chat template) about each (prompt, candidate) pair and reads the answer off
the next-token distribution at the start of the reply instead of generating it:

    score = log Σ P(first token of "unsafe" / " unsafe") − log Σ P(first token of "safe" / " safe")

Lower is safer; the decoder picks the candidate with the lowest score (ties: the likelier beam).
Why logits and not a generated, parsed answer: one forward pass per candidate (last position only,
no decoding loop), no parse errors (a 135M model rarely answers in format: every unparsed answer
would rank as unsafe and the pick would fall back to the log-likelihood tie-break), and a
continuous score, so the K candidates are ranked rather than split into two classes. Reading the
first token only is exact for SmolLM2 ("safe" and " unsafe" are single tokens) and, where a label
spans several tokens ("uns" + "afe"), gives the mass of the replies that begin that label; first
tokens shared by both labels are left out of both. Deterministic: a fixed prompt, no sampling.
Candidates are scored ``batch_size`` at a time, left-padded, after the judge prompt's fixed
beginning (instruction and hazard categories, about two thirds of its tokens), whose KV cache is
computed once per picker (not for sliding-window caches such as Gemma 3's, which cannot be
cropped back to it: those models score every candidate's whole prompt).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from safesteer_bench.errors import UserError
from safesteer_bench.evaluation.judges import Verdict, _check_lengths
from safesteer_bench.evaluation.model_judges import llama_guard_instruction
from safesteer_bench.modeling.generation import chat_text

log = logging.getLogger(__name__)

#: The two answers of Llama Guard's first line, as a reply would begin them.
SAFE_LABELS = ("safe", " safe")
UNSAFE_LABELS = ("unsafe", " unsafe")
#: Characters of a candidate shown to the picker (alignbeam's candidates are short; this bounds a
#: runaway one so the judge prompt stays inside a small model's context).
MAX_RESPONSE_CHARS = 2000


def label_token_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """First token ids of the safe and the unsafe labels, without ids both labels begin with."""
    def firsts(labels: Sequence[str]) -> set[int]:
        return {ids[0] for ids in (tokenizer.encode(t, add_special_tokens=False) for t in labels) if ids}

    safe, unsafe = firsts(SAFE_LABELS), firsts(UNSAFE_LABELS)
    shared = safe & unsafe
    safe, unsafe = sorted(safe - shared), sorted(unsafe - shared)
    if not safe or not unsafe:
        raise UserError("the alignbeam picker model's tokenizer begins 'safe' and 'unsafe' with the same token",
                        "choose another picker_model (e.g. smollm2-135m) or picker=judge")
    return safe, unsafe


def _sliding(cache: Any) -> bool:
    """Whether any layer of the cache keeps a sliding window (its past cannot be cropped back)."""
    flags = getattr(cache, "is_sliding", None)
    return bool(flags) and any(flags) if isinstance(flags, (list, tuple)) else bool(flags)


class LLMSafetyPicker:
    """Scores (prompt, response) pairs by the picker model's log-odds of "unsafe" over "safe".

    ``policy``: a Policy (model, tokenizer, ``active()``); ``label``: what the picker is, for the
    record (``llm-picker(<model>)``). :meth:`judge` gives Verdicts (``score`` = the log-odds,
    ``harmful`` = score > 0) so the decoder's records read like a judge's.
    """

    ranks_by_score = True  # the decoder ranks by ``score``, not by the refused/harmful classes

    def __init__(self, policy: Any, label: str, batch_size: int = 8) -> None:
        self.policy = policy
        self.name = f"llm-picker({label})"
        self.description = "alignbeam's LLM picker: Llama Guard's question, log P(unsafe) - log P(safe)"
        self.batch_size = max(1, int(batch_size))
        self.safe_ids, self.unsafe_ids = label_token_ids(policy.tokenizer)
        self._prefix_state: tuple[list[int], Any] | None = None

    def texts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        tok = self.policy.tokenizer
        return [chat_text(tok, llama_guard_instruction(p, r[:MAX_RESPONSE_CHARS])) for p, r in zip(prompts, responses)]

    def _encode(self, text: str) -> list[int]:
        tok = self.policy.tokenizer
        return list(tok.encode(text, add_special_tokens=not getattr(tok, "chat_template", None)))

    def _prefix(self) -> tuple[list[int], Any]:
        """The token ids every judge prompt begins with (instruction and categories) and their KV
        cache, computed once: each candidate then costs only its own tokens. Found as the common
        start of two renderings less one token (a token may merge with what follows); rows whose
        ids do not begin with it are scored without the cache."""
        if self._prefix_state is None:
            a, b = (self._encode(t) for t in self.texts(["a", "z b"], ["x", "y"]))
            n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            prefix, cache = a[:max(0, n - 1)], None
            if prefix:
                from safesteer_bench.inference.alignbeam import _CACHE_KWARG, _device

                ids = torch.tensor([prefix], device=_device(self.policy.model))
                with self.policy.active():
                    cache = getattr(self.policy.model(input_ids=ids, use_cache=True), _CACHE_KWARG, None)
                if _sliding(cache):  # a sliding-window layer (Gemma 3) cannot be cropped back to the prefix
                    cache = None
                if cache is not None:  # one row per batch row; cropped back to the prefix after each batch
                    cache.batch_repeat_interleave(self.batch_size)
            self._prefix_state = (prefix, cache) if cache is not None else ([], None)
        return self._prefix_state

    @torch.inference_mode()
    def scores(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """log P(unsafe) − log P(safe) at the reply's first token, per pair (lower is safer)."""
        _check_lengths(prompts, responses)
        seqs = [self._encode(t) for t in self.texts(prompts, responses)]
        prefix, _ = self._prefix()
        cached = [i for i, s in enumerate(seqs) if prefix and s[:len(prefix)] == prefix and len(s) > len(prefix)]
        plain = sorted(set(range(len(seqs))) - set(cached))
        out = [0.0] * len(seqs)
        for rows, start in ((cached, len(prefix)), (plain, 0)):
            for b in range(0, len(rows), self.batch_size):
                batch = rows[b:b + self.batch_size]
                cache = self._prefix_state[1] if start else None  # None once a crop failed
                offset = start if cache is not None else 0
                logp = self._last_logprobs([seqs[i][offset:] for i in batch], cache, offset)
                odds = logp[:, self.unsafe_ids].logsumexp(-1) - logp[:, self.safe_ids].logsumexp(-1)
                for i, value in zip(batch, odds.tolist()):
                    out[i] = value
        return out

    def _last_logprobs(self, seqs: list[list[int]], prefix_cache: Any, prefix_len: int) -> torch.Tensor:
        """Next-token log-probabilities after each (left-padded) row, continuing ``prefix_cache``."""
        from safesteer_bench.inference.alignbeam import (_CACHE_KWARG, _device, _keeps_last_logits, _left_pad,
                                                         _pad_id, _positions)

        model, tok = self.policy.model, self.policy.tokenizer
        rows = len(seqs)
        if prefix_cache is not None:  # the cache holds batch_size rows: fill a short batch with copies
            seqs = list(seqs) + [seqs[-1]] * (self.batch_size - rows)
        ids, mask = _left_pad(seqs, _pad_id(tok), _device(model))
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if _keeps_last_logits(model) else {}
        if prefix_cache is not None:
            kwargs[_CACHE_KWARG] = prefix_cache
            mask = torch.cat([torch.ones(len(seqs), prefix_len, dtype=mask.dtype, device=mask.device), mask], dim=1)
        try:
            with self.policy.active():
                logits = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask, ids.shape[1]),
                               use_cache=prefix_cache is not None, **kwargs).logits[:rows, -1, :]
        finally:
            if prefix_cache is not None:
                self._restore(prefix_cache, prefix_len)
        return torch.log_softmax(logits.float().cpu(), dim=-1)

    def _restore(self, cache: Any, prefix_len: int) -> None:
        """Crop the cache back to the prefix; a cache that refuses is dropped (later rows go uncached)."""
        extra = cache.get_seq_length() - prefix_len  # the forward pass extended it in place
        try:
            if extra > 0:
                cache.crop(-extra)  # negative: remove that many (transformers 4 and 5 alike)
        except (RuntimeError, ValueError, AttributeError) as exc:
            log.info("LLM picker: prefix cache cannot be cropped (%s); scoring without it", exc)
            self._prefix_state = ([], None)

    def judge(self, prompts: list[str], responses: list[str]) -> list[Verdict]:
        return [Verdict("unsafe" if s > 0 else "safe", refused=False, harmful=s > 0, score=s,
                        rationale=f"log P(unsafe) - log P(safe) = {s:.3f}") for s in self.scores(prompts, responses)]
