"""safesteer: on-policy distillation of the steered teacher, reverse KL restricted to safety tokens.

docs/architecture.md §4: teacher πt = π0 + the run's steering hook (frozen); the safety-token set S is voted on
harmless prompts (``safesteer_bench.token_set``); the student (LoRA by default) is trained on the
run's Budget with ``safesteer_bench.distill.OnPolicyDistiller`` and the loss restricted to S.
``global-kl`` (methods/global_kl.py) is this class with S = the whole vocabulary.

Options (``ctx.options``; CLI flags of ``safesteer-bench train``): ``loss_variant`` (tail-bucket,
the default chosen on dev | partial, the paper's | renormalize), ``teacher_coef`` (the teacher's
steering strength), ``token_set_size``, ``token_set_horizon``, ``token_set_tau``,
``token_set_votes_top``, ``micro_batch_size``, ``teacher_hooks`` (override the shared direction),
``progress``.
"""

from __future__ import annotations

from typing import Any

from safesteer_bench.budget import Spent, SpentTracker, Timer
from safesteer_bench.distill import VARIANTS, OnPolicyDistiller
from safesteer_bench.errors import UserError
from safesteer_bench.method import METHODS, MethodContext
from safesteer_bench.policy import Policy
from safesteer_bench.search_space import Choice, FloatRange
from safesteer_bench.store import write_json_atomic
from safesteer_bench.students import (method_options, resolve_budget, resolve_teacher, save_student, student_for,
                                      student_policy)
from safesteer_bench.token_set import TokenSet, TokenSetConfig, harmless_candidates, select_safety_tokens


#: The loss when none is asked for: ``tail-bucket`` won the dev-split comparison of the three
#: (reports/safesteer-dev/README.md). ``partial`` is the paper's objective, kept as an option; its
#: minimum on S is at πt/e, not πt (see safesteer_bench/distill.py).
DEFAULT_LOSS_VARIANT = "tail-bucket"


class DistillMethod:
    """Shared by safesteer and global-kl: the only difference is ``restricted`` (S or all of V)."""

    name = ""
    kind = "training"
    description = ""
    restricted = True
    # `tune` (global-kl): the learning rate and how much of the budget's steps to use.
    search_space: dict = {"learning_rate": FloatRange(5e-5, 2e-3, log=True),
                          "train_fraction": Choice((0.5, 1.0)), "teacher_coef": Choice((1.0, 2.0, 3.0))}
    defaults = {"teacher_coef": 1.0}

    def token_set(self, ctx: MethodContext, hooks: tuple, spent: Spent) -> TokenSet:
        opts = method_options(ctx)
        defaults = TokenSetConfig()
        cfg = TokenSetConfig(
            size=int(opts.get("token_set_size") or defaults.size),
            horizon=int(opts.get("token_set_horizon") or defaults.horizon),
            tau=float(opts.get("token_set_tau", defaults.tau)),
            votes_top=int(opts.get("token_set_votes_top") or defaults.votes_top),
            prompts=ctx.profile.token_set_prompts, samples=ctx.profile.token_set_samples,
        )
        candidates = harmless_candidates(ctx.data_dir, cfg.candidates or 2 * cfg.prompts, ctx.seed)
        with SpentTracker(ctx.base.device, spent), Timer(spent, "token_set"):
            tokens = select_safety_tokens(ctx.base.model, ctx.base.tokenizer, hooks, candidates, cfg, ctx.seed,
                                          progress=opts.get("progress", True))
        spent.generated_tokens += tokens.stats["samples"] * (cfg.horizon - 1)
        if not tokens.ids:
            raise UserError("the safety-token vote selected no tokens",
                            "check the steering teacher (does it change the base model's outputs?)")
        tokens.save(ctx.workdir / "token_set.json")
        return tokens

    def prepare(self, ctx: MethodContext) -> dict[str, Any]:
        opts = method_options(ctx)
        variant = opts.get("loss_variant") or DEFAULT_LOSS_VARIANT
        if variant not in VARIANTS:
            raise UserError(f"unknown loss variant '{variant}'", f"choose one of: {', '.join(VARIANTS)}")
        budget = resolve_budget(ctx)
        hooks, teacher_key = resolve_teacher(ctx)
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        spent = Spent()
        tokens = self.token_set(ctx, hooks, spent) if self.restricted else None
        with student_for(ctx, self.name, budget) as (student, teacher):
            trainer = OnPolicyDistiller(
                student, ctx.base.tokenizer, budget, hooks, token_ids=tokens.ids if tokens else None,
                variant=variant, teacher=teacher, micro_batch_size=opts.get("micro_batch_size"),
                progress=opts.get("progress", True), spent=spent)
            result = trainer.train()
            weights = save_student(ctx, self.name, budget, student)
        result.write_log(ctx.workdir / "train_log.jsonl")
        config = {"loss_variant": variant if self.restricted else "full-vocabulary",
                  "token_set_size": len(tokens) if tokens else None}
        artifact = {
            "method": self.name, **weights, "config": config, "teacher": teacher_key,
            "budget_key": budget.key(), "budget": budget.to_dict(), "spent": spent.to_dict(),
            "train_log": "train_log.jsonl", "final_loss": result.log[-1]["loss"] if result.log else None,
            "token_set": ({"path": "token_set.json", "size": len(tokens), "top": tokens.strings[:20]}
                          if tokens else None),
        }
        write_json_atomic(ctx.workdir / "training.json", artifact)
        print(f"{self.name}: {spent.summary()}", flush=True)
        return artifact

    def policy(self, ctx: MethodContext, artifact: dict[str, Any]) -> Policy:
        return student_policy(ctx, artifact)


@METHODS.register("safesteer")
class SafeSteer(DistillMethod):
    name = "safesteer"
    description = "on-policy distillation of the steered teacher, reverse KL on safety tokens S (LoRA)"
    restricted = True
    # `tune`: the loss variant, |S|, τ, the learning rate and the teacher's strength.
    search_space = {"loss_variant": Choice(("partial", "renormalize", "tail-bucket")),
                    "teacher_coef": Choice((1.0, 2.0, 3.0)),
                    "token_set_size": Choice((10, 50, 200)), "token_set_tau": Choice((1e-8, 1e-5, 1e-3)),
                    "learning_rate": FloatRange(5e-5, 2e-3, log=True)}
    defaults = {"loss_variant": DEFAULT_LOSS_VARIANT, "token_set_size": TokenSetConfig.size,
                "token_set_tau": TokenSetConfig.tau, "teacher_coef": 1.0}
