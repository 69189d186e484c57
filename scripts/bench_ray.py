"""Wall time of a small sweep: the Ray executor on 2 local workers (one thread each) against the
sequential executor (one thread), same plan, fresh run directories; checks the results agree.

    python scripts/bench_ray.py                       # sft,safesteer x seeds 0,1 on SmolLM2, smoke, layer=12
    python scripts/bench_ray.py --methods base,steering,sft,safesteer --seeds 0 --limit 10

Each run is the real command line (``safesteer-bench run ... --executor X``) in a fresh process,
so Ray's start-up and the workers' imports are counted. Prints both wall times and their ratio
(issue 18 target: <= 0.9 on a 2-core machine). Figures: reports/measured/ray.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(executor: str, out: Path, args: argparse.Namespace) -> tuple[float, dict]:
    argv = [sys.executable, "-m", "safesteer_bench.cli", "run", "--methods", args.methods, "--model", args.model,
            "--benchmarks", args.benchmarks, "--profile", args.profile, "--limit", str(args.limit),
            "--seeds", args.seeds, "--out", str(out), "--executor", executor]
    if args.method_args:
        argv += ["--method-args", args.method_args]
    if executor != "sequential":
        argv += ["--workers", str(args.workers)]
    # One torch thread in the sequential process and in every Ray worker (the executor pins them too).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{executor} run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    results_path = next(p for p in out.glob("*/results.json"))
    return wall, json.loads(results_path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="sft,safesteer")
    parser.add_argument("--seeds", default="0,1", help="with the methods, the jobs of the sweep (default: 2 x 2)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--benchmarks", default="advbench")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    # A pinned block: the direction (one per seed, in the shared jobs) is made without the block
    # search, whose generation on 1 thread would otherwise dominate both wall times.
    parser.add_argument("--method-args", default="layer=12")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        seq_wall, seq = run("sequential", Path(tmp) / "sequential", args)
        print(f"sequential (1 thread):                {seq_wall:7.1f} s", flush=True)
        ray_wall, ray = run("ray", Path(tmp) / "ray", args)
        print(f"ray ({args.workers} local workers, 1 thread each): {ray_wall:7.1f} s", flush=True)
    jobs = len(args.methods.split(",")) * len(args.seeds.split(","))
    print(f"ratio ray / sequential: {ray_wall / seq_wall:.2f}x  ({jobs} method jobs: {args.methods} x seeds {args.seeds}; "
          f"{args.model}, {args.profile}, {args.benchmarks} limit {args.limit}, {args.method_args or 'defaults'})")
    same = seq["results"] == ray["results"]
    print(f"results identical: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
