"""Residual-stream hooks at the input of decoder blocks (steering and ablation).

One hook implementation serves the steering baseline, SafeSteer's teacher and the direction
search. ``installed`` always removes what it installed, even when the body raises.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks of a causal LM, looking through PEFT and task-head wrappers."""
    inner = model
    for _ in range(6):  # PeftModel -> LoraModel -> *ForCausalLM -> *Model
        layers = getattr(inner, "layers", None)
        if isinstance(layers, nn.ModuleList):
            return layers
        inner = getattr(inner, "base_model", None) or getattr(inner, "model", None)
        if inner is None:
            break
    raise ValueError(f"cannot find decoder layers in {type(model).__name__}")


@dataclass(frozen=True)
class ResidualHook:
    """Add ``coef * direction`` to, or project ``direction`` out of, the input of block ``layer``.

    ``mode="add"`` is activation steering (the direction is the raw mean difference, not unit
    norm, so ``coef=1`` adds one mean-difference); ``mode="ablate"`` removes the component along
    the unit direction (directional ablation, Arditi et al. 2024).
    """

    layer: int
    direction: torch.Tensor
    coef: float = 1.0
    mode: str = "add"

    def __post_init__(self) -> None:
        if self.mode not in ("add", "ablate"):
            raise ValueError(f"unknown hook mode {self.mode!r}")

    def apply(self, hidden: torch.Tensor) -> torch.Tensor:
        direction = self.direction.to(device=hidden.device, dtype=hidden.dtype)
        if self.mode == "add":
            return hidden + self.coef * direction
        unit = direction / direction.norm()
        return hidden - (hidden @ unit).unsqueeze(-1) * unit

    def key(self) -> dict[str, Any]:
        """Identity of the hook for fingerprints (a hash of the direction, not the tensor)."""
        import hashlib

        digest = hashlib.sha256(self.direction.detach().float().cpu().numpy().tobytes()).hexdigest()
        return {"layer": self.layer, "coef": self.coef, "mode": self.mode, "direction": digest[:16]}


def _pre_hook(hook: ResidualHook):
    def fn(module: nn.Module, args: tuple, kwargs: dict):
        if args:
            return (hook.apply(args[0]), *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = hook.apply(kwargs["hidden_states"])
        return args, kwargs

    return fn


@contextmanager
def installed(model: nn.Module, hooks: Sequence[ResidualHook]) -> Iterator[None]:
    """Install ``hooks`` as forward pre-hooks for the duration of the block; always remove them."""
    layers = decoder_layers(model)
    handles = []
    try:
        for hook in hooks:
            handles.append(layers[hook.layer].register_forward_pre_hook(_pre_hook(hook), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def hook_count(model: nn.Module) -> int:
    """Number of forward pre-hooks on the decoder blocks (tests use it to prove removal)."""
    return sum(len(layer._forward_pre_hooks) for layer in decoder_layers(model))
