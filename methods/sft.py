"""sft: supervised fine-tuning on refusals written by the steered teacher (docs/architecture.md §4).

Targets = the steered teacher's greedy generations on the Budget's prompts that the refusal judge
(keywords) marks as refusals; a prompt whose teacher answer is not a refusal gets a fixed refusal
template instead (recorded per prompt in ``targets.json``). Cross-entropy on response tokens only,
with the same optimizer, schedule, steps and adapter as the distillation methods
(``safesteer_bench.distill.SupervisedTrainer``).
"""

from __future__ import annotations

from typing import Any

from safesteer_bench.budget import Spent, SpentTracker, Timer
from safesteer_bench.distill import SupervisedTrainer, completion_token_ids
from safesteer_bench.generation import GenConfig, stop_token_ids
from safesteer_bench.method import METHODS, MethodContext
from safesteer_bench.policy import Policy, fingerprint
from safesteer_bench.search_space import Choice, FloatRange
from safesteer_bench.store import write_json_atomic
from safesteer_bench.students import (method_options, resolve_budget, resolve_teacher, save_student, student_for,
                                      student_policy)

REFUSAL_TEMPLATE = "I'm sorry, but I can't help with that request."


@METHODS.register("sft")
class SFT:
    name = "sft"
    kind = "training"
    description = "supervised fine-tuning on the steered teacher's refusals (judge-filtered; LoRA)"
    # `tune`: the learning rate and how much of the budget's steps to use.
    search_space = {"learning_rate": FloatRange(5e-5, 2e-3, log=True), "train_fraction": Choice((0.5, 1.0)),
                    "teacher_coef": Choice((1.0, 2.0, 3.0))}
    defaults = {"teacher_coef": 1.0}

    def targets(self, ctx: MethodContext, budget, hooks: tuple, spent: Spent) -> tuple[dict[str, list[int]], list]:
        from safesteer_bench.judges import get_judge

        base = ctx.base
        tok = base.tokenizer
        stops = stop_token_ids(base.model, tok)
        end = tok.eos_token_id if tok.eos_token_id in stops else stops[0]
        teacher = Policy("teacher", base.model, tok, fingerprint(base.identity, "sft-teacher"), hooks=hooks)
        cfg = GenConfig(max_new_tokens=budget.max_new_tokens, temperature=0.0, seed=budget.seed,
                        batch_size=ctx.profile.batch_size)
        prompts = list(budget.prompts)
        with SpentTracker(base.device, spent), Timer(spent, "targets"):
            outs = teacher.generate(prompts, cfg, progress=method_options(ctx).get("progress", True))
        spent.generated_tokens += sum(c.new_tokens for c in outs)
        verdicts = get_judge("keywords").judge(prompts, [c.text for c in outs])
        fallback = tok(REFUSAL_TEMPLATE, add_special_tokens=False)["input_ids"] + [end]
        targets: dict[str, list[int]] = {}
        records = []
        for pid, prompt, out, verdict in zip(budget.prompt_ids, prompts, outs, verdicts):
            if verdict.refused and out.text.strip():
                targets[prompt] = completion_token_ids(out, end)
                records.append({"id": pid, "source": "teacher", "target": out.text})
            else:
                targets[prompt] = list(fallback)
                records.append({"id": pid, "source": "template", "target": REFUSAL_TEMPLATE,
                                "teacher_answer": out.text})
        return targets, records

    def prepare(self, ctx: MethodContext) -> dict[str, Any]:
        opts = method_options(ctx)
        budget = resolve_budget(ctx)
        hooks, teacher_key = resolve_teacher(ctx)
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        spent = Spent()
        targets, records = self.targets(ctx, budget, hooks, spent)
        write_json_atomic(ctx.workdir / "targets.json", records)
        with student_for(ctx, self.name, budget) as (student, _teacher):
            trainer = SupervisedTrainer(student, ctx.base.tokenizer, budget, targets,
                                        micro_batch_size=opts.get("micro_batch_size"),
                                        progress=opts.get("progress", True), spent=spent)
            result = trainer.train()
            weights = save_student(ctx, self.name, budget, student)
        result.write_log(ctx.workdir / "train_log.jsonl")
        from_teacher = sum(r["source"] == "teacher" for r in records)
        artifact = {
            "method": self.name, **weights, "teacher": teacher_key,
            "config": {"targets_from_teacher": from_teacher, "targets_from_template": len(records) - from_teacher,
                       "template": REFUSAL_TEMPLATE},
            "budget_key": budget.key(), "budget": budget.to_dict(), "spent": spent.to_dict(),
            "targets": "targets.json", "train_log": "train_log.jsonl",
            "final_loss": result.log[-1]["loss"] if result.log else None,
        }
        write_json_atomic(ctx.workdir / "training.json", artifact)
        print(f"sft: {from_teacher}/{len(records)} targets from the teacher; {spent.summary()}", flush=True)
        return artifact

    def policy(self, ctx: MethodContext, artifact: dict[str, Any]) -> Policy:
        return student_policy(ctx, artifact)
