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
- **wall time**: tokens to generate (evaluation, plus the training methods' rollouts) / the closest
  measured throughput (pipeline/throughput.py: every run records what its generation achieved on
  its device; the checked-in CPU reference otherwise), scaled by parameter count and batch size;
  unknown on a kind of device where nothing was measured yet. Backward passes, judging and
  capability suites are not counted, and the dry run says so.
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
    wall: WallEstimate | None
    available_bytes: int | None
    adapter: str = "lora"

    @property
    def wall_seconds(self) -> float | None:
        return None if self.wall is None else self.wall.seconds

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


# The hub aliases' sizes from their published config.json and safetensors index (parameters,
# layers, hidden, intermediate, vocabulary, kv heads x head size), so the headline command's dry
# run can plan and refuse before gigabytes are downloaded. Once the files are cached they win.
PUBLISHED_SHAPES = {
    "Qwen/Qwen2-7B-Instruct": (7_615_616_512, 28, 3584, 18944, 152064, 4 * 128),
    "Qwen/Qwen2.5-7B-Instruct": (7_615_616_512, 28, 3584, 18944, 152064, 4 * 128),
    "Qwen/Qwen3-4B-Instruct-2507": (4_022_468_096, 36, 2560, 9728, 151936, 8 * 128),
    "meta-llama/Meta-Llama-3-8B-Instruct": (8_030_261_248, 32, 4096, 14336, 128256, 8 * 128),
    "meta-llama/Llama-3.2-3B-Instruct": (3_212_749_824, 28, 3072, 8192, 128256, 8 * 128),
}


def _published(spec: Any) -> ModelShape | None:
    sizes = PUBLISHED_SHAPES.get(spec.source) if spec.kind == "hf" else None
    return ModelShape(*sizes, source=f"published config of {spec.source}") if sizes else None


def model_shape(spec: Any) -> ModelShape | None:
    """The shape of a resolved :class:`ModelSpec`: from its files when they are here, else the
    published sizes of a known hub alias, else None."""
    return _from_files(spec) or _published(spec)


def _from_files(spec: Any) -> ModelShape | None:
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


@dataclass(frozen=True)
class WallEstimate:
    seconds: float
    tokens: int
    tokens_per_s: float
    source: str  # which measurement it rests on


def _generated_tokens(plan: Any, prompts: int) -> int:
    """Evaluation tokens of every method and seed, plus each training method's rollouts."""
    from safesteer_bench.methods.api import get_method

    profile = plan.profile
    seeds = max(1, len(plan.config.seeds or [0]))
    tokens = len(plan.config.methods) * prompts * profile.max_new_tokens
    trainers = sum(1 for m in plan.config.methods if get_method(m).kind == "training")
    rollouts = (profile.train_prompts or 100) * profile.samples_per_prompt * profile.train_max_new_tokens
    return seeds * (tokens + trainers * rollouts)


def _wall(plan: Any, shape: ModelShape, device: str, dtype: str, prompts: int) -> WallEstimate | None:
    from safesteer_bench.pipeline import throughput

    engine = getattr(plan.config, "engine", "hf") or "hf"
    measured, source = throughput.lookup(device, dtype, engine, shape.params)
    if measured is None:
        return None
    rate = throughput.tokens_per_second(measured, shape.params, plan.profile.batch_size)
    tokens = _generated_tokens(plan, prompts)
    return WallEstimate(tokens / rate, tokens, rate, f"{source}: {measured.tokens_per_s:,.0f} tok/s, "
                        f"{measured.params / 1e6:,.0f} M params, batch {measured.batch_size}, "
                        f"{measured.dtype}, {measured.engine} engine")


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
        wall = _wall(plan, shape, device, dtype, prompts)
    return Estimate(device, dtype, shape, stages, wall, available_memory(device), plan.config.adapter)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{max(1, round(seconds / 60))} min"


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
    if est.wall is not None:
        w = est.wall
        lines.append(f"  time      generation ~{_duration(w.seconds)} ({w.tokens:,} tokens at ~{w.tokens_per_s:,.0f} tok/s; "
                     "backward passes, judging and capability suites not included)")
        lines.append(f"            throughput from {w.source}")
    else:
        lines.append(f"  time      unknown: no generation throughput measured on {est.device} yet "
                     "(a first run records it)")
    return "\n".join(lines)


def check_fits(est: Estimate) -> None:
    """A UserError (exit 2, with the fix) when the plan's peak exceeds the device's memory."""
    from safesteer_bench.errors import UserError

    if est.available_bytes and est.peak > est.available_bytes:
        worst = max(est.stages, key=lambda s: s.bytes)
        raise UserError(f"this plan needs ~{_gb(est.peak)} for {worst.name} but {est.device} has "
                        f"{_gb(est.available_bytes)}",
                        f"use {_fixes(est)}")


def _fixes(est: Estimate) -> str:
    """Only the remedies this plan has not taken already."""
    fixes = ["a smaller --profile"]
    if est.adapter == "full":
        fixes.append("--adapter lora")
    if est.dtype == "float32":
        fixes.append("--dtype bfloat16")
    fixes.append("a larger device")
    return ", ".join(fixes[:-1]) + " or " + fixes[-1]
