"""Where things live on disk: the cache dir and the default runs dir."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SAFESTEER_BENCH_CACHE`` or ``~/.cache/safesteer-bench``."""
    env = os.environ.get("SAFESTEER_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "safesteer-bench"
