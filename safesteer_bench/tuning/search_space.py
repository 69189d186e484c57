"""Search-space declarations for ``tune`` (a method's ``search_space`` class attribute).

Each entry maps a ``--method-args`` key (a field of the method's options dataclass) to one of the
distributions below; ``tune`` turns them into Optuna suggestions. Kept apart from Optuna so a
method module can declare its space without importing it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class LayerRange:
    """Decoder blocks from ``low`` to ``high`` as fractions of the model's depth (integers once
    the model is known): a space that fits any model."""

    low: float
    high: float
    step: int = 1

    def resolve(self, n_layers: int) -> IntRange:
        low = max(0, math.floor(self.low * n_layers))
        high = max(low, math.floor(self.high * n_layers) - 1)
        return IntRange(low, high, self.step)


Distribution = Union[Choice, IntRange, FloatRange, LayerRange]


def suggest(trial: Any, key: str, dist: Distribution, n_layers: int | None = None) -> Any:
    """One Optuna suggestion for ``key``."""
    if isinstance(dist, LayerRange):
        if n_layers is None:
            raise ValueError("a LayerRange needs the model's number of layers")
        dist = dist.resolve(n_layers)
    if isinstance(dist, Choice):
        return trial.suggest_categorical(key, list(dist.values))
    if isinstance(dist, IntRange):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step)
    if isinstance(dist, FloatRange):
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log)
    raise TypeError(f"unknown distribution {dist!r}")


def describe(dist: Distribution) -> str:
    if isinstance(dist, Choice):
        return "{" + ", ".join(map(str, dist.values)) + "}"
    if isinstance(dist, LayerRange):
        return f"blocks {dist.low:g}·L .. {dist.high:g}·L"
    if isinstance(dist, IntRange):
        return f"{dist.low} .. {dist.high}" + (f" step {dist.step}" if dist.step != 1 else "")
    return f"{dist.low:g} .. {dist.high:g}" + (" (log)" if dist.log else "")
