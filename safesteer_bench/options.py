"""The keys ``--method-args`` accepts, each with a check of its value, applied before any work.

Method options arrive from the command line as strings and every method reads the keys it knows
(see each method's module docstring). Without this table a typo (``loss_varient=renormalize``)
was silently ignored and a bad value (``coef=abc``) failed after the model had loaded. Values stay
strings here (each method parses its own); this module only refuses what no method could use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .errors import UserError


def _number(low: float | None = None, high: float | None = None, allow: tuple[str, ...] = ()) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value in allow:
            return
        number = float(value)  # ValueError -> reported by check_method_args
        if not math.isfinite(number) or (low is not None and number < low) or (high is not None and number > high):
            raise ValueError("out of range")
    return check


def _integer(low: int = 0) -> Callable[[str], None]:
    def check(value: str) -> None:
        if int(value) < low:
            raise ValueError("out of range")
    return check


def _choice(*choices: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in choices:
            raise ValueError("not a choice")
    return check


def _any(value: str) -> None:
    if not value:
        raise ValueError("empty")


@dataclass(frozen=True)
class OptionSpec:
    check: Callable[[str], None]
    expected: str  # what a valid value looks like, for the error message
    methods: str  # who reads it


OPTIONS: dict[str, OptionSpec] = {
    "direction_mode": OptionSpec(_choice("auto", "prompts", "responses"), "auto, prompts or responses", "steering teacher"),
    "coef": OptionSpec(_number(low=0, allow=("auto",)), "a number >= 0 or auto", "steering teacher"),
    "direction_select": OptionSpec(_choice("generate", "design", "gap"), "generate, design or gap",
                                   "steering teacher"),
    "teacher_coef": OptionSpec(_number(low=0), "a number >= 0", "safesteer, global-kl, sft (teacher strength)"),
    "target_refusal": OptionSpec(_number(0, 1), "a number in [0, 1]", "steering teacher"),
    "layer_stride": OptionSpec(_integer(1), "an integer >= 1", "steering teacher"),
    "layer": OptionSpec(_integer(0), "a block index >= 0", "steering teacher"),
    "loss_variant": OptionSpec(_choice("partial", "renormalize", "tail-bucket"), "partial, renormalize or tail-bucket",
                               "safesteer"),
    "token_set_size": OptionSpec(_integer(1), "an integer >= 1", "safesteer"),
    "token_set_horizon": OptionSpec(_integer(1), "an integer >= 1", "safesteer"),
    "token_set_tau": OptionSpec(_number(), "a number", "safesteer"),
    "token_set_votes_top": OptionSpec(_integer(1), "an integer >= 1", "safesteer"),
    "micro_batch_size": OptionSpec(_integer(1), "an integer >= 1", "safesteer, global-kl, sft"),
    # The compute budget (prompts, samples, tokens) is the run's; these two are choices within it.
    "learning_rate": OptionSpec(_number(low=1e-8, high=1.0), "a number in (0, 1]", "safesteer, global-kl, sft"),
    "train_fraction": OptionSpec(_number(low=1e-3, high=1.0), "a fraction of the budget's steps in (0, 1]",
                                 "safesteer, global-kl, sft"),
    # Set by `tune` for cheap trials; multiplies train_fraction.
    "budget_fraction": OptionSpec(_number(low=1e-3, high=1.0), "a fraction in (0, 1]", "safesteer, global-kl, sft"),
    "alpha": OptionSpec(_number(0, 1), "a number in [0, 1]", "alignbeam"),
    "prefix_steps": OptionSpec(_integer(1), "an integer >= 1", "alignbeam"),
    "beams": OptionSpec(_integer(1), "an integer >= 1", "alignbeam"),
    "top_n": OptionSpec(_integer(1), "an integer >= 1", "alignbeam"),
    "anchor_top_n": OptionSpec(_integer(1), "an integer >= 1", "alignbeam"),
    "judge": OptionSpec(_any, "a judge name (see `safesteer-bench judges`)", "alignbeam"),
    "anchor": OptionSpec(_any, "steering, method:<name> or a model", "alignbeam"),
    "latency_prompts": OptionSpec(_integer(0), "an integer >= 0", "alignbeam"),
}


def check_method_args(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` when every key is known and every value plausible, else a one-line UserError."""
    valid = ", ".join(sorted(OPTIONS))
    for key, value in args.items():
        spec = OPTIONS.get(key)
        if spec is None:
            raise UserError(f"unknown --method-args key '{key}'", f"valid keys: {valid}")
        if not isinstance(value, str):
            continue  # set from Python (tests, scripts), already typed
        try:
            spec.check(value.strip())
        except (ValueError, TypeError, OverflowError):
            raise UserError(f"--method-args {key}={value!r} is invalid for the {spec.methods}",
                            f"use {spec.expected}") from None
    if "judge" in args and isinstance(args["judge"], str):
        from .judges import get_judge

        get_judge(args["judge"])  # unknown judge names fail in the dry run
    return args
