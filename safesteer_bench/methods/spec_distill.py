"""spec-distill: context distillation of a spec-prompted teacher (docs/architecture.md §4).

The open, cheap form of deliberative alignment: the teacher is the base model with the written
safety specification (safesteer_bench/specs/safety_spec.md, or ``spec_file=PATH``) as its system
prompt, no hook; the student learns to behave that way without it. It is global-kl with
``teacher=spec``: the same on-policy full-vocabulary reverse-KL trainer and the same Budget, the
teacher's logits at the completion positions computed on [spec + prompt + completion] while the
student sees [prompt + completion]. Its rival row is SafeSteer's *steered* teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

from safesteer_bench.methods.api import METHODS
from safesteer_bench.options import option
from safesteer_bench.training.students import RolloutOptions, TrainingCoreOptions
from safesteer_bench.tuning.search_space import Choice, FloatRange

from .global_kl import GlobalKL


@dataclass(frozen=True)
class SpecDistillOptions(TrainingCoreOptions, RolloutOptions):
    """The training options with the spec teacher fixed (teacher=steer would be global-kl). No
    steering options (coef, layer, teacher_coef, ...): the teacher has no hook, so they would do
    nothing; the run then finds no steering direction for this method either."""

    teacher: str = option("spec", "the teacher: spec only (the base model with the safety specification "
                          "as its system prompt); global-kl is this method with teacher=steer",
                          kind="choice", choices=("spec",))


@METHODS.register("spec-distill")
class SpecDistill(GlobalKL):
    name = "spec-distill"
    description = ("context distillation of the spec-prompted teacher (the base model with a written safety "
                   "policy as system prompt), full-vocabulary on-policy reverse KL (LoRA)")
    options_class = SpecDistillOptions
    # `tune`: no teacher strength to choose (no hook), the learning rate and the steps used.
    search_space = {"learning_rate": FloatRange(5e-5, 2e-3, log=True), "train_fraction": Choice((0.5, 1.0))}
    defaults: dict = {}
