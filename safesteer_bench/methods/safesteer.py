"""safesteer: on-policy distillation of the steered teacher, reverse KL restricted to safety tokens.

docs/architecture.md §4: teacher πt = π0 + the run's steering hook (frozen), or with ``teacher=spec`` π0 with
the safety specification as its system prompt; the safety-token set S is voted on harmless prompts
(``safesteer_bench.training.token_set``); the student (LoRA by default) is trained on the run's Budget
with ``safesteer_bench.training.distill.OnPolicyDistiller`` and the loss restricted to S.
``global-kl`` (methods/global_kl.py) is this class with S = the whole vocabulary.

Options: :class:`SafeSteerOptions` (``--method-args`` of ``run`` and ``train``); global-kl takes
the training options only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from safesteer_bench.errors import UserError
from safesteer_bench.methods.api import METHODS
from safesteer_bench.methods.training import TrainingMethod, TrainingRun, TrainingSetup
from safesteer_bench.options import option
from safesteer_bench.training.budget import SpentTracker, Timer
from safesteer_bench.training.distill import VARIANTS, OnPolicyDistiller
from safesteer_bench.training.rollouts import rollout_engine_for
from safesteer_bench.training.students import OnPolicyOptions
from safesteer_bench.training.token_set import TokenSet, TokenSetConfig, harmless_candidates, select_safety_tokens
from safesteer_bench.tuning.search_space import Choice, FloatRange

#: The loss when none is asked for: ``tail-bucket`` won the dev-split comparison of the three
#: (reports/safesteer-dev/README.md). ``partial`` is the paper's objective, kept as an option; its
#: minimum on S is at πt/e, not πt (see safesteer_bench/training/distill.py).
DEFAULT_LOSS_VARIANT = "tail-bucket"


@dataclass(frozen=True)
class SafeSteerOptions(OnPolicyOptions):
    """safesteer's loss and safety-token vote, on top of every training method's options."""

    loss_variant: str = option(DEFAULT_LOSS_VARIANT, "reverse KL on S: tail-bucket (chosen on dev), partial "
                               "(the paper's) or renormalize", kind="choice", choices=tuple(VARIANTS))
    token_set_size: int = option(TokenSetConfig.size, "|S|, the number of safety tokens", kind="int", low=1)
    token_set_horizon: int = option(TokenSetConfig.horizon, "H, response positions voted on", kind="int", low=1)
    token_set_tau: float = option(TokenSetConfig.tau, "τ, the smallest probability shift that votes",
                                  kind="float")
    token_set_votes_top: int = option(TokenSetConfig.votes_top, "tokens voted per position", kind="int", low=1)


class DistillMethod(TrainingMethod):
    """Shared by safesteer and global-kl: the only difference is ``restricted`` (S or all of V)."""

    restricted = True
    options_class = OnPolicyOptions

    def token_set(self, run: TrainingRun) -> TokenSet:
        ctx, opts = run.ctx, run.options
        cfg = TokenSetConfig(size=opts.token_set_size, horizon=opts.token_set_horizon, tau=opts.token_set_tau,
                             votes_top=opts.token_set_votes_top, prompts=ctx.profile.token_set_prompts,
                             samples=ctx.profile.token_set_samples)
        candidates = harmless_candidates(ctx.data_dir, cfg.candidates or 2 * cfg.prompts, ctx.seed)
        with SpentTracker(ctx.base.device, run.spent), Timer(run.spent, "token_set"):
            tokens = select_safety_tokens(ctx.base.model, ctx.base.tokenizer, run.hooks, candidates, cfg, ctx.seed,
                                          progress=opts.progress, teacher_system=run.teacher_system)
        run.spent.generated_tokens += tokens.stats["samples"] * (cfg.horizon - 1)
        if not tokens.ids:
            teacher = "the spec teacher (spec_file=)" if run.teacher_system else "the steering teacher"
            raise UserError("the safety-token vote selected no tokens",
                            f"check {teacher} (does it change the base model's outputs?)")
        tokens.save(ctx.workdir / "token_set.json")
        return tokens

    def setup(self, run: TrainingRun) -> TrainingSetup:
        if not self.restricted:
            return TrainingSetup(config={"loss_variant": "full-vocabulary", "token_set_size": None},
                                 fields={"token_set": None})
        tokens = self.token_set(run)
        return TrainingSetup(data=tokens, config={"loss_variant": run.options.loss_variant,
                                                  "token_set_size": len(tokens)},
                             fields={"token_set": {"path": "token_set.json", "size": len(tokens),
                                                   "top": tokens.strings[:20]}})

    def trainer(self, run: TrainingRun, setup: TrainingSetup, student: Any, teacher: Any) -> OnPolicyDistiller:
        tokens = setup.data
        variant = run.options.loss_variant if self.restricted else DEFAULT_LOSS_VARIANT
        engine = rollout_engine_for(run.options.rollout_engine, student, run.ctx.base, self.name)
        return OnPolicyDistiller(student, run.ctx.base.tokenizer, run.budget, run.hooks,
                                 token_ids=tokens.ids if tokens else None, variant=variant, teacher=teacher,
                                 micro_batch_size=run.options.micro_batch_size, progress=run.options.progress,
                                 spent=run.spent, teacher_system=run.teacher_system, engine=engine)


@METHODS.register("safesteer")
class SafeSteer(DistillMethod):
    name = "safesteer"
    description = "on-policy distillation of the steered teacher, reverse KL on safety tokens S (LoRA)"
    restricted = True
    options_class = SafeSteerOptions
    # `tune`: the loss variant, |S|, τ, the learning rate and the teacher's strength.
    search_space = {"loss_variant": Choice(("partial", "renormalize", "tail-bucket")),
                    "teacher_coef": Choice((1.0, 2.0, 3.0)),
                    "token_set_size": Choice((10, 50, 200)), "token_set_tau": Choice((1e-8, 1e-5, 1e-3)),
                    "learning_rate": FloatRange(5e-5, 2e-3, log=True)}
    defaults = {"loss_variant": DEFAULT_LOSS_VARIANT, "token_set_size": TokenSetConfig.size,
                "token_set_tau": TokenSetConfig.tau, "teacher_coef": 1.0}
