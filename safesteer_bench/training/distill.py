"""On-policy distillation from the steered teacher (SafeSteer and global-KL), and the SFT trainer.

One trainer, one code path (docs/architecture.md §4): SafeSteer restricts the reverse KL to the safety-token set
S; global-KL is the same trainer with ``token_ids=None`` (S = the whole vocabulary, i.e. TRL's GKD
with lmbda = 1, beta = 1). Per optimizer step:

1. **sample** ``samples_per_prompt`` completions per prompt from the student (temperature 1,
   top-p 1) with :class:`~safesteer_bench.modeling.generation.HFEngine`;
2. **teacher pass** without grad on the identical ids: with a LoRA student the teacher is the same
   weights with the adapter disabled and the steering hooks installed; with a full fine-tuned
   student it is a separate frozen model with the hooks;
3. **student pass** with grad (adapter on, hooks off);
4. logits only at completion positions (``logits_to_keep``); of the teacher only the |S| columns
   are kept; loss = :func:`restricted_reverse_kl` — per completion position
   ``ℓ_t = Σ_{v∈S} πs(v)(log πs(v) − log πt(v))``, mean over completion tokens per sequence, then
   mean over sequences;
5. AdamW, cosine schedule with linear warm-up (10 %), gradient clipping at 1.0.

:class:`SupervisedTrainer` (the SFT baseline) shares the batch layout, optimizer, schedule, loop,
progress bar and spent-compute accounting; only its per-step loss differs.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from safesteer_bench.training.budget import Budget, Spent, SpentTracker, Timer
from safesteer_bench.modeling.generation import Completion, GenConfig, HFEngine, chat_text, stop_token_ids
from safesteer_bench.modeling.hooks import ResidualHook, installed
from safesteer_bench.training.parallel import DataParallel, data_parallel

VARIANTS = ("partial", "renormalize", "tail-bucket")

# --------------------------------------------------------------------------------------------
# The loss (pure functions)
# --------------------------------------------------------------------------------------------


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 − exp(x))`` for ``x ≤ 0``, stable at both ends (Mächler 2012), finite gradients."""
    x = x.clamp(max=-1e-30)
    near = x.clamp(min=-math.log(2))
    far = x.clamp(max=-math.log(2))
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(near)), torch.log1p(-torch.exp(far)))


def summarize_logprobs(logits: torch.Tensor, token_ids: torch.Tensor | None = None,
                       variant: str = "partial") -> torch.Tensor:
    """The log-probabilities the loss compares, from logits ``[..., V]`` (float32 throughout).

    - ``token_ids=None``: the full-vocabulary log-softmax ``[..., V]`` (global KL);
    - ``partial``: full-vocabulary log-softmax gathered on S ``[..., |S|]`` (no renormalisation);
    - ``renormalize``: log-softmax of the S logits alone ``[..., |S|]`` (a distribution over S);
    - ``tail-bucket``: the ``partial`` columns plus one bucket holding the remaining mass
      ``log(1 − Σ_S p)`` ``[..., |S|+1]`` (a distribution over S ∪ {rest}).

    Applied identically to student and teacher, so only these columns of the teacher are kept.
    ``partial`` is the paper's objective Σ_S πs(log πs − log πt) with the rest of the vocabulary
    free: setting its derivative log πs − log πt + 1 to zero puts its minimum at πs = πt/e on S,
    about a third of the teacher's safety-token probability. ``renormalize`` and ``tail-bucket``
    are true divergences, minimised at the teacher; ``tail-bucket`` is the default (chosen on dev,
    reports/safesteer-dev/README.md).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown loss variant {variant!r}; choose one of {VARIANTS}")
    logits = logits.float()
    if token_ids is None:
        return torch.log_softmax(logits, dim=-1)
    token_ids = token_ids.to(logits.device)
    if variant == "renormalize":
        return torch.log_softmax(logits.index_select(-1, token_ids), dim=-1)
    on_s = torch.log_softmax(logits, dim=-1).index_select(-1, token_ids)
    if variant == "partial":
        return on_s
    rest = log1mexp(torch.logsumexp(on_s, dim=-1, keepdim=True))
    return torch.cat([on_s, rest], dim=-1)


def reverse_kl_terms(student_lp: torch.Tensor, teacher_lp: torch.Tensor) -> torch.Tensor:
    """Per position ``Σ_v πs(v)(log πs(v) − log πt(v))`` over the summarised columns ``[...]``."""
    return (student_lp.exp() * (student_lp - teacher_lp.to(student_lp.dtype))).sum(dim=-1)


def sequence_mean(per_token: torch.Tensor, mask: torch.Tensor, sequences: int | None = None) -> torch.Tensor:
    """Mean over completion tokens per sequence, then mean over sequences (``[B, T]`` -> scalar).

    ``sequences`` divides the sum of per-sequence means instead of ``B`` (gradient accumulation
    over micro-batches of one step). Sequences without completion tokens contribute 0.
    """
    mask = mask.to(per_token.dtype)
    per_seq = (per_token * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1.0)
    return per_seq.sum() / (sequences if sequences is not None else per_token.shape[0])


def restricted_reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                          token_ids: torch.Tensor | Sequence[int] | None = None,
                          variant: str = "partial") -> torch.Tensor:
    """SafeSteer's loss on ``[B, T, V]`` logits and a ``[B, T]`` completion mask.

    ``ℓ_t = Σ_{v∈S} πs(v)(log πs(v) − log πt(v))`` with S = ``token_ids`` (None: the whole
    vocabulary, i.e. the full reverse KL ``KL(πs ‖ πt)``), variants as in
    :func:`summarize_logprobs`; reduced by :func:`sequence_mean`. Gradients flow into
    ``student_logits`` only.
    """
    if token_ids is not None and not isinstance(token_ids, torch.Tensor):
        token_ids = torch.tensor(list(token_ids), dtype=torch.long)
    with torch.no_grad():
        teacher_lp = summarize_logprobs(teacher_logits, token_ids, variant)
    student_lp = summarize_logprobs(student_logits, token_ids, variant)
    return sequence_mean(reverse_kl_terms(student_lp, teacher_lp), mask)


# --------------------------------------------------------------------------------------------
# Batches: prompt + completion, logits at completion positions only
# --------------------------------------------------------------------------------------------


@dataclass
class TokenBatch:
    """Left-padded prompts followed by right-padded completions.

    Row ``i`` is ``[pad…, prompt_i, completion_i, pad…]``; every prompt ends at column ``P − 1``
    so completion position ``t`` is column ``P + t`` and is predicted by the logits at column
    ``P + t − 1``. ``position_ids`` count real tokens only, as in batched generation.
    """

    input_ids: torch.Tensor  # [B, P + T]
    attention_mask: torch.Tensor  # [B, P + T]
    position_ids: torch.Tensor  # [B, P + T]
    completion_mask: torch.Tensor  # [B, T] 1 on real completion tokens
    completion_ids: torch.Tensor  # [B, T]
    prompts: tuple[str, ...] = ()  # the user prompts (a spec teacher rebuilds the prefix from them)

    @property
    def completion_length(self) -> int:
        return self.completion_ids.shape[1]

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def completion_tokens(self) -> int:
        return int(self.completion_mask.sum())


def build_batch(tokenizer: Any, prompts: Sequence[str], completions: Sequence[Sequence[int]],
                device: Any = "cpu", system: str | None = None) -> TokenBatch:
    """Chat-templated ``prompts`` (with ``system`` as system prompt) and their ``completions``
    (token ids, end-of-turn included)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompt_ids = [tokenizer(chat_text(tokenizer, p, system), add_special_tokens=False)["input_ids"]
                  for p in prompts]
    P = max(len(p) for p in prompt_ids)
    T = max(1, max(len(c) for c in completions))
    rows, masks, cmask = [], [], []
    for p, c in zip(prompt_ids, completions):
        c = list(c)
        rows.append([pad] * (P - len(p)) + list(p) + c + [pad] * (T - len(c)))
        masks.append([0] * (P - len(p)) + [1] * (len(p) + len(c)) + [0] * (T - len(c)))
        cmask.append([1] * len(c) + [0] * (T - len(c)))
    input_ids = torch.tensor(rows, dtype=torch.long, device=device)
    attention_mask = torch.tensor(masks, dtype=torch.long, device=device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return TokenBatch(input_ids, attention_mask, position_ids,
                      torch.tensor(cmask, dtype=torch.long, device=device), input_ids[:, P:], tuple(prompts))


def with_system(tokenizer: Any, batch: TokenBatch, system: str) -> TokenBatch:
    """``batch`` with ``system`` in every prompt's chat template and the identical completions.

    Context distillation (``teacher=spec``): only the prefix differs, so the result has the same
    ``[B, T]`` completion layout and :func:`completion_logits` on it predicts the same tokens.
    """
    lengths = batch.completion_mask.sum(dim=-1).tolist()
    completions = [row[:n] for row, n in zip(batch.completion_ids.tolist(), lengths)]
    return build_batch(tokenizer, batch.prompts, completions, batch.input_ids.device, system)


def completion_logits(model: nn.Module, batch: TokenBatch, include_next: bool = False) -> torch.Tensor:
    """``[B, T, V]`` logits predicting each completion token; the LM head runs on those rows only.

    ``include_next`` adds the position after the last completion token (``[B, T + 1, V]``).
    """
    T = batch.completion_length
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids, logits_to_keep=T + 1, use_cache=False)
    return out.logits if include_next else out.logits[:, :-1]


def completion_token_ids(completion: Completion, end_id: int | None) -> list[int]:
    """A Completion's ids with its end-of-turn token put back (HFEngine strips it)."""
    ids = list(completion.token_ids)
    if completion.finished and end_id is not None:
        ids.append(end_id)
    return ids


# --------------------------------------------------------------------------------------------
# Optimizer and schedule
# --------------------------------------------------------------------------------------------


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps (starting at 1/(warmup+1), so no step has lr 0), then
    cosine decay from 1 towards 0 over the remaining steps of the epoch."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(params: list[nn.Parameter], budget: Budget) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW at the budget's learning rate with the budget's cosine/warm-up schedule."""
    optimizer = torch.optim.AdamW(params, lr=budget.learning_rate, weight_decay=budget.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, budget.steps, budget.warmup_steps))
    return optimizer, scheduler


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the student has no trainable parameters")
    return params


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------------------------
# The training loop shared by both trainers
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    log: list[dict[str, Any]]
    spent: Spent
    extra: dict[str, Any] = field(default_factory=dict)

    def write_log(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in self.log))


def default_micro_batch(device: Any) -> int:
    """Sequences per forward/backward. The step's loss and gradient do not depend on it (gradients
    are accumulated over micro-batches); it bounds the activation memory kept for backward, which
    dominates on CPU (SmolLM2, 16 sequences x ~95 tokens: ~3 GB; 4 sequences: ~0.8 GB)."""
    return 16 if str(device).startswith("cuda") else 4


class _Trainer:
    """Optimizer, schedule, clipping, progress bar, log and spent compute for one epoch."""

    desc = "train"

    def __init__(self, student: nn.Module, tokenizer: Any, budget: Budget, micro_batch_size: int | None = None,
                 progress: bool = True, spent: Spent | None = None, parallel: DataParallel | None = None) -> None:
        self.student = student
        self.tokenizer = tokenizer
        self.budget = budget
        # Under accelerate launch each step's sequences are split over processes (training/parallel.py);
        # on one process `parallel` is inert and every call below is the plain single-process one.
        self.parallel = parallel if parallel is not None else data_parallel()
        self.progress = progress and self.parallel.is_main
        self.device = model_device(student)
        self.micro_batch_size = max(1, micro_batch_size or default_micro_batch(self.device))
        self.params = trainable_parameters(student)
        self.optimizer, self.scheduler = make_optimizer(self.params, budget)
        # `student` stays the plain module (rollouts, the adapter-disabled teacher); the grad passes
        # go through `train_model` (the DDP wrapper under a launcher, `student` otherwise).
        self.train_model, self.optimizer = self.parallel.prepare(student, self.optimizer)
        self.spent = spent if spent is not None else Spent()
        self.log: list[dict[str, Any]] = []
        stops = stop_token_ids(student, tokenizer)
        self.end_id = tokenizer.eos_token_id if tokenizer.eos_token_id in stops else (stops[0] if stops else None)

    def step_loss(self, step: int, prompts: list[str]) -> dict[str, Any]:
        """Accumulate this step's gradients; return the step's log row (at least ``loss``)."""
        raise NotImplementedError

    def train(self, steps: int | None = None) -> TrainResult:
        """One epoch over the budget's prompts (or the first ``steps`` steps)."""
        steps = self.budget.steps if steps is None else min(steps, self.budget.steps)
        bar = tqdm(range(steps), desc=self.desc, unit="step", disable=not self.progress)
        local = (self.spent.forward_tokens, self.spent.trained_tokens)
        with SpentTracker(self.device, self.spent):
            for step in bar:
                started = time.perf_counter()
                self.optimizer.zero_grad(set_to_none=True)
                row = {"step": step, "lr": self.scheduler.get_last_lr()[0]}
                row.update(self.step_loss(step, self.budget.step_prompts(step)))
                with Timer(self.spent, "optimizer"):
                    grad_norm = self.parallel.clip(self.params, self.budget.grad_clip)
                    self.optimizer.step()
                    self.scheduler.step()
                row["grad_norm"] = float(grad_norm)
                row["seconds"] = round(time.perf_counter() - started, 3)
                self.spent.steps += 1
                self.log.append(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
        self.optimizer.zero_grad(set_to_none=True)
        self._sum_tokens(*local)
        self.parallel.release()
        return TrainResult(self.log, self.spent)

    def _sum_tokens(self, forward_before: int, trained_before: int) -> None:
        """Forward/trained tokens of this epoch summed over processes (each counted its share)."""
        if self.parallel.enabled:
            spent, par = self.spent, self.parallel
            spent.forward_tokens = forward_before + int(par.sum(spent.forward_tokens - forward_before))
            spent.trained_tokens = trained_before + int(par.sum(spent.trained_tokens - trained_before))

    def _chunks(self, n: int) -> list[range]:
        """This process's micro-batches of the step's ``n`` sequences (all of them on one process)."""
        mine = self.parallel.share(n)
        end = mine.stop
        return [range(i, min(end, i + self.micro_batch_size)) for i in range(mine.start, end, self.micro_batch_size)]

    def _step_total(self, total: float) -> float:
        """The step's loss over all processes: each process's sum was divided by ``n / W``."""
        if not self.parallel.enabled:
            return total
        return self.parallel.sum(total) / self.parallel.world_size

    def _backward(self, loss: torch.Tensor, chunk: range, chunks: list[range]) -> None:
        """Accumulate ``loss``'s gradients; under DDP they are all-reduced on the last micro-batch only."""
        with self.parallel.sync(self.train_model, chunk is chunks[-1]):
            self.parallel.backward(loss)


class OnPolicyDistiller(_Trainer):
    """On-policy reverse-KL distillation from a steered teacher (SafeSteer; global-KL with S = V).

    ``student`` is a PeftModel with the trainable adapter active (LoRA: the teacher is the same
    model with ``disable_adapter()`` and ``teacher_hooks``) or a plain model (full fine-tuning:
    ``teacher`` must be a separate frozen model, run with ``teacher_hooks``). ``token_ids`` is S
    (None = whole vocabulary); ``variant`` one of :data:`VARIANTS`. ``engine`` samples the rollouts
    (default: ``HFEngine`` on the student; ``training.rollouts.VLLMRollouts`` for vLLM).
    """

    desc = "distill"

    def __init__(self, student: nn.Module, tokenizer: Any, budget: Budget,
                 teacher_hooks: Sequence[ResidualHook], token_ids: Sequence[int] | None = None,
                 variant: str = "partial", teacher: nn.Module | None = None, micro_batch_size: int | None = None,
                 generation_batch_size: int = 64, progress: bool = True, spent: Spent | None = None,
                 teacher_system: str | None = None, engine: Any = None) -> None:
        super().__init__(student, tokenizer, budget, micro_batch_size, progress, spent)
        if variant not in VARIANTS:
            raise ValueError(f"unknown loss variant {variant!r}; choose one of {VARIANTS}")
        if teacher is None and not hasattr(student, "disable_adapter"):
            raise ValueError("a student without an adapter needs a separate frozen `teacher` model")
        self.teacher_hooks = tuple(teacher_hooks)
        self.teacher_system = teacher_system  # teacher=spec: the teacher sees this system prompt
        self.token_ids = None if token_ids is None else torch.tensor(list(token_ids), dtype=torch.long,
                                                                      device=self.device)
        self.variant = variant
        self.teacher = teacher
        # The rollouts' engine: HF on the student itself, or e.g. training/rollouts.VLLMRollouts.
        self.engine = engine if engine is not None else HFEngine(student, tokenizer)
        self.generation_batch_size = generation_batch_size

    def sample_seed(self, step: int) -> int:
        return self.budget.seed * 1_000_003 + step * 7919

    def train(self, steps: int | None = None) -> TrainResult:
        try:
            return super().train(steps)
        finally:
            close = getattr(self.engine, "close", None)  # an engine with files to remove (VLLMRollouts)
            if close is not None:
                close()

    def sample(self, step: int, prompts: list[str]) -> tuple[list[str], list[list[int]]]:
        """``samples_per_prompt`` student completions per prompt (temperature 1, top-p 1)."""
        repeated = [p for p in prompts for _ in range(self.budget.samples_per_prompt)]
        cfg = GenConfig(max_new_tokens=self.budget.max_new_tokens, temperature=1.0, top_p=1.0,
                        seed=self.sample_seed(step), batch_size=self.generation_batch_size)
        completions = self.engine.generate(repeated, cfg, progress=False)
        self.spent.generated_tokens += sum(c.new_tokens for c in completions)
        return repeated, [completion_token_ids(c, self.end_id) for c in completions]

    def teacher_context(self):
        stack = ExitStack()
        model = self.teacher if self.teacher is not None else self.student
        if self.teacher is None:
            stack.enter_context(self.student.disable_adapter())
        stack.enter_context(installed(model, self.teacher_hooks))
        return stack, model

    @torch.no_grad()
    def teacher_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        """Teacher log-probs at completion positions, only the columns the loss needs; a spec
        teacher reads [system spec + prompt + completion] where the student read [prompt + completion]."""
        if self.teacher_system is not None:
            batch = with_system(self.tokenizer, batch, self.teacher_system)
        stack, model = self.teacher_context()
        with stack:
            logits = completion_logits(model, batch)
        return summarize_logprobs(logits, self.token_ids, self.variant)

    def step_loss(self, step: int, prompts: list[str]) -> dict[str, Any]:
        with Timer(self.spent, "sample"):
            seq_prompts, completions = self.sample(step, prompts)
        n = len(completions)
        total = 0.0
        chunks = self._chunks(n)
        for chunk in chunks:
            batch = build_batch(self.tokenizer, [seq_prompts[i] for i in chunk],
                                [completions[i] for i in chunk], self.device)
            with Timer(self.spent, "teacher"):
                teacher_lp = self.teacher_logprobs(batch)
            with Timer(self.spent, "student"):
                student_lp = summarize_logprobs(completion_logits(self.train_model, batch), self.token_ids,
                                                self.variant)
                loss = sequence_mean(reverse_kl_terms(student_lp, teacher_lp), batch.completion_mask,
                                     self.parallel.divisor(n))
                self._backward(loss, chunk, chunks)
            total += float(loss.detach())
            self.spent.forward_tokens += 2 * batch.tokens
            self.spent.trained_tokens += batch.completion_tokens
        lengths = [len(c) for c in completions]
        return {"loss": self._step_total(total), "mean_completion_tokens": sum(lengths) / max(1, n), "sequences": n}


class SupervisedTrainer(_Trainer):
    """Cross-entropy on response tokens only (the SFT baseline), same optimizer/steps/adapter.

    ``targets`` maps each budget prompt to its target completion ids (end-of-turn included when
    the target ended). Loss: mean token NLL per sequence, then mean over sequences.
    """

    desc = "sft"

    def __init__(self, student: nn.Module, tokenizer: Any, budget: Budget, targets: dict[str, list[int]],
                 micro_batch_size: int | None = None, progress: bool = True, spent: Spent | None = None) -> None:
        super().__init__(student, tokenizer, budget, micro_batch_size, progress, spent)
        missing = [p for p in budget.prompts if p not in targets]
        if missing:
            raise ValueError(f"{len(missing)} budget prompts have no SFT target")
        self.targets = targets

    def step_loss(self, step: int, prompts: list[str]) -> dict[str, Any]:
        n = len(prompts)
        total = 0.0
        chunks = self._chunks(n)
        for chunk in chunks:
            batch = build_batch(self.tokenizer, [prompts[i] for i in chunk],
                                [self.targets[prompts[i]] for i in chunk], self.device)
            with Timer(self.spent, "student"):
                logits = completion_logits(self.train_model, batch).float()
                nll = -torch.log_softmax(logits, dim=-1).gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
                loss = sequence_mean(nll, batch.completion_mask, self.parallel.divisor(n))
                self._backward(loss, chunk, chunks)
            total += float(loss.detach())
            self.spent.forward_tokens += batch.tokens
            self.spent.trained_tokens += batch.completion_tokens
        return {"loss": self._step_total(total), "sequences": n}


@torch.no_grad()
def evaluate_distill_loss(student: nn.Module, tokenizer: Any, prompts: Sequence[str],
                          completions: Sequence[Sequence[int]], teacher_hooks: Sequence[ResidualHook],
                          token_ids: Sequence[int] | None = None, variant: str = "partial",
                          teacher: nn.Module | None = None) -> float:
    """The distillation loss of ``student`` on fixed completions (no update): used by tests and
    diagnostics to compare before/after a step on identical data."""
    device = model_device(student)
    batch = build_batch(tokenizer, prompts, completions, device)
    with ExitStack() as stack:
        model = teacher if teacher is not None else student
        if teacher is None:
            stack.enter_context(student.disable_adapter())
        stack.enter_context(installed(model, teacher_hooks))
        teacher_logits = completion_logits(model, batch)
    student_logits = completion_logits(student, batch)
    ids = None if token_ids is None else torch.tensor(list(token_ids), dtype=torch.long)
    return float(restricted_reverse_kl(student_logits, teacher_logits, batch.completion_mask, ids, variant))


__all__ = [
    "VARIANTS", "log1mexp", "summarize_logprobs", "reverse_kl_terms", "sequence_mean", "restricted_reverse_kl",
    "TokenBatch", "build_batch", "with_system", "completion_logits", "completion_token_ids", "lr_factor", "make_optimizer",
    "TrainResult", "OnPolicyDistiller", "SupervisedTrainer", "evaluate_distill_loss",
]
