"""The Method interface and registry (docs/architecture.md §2).

A method turns the base model into a Policy. Training methods spend the run's shared Budget in
``prepare``; inference methods may compute an artifact there too (a steering direction). The
runner caches ``prepare``'s output under the method's work dir keyed by its fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from safesteer_bench.modeling.models import LoadedModel
from safesteer_bench.modeling.policy import Policy
from safesteer_bench.profiles import Profile
from safesteer_bench.registry import Registry


@dataclass
class MethodContext:
    """Everything a method may read while preparing and building its policy."""

    base: LoadedModel
    profile: Profile
    workdir: Path  # methods/<name>/ inside the run dir; artifacts go here
    data_dir: Path | None = None
    seed: int = 0
    budget: Any = None  # the run's shared Budget (training methods)
    options: dict[str, Any] | None = None  # the method's options as given (CLI strings or Python values)
    shared_dir: Path | None = None  # run-level folder for artifacts several methods reuse
    config: Any = None  # ``options`` parsed into the method's options dataclass (options.MethodOptions)

    def __post_init__(self) -> None:
        # The steering direction is computed once per run and shared by the steering baseline and
        # every teacher-based method, so it lives beside the per-method folders.
        if self.shared_dir is None:
            self.shared_dir = self.workdir.parent / "_shared"


class Method(Protocol):
    name: str
    kind: str  # "training" | "inference"
    description: str

    def prepare(self, ctx: MethodContext) -> dict[str, Any]:
        """Compute and save the artifact under ``ctx.workdir``; return its JSON description."""
        ...

    def policy(self, ctx: MethodContext, artifact: dict[str, Any]) -> Policy:
        """Build the runnable policy from a (possibly reloaded) artifact."""
        ...


METHODS: Registry[Method] = Registry("method", "methods")


def method_context(name: str, base: LoadedModel, profile: Profile, workdir: Path, *, options: dict[str, Any],
                   **kwargs: Any) -> MethodContext:
    """A context for method ``name`` whose ``options`` are the keys it reads, parsed once."""
    from safesteer_bench.options import method_args_for, options_class

    own = method_args_for(name, options)
    config = options_class(get_method(name)).parse(own, name)
    return MethodContext(base, profile, workdir, options=own, config=config, **kwargs)


def get_method(name: str) -> Method:
    import safesteer_bench.methods  # noqa: F401  (registers every method)
    from safesteer_bench.registry import load_plugins

    load_plugins("safesteer_bench.methods", METHODS)

    method = METHODS.get(name)
    return method() if isinstance(method, type) else method
