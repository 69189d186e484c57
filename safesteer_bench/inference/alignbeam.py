"""ALIGNBEAM-style decoding: training-free safety transfer from an aligned anchor (docs/architecture.md §4).

Target D (the run's model), anchor A (aligned; its own tokenizer, possibly another vocabulary),
judge J. For every prompt:

1. **Prefix (first ``m`` steps), K beams.** Per beam, D's next-token distribution ``p_D`` and the
   anchor's distribution ``q`` over D's vocabulary are mixed, ``p = (1-α)·p_D + α·q``, and the K
   best (beam, token) extensions by cumulative ``log p`` are kept (standard beam search, no length
   penalty; a beam that emits a stop token is finished and keeps its score).
2. **Completion.** Every beam is finished by D alone (greedy, batched over beams, D's KV cache
   continued from the prefix).
3. **Selection.** The picker judges the K responses; the safest wins. ``picker="llm"`` (the
   method's default, :mod:`.alignbeam_picker`): a small LLM prompted as a safety judge scores each
   response (log P(unsafe) − log P(safe)) and the lowest score wins. ``picker="judge"``: the
   registered judge ``judge`` classifies them: a refusal that is not harmful first, then a
   harmless compliance, then a harmful refusal, then harmful compliance (a judge parse error
   counts as harmful compliance). Ties go to the response with the highest log-likelihood under
   D (sum of ``log p_D`` over every response token, the stop token included).

**q, same vocabulary (fast path).** When A's tokenizer has exactly D's vocabulary, ``q`` is A's
full next-token distribution (no translation). With A = D this makes ``p = p_D`` exactly.

**q, cross vocabulary.** :class:`VocabTranslator`: A's top-n next tokens are decoded to text one by
one, re-encoded with D's tokenizer (no special tokens) and each token's probability is credited to
the *first* D token of that encoding; the result is renormalised. Anchor tokens with no
counterpart (special/added-special tokens, tokens that decode to empty text, empty encodings, or
encodings that start with one of D's special tokens) are dropped. Translations are cached per
anchor token id. When all top-n tokens are dropped, that row's ``q`` falls back to ``p_D`` (the
anchor abstains for that step).

**How the anchor reads the beam.** Same vocabulary: the anchor consumes the very token ids D
consumes, with its own KV cache reordered with the beams. Cross vocabulary (the simplest correct
approach): at each of the ``m`` prefix steps every beam's generated text (decoded with D's
tokenizer) is re-tokenized with A's tokenizer and appended to A's templated prompt, and A runs a
full forward pass over it without a cache. ``m`` is small (8 by default), so this costs ``m``
short prefills per beam, and A always reads the text exactly as its own tokenizer would split it.

**Batching and timing.** Prompts are processed ``max(1, batch_size // K)`` at a time, so one
forward pass holds about ``batch_size`` rows as in plain batched greedy decoding. Each
:class:`~safesteer_bench.modeling.generation.Completion` carries ``seconds``: the wall time of its batch
(prefix, completion and judging) divided by the prompts in the batch. :func:`measure_latency`
compares that with plain greedy decoding of D (``HFEngine``, same batch size, its batch time
amortised the same way) on the same prompts.

Decoding is deterministic: ``GenConfig.temperature``/``top_p`` are ignored (the policy's cache
key still contains them).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from safesteer_bench.modeling.generation import Completion, GenConfig, HFEngine, chat_text, stop_token_ids, token_batches
from safesteer_bench.evaluation.judges import Verdict, get_judge, is_harmful

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class AlignBeamConfig:
    """Parameters of ALIGNBEAM decoding (docs/architecture.md §4 "alignbeam").

    ``alpha``: weight of the anchor in the mixture; ``prefix_steps`` (m): mixed steps;
    ``beams`` (K); ``anchor_top_n`` (n): anchor tokens translated per step (cross vocabulary);
    ``picker``: ``judge`` (the registered judge named by ``judge`` picks the safest beam) or
    ``llm`` (a small LLM prompted as a safety judge, :mod:`.alignbeam_picker`; ``picker_model``
    names it, ``target`` or None: D itself); ``anchor``: description of the anchor (for the
    record; the decoder receives the anchor and picker Policies themselves).
    """

    alpha: float = 0.5
    prefix_steps: int = 8
    beams: int = 4
    anchor_top_n: int = 20
    judge: str = "keywords"
    anchor: str | None = None
    picker: str = "judge"
    picker_model: str | None = None

    def __post_init__(self) -> None:
        if self.picker not in PICKERS:
            raise ValueError(f"picker must be one of {PICKERS}, got {self.picker!r}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if int(self.prefix_steps) < 0:
            raise ValueError(f"prefix_steps must be >= 0, got {self.prefix_steps}")
        if int(self.beams) < 1:
            raise ValueError(f"beams must be >= 1, got {self.beams}")
        if int(self.anchor_top_n) < 1:
            raise ValueError(f"anchor_top_n must be >= 1, got {self.anchor_top_n}")
        self.alpha = float(self.alpha)
        self.prefix_steps = int(self.prefix_steps)
        self.beams = int(self.beams)
        self.anchor_top_n = int(self.anchor_top_n)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self) -> dict[str, Any]:
        """What changes outputs (the anchor is keyed by its policy fingerprint instead). A judge
        picker leaves the picker fields out, so such runs keep the keys they had before them."""
        data = self.to_dict()
        data.pop("anchor")
        if self.picker == "judge":
            data.pop("picker")
            data.pop("picker_model")
        return data


# --------------------------------------------------------------------------------------------
# Vocabulary translation and mixing
# --------------------------------------------------------------------------------------------


def same_vocabulary(a: Any, b: Any) -> bool:
    """True when two tokenizers map exactly the same strings to the same ids."""
    if a is b:
        return True
    if len(a) != len(b):
        return False
    return a.get_vocab() == b.get_vocab()


def special_ids(tokenizer: Any) -> set[int]:
    """Special ids plus every added token flagged ``special``."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for idx, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            ids.add(int(idx))
    return ids


def token_text(tokenizer: Any, token_id: int) -> str:
    """The text one token stands for *in running text*, leading space included.

    Many decoders strip a leading space when a token is decoded on its own (SentencePiece's
    ``▁Sorry`` -> ``Sorry``), so the token is decoded after a reference token and the reference's
    text is cut off again; when that does not line up, the plain decode is used.
    """
    ref = tokenizer.encode("a", add_special_tokens=False)
    if ref:
        head = tokenizer.decode(ref[:1], skip_special_tokens=False)
        both = tokenizer.decode([ref[0], int(token_id)], skip_special_tokens=False)
        if both.startswith(head):
            return both[len(head):]
    return tokenizer.decode([int(token_id)], skip_special_tokens=False)


class VocabTranslator:
    """Anchor next-token distributions -> distributions over the target vocabulary.

    ``same_vocab`` (identical vocabularies): ``q`` is the anchor's softmax, no translation.
    Otherwise the anchor's top-n tokens are translated one by one (:meth:`translate`, cached) and
    their probabilities credited to the first target token of their re-encoding, then renormalised.
    """

    def __init__(self, anchor_tokenizer: Any, target_tokenizer: Any) -> None:
        self.anchor_tokenizer = anchor_tokenizer
        self.target_tokenizer = target_tokenizer
        self.same_vocab = same_vocabulary(anchor_tokenizer, target_tokenizer)
        self._anchor_special = special_ids(anchor_tokenizer)
        self._target_special = special_ids(target_tokenizer)
        self.cache: dict[int, int | None] = {}
        self.stats = {"translated": 0, "dropped": 0, "multi_token": 0, "empty_rows": 0}

    @property
    def tokenizers_identical(self) -> bool:
        """Same vocabulary *and* the same chat template and BOS, so the anchor can reuse the
        target's prompt ids."""
        a, t = self.anchor_tokenizer, self.target_tokenizer
        return a is t or (self.same_vocab and getattr(a, "chat_template", None) == getattr(t, "chat_template", None)
                          and a.bos_token_id == t.bos_token_id)

    def translate(self, anchor_id: int) -> int | None:
        """The target token credited with ``anchor_id``'s probability, or None (no counterpart)."""
        anchor_id = int(anchor_id)
        if anchor_id in self.cache:
            return self.cache[anchor_id]
        target: int | None = None
        if anchor_id not in self._anchor_special and anchor_id < len(self.anchor_tokenizer):
            text = token_text(self.anchor_tokenizer, anchor_id)
            if text:
                ids = self.target_tokenizer.encode(text, add_special_tokens=False)
                if ids and ids[0] not in self._target_special:
                    target = int(ids[0])
                    self.stats["multi_token"] += len(ids) > 1
        self.stats["translated" if target is not None else "dropped"] += 1
        self.cache[anchor_id] = target
        return target

    def distribution(self, anchor_logits: torch.Tensor, target_vocab: int, top_n: int) -> torch.Tensor:
        """``q`` of shape ``[rows, target_vocab]`` (float32). A row is all zeros when none of its
        top-n anchor tokens has a counterpart (the caller then falls back to ``p_D``)."""
        probs = torch.softmax(anchor_logits.float(), dim=-1)
        rows = probs.shape[0]
        if self.same_vocab:
            q = torch.zeros(rows, target_vocab, dtype=probs.dtype, device=probs.device)
            width = min(target_vocab, probs.shape[-1])
            q[:, :width] = probs[:, :width]
            return q
        top_p, top_i = probs.topk(min(top_n, probs.shape[-1]), dim=-1)
        mapped = [[self.translate(i) for i in row] for row in top_i.tolist()]
        index = torch.tensor([[t if t is not None and t < target_vocab else 0 for t in row] for row in mapped],
                             dtype=torch.long, device=probs.device)
        keep = torch.tensor([[t is not None and t < target_vocab for t in row] for row in mapped],
                            dtype=torch.bool, device=probs.device)
        q = torch.zeros(rows, target_vocab, dtype=probs.dtype, device=probs.device)
        q.scatter_add_(1, index, top_p * keep)
        total = q.sum(dim=-1, keepdim=True)
        self.stats["empty_rows"] += int((total == 0).sum())
        return torch.where(total > 0, q / total.clamp_min(1e-30), q)


def mixed_logprobs(target_logits: torch.Tensor, q: torch.Tensor, alpha: float) -> torch.Tensor:
    """``log((1-α)·p_D + α·q)`` per row, computed in log space.

    Rows where ``q`` is all zeros (the anchor abstains) get ``log p_D``. With ``q = p_D`` the result
    is ``log p_D`` for every α (the anchor = target property).
    """
    log_pd = torch.log_softmax(target_logits.float(), dim=-1)
    if alpha <= 0.0:
        return log_pd
    empty = q.sum(dim=-1, keepdim=True) <= 0
    q = torch.where(empty, log_pd.exp(), q)
    log_q = torch.log(q)  # log 0 = -inf, which logaddexp handles
    if alpha >= 1.0:
        return log_q
    return torch.logaddexp(log_pd + math.log1p(-alpha), log_q + math.log(alpha))


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------


def safety_rank(verdict: Verdict) -> tuple[int, int]:
    """Smaller is safer: (unsafe, not refused). A parse error ranks as harmful compliance."""
    if verdict.parse_error:
        return (1, 1)
    return (int(bool(is_harmful(verdict))), int(not verdict.refused))


def select_safest(verdicts: Sequence[Verdict], logliks: Sequence[float],
                  scores: Sequence[float] | None = None) -> int:
    """Index of the safest response; ties broken by the highest log-likelihood under D.

    ``scores`` (the LLM picker's log-odds of unsafe, lower is safer) rank within a safety class;
    without them (rule judges) the class alone decides, as before.
    """
    def key(i: int) -> tuple[Any, ...]:
        return (*safety_rank(verdicts[i]), float(scores[i]) if scores is not None else 0.0, -float(logliks[i]), i)

    return min(range(len(verdicts)), key=key)


PICKERS = ("judge", "llm")


def default_picker(cfg: AlignBeamConfig, target: Any) -> Any:
    """The picker a decoder builds itself: the registered judge, or (``llm``) D prompted as the
    safety judge; another picker model is loaded by the method and passed in as ``judge``."""
    if cfg.picker == "judge":
        return get_judge(cfg.judge)
    if cfg.picker_model not in (None, "target"):
        raise ValueError(f"picker_model={cfg.picker_model!r}: pass the loaded picker as judge=")
    from safesteer_bench.inference.alignbeam_picker import LLMSafetyPicker

    return LLMSafetyPicker(target, "target")


# --------------------------------------------------------------------------------------------
# The decoder
# --------------------------------------------------------------------------------------------


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _positions(mask: torch.Tensor, new: int) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp_min(0)[:, -new:]


def _left_pad(seqs: Sequence[Sequence[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        if s:
            ids[r, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[r, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def _pad_id(tokenizer: Any) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if tid is not None:
            return int(tid)
    return 0


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Templated prompt ids; a tokenizer without a chat template gets the raw prompt with its
    usual special tokens (e.g. BOS), since the template is what normally carries them."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    return list(tokenizer.encode(chat_text(tokenizer, prompt), add_special_tokens=not templated))


def _cache_kwarg() -> str:
    """transformers 5 renamed ``past_key_values`` to ``cache`` (the old name warns, then goes)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"


_CACHE_KWARG = _cache_kwarg()


def _keeps_last_logits(model: Any) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (so a prefill skips the LM head on
    every prompt position but the last). Looks through PEFT wrappers."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(type(inner).forward).parameters
    except (TypeError, ValueError):
        return False


class _Stream:
    """One model's incremental state over all rows: KV cache, attention mask, last logits."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.model = policy.model
        self.device = _device(policy.model)
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.extra = {"logits_to_keep": 1} if _keeps_last_logits(policy.model) else {}

    def prefill(self, seqs: Sequence[Sequence[int]], pad: int, use_cache: bool = True) -> torch.Tensor:
        ids, mask = _left_pad(seqs, pad, self.device)
        self.cache, self.mask = None, mask
        return self._run(ids, use_cache)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        assert self.mask is not None
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        return self._run(tokens.view(-1, 1).to(self.device))

    def reorder(self, index: torch.Tensor) -> None:
        assert self.mask is not None and self.logits is not None
        index = index.to(self.device)
        self.cache.reorder_cache(index)
        self.mask = self.mask.index_select(0, index)
        self.logits = self.logits.index_select(0, index)

    def _run(self, ids: torch.Tensor, use_cache: bool = True) -> torch.Tensor:
        kwargs = dict(self.extra)
        if self.cache is not None:
            kwargs[_CACHE_KWARG] = self.cache
        with self.policy.active():
            out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=_positions(self.mask, ids.shape[1]),
                             use_cache=use_cache, **kwargs)
        self.cache = getattr(out, _CACHE_KWARG, None) if use_cache else None
        self.logits = out.logits[:, -1, :].float()
        return self.logits


@dataclass
class BeamRecord:
    """One beam of one prompt, for inspection (``AlignBeamDecoder.last_details``)."""

    text: str
    token_ids: list[int]
    finished: bool
    mixed_score: float  # cumulative log p over the prefix (what the beam search ranked)
    loglik: float  # log-likelihood of the whole response under D
    verdict: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _BatchSetup:
    """The fixed facts of one batch: prompt ids for D and the anchor, sizes, stop ids, mixed steps."""

    prompts: list[str]
    t_prompts: list[list[int]]  # D's templated prompt ids
    a_prompts: list[list[int]]  # the anchor's (the same lists when the tokenizers are identical)
    B: int  # prompts
    K: int  # beams per prompt
    pad: int  # D's pad id (what finished beams emit)
    stops: torch.Tensor  # D's stop token ids ([-1] when it has none)
    steps: int  # m: prefix steps that mix in the anchor (at most max_new)
    use_anchor: bool

    @property
    def rows(self) -> int:
        return self.B * self.K


@dataclass(frozen=True)
class _Streams:
    """The incremental states of D and of the anchor (None when the anchor is never consulted)."""

    target: _Stream
    anchor: _Stream | None


@dataclass
class _BeamState:
    """Every row's beam while decoding (row r = prompt r // K, beam r % K)."""

    generated: list[list[int]]  # D token ids emitted so far (a stop token included)
    finished: torch.Tensor  # [rows] bool
    score: torch.Tensor  # [rows] cumulative mixed log p over the prefix (what the beam search ranks)
    loglik: torch.Tensor  # [rows] log-likelihood of the response so far under D

    @classmethod
    def start(cls, B: int, K: int) -> "_BeamState":
        """K empty beams per prompt, of which only beam 0 may be extended at the first step."""
        rows = B * K
        score = torch.zeros(rows)
        score.view(B, K)[:, 1:] = float("-inf")  # all beams start identical: expand beam 0 only
        return cls([[] for _ in range(rows)], torch.zeros(rows, dtype=torch.bool), score, torch.zeros(rows))


@dataclass(frozen=True)
class _StepChoice:
    """One step's token per row and which rows were already finished before it."""

    token: torch.Tensor  # [rows] on CPU
    was_finished: torch.Tensor  # [rows] bool


def _greedy_step(target: _Stream, state: _BeamState) -> _StepChoice:
    """A completion step by D alone: every row's argmax token; unfinished rows add its log p_D to loglik."""
    logits = target.logits
    best = logits.argmax(dim=-1, keepdim=True)
    token = best[:, 0].cpu()
    chosen = (logits.gather(1, best)[:, 0] - logits.logsumexp(dim=-1)).cpu()
    was_finished = state.finished.clone()
    state.loglik = state.loglik + torch.where(was_finished, torch.zeros(len(state.generated)), chosen)
    return _StepChoice(token, was_finished)


class AlignBeamDecoder:
    """``decoder(prompts, GenConfig, progress) -> list[Completion]`` for ``Policy.decoder``.

    ``target`` and ``anchor`` are Policies (their hooks/adapters are switched per forward pass, so
    both may share one model object, e.g. the steered teacher as anchor of its own base model).
    After each call ``last_details`` holds, per prompt, every beam (text, scores, verdict) and the
    chosen index, and ``totals`` the tokens and seconds spent.
    """

    def __init__(self, target: Any, anchor: Any, cfg: AlignBeamConfig | None = None,
                 judge: Any | None = None) -> None:
        self.target = target
        self.anchor = anchor
        self.cfg = cfg or AlignBeamConfig()
        self.judge = judge if judge is not None else default_picker(self.cfg, target)
        self.translator = VocabTranslator(anchor.tokenizer, target.tokenizer)
        self.stops = stop_token_ids(target.model, target.tokenizer)
        self.last_details: list[dict[str, Any]] = []
        self.totals: dict[str, float] = {}

    @property
    def same_vocab(self) -> bool:
        return self.translator.same_vocab

    def __call__(self, prompts: Sequence[str], gen: GenConfig, progress: bool = True) -> list[Completion]:
        started = time.perf_counter()
        # K rows per prompt: batches of ``batch_size // K`` prompts, length-sorted under the token
        # budget (HFEngine's rule), so 1,500-token jailbreak templates do not pad short prompts.
        per_prompt = replace(gen, batch_size=max(1, gen.batch_size // self.cfg.beams),
                             max_batch_tokens=max(1, gen.max_batch_tokens // self.cfg.beams))
        lengths = [len(prompt_ids(self.target.tokenizer, p)) for p in prompts]
        results: list[Completion | None] = [None] * len(prompts)
        details: list[dict[str, Any] | None] = [None] * len(prompts)
        self.totals = {"prompts": 0, "beam_tokens": 0, "anchor_forwards": 0, "seconds": 0.0}
        bar = tqdm(total=len(prompts), desc="alignbeam", unit="prompt", disable=not progress, leave=False)
        for idx in token_batches(lengths, per_prompt):
            t0 = time.perf_counter()
            completions, batch_details = self._batch([prompts[i] for i in idx], gen.max_new_tokens,
                                                     gen.stop_strings)
            seconds = (time.perf_counter() - t0) / len(idx)
            for i, c, d in zip(idx, completions, batch_details):
                c.seconds = seconds
                results[i], details[i] = c, d
            bar.update(len(idx))
        bar.close()
        self.last_details = [d for d in details if d is not None]
        self.totals["prompts"] = len(prompts)
        self.totals["seconds"] = time.perf_counter() - started
        return [c for c in results if c is not None]

    # -- one batch of prompts ------------------------------------------------------------------
    @torch.inference_mode()
    def _batch(self, prompts: list[str], max_new: int, stop_strings: Sequence[str] = ()
               ) -> tuple[list[Completion], list[dict[str, Any]]]:
        setup = self._batch_setup(prompts, max_new)
        streams = self._open_streams(setup)
        vocab = streams.target.logits.shape[-1]
        state = _BeamState.start(setup.B, setup.K)

        for step in range(max_new):
            if step < setup.steps:
                choice = self._beam_step(setup, streams, state, step, vocab)
            else:
                choice = _greedy_step(streams.target, state)
            token = self._record_step(setup, state, choice, stop_strings)
            if bool(state.finished.all()) or step + 1 >= max_new:
                break
            streams.target.step(token)
            if streams.anchor is not None and self.same_vocab and step + 1 < setup.steps:
                streams.anchor.step(token)
                self.totals["anchor_forwards"] += 1

        return self._select(prompts, setup.t_prompts, state.generated, state.finished, state.score, state.loglik)

    def _batch_setup(self, prompts: list[str], max_new: int) -> _BatchSetup:
        """Prompt ids for D and the anchor, D's pad and stop ids, and how many steps mix in the anchor."""
        cfg = self.cfg
        ttok = self.target.tokenizer
        pad = _pad_id(ttok)
        stops = torch.tensor(self.stops or [-1], dtype=torch.long)
        t_prompts = [prompt_ids(ttok, p) for p in prompts]
        a_prompts = t_prompts if self.translator.tokenizers_identical else [prompt_ids(self.anchor.tokenizer, p)
                                                                           for p in prompts]
        steps = min(cfg.prefix_steps, max_new)
        use_anchor = steps > 0 and cfg.alpha > 0.0
        return _BatchSetup(prompts, t_prompts, a_prompts, len(prompts), cfg.beams, pad, stops, steps, use_anchor)

    def _open_streams(self, setup: _BatchSetup) -> _Streams:
        """Prefill D (and, same vocabulary, the anchor) on the prompts, each prompt expanded to K rows."""
        expand = torch.arange(setup.B).repeat_interleave(setup.K)  # row r = prompt r // K, beam r % K
        target = _Stream(self.target)
        target.prefill(setup.t_prompts, setup.pad)
        target.reorder(expand)
        anchor = _Stream(self.anchor) if setup.use_anchor else None
        if anchor is not None and self.same_vocab:
            anchor.prefill(setup.a_prompts, _pad_id(self.anchor.tokenizer))
            anchor.reorder(expand)
            self.totals["anchor_forwards"] += 1
        return _Streams(target, anchor)

    def _beam_step(self, setup: _BatchSetup, streams: _Streams, state: _BeamState, step: int,
                   vocab: int) -> _StepChoice:
        """A mixed prefix step: the K best (beam, token) extensions per prompt; reorders beams and caches."""
        cfg, B, K, target = self.cfg, setup.B, setup.K, streams.target
        log_pd = torch.log_softmax(target.logits, dim=-1).cpu()
        if setup.use_anchor:
            a_logits = self._anchor_logits(streams.anchor, setup.a_prompts, state.generated, K)
            logp = mixed_logprobs(target.logits, self.translator.distribution(
                a_logits, vocab, cfg.anchor_top_n).to(target.logits.device), cfg.alpha).cpu()
        else:
            logp = log_pd
        cand = logp.clone()
        cand[state.finished] = float("-inf")
        cand[state.finished, setup.pad] = 0.0  # a finished beam survives unchanged
        total = (state.score.unsqueeze(1) + cand).view(B, K * vocab)
        top_score, top_idx = total.topk(min(K, K * vocab), dim=-1)
        parent = (top_idx // vocab + torch.arange(B).unsqueeze(1) * K).view(-1)
        token = (top_idx % vocab).view(-1)
        state.score = top_score.view(-1)
        was_finished = state.finished[parent]
        gained = torch.where(was_finished, torch.zeros(setup.rows), log_pd[parent, token])
        state.loglik = state.loglik[parent] + gained
        state.generated = [list(state.generated[p]) for p in parent.tolist()]
        target.reorder(parent)
        if streams.anchor is not None and self.same_vocab and step + 1 < setup.steps:
            streams.anchor.reorder(parent)
        return _StepChoice(token, was_finished)

    def _record_step(self, setup: _BatchSetup, state: _BeamState, choice: _StepChoice,
                     stop_strings: Sequence[str]) -> torch.Tensor:
        """Append the step's tokens to unfinished beams and mark the ones that stop; returns the tokens fed next."""
        rows, was_finished = setup.rows, choice.was_finished
        token = torch.where(was_finished, torch.full_like(choice.token, setup.pad), choice.token)
        is_stop = torch.isin(token, setup.stops) & ~was_finished
        for r in range(rows):
            if not was_finished[r]:
                state.generated[r].append(int(token[r]))
        if stop_strings:
            is_stop |= torch.tensor([not was_finished[r] and self._ends_in_stop(state.generated[r], stop_strings)
                                     for r in range(rows)])
        state.finished = was_finished | is_stop
        self.totals["beam_tokens"] += int((~was_finished).sum())
        return token

    def _ends_in_stop(self, ids: list[int], stop_strings: Sequence[str]) -> bool:
        """Whether the text of ``ids`` gained a stop string with its last token (decoding a tail
        window long enough for any stop string keeps this O(1) per step)."""
        window = max(len(s) for s in stop_strings) + 8
        tail = self.target.tokenizer.decode(ids[-window:], skip_special_tokens=True)
        return any(s in tail for s in stop_strings)

    def _anchor_logits(self, anchor: _Stream, a_prompts: list[list[int]], generated: list[list[int]],
                       K: int) -> torch.Tensor:
        if self.same_vocab:
            assert anchor.logits is not None
            return anchor.logits
        # Cross vocabulary: re-tokenize each beam's text for the anchor and run it uncached.
        seqs = []
        for r, ids in enumerate(generated):
            text = self.target.tokenizer.decode([t for t in ids if t not in self.stops], skip_special_tokens=True)
            extra = self.anchor.tokenizer.encode(text, add_special_tokens=False) if text else []
            seqs.append(a_prompts[r // K] + list(extra))
        self.totals["anchor_forwards"] += 1
        return anchor.prefill(seqs, _pad_id(self.anchor.tokenizer), use_cache=False)

    def _select(self, prompts: list[str], t_prompts: list[list[int]], generated: list[list[int]],
                finished: torch.Tensor, score: torch.Tensor, loglik: torch.Tensor
                ) -> tuple[list[Completion], list[dict[str, Any]]]:
        K, tok = self.cfg.beams, self.target.tokenizer
        texts, bodies = [], []
        for ids in generated:
            body = ids[:-1] if ids and ids[-1] in self.stops else ids
            bodies.append(body)
            texts.append(tok.decode(body, skip_special_tokens=True))
        verdicts = self.judge.judge([p for p in prompts for _ in range(K)], texts)
        by_score = bool(getattr(self.judge, "ranks_by_score", False))
        completions, details = [], []
        for b, prompt in enumerate(prompts):
            rows = range(b * K, (b + 1) * K)
            scores = [float(verdicts[r].score) for r in rows] if by_score else None  # type: ignore[arg-type]
            best = b * K + select_safest([verdicts[r] for r in rows], [float(loglik[r]) for r in rows], scores)
            completions.append(Completion(prompt, texts[best], len(t_prompts[b]), len(generated[best]),
                                          bool(finished[best]), bodies[best]))
            details.append({"prompt": prompt, "chosen": best - b * K, "beams": [asdict(BeamRecord(
                texts[r], bodies[r], bool(finished[r]), float(score[r]), float(loglik[r]),
                {"label": verdicts[r].label, "refused": verdicts[r].refused, "harmful": verdicts[r].harmful,
                 "parse_error": verdicts[r].parse_error, "score": verdicts[r].score})) for r in rows]})
        return completions, details


def alignbeam_decoder(target: Any, anchor: Any, cfg: AlignBeamConfig | None = None,
                      judge: Any | None = None) -> Callable[[Sequence[str], GenConfig, bool], list[Completion]]:
    """The ``Policy.decoder`` callable for target ``D`` guided by ``anchor`` (both Policies)."""
    return AlignBeamDecoder(target, anchor, cfg, judge)


# --------------------------------------------------------------------------------------------
# Latency against plain greedy decoding
# --------------------------------------------------------------------------------------------


def measure_latency(target: Any, decoder: Callable[..., list[Completion]], prompts: Sequence[str],
                    gen: GenConfig) -> dict[str, Any]:
    """Per-response seconds and tokens of ``decoder`` vs plain greedy decoding of ``target``.

    Greedy runs ``HFEngine`` on the same prompts with the same ``GenConfig`` (its batch time
    divided by the prompts in the batch, as for alignbeam). Returns the figures and ratios:
    ``latency_ratio`` from wall time, ``cpu_latency_ratio`` from this process's CPU time (less
    sensitive to other processes on a shared machine).
    """
    prompts = list(prompts)
    greedy_cfg = GenConfig(max_new_tokens=gen.max_new_tokens, batch_size=gen.batch_size, seed=gen.seed)
    engine = HFEngine(target.model, target.tokenizer)
    with target.active():
        t0, c0 = time.perf_counter(), time.process_time()
        greedy = engine.generate(prompts, greedy_cfg, progress=False)
        greedy_s, greedy_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    beams = decoder(prompts, gen, False)
    beam_s, beam_cpu = time.perf_counter() - t0, time.process_time() - c0
    n = max(1, len(prompts))
    g_tok = sum(c.new_tokens for c in greedy) / n
    a_tok = sum(c.new_tokens for c in beams) / n
    totals = getattr(decoder, "totals", {}) or {}
    out = {
        "prompts": len(prompts), "max_new_tokens": gen.max_new_tokens, "batch_size": gen.batch_size,
        "greedy_seconds_per_response": round(greedy_s / n, 4),
        "alignbeam_seconds_per_response": round(beam_s / n, 4),
        "latency_ratio": round(beam_s / greedy_s, 3) if greedy_s > 0 else None,
        "cpu_latency_ratio": round(beam_cpu / greedy_cpu, 3) if greedy_cpu > 0 else None,
        "greedy_tokens_per_response": round(g_tok, 2),
        "alignbeam_tokens_per_response": round(a_tok, 2),
        "alignbeam_beam_tokens_per_response": round(totals.get("beam_tokens", 0) / n, 2) if totals else None,
        "greedy_seconds_per_token": round(greedy_s / max(1, sum(c.new_tokens for c in greedy)), 5),
        "alignbeam_seconds_per_token": round(beam_s / max(1, sum(c.new_tokens for c in beams)), 5),
    }
    return out
