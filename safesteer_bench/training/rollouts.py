"""The on-policy trainers' rollouts through vLLM (``rollout_engine=vllm``; docs/architecture.md §8).

:class:`VLLMRollouts` is a ``GenerationEngine`` for ``OnPolicyDistiller.sample``: each call first
syncs the LoRA student's *current* weights into one running vLLM engine, then samples there. Two
ways to sync, both through vLLM's public surface (no reach into its worker processes' objects):

The mode is ``modeling.vllm_engine.lora_mode()`` ($SAFESTEER_BENCH_VLLM_LORA), the same choice the
evaluation engine makes for LoRA students:

- ``merged`` (the CPU default): the adapter is merged into the base weights in memory (W + ΔW,
  the trained model unchanged), written as one safetensors file in the engine's dtype, and
  loaded in place with the workers' ``reload_weights`` RPC; the engine then samples as a plain
  model. This is TRL's way (merge, push the weights into the engine), with the file as the data
  plane. vLLM's LoRA kernels are slow on CPU (measured: 75 tok/s with a rank-16 adapter against
  107 for HF), so a merged model wins there.
- ``adapter`` (the CUDA default): the adapter (a few MB) is saved to a fresh folder and passed
  as a new ``LoRARequest`` id, so vLLM loads this step's adapter instead of its cached copy; on
  a GPU the LoRA kernels are fast and writing a 7B model every step is not.

vLLM samples in bf16 by default while the student trains in fp32: the rollouts are then very
slightly off-policy (as with TRL's vLLM rollouts). Full students (``--adapter full``) and
multi-process launches are refused (:func:`check_rollout_engine`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from safesteer_bench.errors import UserError
from safesteer_bench.modeling.generation import Completion, GenConfig, GenerationStats
from safesteer_bench.modeling.vllm_engine import (
    DEFAULT_VLLM_DTYPE, LORA_MODES, VLLMEngine, check_engine, lora_mode, merged_state_dict, shutdown_engines,
    torch_dtype,
)

log = logging.getLogger(__name__)


def check_rollout_engine(engine: str, adapter: str, world_size: int) -> None:
    """A UserError naming the fix when ``rollout_engine=engine`` cannot apply to this training."""
    if engine == "hf":
        return
    if adapter != "lora":
        raise UserError(f"rollout_engine={engine} syncs LoRA adapters into vLLM; this budget trains a "
                        f"{adapter} student", "use rollout_engine=hf with --adapter full")
    if world_size > 1:
        raise UserError(f"rollout_engine={engine} under a {world_size}-process launch would start one vLLM "
                        "engine per process", "use rollout_engine=hf under accelerate launch")


class VLLMRollouts:
    """Samples from the LoRA student ``adapter_name`` of ``student`` with vLLM, synced per call."""

    def __init__(self, student: Any, tokenizer: Any, adapter_name: str, base_dir: str | Path,
                 stop_ids: Sequence[int], dtype: str | None = None, sync: str | None = None) -> None:
        self.student = student
        self.tokenizer = tokenizer
        self.adapter_name = adapter_name
        self.base_dir = str(base_dir)
        self.stop_ids = list(stop_ids)
        self.dtype = dtype or DEFAULT_VLLM_DTYPE
        self.mode = sync or lora_mode()
        if self.mode not in LORA_MODES:
            raise ValueError(f"unknown sync {self.mode!r}; choose one of {LORA_MODES}")
        self.folder = Path(tempfile.mkdtemp(prefix="safesteer-rollouts-"))
        self.syncs = 0
        self.sync_seconds = 0.0
        self.last_stats = GenerationStats()

    @property
    def name(self) -> str:
        return f"vllm-{self.dtype}"

    def _engine(self, adapter_dir: Path | None) -> Any:
        return VLLMEngine(self.tokenizer, self.base_dir, self.stop_ids, self.dtype, adapter_dir=adapter_dir,
                          adapter_name=f"{self.adapter_name}-sync{self.syncs}")

    def _sync_adapter(self) -> Path:
        from safesteer_bench.training.students import save_lora

        previous = self.folder / f"sync-{self.syncs - 1}"
        saved = save_lora(self.student, self.adapter_name, self.folder / f"sync-{self.syncs}")
        shutil.rmtree(previous, ignore_errors=True)
        return saved

    def _sync_merged(self, llm: Any) -> None:
        from safetensors.torch import save_file

        state = merged_state_dict(self.student, self.adapter_name, torch_dtype(self.dtype))
        save_file(state, str(self.folder / "model.safetensors"))
        llm.collective_rpc("reload_weights", kwargs={"weights_path": str(self.folder)})

    def generate(self, prompts: Sequence[str], cfg: GenConfig, progress: bool = True) -> list[Completion]:
        started = time.perf_counter()
        self.syncs += 1
        if self.mode == "adapter":
            engine = self._engine(self._sync_adapter())
        else:
            engine = self._engine(None)
            self._sync_merged(engine.llm(cfg))  # starts the engine on the first call
        self.sync_seconds += time.perf_counter() - started
        out = engine.generate(prompts, cfg, progress)
        self.last_stats = engine.last_stats
        return out

    def close(self) -> None:
        """Remove the synced weights; a merged sync also stops the engine, which now holds the
        student's weights under the base model's folder and must not serve the base model."""
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.mode == "merged" and self.syncs:
            shutdown_engines()
        log.info("vLLM rollouts (%s): %d syncs, %.1f s syncing (engine start included)", self.mode, self.syncs,
                 self.sync_seconds)


def rollout_engine_for(engine: str, student: Any, base: Any, adapter_name: str, sync: str | None = None) -> Any:
    """``None`` for the HF engine (the trainer's default), else a :class:`VLLMRollouts` on the run's
    base model folder (``base`` is the run's LoadedModel; ``sync``: one of ``LORA_MODES``, default
    ``modeling.vllm_engine.lora_mode()``)."""
    if engine == "hf":
        return None
    from safesteer_bench.modeling.generation import stop_token_ids
    from safesteer_bench.modeling.models import _safetensors_folder

    check_engine("vllm", "rollout_engine=")
    base_dir, _ = _safetensors_folder(base.spec)
    return VLLMRollouts(student, base.tokenizer, adapter_name, base_dir, stop_token_ids(base.model, base.tokenizer),
                        sync=sync)
