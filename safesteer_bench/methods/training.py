"""The skeleton every training method shares (safesteer, global-kl, sft): docs/architecture.md §4.

``prepare`` is the same sequence for all of them: resolve the run's Budget and the teacher
(steered, or spec-prompted with ``teacher=spec``), let the method get ready
(:meth:`TrainingMethod.setup`: the safety-token vote, the SFT targets), train a student on the
Budget with the method's trainer, save its weights and write ``training.json``. A training method
implements ``setup`` and ``trainer`` only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from safesteer_bench.methods.api import MethodContext
from safesteer_bench.modeling.policy import Policy
from safesteer_bench.options import options_of
from safesteer_bench.pipeline.store import write_json_atomic
from safesteer_bench.training.budget import Budget, Spent
from safesteer_bench.training.parallel import data_parallel
from safesteer_bench.training.rollouts import check_rollout_engine
from safesteer_bench.training.students import (TrainingOptions, resolve_budget, resolve_teacher, save_student,
                                               saved_student, scratch_workdir, student_for, student_policy,
                                               teacher_system)
from safesteer_bench.tuning.search_space import Choice, FloatRange

log = logging.getLogger(__name__)


@dataclass
class TrainingSetup:
    """What a method prepared before training: data its trainer needs, the artifact's ``config``,
    extra artifact fields (files it wrote) and a note for the log line."""

    data: Any = None
    config: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class TrainingRun:
    """One call of the shared sequence, handed to the method's hooks."""

    ctx: MethodContext
    options: TrainingOptions
    budget: Budget
    hooks: tuple
    spent: Spent
    teacher_system: str | None = None  # the spec teacher's system prompt (teacher=spec), else None


class TrainingMethod:
    name = ""
    kind = "training"
    description = ""
    options_class: type[TrainingOptions] = TrainingOptions
    # `tune`: the learning rate, how much of the budget's steps to use and the teacher's strength.
    search_space: dict = {"learning_rate": FloatRange(5e-5, 2e-3, log=True),
                          "train_fraction": Choice((0.5, 1.0)), "teacher_coef": Choice((1.0, 2.0, 3.0))}
    defaults: dict = {"teacher_coef": 1.0}

    def setup(self, run: TrainingRun) -> TrainingSetup:
        """Work before training (may add to ``run.spent``); default: nothing."""
        return TrainingSetup()

    def trainer(self, run: TrainingRun, setup: TrainingSetup, student: Any, teacher: Any) -> Any:
        """An object whose ``train()`` spends ``run.budget`` on ``student`` and returns a result
        with ``log`` and ``write_log(path)`` (``training.distill``'s trainers)."""
        raise NotImplementedError

    def prepare(self, ctx: MethodContext) -> dict[str, Any]:
        options = options_of(ctx, self.options_class)
        budget = resolve_budget(ctx)
        par = data_parallel()
        check_rollout_engine(getattr(options, "rollout_engine", "hf"), budget.adapter, par.world_size)
        # Under a multi-process launch (training/parallel.py) the main process makes the shared
        # direction and the setup's files first; the others then redo the (deterministic) setup in
        # a scratch folder, so only the main process writes into the run.
        with par.main_first(), scratch_workdir(ctx, par.is_main) as work:
            hooks, teacher_key = resolve_teacher(work)
            work.workdir.mkdir(parents=True, exist_ok=True)
            run = TrainingRun(work, options, budget, hooks, Spent(), teacher_system(work))
            setup = self.setup(run)
        with student_for(ctx, self.name, budget) as (student, teacher):
            result = self.trainer(run, setup, student, teacher).train()
            weights = save_student(ctx, self.name, budget, student) if par.is_main else None
            par.wait()  # the others read the saved weights' sha256
            weights = weights or saved_student(ctx, self.name, budget)
        artifact = {
            "method": self.name, **weights, "config": setup.config, "teacher": teacher_key,
            "budget_key": budget.key(), "budget": budget.to_dict(), "spent": run.spent.to_dict(),
            "train_log": "train_log.jsonl", "final_loss": result.log[-1]["loss"] if result.log else None,
            **setup.fields,
        }
        if par.is_main:
            result.write_log(ctx.workdir / "train_log.jsonl")
            write_json_atomic(ctx.workdir / "training.json", artifact)
            log.info("%s: %s%s", self.name, setup.note, run.spent.summary())
        return artifact

    def policy(self, ctx: MethodContext, artifact: dict[str, Any]) -> Policy:
        return student_policy(ctx, artifact)
