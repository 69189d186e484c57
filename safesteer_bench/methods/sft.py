"""sft: supervised fine-tuning on refusals written by the steered teacher (docs/architecture.md §4);
with ``teacher=spec`` by the base model with the safety specification as its system prompt.

Targets = the steered teacher's greedy generations on the Budget's prompts that the refusal judge
(keywords) marks as refusals; a prompt whose teacher answer is not a refusal gets a fixed refusal
template instead (recorded per prompt in ``targets.json``). Cross-entropy on response tokens only,
with the same optimizer, schedule, steps and adapter as the distillation methods
(``safesteer_bench.training.distill.SupervisedTrainer``).
"""

from __future__ import annotations

from typing import Any

from safesteer_bench.methods.api import METHODS
from safesteer_bench.methods.training import TrainingMethod, TrainingRun, TrainingSetup
from safesteer_bench.modeling.generation import GenConfig, HFEngine, stop_token_ids
from safesteer_bench.modeling.policy import Policy, fingerprint
from safesteer_bench.pipeline.store import write_json_atomic
from safesteer_bench.training.budget import SpentTracker, Timer
from safesteer_bench.training.distill import SupervisedTrainer, completion_token_ids

REFUSAL_TEMPLATE = "I'm sorry, but I can't help with that request."


@METHODS.register("sft")
class SFT(TrainingMethod):
    name = "sft"
    description = "supervised fine-tuning on the steered teacher's refusals (judge-filtered; LoRA)"

    def targets(self, run: TrainingRun) -> tuple[dict[str, list[int]], list[dict[str, Any]]]:
        """Token targets per prompt (the teacher's refusal, else the template) and their records."""
        from safesteer_bench.evaluation.judges import get_judge

        ctx, budget = run.ctx, run.budget
        base = ctx.base
        tok = base.tokenizer
        stops = stop_token_ids(base.model, tok)
        end = tok.eos_token_id if tok.eos_token_id in stops else stops[0]
        # teacher=spec: no hooks, the specification as the system prompt of every generation.
        teacher = Policy("teacher", base.model, tok, fingerprint(base.identity, "sft-teacher"), hooks=run.hooks,
                         engine=HFEngine(base.model, tok, system=run.teacher_system))
        cfg = GenConfig(max_new_tokens=budget.max_new_tokens, temperature=0.0, seed=budget.seed,
                        batch_size=ctx.profile.batch_size)
        prompts = list(budget.prompts)
        with SpentTracker(base.device, run.spent), Timer(run.spent, "targets"):
            outs = teacher.generate(prompts, cfg, progress=run.options.progress)
        run.spent.generated_tokens += sum(c.new_tokens for c in outs)
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

    def setup(self, run: TrainingRun) -> TrainingSetup:
        targets, records = self.targets(run)
        write_json_atomic(run.ctx.workdir / "targets.json", records)
        from_teacher = sum(r["source"] == "teacher" for r in records)
        return TrainingSetup(data=targets, config={"targets_from_teacher": from_teacher,
                                                   "targets_from_template": len(records) - from_teacher,
                                                   "template": REFUSAL_TEMPLATE},
                             fields={"targets": "targets.json"},
                             note=f"{from_teacher}/{len(records)} targets from the teacher; ")

    def trainer(self, run: TrainingRun, setup: TrainingSetup, student: Any, teacher: Any) -> SupervisedTrainer:
        return SupervisedTrainer(student, run.ctx.base.tokenizer, run.budget, setup.data,
                                 micro_batch_size=run.options.micro_batch_size, progress=run.options.progress,
                                 spent=run.spent)
