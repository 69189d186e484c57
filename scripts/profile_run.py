"""Where a run spends its time: one `safesteer-bench run` under cProfile, then its stage timings
(results.json) and the functions that cost most, grouped so the algorithm's own work (training
steps, generation forward passes) is told apart from overhead around it.

Not a test: figures vary with the machine's load. Writes the raw profile beside the run
(``<out>/<run-id>/profile.pstats``; open it with ``python -m pstats`` or snakeviz).

    python scripts/profile_run.py --profile demo --methods base,steering,sft,global-kl,safesteer,alignbeam \\
        --benchmarks advbench,jailbreakbench,xstest,alpaca-heldout,arc-easy [-- any other run flags]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

from safesteer_bench.cli import main as cli_main

# Buckets of the profile's self time: which part of the stack a function belongs to.
BUCKETS = (
    ("torch ops (forward/backward math)", ("torch/", "built-in method torch.", "<built-in method torch")),
    ("transformers (model code, generate loop)", ("transformers/",)),
    ("tokenizers", ("tokenizers", "tokenization_")),
    ("safesteer_bench", ("safesteer_bench/",)),
    ("inspect-ai / lm-eval", ("inspect_ai/", "lm_eval/")),
    ("scikit-learn / scipy / numpy", ("sklearn/", "scipy/", "numpy/")),
)


def bucket_of(location: str) -> str:
    return next((name for name, keys in BUCKETS if any(k in location for k in keys)), "other (python, I/O, waits)")


def self_time_by_bucket(stats: pstats.Stats) -> dict[str, float]:
    totals: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        name = bucket_of(f"{filename}:{func}")
        totals[name] = totals.get(name, 0.0) + tottime
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def top_own_functions(stats: pstats.Stats, n: int) -> list[tuple[str, float, int]]:
    """This project's functions by cumulative time (what each costs with everything it calls)."""
    rows = []
    for (filename, line, func), (_cc, ncalls, _tt, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "safesteer_bench/" in filename:
            short = filename.split("safesteer_bench/", 1)[1]
            rows.append((f"{short}:{line} {func}", cumtime, ncalls))
    return sorted(rows, key=lambda r: -r[1])[:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--methods", default="base,steering,sft,global-kl,safesteer,alignbeam")
    ap.add_argument("--benchmarks", default="advbench,jailbreakbench,xstest,alpaca-heldout,arc-easy")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", type=Path, default=Path("runs"))
    ap.add_argument("--run-id", default="profile")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("rest", nargs="*", help="further `run` flags, after --")
    args = ap.parse_args()
    argv = ["run", "--methods", args.methods, "--model", args.model, "--profile", args.profile,
            "--benchmarks", args.benchmarks, "--out", str(args.out), "--run-id", args.run_id, *args.rest]
    profiler = cProfile.Profile()
    start = time.perf_counter()
    code = profiler.runcall(cli_main, argv)
    wall = time.perf_counter() - start
    run_dir = args.out / args.run_id
    profiler.dump_stats(str(run_dir / "profile.pstats"))
    stats = pstats.Stats(profiler, stream=io.StringIO())
    timing = json.loads((run_dir / "results.json").read_text()).get("timing", {}) if code == 0 else {}
    print(f"\n{' '.join(argv)}\nexit {code}, wall {wall:.0f} s (under cProfile, which slows Python-heavy code)")
    print("\nstages (results.json timing, seconds):")
    for stage, seconds in (timing.get("stages") or {}).items():
        print(f"  {stage:<12} {seconds:>8.1f}")
    print("\nself time by part of the stack (seconds):")
    for name, seconds in self_time_by_bucket(stats).items():
        print(f"  {name:<42} {seconds:>8.1f}")
    print(f"\nthis project's functions by cumulative time (top {args.top}):")
    for name, cumtime, calls in top_own_functions(stats, args.top):
        print(f"  {cumtime:>8.1f} s  {calls:>7} calls  {name}")
    return code


if __name__ == "__main__":
    sys.exit(main())
