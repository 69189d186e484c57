"""Where things live on disk (the cache dir) and the checks on paths that come from users."""

from __future__ import annotations

import os
import re
from pathlib import Path

from safesteer_bench.errors import UserError

# A run id names one folder under --out: one path component, no separators, no leading dot
# (hidden, ".", ".."), no characters a shell, a URL or an HTML attribute would treat specially.
RUN_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,127}")


# Names the runs folder itself uses: a run directory must never take their place.
RESERVED_RUN_IDS = frozenset({"index.sqlite", "index.sqlite-journal", "index.sqlite-wal", "index.sqlite-shm",
                              "leaderboard.html"})
#: Seeds reach numpy (>= 0) and torch.manual_seed (< 2**64); 2**32 keeps every library happy.
MAX_SEED = 2**32 - 1


def cache_dir() -> Path:
    """``$SAFESTEER_BENCH_CACHE`` or ``~/.cache/safesteer-bench``."""
    env = os.environ.get("SAFESTEER_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "safesteer-bench"


def check_run_id(run_id: str) -> str:
    """``run_id`` when it is one safe path component, else a UserError (exit 2)."""
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id) or run_id in RESERVED_RUN_IDS:
        raise UserError(f"invalid run id {run_id!r}: a run id is one folder name under --out",
                        "use letters, digits and _ . + = - (not starting with '.' or '-', at most 128 "
                        "characters, no '/', not index.sqlite or leaderboard.html), e.g. --run-id my-run-1")
    return run_id


def check_seed(seed: int) -> int:
    """``seed`` when every library can use it (0 .. 2**32-1), else a UserError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"seed {seed!r} is out of range", f"use a whole number from 0 to {MAX_SEED}")
    return seed


def safe_component(text: str) -> str:
    """``text`` made into a valid run-id component (for ids derived from model names or paths)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text).lstrip(".-") or "model"
    return cleaned[:80]


def check_output_dir(path: Path, flag: str = "--out") -> Path:
    """``path`` when it is (or can become) a writable directory; checked without creating it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder", f"pass a folder for {flag} (it is created if missing)")
    probe = path
    while not probe.exists():  # the nearest existing ancestor decides whether it can be created
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{flag} {path} cannot be created: {probe} is a file", f"pass a folder for {flag}")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path} is not writable ({probe} is read-only)",
                        f"pass a writable folder for {flag}, or fix its permissions")
    return path
