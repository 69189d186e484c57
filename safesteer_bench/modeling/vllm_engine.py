"""vLLM generation engine (``run --engine vllm``; docs/architecture.md §2).

``VLLMEngine`` implements ``GenerationEngine`` with vLLM for policies whose generation is a plain
forward pass: the base model (its safetensors folder), LoRA students (vLLM's LoRA support, a
``LoRARequest`` on the saved peft adapter, or merged into the base weights: ``lora_mode``) and
full students (their weights saved as a model
folder) and steered policies (their ``add`` hooks folded into MLP biases: modeling/fold.py).
vLLM runs its own copy of the weights in another process, where our hooks do not exist, so what
does not fold (ablation hooks, architectures without ``mlp_bias``, hooked students) and policies
with their own decoder (alignbeam) stay on ``HFEngine``. ``attach_engine`` makes that choice and
records it.

Prompts are templated and tokenized by the same Hugging Face tokenizer as ``HFEngine``
(``chat_text``, no added special tokens) and handed to vLLM as token ids, so both engines see the
same prompt tokens; completions are cut at the same stop tokens (``stop_token_ids``) and decoded
by the same tokenizer.

vLLM is an optional install (its own venv: ``make setup-vllm``); it is imported only when an
engine starts. Its engine core is a spawned process, so scripts using it need an
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from safesteer_bench.errors import UserError
from safesteer_bench.modeling.generation import (
    Completion, GenConfig, GenerationStats, chat_text, stop_token_ids,
)

log = logging.getLogger(__name__)

ENGINES = ("hf", "vllm")
# bf16 by default: vLLM's CPU backend is built around bf16 kernels (AVX-512 BF16 / AMX on these
# CPUs; fp16 is not supported there) and bf16 halves the bytes read per token, which is what
# bounds decoding speed; on CUDA it is also vLLM's usual dtype. `--dtype float32` overrides it
# (the equality test compares against HF in fp32 that way).
DEFAULT_VLLM_DTYPE = "bfloat16"
# KV cache reserved by vLLM's CPU backend (GiB) unless the user set VLLM_CPU_KVCACHE_SPACE: the
# runner's batches of short prompts need far less than vLLM's default, and the HF model is
# resident in the same memory.
DEFAULT_CPU_KVCACHE_GIB = "2"


def eager_default() -> bool:
    """Skip torch.compile (EngineKey.eager)? $SAFESTEER_BENCH_VLLM_EAGER=1/0 decides; unset: eager
    on CPU, compiled (CUDA graphs) on GPU. On these 2-core CPUs compiling adds ~80 s to the engine
    start for ~20 % more tokens/s (reports/measured/vllm.md): it pays only past ~150k generated
    tokens per engine, more than a quick run generates per method."""
    value = os.environ.get("SAFESTEER_BENCH_VLLM_EAGER", "").strip().lower()
    if value:
        return value in ("1", "true", "yes")
    import torch

    return not torch.cuda.is_available()


def vllm_available() -> bool:
    """True when vllm is installed here (found without importing it: importing takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


def check_engine(engine: str, option: str = "--engine ") -> str:
    """``engine`` when it can run here, else a UserError naming the fix (checked before any model
    loads); ``option`` is how the user asked for it (``--engine `` or ``rollout_engine=``)."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine '{engine}'", f"use {' or '.join(option + e for e in ENGINES)}")
    if engine == "vllm" and not vllm_available():
        raise UserError(f"{option}vllm: vLLM is not installed in this environment",
                        f"run `make setup-vllm` and use .venv-vllm/bin/safesteer-bench, or pass {option}hf")
    return engine


@dataclass(frozen=True)
class EngineKey:
    """What one vLLM engine serves: a model folder in one dtype, with LoRA enabled or not."""

    model: str
    dtype: str
    max_lora_rank: int = 0  # 0: LoRA disabled (a LoRA-enabled engine is slower for the base)
    max_num_seqs: int = 16
    eager: bool = True  # skip vLLM's torch.compile warm-up (minutes on 2 busy cores), decode slower


# One vLLM engine at a time: each holds its own copy of the weights and a KV cache, so a new
# one (another model folder, dtype or LoRA setting) replaces the last.
_LIVE: dict[EngineKey, Any] = {}


def _llm(key: EngineKey, seed: int) -> Any:
    if key in _LIVE:
        return _LIVE[key]
    shutdown_engines()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KVCACHE_GIB)
    from vllm import LLM

    started = time.perf_counter()
    lora = {"enable_lora": True, "max_lora_rank": key.max_lora_rank, "max_loras": 1} if key.max_lora_rank else {}
    llm = LLM(model=key.model, tokenizer=key.model, dtype=key.dtype, seed=seed,
              max_num_seqs=key.max_num_seqs, enforce_eager=key.eager, **lora, **_gpu_share())
    log.info("vLLM engine for %s (%s%s) started in %.1f s", key.model, key.dtype,
             ", LoRA" if lora else "", time.perf_counter() - started)
    _LIVE[key] = llm
    return llm


def _gpu_share() -> dict[str, float]:
    """On CUDA, vLLM pre-allocates 90 % of the GPU by default; the run's HF model (base, hooked
    policies, training) shares the same GPU, so vLLM gets half unless
    $SAFESTEER_BENCH_VLLM_GPU_MEMORY (a fraction) says otherwise."""
    import torch

    if not torch.cuda.is_available():
        return {}
    share = os.environ.get("SAFESTEER_BENCH_VLLM_GPU_MEMORY", "0.5")
    try:
        value = float(share)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 0.95:
        from safesteer_bench.errors import UserError

        raise UserError(f"$SAFESTEER_BENCH_VLLM_GPU_MEMORY={share!r} is not a fraction in [0.05, 0.95]",
                        "set it to e.g. 0.5 (vLLM's share of GPU memory) or unset it")
    return {"gpu_memory_utilization": value}


def shutdown_engines() -> None:
    """Stop every live vLLM engine (its engine-core process and memory)."""
    for key in list(_LIVE):
        llm = _LIVE.pop(key)
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm
    gc.collect()


# vLLM accepts these LoRA ranks; an adapter's rank is rounded up to one of them.
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank(adapter_dir: Path) -> int:
    rank = int(json.loads((adapter_dir / "adapter_config.json").read_text())["r"])
    return next((r for r in _LORA_RANKS if r >= rank), rank)


class VLLMEngine:
    """``generate`` through vLLM on ``model_dir`` (plus a peft adapter folder for LoRA students).

    The engine starts on the first ``generate`` (vLLM's start costs ~25 s on CPU), with
    ``max_num_seqs`` = that call's ``cfg.batch_size``, so it batches like the runner's profile.
    """

    def __init__(self, tokenizer: Any, model_dir: str | Path, stop_ids: Sequence[int],
                 dtype: str = DEFAULT_VLLM_DTYPE, adapter_dir: str | Path | None = None,
                 adapter_name: str = "student", system: str | None = None, eager: bool | None = None) -> None:
        self.tokenizer = tokenizer
        self.system = system  # the HF engine's system prompt, when the policy had one
        self.eager = eager_default() if eager is None else eager
        self.model_dir = str(model_dir)
        self.stop_ids = sorted(set(stop_ids))
        self.dtype = dtype
        self.adapter_dir = Path(adapter_dir) if adapter_dir is not None else None
        self.adapter_name = adapter_name
        self.last_stats = GenerationStats()

    @property
    def name(self) -> str:
        """Part of the generation key: vLLM's outputs can differ from HF's (dtype, kernels)."""
        return f"vllm-{self.dtype}"

    def _lora_request(self) -> Any:
        if self.adapter_dir is None:
            return None
        from vllm.lora.request import LoRARequest

        # lora_int_id identifies the adapter inside the engine: one per adapter folder.
        return LoRARequest(self.adapter_name, abs(hash(str(self.adapter_dir))) % (1 << 30) + 1,
                           str(self.adapter_dir))

    def _sampling(self, cfg: GenConfig, index: int) -> Any:
        from vllm import SamplingParams

        common = {"max_tokens": cfg.max_new_tokens, "stop_token_ids": self.stop_ids,
                  "stop": list(cfg.stop_strings) or None, "include_stop_str_in_output": True}
        if cfg.greedy:
            return SamplingParams(temperature=0.0, **common)
        # A seed per prompt: reproducible whatever vLLM's batching (HF seeds per batch instead).
        return SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0, seed=cfg.seed + index, **common)

    def llm(self, cfg: GenConfig) -> Any:
        """The live vLLM engine ``generate(…, cfg)`` uses (started on first use)."""
        rank = lora_rank(self.adapter_dir) if self.adapter_dir is not None else 0
        return _llm(EngineKey(self.model_dir, self.dtype, rank, max(1, cfg.batch_size), self.eager), cfg.seed)

    def generate(self, prompts: Sequence[str], cfg: GenConfig, progress: bool = True) -> list[Completion]:
        start = time.perf_counter()
        llm = self.llm(cfg)
        start_generate = time.perf_counter()
        texts = [chat_text(self.tokenizer, p, self.system) if self.system else chat_text(self.tokenizer, p)
                 for p in prompts]
        # The chat template holds BOS/special tokens already (as in HFEngine.encode).
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        outputs = llm.generate([{"prompt_token_ids": row} for row in ids],
                               [self._sampling(cfg, i) for i in range(len(prompts))],
                               use_tqdm=progress, lora_request=self._lora_request())
        share = (time.perf_counter() - start_generate) / max(1, len(prompts))
        done = [self._completion(p, list(out.outputs[0].token_ids), len(row), share)
                for p, row, out in zip(prompts, ids, outputs)]
        self.last_stats = GenerationStats(len(done), sum(c.prompt_tokens for c in done),
                                          sum(c.new_tokens for c in done), time.perf_counter() - start)
        return done

    def _completion(self, prompt: str, row: list[int], prompt_tokens: int, seconds: float) -> Completion:
        # The same cut and accounting as HFEngine._completion: a stop token ends the text and counts.
        cut = next((i for i, t in enumerate(row) if t in self.stop_ids), None)
        ids = row if cut is None else row[:cut]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(prompt, text, prompt_tokens, len(ids) + (cut is not None), cut is not None, ids, seconds)


def attach_engine(policy: Any, engine: str, base: Any, workdir: Path, dtype: str | None = None) -> str:
    """Give ``policy`` a VLLMEngine when ``engine`` is vllm and the policy can run on it; return
    the engine that will generate its completions ("hf" or ``VLLMEngine.name``), also stored in
    ``policy.info["engine"]``. ``base`` is the run's LoadedModel, ``workdir`` the method's folder
    (where a student's artifact.json points to its weights)."""
    chosen = _attach(policy, engine, base, workdir, dtype)
    policy.info["engine"] = chosen
    return chosen


def _attach(policy: Any, engine: str, base: Any, workdir: Path, dtype: str | None) -> str:
    if engine == "hf":
        return "hf"
    if policy.decoder is not None:
        log.info("%s: its own decoder, so it generates with the HF engine", policy.name)
        return "hf"
    stops = stop_token_ids(base.model, base.tokenizer)
    dtype = dtype or DEFAULT_VLLM_DTYPE
    system = getattr(policy.engine, "system", None)
    if policy.hooks:
        return _attach_steered(policy, base, workdir, stops, dtype, system)
    from safesteer_bench.modeling.models import _safetensors_folder

    base_dir, _ = _safetensors_folder(base.spec)
    if policy.model is base.model:
        policy.engine = VLLMEngine(base.tokenizer, base_dir, stops, dtype, system=system)
        return policy.engine.name
    artifact = json.loads((workdir / "artifact.json").read_text())
    weights = workdir / artifact["weights"]
    if artifact.get("adapter") == "lora" and lora_mode() == "merged" and _has_adapter(policy):
        folder = merged_model_folder(policy.model, policy.name, base_dir, workdir / "vllm-merged", dtype,
                                     artifact["weights_sha256"])
        policy.engine = VLLMEngine(base.tokenizer, folder, stops, dtype, system=system)
    elif artifact.get("adapter") == "lora":
        policy.engine = VLLMEngine(base.tokenizer, base_dir, stops, dtype, adapter_dir=weights,
                                   adapter_name=policy.name, system=system)
    else:
        folder = full_model_folder(policy.model, base.tokenizer, workdir / "vllm-model", artifact["weights_sha256"])
        policy.engine = VLLMEngine(base.tokenizer, folder, stops, dtype, system=system)
    return policy.engine.name


def _attach_steered(policy: Any, base: Any, workdir: Path, stops: Sequence[int], dtype: str,
                    system: str | None) -> str:
    """A hooked policy on the base model: its ``add`` hooks folded into weights (modeling/fold.py)
    and served by vLLM; what cannot fold keeps its hook on HF, and the log says why."""
    from safesteer_bench.modeling.fold import steered_model_folder, unfoldable_reason

    reason = "a student model with hooks" if policy.model is not base.model else None
    reason = reason or unfoldable_reason(policy.model, policy.hooks)
    if reason is not None:
        log.info("%s: residual hooks that do not fold into weights (%s), so it generates with the HF engine",
                 policy.name, reason)
        return "hf"
    folder = steered_model_folder(policy.model, base.tokenizer, policy.hooks, workdir / "vllm-steered", dtype)
    policy.engine = VLLMEngine(base.tokenizer, folder, stops, dtype, system=system)
    policy.info["folded_hooks"] = [h.key() for h in policy.hooks]
    return policy.engine.name


LORA_MODES = ("merged", "adapter")


def lora_mode() -> str:
    """How a LoRA student reaches vLLM: ``merged`` (the adapter merged into the base weights,
    served as a plain model) or ``adapter`` (vLLM's LoRA support). $SAFESTEER_BENCH_VLLM_LORA
    decides; unset: adapter on CUDA, merged on CPU, where vLLM's LoRA kernels are slow (a rank-16
    adapter: 75 tok/s against ~210-400 merged; reports/measured/rollouts.md)."""
    value = os.environ.get("SAFESTEER_BENCH_VLLM_LORA", "").strip().lower()
    if value:
        if value not in LORA_MODES:
            raise UserError(f"$SAFESTEER_BENCH_VLLM_LORA={value!r} is not one of {', '.join(LORA_MODES)}",
                            "set it to merged or adapter, or unset it")
        return value
    import torch

    return "adapter" if torch.cuda.is_available() else "merged"


def torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(name, torch.float32)


def merged_state_dict(student: Any, adapter_name: str, dtype: Any) -> dict[str, Any]:
    """The base model's weights with LoRA adapter ``adapter_name`` merged in (W + ΔW), under the
    base model's own names (peft's ``.base_layer.`` removed, ``lora_*`` dropped), in ``dtype``;
    the student's modules are not touched. A tied output head is left out, as in its checkpoint."""
    import torch

    model = student.get_base_model()
    with torch.no_grad():
        deltas = {f"{name}.weight": module.get_delta_weight(adapter_name) for name, module in model.named_modules()
                  if hasattr(module, "get_delta_weight") and adapter_name in getattr(module, "lora_A", {})}
        out = {}
        for key, value in model.state_dict().items():
            if ".lora_" in key:
                continue
            key = key.replace(".base_layer.", ".")
            merged = value + deltas[key] if key in deltas else value
            out[key] = merged.detach().to(dtype).contiguous()
    if getattr(model.config, "tie_word_embeddings", False):
        out.pop("lm_head.weight", None)
    return out


def merged_model_folder(student: Any, adapter_name: str, base_dir: str | Path, folder: Path, dtype: str,
                        weights_sha256: str) -> Path:
    """A LoRA student merged into its base as a model folder vLLM loads (the base folder's config
    and tokenizer files, one safetensors file of merged weights), written once per weights hash and dtype."""
    import shutil

    from safetensors.torch import save_file

    done = folder / "done.json"
    stamp = {"weights_sha256": weights_sha256, "dtype": dtype, "merged": adapter_name}
    if done.exists() and json.loads(done.read_text()) == stamp:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    done.unlink(missing_ok=True)
    for item in Path(base_dir).iterdir():
        if item.is_file() and not item.name.endswith((".safetensors", ".safetensors.index.json")):
            shutil.copy2(item, folder / item.name)
    save_file(merged_state_dict(student, adapter_name, torch_dtype(dtype)), str(folder / "model.safetensors"))
    done.write_text(json.dumps(stamp))
    return folder


def _has_adapter(policy: Any) -> bool:
    return policy.name in (getattr(policy.model, "peft_config", None) or {})


def full_model_folder(model: Any, tokenizer: Any, folder: Path, weights_sha256: str) -> Path:
    """A full student as a model folder vLLM can load, written once per weights hash.

    The student's own file (``save_full``: safetensors' ``save_model``) keeps only one name of
    tied weights (``lm_head.weight``), which vLLM's loaders skip for tied models; save_pretrained
    keeps the names a model folder has."""
    done = folder / "done.json"
    if done.exists() and json.loads(done.read_text()).get("weights_sha256") == weights_sha256:
        return folder
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    done.write_text(json.dumps({"weights_sha256": weights_sha256}))
    return folder
