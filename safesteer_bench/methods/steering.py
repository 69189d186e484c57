"""steering: inference-time activation steering with the run's shared refusal direction (docs/architecture.md §4)."""

from __future__ import annotations

from typing import Any

from safesteer_bench.methods.api import METHODS, MethodContext
from safesteer_bench.modeling.policy import Policy
from safesteer_bench.tuning.search_space import Choice, LayerRange
from safesteer_bench.inference.steering import SteeringDirection, SteeringOptions, shared_direction, steered_policy


@METHODS.register("steering")
class Steering:
    name = "steering"
    kind = "inference"
    description = "adds c·r (refusal direction, mean difference) at one decoder block's input"
    options_class = SteeringOptions
    # `tune`: the block (within the searched 0.8·L) and the coefficient of the added direction.
    search_space = {"layer": LayerRange(0.2, 0.8), "coef": Choice((0.5, 1.0, 1.5, 2.0))}
    defaults = {"coef": 1.0}  # the layer's default is the automatic search's choice

    def prepare(self, ctx: MethodContext) -> dict[str, Any]:
        direction = shared_direction(ctx)
        return {"layer": direction.layer, "position": direction.position, "coef": direction.coef,
                "mode": direction.mode, "requested_mode": direction.requested_mode,
                "candidates": len(direction.scores),
                "evaluated_candidates": sum(1 for s in direction.scores if s.get("evaluated")),
                "key": direction.key(), "path": direction.info.get("path")}

    def policy(self, ctx: MethodContext, artifact: dict[str, Any]) -> Policy:
        path = artifact.get("path")
        if path and SteeringDirection.exists(path):
            direction = SteeringDirection.load(path)
        else:  # the run folder moved or the shared direction was removed: recompute or reload it
            direction = shared_direction(ctx)
        return steered_policy(ctx.base, direction, self.name)
