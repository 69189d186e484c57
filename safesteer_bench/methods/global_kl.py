"""global-kl: SafeSteer's trainer with S = the whole vocabulary (on-policy reverse KL; TRL GKD with
lmbda = 1, beta = 1). Same class, same code path — only ``restricted`` differs."""

from __future__ import annotations

from safesteer_bench.methods.api import METHODS

from .safesteer import DistillMethod


@METHODS.register("global-kl")
class GlobalKL(DistillMethod):
    name = "global-kl"
    description = "on-policy distillation of the steered teacher, full-vocabulary reverse KL (LoRA)"
    restricted = False
