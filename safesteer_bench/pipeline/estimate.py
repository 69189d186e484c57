"""What a plan will need before anything loads: parameters, peak memory per stage, wall time.

The dry run prints it and the plan is refused when its peak cannot fit the device (issue 18).
Every figure comes from the model's own files without loading weights: a ``config.json`` and
the safetensors headers of a local or cached model, or a GGUF file's header. The formulas are
deliberately simple and say what they count:

- **weights**: parameters x bytes of the dtype;
- **training**: trainable parameters x 16 bytes (fp32 master copy, gradient and two Adam moments,
  the rule of thumb the issue cites for full fine-tuning; LoRA trains only the adapter), plus
  activations: per layer 34 x sequence x batch x hidden bytes (Korthikanti et al., 2022, without
  the attention-score term, which SDPA does not keep), doubled in fp32, plus the logits of the
  student and the teacher (2 x batch x sequence x vocabulary x 4 bytes);
- **generation**: the KV cache, 2 x layers x kv width x (prompt + new tokens) x batch x dtype bytes,
  plus one step's logits;
- **wall time**: tokens to generate / a measured throughput (reports/measured: SmolLM2-135M fp32 on
  2 CPU cores, ~165 tok/s at batch 32), scaled by parameter count; unknown elsewhere.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LORA_TARGETS = 7  # q, k, v, o, gate, up, down (students.py targets every linear layer)
CPU_TOKENS_PER_S_135M = 165.0  # reports/measured/README.md, engine at batch 32
PROMPT_TOKENS = 64  # a typical chat-templated benchmark prompt (AdvBench ~40-70 tokens)


@dataclass(frozen=True)
class ModelShape:
    """The sizes a memory estimate needs, read from a model's files."""

    params: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    kv_width: int  # key/value heads x head size
    source: str  # which file they were read from


@dataclass(frozen=True)
class StageEstimate:
    name: str
    bytes: int
    parts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Estimate:
    device: str
    dtype: str
    shape: ModelShape | None
    stages: list[StageEstimate]
    wall_seconds: float | None
    available_bytes: int | None

    @property
    def peak(self) -> int:
        return max((s.bytes for s in self.stages), default=0)


# -- reading shapes ------------------------------------------------------------------------------

def _safetensors_params(folder: Path) -> int | None:
    """Exact parameter count from the safetensors headers (8-byte length + JSON), no weights read."""
    total = 0
    files = sorted(folder.glob("*.safetensors"))
    for file in files:
        with open(file, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total or None


def _from_config(folder: Path) -> ModelShape | None:
    config_file = folder / "config.json"
    if not config_file.is_file():
        return None
    c = json.loads(config_file.read_text(encoding="utf-8"))
    c = c.get("text_config", c)  # multimodal wrappers (Gemma 3) keep the LM's sizes inside
    hidden, layers = int(c["hidden_size"]), int(c["num_hidden_layers"])
    heads = int(c.get("num_attention_heads", 1))
    head_dim = int(c.get("head_dim") or hidden // heads)
    kv_width = int(c.get("num_key_value_heads", heads)) * head_dim
    intermediate, vocab = int(c.get("intermediate_size", 4 * hidden)), int(c["vocab_size"])
    params = _safetensors_params(folder) or (vocab * hidden + layers * (
        hidden * (heads * head_dim) * 2 + 2 * hidden * kv_width + 3 * hidden * intermediate))
    return ModelShape(params, layers, hidden, intermediate, vocab, kv_width, str(config_file))


def _from_gguf(path: Path) -> ModelShape | None:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()

    def value(key: str) -> int:
        part = reader.fields[f"{arch}.{key}"]
        return int(part.parts[part.data[0]][0])

    hidden, heads = value("embedding_length"), value("attention.head_count")
    kv_heads = value("attention.head_count_kv") if f"{arch}.attention.head_count_kv" in reader.fields else heads
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    return ModelShape(params=sum(int(t.n_elements) for t in reader.tensors), layers=value("block_count"),
                      hidden=hidden, intermediate=value("feed_forward_length"), vocab=vocab,
                      kv_width=kv_heads * (hidden // heads), source=str(path))


def model_shape(spec: Any) -> ModelShape | None:
    """The shape of a resolved :class:`ModelSpec`, or None when its files are not here yet."""
    try:
        if spec.kind == "dir":
            return _from_config(Path(spec.source))
        if spec.kind in ("embedded", "gguf"):
            from safesteer_bench.modeling.models import locate
            from safesteer_bench.paths import cache_dir

            gguf = locate(spec, create=False)  # never assembles or converts anything
            if gguf is None:
                return None
            for folder in sorted((cache_dir() / "models").glob(f"{gguf.stem}-*")):
                if (shape := _from_config(folder)) is not None:
                    return shape  # converted once already: exact and fast
            return _from_gguf(gguf) if gguf.is_file() else None
        if spec.kind == "hf":
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(spec.source, "config.json", revision=spec.revision)
            return _from_config(Path(found).parent) if isinstance(found, str) else None
    except (OSError, ValueError, KeyError, IndexError, struct.error, ImportError) as exc:
        log.debug("no shape for %s: %s", spec.name, exc)
    return None


# -- the estimate -----------------------------------------------------------------------------

def _lora_params(shape: ModelShape, rank: int) -> int:
    per_layer = rank * (2 * (shape.hidden + shape.hidden) + 2 * (shape.hidden + shape.kv_width)
                        + 2 * (shape.hidden + shape.intermediate) + (shape.intermediate + shape.hidden))
    return shape.layers * per_layer


def _training(shape: ModelShape, profile: Any, adapter: str, dtype_bytes: int) -> StageEstimate:
    trainable = shape.params if adapter == "full" else _lora_params(shape, profile.lora_rank)
    batch = profile.prompts_per_step * profile.samples_per_prompt
    seq = PROMPT_TOKENS + profile.train_max_new_tokens
    activations = shape.layers * 34 * seq * batch * shape.hidden * (2 if dtype_bytes == 4 else 1)
    logits = 2 * batch * seq * shape.vocab * 4
    weights = shape.params * dtype_bytes * (2 if adapter == "full" else 1)  # full: student + frozen teacher
    parts = {"weights": weights, "trainable + Adam state": trainable * 16, "activations": activations,
             "logits": logits}
    return StageEstimate("training", sum(parts.values()), parts)


def _generation(shape: ModelShape, profile: Any, dtype_bytes: int) -> StageEstimate:
    seq = PROMPT_TOKENS + profile.max_new_tokens
    kv = 2 * shape.layers * shape.kv_width * seq * profile.batch_size * dtype_bytes
    parts = {"weights": shape.params * dtype_bytes, "KV cache": kv,
             "logits": profile.batch_size * shape.vocab * 4}
    return StageEstimate("generation", sum(parts.values()), parts)


def _wall_seconds(plan: Any, shape: ModelShape, device: str, prompts: int) -> float | None:
    if device != "cpu":
        return None  # no throughput measured on this device type yet
    rate = CPU_TOKENS_PER_S_135M * 134_515_008 / shape.params
    methods = len(plan.config.methods) * max(1, len(plan.config.seeds or [0]))
    generated = methods * prompts * plan.profile.max_new_tokens
    return generated / rate


def available_memory(device: str) -> int | None:
    """Total memory of the device (GPU memory, or this machine's RAM for cpu)."""
    try:
        if device.startswith("cuda"):
            import torch

            index = int(device.split(":")[1]) if ":" in device else 0
            return int(torch.cuda.get_device_properties(index).total_memory)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, RuntimeError, AssertionError, AttributeError):
        return None


def estimate(plan: Any, spec: Any, prompts: int) -> Estimate:
    """The plan's needs on its device; ``prompts``: evaluation prompts per method (all benchmarks)."""
    from safesteer_bench.modeling.models import default_device, default_dtype

    device = plan.config.device or default_device()
    dtype = plan.config.dtype or default_dtype(device)
    shape = model_shape(spec)
    stages: list[StageEstimate] = []
    wall = None
    if shape is not None:
        size = DTYPE_BYTES.get(dtype, 4)
        stages.append(_generation(shape, plan.profile, size))
        if plan.trains:
            stages.append(_training(shape, plan.profile, plan.config.adapter, size))
        wall = _wall_seconds(plan, shape, device, prompts)
    return Estimate(device, dtype, shape, stages, wall, available_memory(device))


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def describe_estimate(est: Estimate) -> str:
    if est.shape is None:
        return (f"  device    {est.device} ({est.dtype}); model size unknown until its files are here "
                "(no memory estimate)")
    lines = [f"  device    {est.device} ({est.dtype}), {est.shape.params / 1e6:,.0f} M parameters, "
             f"{est.shape.layers} blocks"]
    for stage in est.stages:
        parts = ", ".join(f"{k} {_gb(v)}" for k, v in stage.parts.items())
        lines.append(f"  memory    {stage.name}: ~{_gb(stage.bytes)} ({parts})")
    if est.available_bytes:
        lines.append(f"            peak ~{_gb(est.peak)} of {_gb(est.available_bytes)} on {est.device}")
    if est.wall_seconds is not None:
        lines.append(f"  time      generation ~{est.wall_seconds / 60:.0f} min at the measured CPU throughput "
                     "(training and judging not included)")
    return "\n".join(lines)


def check_fits(est: Estimate) -> None:
    """A UserError (exit 2, with the fix) when the plan's peak exceeds the device's memory."""
    from safesteer_bench.errors import UserError

    if est.available_bytes and est.peak > est.available_bytes:
        worst = max(est.stages, key=lambda s: s.bytes)
        raise UserError(f"this plan needs ~{_gb(est.peak)} for {worst.name} but {est.device} has "
                        f"{_gb(est.available_bytes)}",
                        "use a smaller --profile, --adapter lora, --dtype bfloat16 or a larger device")
