"""Measured generation throughput per device, the source of the dry run's wall-time estimate.

Every run records what its plain generation stages achieved (generated tokens / decoding
seconds, from the per-row seconds the engines write) in ``<cache>/throughput.json``, keyed by
the device as this machine names it (``cuda: NVIDIA H200``, ``cpu: x86_64 x 2 threads``), the
dtype and the engine. The dry run of a later plan looks up the closest measurement: same device
name, dtype and engine first, then the same device kind, then the checked-in CPU reference
(reports/measured/README.md); without any, the wall time is reported as unknown rather than
guessed from a spec sheet.

Scaling between models is by parameter count (decoding is memory-bound: tokens/s per sequence
goes as bandwidth / weight bytes) and between batch sizes linearly up to the measured batch;
both are rough and the dry run says the figure is an estimate.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

# reports/measured/README.md: SmolLM2-135M fp32, HF engine, batch 32, 2 CPU cores.
REFERENCE = {"device": "cpu", "dtype": "float32", "engine": "hf", "tokens_per_s": 165.0,
             "params": 134_515_008, "batch_size": 32}
KEEP = 20  # measurements kept per (device, dtype, engine)
# Below this, per-token overhead (Python, kernel launches) dominates and the per-parameter
# scaling would be meaningless: the tests' tiny random models are not recorded.
MIN_PARAMS = 10_000_000


@dataclass(frozen=True)
class Measurement:
    device: str  # "cuda: <name>" or "cpu: <machine> x <threads> threads"
    dtype: str
    engine: str
    tokens_per_s: float
    params: int
    batch_size: int
    when: float = 0.0

    @property
    def kind(self) -> str:
        return self.device.split(":", 1)[0]


def device_name(device: str) -> str:
    """How this machine's ``device`` is named in the store (model of GPU; CPU arch and threads)."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else 0
        return f"cuda: {torch.cuda.get_device_name(index)}"
    return f"cpu: {platform.machine() or 'unknown'} x {torch.get_num_threads()} threads"


def store_path() -> Path:
    from safesteer_bench.paths import cache_dir

    return cache_dir() / "throughput.json"


def _load(path: Path) -> list[Measurement]:
    from safesteer_bench.pipeline.store import read_json_dict

    doc = read_json_dict(path) or {}
    out = []
    for item in doc.get("measurements", []) if isinstance(doc.get("measurements"), list) else []:
        try:
            m = Measurement(**item)
        except TypeError:
            continue  # a damaged or foreign entry is dropped, not trusted
        if isinstance(m.tokens_per_s, (int, float)) and m.tokens_per_s > 0 and isinstance(m.params, int) \
                and m.params > 0 and isinstance(m.batch_size, int) and m.batch_size > 0:
            out.append(m)
    return out


def record(m: Measurement, path: Path | None = None) -> None:
    """Add one measurement (kept: the latest ``KEEP`` per device, dtype and engine)."""
    from filelock import FileLock

    from safesteer_bench.pipeline.store import write_json_atomic

    path = path or store_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=10):
            items = _load(path) + [m]
            same = [x for x in items if (x.device, x.dtype, x.engine) == (m.device, m.dtype, m.engine)]
            drop = set(map(id, same[:-KEEP]))
            write_json_atomic(path, {"measurements": [asdict(x) for x in items if id(x) not in drop]})
    except (OSError, TimeoutError) as exc:  # a read-only cache must not fail a finished stage
        log.debug("throughput not recorded: %s", exc)


def from_rows(rows: Iterable[dict[str, Any]]) -> tuple[int, float]:
    """(generated tokens, decoding seconds) of generation rows that carry their seconds."""
    tokens, seconds = 0, 0.0
    for r in rows:
        s, n = r.get("seconds"), r.get("new_tokens")
        if isinstance(s, (int, float)) and s > 0 and isinstance(n, int):
            tokens, seconds = tokens + n, seconds + s
    return tokens, seconds


def measure(device: str, dtype: str, engine: str, params: int, batch_size: int,
            rows: list[dict[str, Any]], min_tokens: int = 256) -> Measurement | None:
    """A measurement from a stage's rows, or None when too few tokens were made to mean anything."""
    tokens, seconds = from_rows(rows)
    if tokens < min_tokens or seconds <= 0 or params < MIN_PARAMS:
        return None
    return Measurement(device_name(device), dtype, engine, tokens / seconds, params, batch_size, time.time())


def lookup(device: str, dtype: str, engine: str, params: int,
           path: Path | None = None) -> tuple[Measurement | None, str]:
    """The closest measurement for this device and how close it is (said in the dry run): the
    nearest device match first, then the model size nearest ``params``, then the latest."""
    items = _load(path or store_path()) if os.environ.get("SAFESTEER_BENCH_NO_THROUGHPUT") != "1" else []
    name = device_name(device)
    kind = name.split(":", 1)[0]
    for label, match in (("measured on this device", lambda m: (m.device, m.dtype, m.engine) == (name, dtype, engine)),
                         ("measured on this device, another dtype/engine", lambda m: m.device == name),
                         (f"measured on another {kind} device", lambda m: m.kind == kind)):
        found = [m for m in items if match(m)]
        if found:
            return min(found, key=lambda m: (abs(math.log(m.params / params)), -m.when)), label
    if kind == "cpu":
        return Measurement(**REFERENCE), "the checked-in CPU reference (reports/measured)"
    return None, "no throughput measured on this kind of device yet"


def tokens_per_second(m: Measurement, params: int, batch_size: int) -> float:
    """``m`` scaled to a model of ``params`` parameters decoding ``batch_size`` rows at once."""
    batch = min(batch_size, m.batch_size) / m.batch_size if m.batch_size else 1.0
    return m.tokens_per_s * (m.params / params) * batch
