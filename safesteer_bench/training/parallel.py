"""Data-parallel training through accelerate: one Budget, several processes (docs/architecture.md §8).

Launched under ``accelerate launch`` / ``torchrun`` (``WORLD_SIZE`` > 1), the trainers of
``training/distill.py`` run each optimizer step of the *same* Budget on every process:

- **rollouts are replicated**: every process samples the whole step's completions with the same
  seed on the same weights (DDP keeps them identical), so the sequences are exactly the ones a
  single process samples. Splitting the sampling instead would change which random numbers each
  row draws (``HFEngine`` seeds per generation batch), i.e. change single-process numerics. On a
  GPU, decoding is memory-bound, so sampling 2x the rows costs far less than 2x the time (and a
  future FSDP student would need its collective forwards in lockstep during ``generate`` anyway);
- **the loss is split**: process ``r`` of ``W`` takes a contiguous share of the step's sequences
  (SFT: of its prompts), computes teacher and student passes on it and back-propagates its part of
  the step's mean (divided by ``n / W`` so that DDP's gradient *average* equals the one-process
  gradient of the mean over all ``n`` sequences); accelerate/DDP all-reduce the gradients;
- clipping, AdamW and the schedule then run identically on every process; the logged loss and the
  trained/forward token counts are summed over processes (accelerate's ``reduce``).

Only the main process writes artifacts, logs and prints; the others wait for it
(``wait_for_everyone``). Without a launcher, :class:`DataParallel` is inert: every method below is
the exact single-process code path (same calls, same numbers).

``--adapter full`` is data-parallel too: a full copy of the student (and its AdamW state) per
process, DDP, on CPU (gloo) and CUDA alike. **FSDP is refused** (an accelerate config with FSDP
exits 2 before the model loads): sharding the full student needs a gathered state dict to save it
and ``generate`` on the sharded module for the rollouts, and neither has been run on a GPU yet
(issue 18). Until then a student that does not fit one device per process cannot be trained.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from safesteer_bench.errors import UserError

log = logging.getLogger(__name__)

#: The CPU launch: ``accelerate launch --cpu`` starts one process whatever ``--num_processes``
#: says (unless given an MPI hostfile); ``--multi_gpu`` with ``ACCELERATE_USE_CPU=1`` starts them
#: through torchrun, talking over gloo.
CPU_LAUNCH = "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m safesteer_bench"


def launched() -> bool:
    """True under a multi-process launcher (accelerate launch, torchrun): ``WORLD_SIZE`` > 1."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


@dataclass
class DataParallel:
    """accelerate's Accelerator when launched on several processes; inert (None) otherwise."""

    accelerator: Any = None

    @property
    def enabled(self) -> bool:
        return self.accelerator is not None

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes if self.enabled else 1

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.enabled else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        return self.enabled and "FSDP" in str(self.accelerator.distributed_type)

    def share(self, n: int) -> range:
        """This process's contiguous share of ``n`` items (all of them on one process)."""
        if not self.enabled:
            return range(n)
        if n < self.world_size:
            raise UserError(f"a training step has {n} sequences for {self.world_size} processes",
                            "launch at most as many processes as sequences per step (prompts x samples)")
        return range(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def divisor(self, n: int) -> float | int:
        """What each process divides its loss sum by so that DDP's gradient average is the
        gradient of the mean over all ``n`` (exactly ``n`` on one process)."""
        return n / self.world_size if self.enabled else n

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, Any]:
        """(model for the grad passes, optimizer): DDP/FSDP-wrapped under a launcher. The
        schedule is not prepared: accelerate would step it once per process per step."""
        if not self.enabled:
            return model, optimizer
        check_supported()
        return self.accelerator.prepare(model, optimizer)

    def sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Gradient all-reduce only on a process's last micro-batch of the step (no_sync before)."""
        if not self.enabled or last:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(model)

    def backward(self, loss: torch.Tensor) -> None:
        if self.enabled:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    def clip(self, params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
        if self.enabled:
            return self.accelerator.clip_grad_norm_(params, max_norm)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def sum(self, value: float) -> float:
        """``value`` summed over processes (itself on one process)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.reduce(tensor, reduction="sum")[0])

    def wait(self) -> None:
        if self.enabled:
            self.accelerator.wait_for_everyone()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process runs the block first (it writes shared files), the others after it."""
        if not self.enabled:
            yield
            return
        with self.accelerator.main_process_first():
            yield

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model) if self.enabled else model

    def release(self) -> None:
        """Drop accelerate's references to the prepared model and optimizer (the next method of
        a run prepares its own)."""
        if self.enabled:
            self.accelerator.free_memory()


_CURRENT: DataParallel | None = None


def data_parallel() -> DataParallel:
    """This process's :class:`DataParallel` (made once; inert unless launched on several processes).

    The Accelerator is made before any model loads: under a GPU launch it selects this process's
    device, so the default ``cuda`` device is the process's own GPU.
    """
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = DataParallel(_accelerator()) if launched() else DataParallel()
        if _CURRENT.enabled:
            log.info("data-parallel training: process %d of %d (%s, %s)", _CURRENT.rank, _CURRENT.world_size,
                     _CURRENT.accelerator.distributed_type, _CURRENT.accelerator.device)
    return _CURRENT


def _accelerator() -> Any:
    from accelerate import Accelerator

    # Without CUDA the processes talk over gloo on the CPU.
    return Accelerator(cpu=not torch.cuda.is_available())


def check_supported(seeds: Any = None) -> None:
    """Refuse, before any model loads, what the multi-process path does not do."""
    par = data_parallel()
    if not par.enabled:
        return
    if seeds:
        raise UserError("--seeds runs several sub-runs; a multi-process launch trains one",
                        "launch once per seed (--seed N), or run --seeds without accelerate launch")
    if par.fsdp:
        raise UserError("FSDP training is not supported yet (sharded students are neither saved nor "
                        "sampled from); only data-parallel (DDP) training is",
                        "launch without FSDP in the accelerate config: LoRA or --adapter full students, "
                        "one full copy per process")


__all__ = ["CPU_LAUNCH", "DataParallel", "data_parallel", "launched", "check_supported", "train_before_run"]


def train_before_run(runner: Any) -> bool:
    """``run`` under a multi-process launch: every process trains the plan's training methods
    together; then only the main process goes on (it evaluates, reusing the artifacts); True there.

    The main process writes ``plan.json`` / ``budget.json`` first (under the run's lock); the others
    read the same Budget from ``budget.json``. A method whose stored artifact matches its key is
    skipped by every process alike.
    """
    import time

    from safesteer_bench.methods.api import get_method
    from safesteer_bench.pipeline.store import read_json_dict, run_lock, write_json_atomic

    par = data_parallel()
    if par.is_main:
        with run_lock(runner.dir):
            runner.begin()
    par.wait()
    for name in runner.plan.config.methods:
        if get_method(name).kind != "training":
            continue
        ctx, key = runner.context(name), runner.method_key(name)
        done = read_json_dict(ctx.workdir / "artifact.json")
        if done is not None and done.get("request_key") == key:
            continue
        started = time.perf_counter()
        artifact = {**get_method(name).prepare(ctx), "request_key": key}
        if par.is_main:
            write_json_atomic(ctx.workdir / "artifact.json", artifact)
            runner._tick("train", started)
        par.wait()
    return par.is_main
