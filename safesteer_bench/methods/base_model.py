"""base: the unmodified model, the reference row of every comparison."""

from __future__ import annotations

from typing import Any

from safesteer_bench.methods.api import METHODS, MethodContext
from safesteer_bench.modeling.policy import Policy, fingerprint


@METHODS.register("base")
class Base:
    name = "base"
    kind = "inference"
    description = "the unmodified model (reference row)"
    seeded = False  # greedy decoding of fixed weights: every seed gives the same outputs

    def prepare(self, ctx: MethodContext) -> dict[str, Any]:
        return {}

    def policy(self, ctx: MethodContext, artifact: dict[str, Any]) -> Policy:
        base = ctx.base
        return Policy("base", base.model, base.tokenizer, fingerprint(base.identity, "base"))
