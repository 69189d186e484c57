"""SafeSteer's safety-token set S, chosen by voting over contrastive log-probabilities (docs/architecture.md §4).

1. Harmless validation prompts that the base model π0 does not refuse (greedy answer, keyword
   judge).
2. ``M`` samples of ``H − 1`` tokens per prompt from the teacher πt (temperature 1): the steered
   one (π0 + hooks) or, with ``teacher_system`` (``teacher=spec``), π0 with the specification as
   its system prompt.
3. Teacher-force each sample through πt and π0; at response positions 1..H compute
   ``Δ = log πt − log π0`` over the vocabulary. A spec teacher reads [spec + prompt + sample]
   while π0 reads [prompt + sample], the completion positions aligned as in the distiller
   (``training.distill.with_system``).
4. Drop positions after π0's argmax reaches end-of-turn (and positions past the sample's own end).
5. Ban special tokens and tokens whose mean πt probability (over the kept positions) is below τ.
6. Every kept (sample, position) votes for its top-``votes_top`` tokens by Δ; S = the ``size``
   tokens with the most votes (ties: larger mean Δ, then smaller id).

Saved as JSON with ids, decoded strings, vote counts and the settings.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from safesteer_bench.data import Prompt, load_alpaca, normalize_text
from safesteer_bench.training.distill import (TokenBatch, build_batch, completion_logits, completion_token_ids,
                                              model_device, with_system)
from safesteer_bench.modeling.generation import GenConfig, HFEngine, stop_token_ids
from safesteer_bench.modeling.hooks import ResidualHook, installed


@dataclass(frozen=True)
class TokenSetConfig:
    """Settings of the vote. ``prompts`` harmless prompts kept (of ``candidates`` tried),
    ``samples`` = M per prompt, ``horizon`` = H, ``tau`` = τ, ``votes_top`` tokens voted per
    position, ``size`` = |S|. ``probe_tokens``: greedy tokens of π0 judged for refusal."""

    size: int = 50
    horizon: int = 7
    tau: float = 1e-8
    votes_top: int = 200
    prompts: int = 32
    samples: int = 8
    candidates: int | None = None  # default 2 x prompts
    probe_tokens: int = 32
    judge: str = "keywords"
    chunk: int = 32  # sequences per teacher-forcing forward

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TokenSet:
    ids: list[int]
    strings: list[str]  # decoded text of each token (tokenizer.decode([id]))
    tokens: list[str]  # raw vocabulary entries (tokenizer.convert_ids_to_tokens)
    votes: list[int]
    mean_delta: list[float]
    settings: dict[str, Any]
    prompt_ids: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path: Path) -> "TokenSet":
        return cls(**json.loads(Path(path).read_text()))

    def top(self, n: int = 15) -> list[str]:
        return [f"{s!r}:{v}" for s, v in zip(self.strings[:n], self.votes[:n])]


def harmless_candidates(data_dir: str | Path | None, n: int, seed: int,
                        exclude: Sequence[Prompt] = ()) -> list[Prompt]:
    """``n`` Alpaca instructions in a token-set-specific seeded order, none equal to ``exclude``."""
    pool = load_alpaca(data_dir)
    banned = {normalize_text(p.text) for p in exclude}
    order = list(range(len(pool)))
    random.Random(f"token-set-{seed}").shuffle(order)
    out: list[Prompt] = []
    for i in order:
        if normalize_text(pool[i].text) not in banned:
            out.append(pool[i])
            if len(out) == n:
                break
    return out


def special_token_ids(tokenizer: Any) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    for idx, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            ids.add(int(idx))
    return ids


def _teacher_forced(model: Any, batch: TokenBatch, hooks: Sequence[ResidualHook]) -> torch.Tensor:
    with installed(model, hooks):
        return torch.log_softmax(completion_logits(model, batch, include_next=True).float(), dim=-1)


def _valid_positions(lengths: list[int], ended: list[bool], base_argmax: torch.Tensor, stops: set[int],
                     horizon: int) -> torch.Tensor:
    """[B, H] mask of the response positions that vote.

    Position ``j`` predicts response token ``j``. A sample that ended (its last token is an
    end-of-turn) has no positions after that token; a sample cut at ``H − 1`` tokens keeps all
    ``H``. Positions after the first one where π0's argmax is an end-of-turn are dropped.
    """
    B = base_argmax.shape[0]
    valid = torch.zeros(B, horizon, dtype=torch.bool)
    for b in range(B):
        limit = min(horizon, lengths[b] + (0 if ended[b] else 1))
        for j in range(limit):
            valid[b, j] = True
            if int(base_argmax[b, j]) in stops:
                break  # keep the position where π0 wants to end, drop the ones after it
    return valid


@dataclass
class Contrasts:
    """Steps 1-4 of the vote: Δ rows of every kept (sample, position), πt's mean probability."""

    deltas: list[torch.Tensor]  # each [n_positions, V] on CPU
    mean_prob: torch.Tensor  # [V] mean πt probability over kept positions
    prompt_ids: list[str]
    stats: dict[str, Any]
    # (prompt, teacher sample ids) per sequence, in the row order of ``deltas``: kept for checks
    # (tests/test_spec_teacher.py re-scores them), never saved in the TokenSet.
    samples: list[tuple[str, list[int]]] = field(default_factory=list)


@torch.no_grad()
def collect_contrasts(model: Any, tokenizer: Any, teacher_hooks: Sequence[ResidualHook],
                      candidates: Sequence[Prompt], config: TokenSetConfig = TokenSetConfig(), seed: int = 0,
                      progress: bool = True, teacher_system: str | None = None) -> Contrasts:
    """Pick the prompts π0 does not refuse, sample from πt, teacher-force through πt and π0.

    ``teacher_system``: πt's system prompt (the spec teacher); None leaves πt = π0 + ``teacher_hooks``
    on the same text as π0, the vote unchanged.
    """
    from safesteer_bench.evaluation.judges import get_judge

    device = model_device(model)
    engine = HFEngine(model, tokenizer)
    stops = set(stop_token_ids(model, tokenizer))
    end_id = tokenizer.eos_token_id if tokenizer.eos_token_id in stops else min(stops)

    # 1. harmless prompts π0 does not refuse
    probe = engine.generate([p.text for p in candidates],
                            GenConfig(max_new_tokens=config.probe_tokens, seed=seed, batch_size=32), progress)
    verdicts = get_judge(config.judge).judge([p.text for p in candidates], [c.text for c in probe])
    kept = [p for p, v in zip(candidates, verdicts) if not v.refused][: config.prompts]
    if not kept:
        raise ValueError("the base model refuses every harmless candidate prompt; no positions to vote on")

    # 2. M samples of H-1 tokens from the teacher
    H = config.horizon
    texts = [p.text for p in kept for _ in range(config.samples)]
    teacher_engine = engine if teacher_system is None else HFEngine(model, tokenizer, system=teacher_system)
    with installed(model, teacher_hooks):
        samples = teacher_engine.generate(texts, GenConfig(max_new_tokens=H - 1, temperature=1.0, top_p=1.0,
                                                           seed=seed, batch_size=64), progress)
    completions = [completion_token_ids(c, end_id)[: H - 1] for c in samples]

    # 3-4. teacher-force through πt and π0; keep Δ at the valid positions
    chunks = [range(i, min(len(texts), i + config.chunk)) for i in range(0, len(texts), config.chunk)]
    prob_sum: torch.Tensor | None = None
    kept_positions = 0
    deltas: list[torch.Tensor] = []
    for chunk in tqdm(chunks, desc="token set", unit="chunk", disable=not progress, leave=False):
        # pad every completion to H-1 tokens so the logits cover exactly H positions
        padded = [completions[i] + [end_id] * (H - 1 - len(completions[i])) for i in chunk]
        batch = build_batch(tokenizer, [texts[i] for i in chunk], padded, device)
        # Only the prefix differs for a spec teacher: the [B, H] completion layout is the same.
        teacher_batch = batch if teacher_system is None else with_system(tokenizer, batch, teacher_system)
        lp_t = _teacher_forced(model, teacher_batch, teacher_hooks)
        lp_0 = _teacher_forced(model, batch, ())
        valid = _valid_positions([len(completions[i]) for i in chunk],
                                 [bool(completions[i]) and completions[i][-1] in stops for i in chunk],
                                 lp_0.argmax(-1).cpu(), stops, H).to(lp_t.device)
        p_t = lp_t.exp()[valid].sum(0)
        prob_sum = p_t if prob_sum is None else prob_sum + p_t
        kept_positions += int(valid.sum())
        deltas.append((lp_t - lp_0)[valid].cpu())
    assert prob_sum is not None
    stats = {"candidates": len(candidates), "prompts_kept": len(kept), "samples": len(texts),
             "positions_kept": kept_positions, "positions_total": len(texts) * H}
    if teacher_system is not None:  # only then, so the steered teacher's token_set.json is unchanged
        stats["teacher"] = "spec"
    return Contrasts(deltas, (prob_sum / max(1, kept_positions)).cpu(), [p.id for p in kept], stats,
                     list(zip(texts, completions)))


def vote(contrasts: Contrasts, tokenizer: Any, config: TokenSetConfig = TokenSetConfig(), seed: int = 0) -> TokenSet:
    """Steps 5-6: ban special and rare (mean πt prob < τ) tokens; top-``votes_top`` votes; top |S|."""
    vocab = contrasts.mean_prob.shape[0]
    banned = torch.zeros(vocab, dtype=torch.bool)
    banned[[i for i in special_token_ids(tokenizer) if i < vocab]] = True
    rare = contrasts.mean_prob < config.tau
    allowed = ~(banned | rare)
    votes = torch.zeros(vocab, dtype=torch.long)
    delta_sum = torch.zeros(vocab, dtype=torch.float64)
    k = min(config.votes_top, int(allowed.sum()))
    for delta in contrasts.deltas:
        if delta.numel() == 0 or k == 0:
            continue
        delta_sum += delta.double().sum(0)
        top = delta.masked_fill(~allowed, float("-inf")).topk(k, dim=-1).indices
        votes += torch.bincount(top.flatten(), minlength=vocab)
    mean_delta = delta_sum / max(1, contrasts.stats["positions_kept"])
    order = sorted((i for i in range(vocab) if votes[i] > 0),
                   key=lambda i: (-int(votes[i]), -float(mean_delta[i]), i))[: config.size]
    return TokenSet(
        ids=order,
        strings=[tokenizer.decode([i]) for i in order],
        tokens=tokenizer.convert_ids_to_tokens(order),
        votes=[int(votes[i]) for i in order],
        mean_delta=[round(float(mean_delta[i]), 4) for i in order],
        settings={**config.to_dict(), "seed": seed},
        prompt_ids=list(contrasts.prompt_ids),
        stats={**contrasts.stats, "banned_special": int(banned.sum()), "banned_rare": int((rare & ~banned).sum()),
               "allowed": int(allowed.sum()),
               "mean_teacher_prob_of_s": round(float(contrasts.mean_prob[order].sum()), 4) if order else 0.0},
    )


def select_safety_tokens(model: Any, tokenizer: Any, teacher_hooks: Sequence[ResidualHook],
                         candidates: Sequence[Prompt], config: TokenSetConfig = TokenSetConfig(),
                         seed: int = 0, progress: bool = True, teacher_system: str | None = None) -> TokenSet:
    """Vote S from ``candidates`` (harmless prompts); ``model`` is π0 (no adapter active);
    ``teacher_system``: the spec teacher's system prompt (see :func:`collect_contrasts`)."""
    contrasts = collect_contrasts(model, tokenizer, teacher_hooks, candidates, config, seed, progress, teacher_system)
    return vote(contrasts, tokenizer, config, seed)
