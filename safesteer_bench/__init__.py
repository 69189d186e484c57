"""safesteer-bench: compare LLM safety-alignment methods side by side.

The Python API (docs/architecture.md §9): :func:`run` plans, validates and runs a comparison and
returns its results; :func:`load_results` reads a finished run into a pandas DataFrame; methods,
benchmarks and judges register through :data:`METHODS`-style registries or entry points. Imported
lazily, so ``import safesteer_bench`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["run", "load_results", "read_config", "UserError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("run", "load_results", "read_config"):
        from safesteer_bench import api

        return getattr(api, name)
    if name == "UserError":
        from safesteer_bench.errors import UserError

        return UserError
    raise AttributeError(f"module 'safesteer_bench' has no attribute {name!r}")
