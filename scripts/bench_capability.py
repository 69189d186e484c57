"""Capability generation cost: one lm-eval generation task at several generation batch sizes.

lm-eval decodes a batch until its last row stops (HumanEval: up to 1,024 tokens), so the batch
size of ``generate_until`` requests sets the cost of GSM8K and HumanEval on CPU. Prints seconds,
requests and the task's score per batch size for the base model (no response cache). Not a test:
figures vary with the machine's load.

    python scripts/bench_capability.py [--task humaneval] [--limit 20] [--batch-sizes 8,64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from safesteer_bench.evaluation.benchmark import BENCHMARKS
from safesteer_bench.evaluation.capability import capability_metrics, run_capability
from safesteer_bench.modeling.models import load_model, resolve_model
from safesteer_bench.modeling.policy import Policy

import safesteer_bench.benchmarks  # noqa: F401  (registers the specs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="humaneval", help="a capability benchmark (see `benchmarks`)")
    parser.add_argument("--limit", type=int, default=20, help="documents")
    parser.add_argument("--batch-sizes", default="8,64")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    loaded = load_model(resolve_model(args.model))
    policy = Policy("base", loaded.model, loaded.tokenizer, "bench-capability")
    spec = BENCHMARKS.get(args.task)
    print(f"{'batch':>5} {'seconds':>8} {'requests':>9}  score")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            result = run_capability(policy, [spec], args.limit, args.data_dir, Path(out),
                                    allow_code_execution=True, use_cache=False,
                                    generate_batch_size=batch)[spec.name]
            seconds = time.perf_counter() - started
        metrics = capability_metrics(result)
        score = ", ".join(f"{k} {v['value']:.3f}" for k, v in metrics.items() if v.get("value") is not None)
        print(f"{batch:>5} {seconds:>8.1f} {sum(result.get('requests', {}).values()):>9}  {score}", flush=True)


if __name__ == "__main__":
    main()
