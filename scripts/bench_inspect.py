"""Throughput of the inspect-ai generation path vs the bare engine on the same prompts.

Both paths generate the same AdvBench prompts with the same Policy, greedy, the same max new tokens
and engine batch size. The inspect path is what the runner does per chunk: one inspect Task through
the ``safesteer`` provider, with its ``.eval`` log written (to a temporary folder). Runs alternate
(bare, inspect, bare, …) so background load hits both alike; the best and the median of
``--repeats`` runs are reported, with the first inspect call (inspect's one-time start-up in a
process) shown apart. Outputs of the two paths are compared token for token.

    python scripts/bench_inspect.py [--model smollm2-135m] [--prompts 32] [--max-new-tokens 32]
                                    [--batch-size 16] [--repeats 3] [--data-dir ../shared/datasets]

Not a test: figures vary with the machine's load. Target: the inspect path costs <= 10 % tokens/s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    from safesteer_bench.data import load_advbench, seeded_subset
    from safesteer_bench.modeling.generation import GenConfig
    from safesteer_bench.evaluation.inspect_provider import run_task
    from safesteer_bench.modeling.models import load_model, resolve_model
    from safesteer_bench.modeling.policy import Policy, fingerprint

    loaded = load_model(resolve_model(args.model), args.device)
    policy = Policy("base", loaded.model, loaded.tokenizer, fingerprint(loaded.identity, "base"))
    prompts = seeded_subset(load_advbench(args.data_dir), args.prompts, seed=0)
    cfg = GenConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    print(f"model {args.model} on {loaded.device}/{loaded.dtype}; {len(prompts)} AdvBench prompts, "
          f"{args.max_new_tokens} new tokens, engine batch {args.batch_size}, greedy")

    with tempfile.TemporaryDirectory(prefix="bench-inspect-") as log_dir:
        def bare() -> tuple[float, list]:
            start = time.perf_counter()
            out = policy.generate([p.text for p in prompts], cfg, progress=False)
            return time.perf_counter() - start, out

        def inspect() -> tuple[float, list]:
            start = time.perf_counter()
            out = run_task(policy, prompts, cfg, task_name="advbench", log_dir=log_dir).completions
            return time.perf_counter() - start, out

        policy.generate([p.text for p in prompts[:4]], cfg, progress=False)  # torch warm-up
        cold, _ = inspect()  # inspect's one-time start-up (imports, registries) happens here
        times: dict[str, list[float]] = {"bare": [], "inspect": []}
        outputs: dict[str, list] = {}
        for _ in range(args.repeats):
            for name, fn in (("bare", bare), ("inspect", inspect)):
                seconds, out = fn()
                times[name].append(seconds)
                outputs[name] = out
        tokens = sum(c.new_tokens for c in outputs["bare"])
        same = [(a.text, a.new_tokens) for a in outputs["bare"]] == [(b.text, b.new_tokens) for b in outputs["inspect"]]

    print(f"new tokens per run: {tokens}; identical outputs on both paths: {same}")
    print(f"{'path':<9}{'best s':>8}{'median s':>10}{'best tok/s':>12}{'median tok/s':>14}")
    for name, ts in times.items():
        print(f"{name:<9}{min(ts):>8.2f}{statistics.median(ts):>10.2f}{tokens / min(ts):>12.1f}"
              f"{tokens / statistics.median(ts):>14.1f}")
    best = 1 - min(times["bare"]) / min(times["inspect"])
    median = 1 - statistics.median(times["bare"]) / statistics.median(times["inspect"])
    print(f"inspect path throughput cost: {100 * best:.1f} % (best of {args.repeats}), "
          f"{100 * median:.1f} % (median); target <= 10 %")
    print(f"first inspect call in this process (includes inspect's start-up): {cold:.2f} s "
          f"= {tokens / cold:.1f} tok/s")


if __name__ == "__main__":
    main()
