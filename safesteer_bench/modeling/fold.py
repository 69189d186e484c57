"""Steering folded into weights, so an engine without our hooks (vLLM) serves a steered policy.

An ``add`` hook at block L adds ``coef · r`` to the input of block L, i.e. to the residual stream
from there on. That stream is block L−1's output: its input + attention + MLP down-projection. A
constant bias ``coef · r`` on block L−1's down-projection therefore gives exactly the same sums
(block 0: the same vector added to every embedding row, with a tied output head untied first so
the logits keep the original matrix). The folded model is an ordinary model folder — its config
with ``mlp_bias`` on (zero biases everywhere else) — that any engine loads.

What does not fold, and stays on the HF engine with its hook:

- ``ablate`` hooks: removing the component along r depends on the hidden state, so it is no
  constant; weight orthogonalisation (Arditi et al.) would be exact only when applied to every
  block's writes, which is a different intervention from ablation at one block's input.
- Architectures whose config has no ``mlp_bias`` (Gemma 3, Qwen2: their MLPs have no bias term);
  the Llama family (SmolLM2, Llama, TinyLlama, …) has it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from safesteer_bench.modeling.hooks import ResidualHook, decoder_layers

log = logging.getLogger(__name__)

# Bump when the folded folder's layout changes, so stale folders are rewritten.
FOLD_FORMAT = 1


def unfoldable_reason(model: Any, hooks: Sequence[ResidualHook]) -> str | None:
    """Why ``hooks`` cannot be folded into ``model``'s weights, or None when they can."""
    if not hooks:
        return "no hooks to fold"
    if any(h.mode != "add" for h in hooks):
        return "directional ablation is not a constant bias (it depends on the hidden state)"
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "mlp_bias"):
        return f"{type(model).__name__}'s config has no mlp_bias (its MLP cannot carry the bias)"
    layers = decoder_layers(model)
    if any(not 0 <= h.layer < len(layers) for h in hooks):
        return "a hook's layer is outside the model"
    if not all(hasattr(getattr(layer, "mlp", None), "down_proj") for layer in layers):
        return "decoder blocks without mlp.down_proj"
    return None


def folded_state_dict(model: Any, hooks: Sequence[ResidualHook], dtype: Any) -> dict[str, Any]:
    """``model``'s weights with ``hooks`` folded in (see the module doc), in ``dtype``: a bias on
    every MLP projection (zero but where a hook folds), embedding rows shifted for block 0, and
    ``lm_head.weight`` present (the original matrix) when it was tied and block 0 is steered.

    A base model that carries LoRA students' layers (peft injects them in place; between
    trainings they are disabled) contributes its base weights only, under their own names."""
    import torch

    layers = decoder_layers(model)
    hidden = model.config.hidden_size
    shift = {i: torch.zeros(hidden, dtype=torch.float32) for i in range(-1, len(layers))}
    for hook in hooks:  # hooks at one block add up, as the pre-hooks do
        shift[hook.layer - 1] += hook.coef * hook.direction.detach().float().cpu()
    with torch.no_grad():
        out = {k.replace(".base_layer.", "."): v.detach().float().cpu().clone()
               for k, v in model.state_dict().items() if ".lora_" not in k}
        prefix = _layers_prefix(model)
        for i, layer in enumerate(layers):
            mlp = f"{prefix}.{i}.mlp"
            out[f"{mlp}.down_proj.bias"] = out.get(f"{mlp}.down_proj.bias", torch.zeros(hidden)) + shift[i]
            for name in ("gate_proj", "up_proj"):
                width = _base_linear(getattr(layer.mlp, name)).out_features
                out.setdefault(f"{mlp}.{name}.bias", torch.zeros(width))
        embed = next(k for k in out if k.endswith("embed_tokens.weight"))
        if shift[-1].any():
            if _tied(model):
                out["lm_head.weight"] = out[embed].clone()
            out[embed] = out[embed] + shift[-1]
        elif _tied(model):
            out.pop("lm_head.weight", None)  # as in a tied checkpoint
    return {k: v.to(dtype).contiguous() for k, v in out.items()}


def _base_linear(module: Any) -> Any:
    """The plain Linear under a peft LoRA layer (the module itself otherwise)."""
    get = getattr(module, "get_base_layer", None)
    return get() if callable(get) else module


def _tied(model: Any) -> bool:
    return bool(getattr(model.config, "tie_word_embeddings", False))


def _layers_prefix(model: Any) -> str:
    """The state-dict prefix of the decoder blocks ("model.layers" for a *ForCausalLM)."""
    layers = decoder_layers(model)
    return next(name for name, module in model.named_modules() if module is layers)


def folded_config(model: Any, hooks: Sequence[ResidualHook]) -> dict[str, Any]:
    """The model's config with MLP biases on, and untied when block 0 is steered and tied."""
    config = model.config.to_dict()
    config["mlp_bias"] = True
    if any(h.layer == 0 and h.coef != 0 for h in hooks) and _tied(model):
        config["tie_word_embeddings"] = False
    return config


def steered_model_folder(model: Any, tokenizer: Any, hooks: Sequence[ResidualHook], folder: Path,
                         dtype: str) -> Path:
    """``model`` with ``hooks`` folded in, as a model folder (config, tokenizer, one safetensors
    file) written once per hooks and dtype; a half-written folder is rewritten."""
    from safetensors.torch import save_file

    from safesteer_bench.modeling.vllm_engine import torch_dtype

    reason = unfoldable_reason(model, hooks)
    if reason is not None:
        raise ValueError(f"cannot fold these hooks: {reason}")
    stamp = {"format": FOLD_FORMAT, "hooks": [h.key() for h in hooks], "dtype": dtype,
             "config": getattr(model.config, "_name_or_path", "")}
    done = folder / "done.json"
    if done.exists() and _read(done) == stamp:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    done.unlink(missing_ok=True)
    tokenizer.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(folded_config(model, hooks), indent=1, default=str))
    save_file(folded_state_dict(model, hooks, torch_dtype(dtype)), str(folder / "model.safetensors"))
    done.write_text(json.dumps(stamp))
    log.info("steering folded into %s (%s)", folder, ", ".join(f"block {h.layer} × {h.coef}" for h in hooks))
    return folder


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
