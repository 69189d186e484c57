"""Policy: what a method produces and what benchmarks consume (docs/architecture.md §2).

A Policy is a model (possibly with a LoRA adapter), the hooks that must be active while it runs,
and a fingerprint. Every cache key uses the fingerprint, never a bare model name.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from safesteer_bench.modeling.generation import Completion, GenConfig, GenerationEngine, HFEngine
from safesteer_bench.modeling.hooks import ResidualHook, installed


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Policy:
    """A runnable model view.

    ``hooks`` are installed and the adapter switched per ``adapter_enabled`` for the duration of
    every ``generate`` call and every ``active()`` block (lm-eval and inspect-ai use ``active``).
    ``decoder`` replaces plain generation for methods whose decoding is not a forward pass
    (alignbeam); log-likelihood requests still go through ``model``.
    """

    name: str
    model: Any
    tokenizer: Any
    fingerprint: str
    hooks: tuple[ResidualHook, ...] = ()
    adapter_enabled: bool = True
    decoder: Callable[[Sequence[str], GenConfig, bool], list[Completion]] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    engine: GenerationEngine | None = None

    def __post_init__(self) -> None:
        if self.engine is None:
            self.engine = HFEngine(self.model, self.tokenizer)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Hooks installed and the adapter in the right state; both restored on exit."""
        with ExitStack() as stack:
            if not self.adapter_enabled and hasattr(self.model, "disable_adapter"):
                stack.enter_context(self.model.disable_adapter())
            stack.enter_context(installed(self.model, self.hooks))
            yield

    def generate(self, prompts: Sequence[str], cfg: GenConfig, progress: bool = True) -> list[Completion]:
        if self.decoder is not None:
            return self.decoder(prompts, cfg, progress)
        with self.active():
            return self.engine.generate(prompts, cfg, progress)

    def key(self, cfg: GenConfig) -> str:
        """Cache key for this policy's outputs under ``cfg``: fingerprint + decoding settings, and
        the engine when it is not HF's (vLLM's outputs can differ: bf16, other kernels), so
        completions made by one engine are never reused for another."""
        engine = getattr(self.engine, "name", "hf")
        if engine == "hf" or self.decoder is not None:
            return fingerprint(self.fingerprint, cfg.key())  # as before engines existed
        return fingerprint(self.fingerprint, cfg.key(), engine)
