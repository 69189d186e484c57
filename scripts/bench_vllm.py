"""Generated tokens/s: the HF engine (fp32, bf16) vs the vLLM engine (bf16), side by side.

Same prompts (AdvBench, seeded), same chat template, greedy, same max new tokens, at the runner's
batch sizes (the profiles' ``batch_size``: 16 for smoke/quick, 64 for demo; vLLM's
``max_num_seqs`` is set to the batch size). Tokens are counted as the engines account them
(``Completion.new_tokens``: up to and including the first end-of-turn token). vLLM's engine start
(process spawn, weight load, torch.compile warm-up unless ``--eager``) is reported apart from its
tokens/s, and an "incl. start" column charges it to the one generation call.
``--steer LAYER``: the same for a steered policy (an ``add`` hook at block LAYER): HF with the
hook installed, vLLM on the weights with the hook folded in (modeling/fold.py; the fold's one-off
write is reported in the start column). The direction is random with a typical norm: the cost of
a constant added to the residual stream does not depend on its value.
Not a test: figures vary with the machine's load. Needs vLLM (.venv-vllm):

    .venv-vllm/bin/python scripts/bench_vllm.py [--prompts 64] [--max-new-tokens 64] [--batch-sizes 16,64]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from safesteer_bench.data import load_advbench, seeded_subset
from safesteer_bench.modeling.generation import GenConfig, HFEngine, stop_token_ids
from safesteer_bench.modeling.models import _safetensors_folder, load_model, resolve_model
from safesteer_bench.modeling.vllm_engine import VLLMEngine, shutdown_engines


HOOKS: tuple = ()  # set by --steer: the hooks every HF generation runs with


def timed(engine, prompts, cfg) -> tuple[float, int]:
    from safesteer_bench.modeling.hooks import installed

    start = time.perf_counter()
    with installed(engine.model, HOOKS) if HOOKS and hasattr(engine, "model") else nullcontext():
        out = engine.generate(prompts, cfg, progress=False)
    return time.perf_counter() - start, sum(c.new_tokens for c in out)


def hf_rows(loaded, prompts, cfg) -> list[tuple[str, float, int, float]]:
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        loaded.model.to(dtype)
        engine = HFEngine(loaded.model, loaded.tokenizer)
        engine.generate(prompts[:2], GenConfig(max_new_tokens=4, batch_size=2), progress=False)  # warm-up
        seconds, tokens = timed(engine, prompts, cfg)
        rows.append((f"hf {str(dtype).removeprefix('torch.')}", seconds, tokens, 0.0))
    loaded.model.to(torch.float32)
    return rows


def vllm_row(loaded, folder, prompts, cfg, eager: bool) -> tuple[str, float, int, float]:
    start = time.perf_counter()
    if HOOKS:  # the steered policy: its hook folded into a model folder (written once, timed as start)
        from safesteer_bench.modeling.fold import steered_model_folder

        folder = steered_model_folder(loaded.model, loaded.tokenizer, HOOKS, Path("runs/bench-steered"), "bfloat16")
    engine = VLLMEngine(loaded.tokenizer, folder, stop_token_ids(loaded.model, loaded.tokenizer),
                        "bfloat16", eager=eager)
    engine.generate(prompts[:2], GenConfig(max_new_tokens=4, batch_size=cfg.batch_size), progress=False)
    started = time.perf_counter() - start  # engine start + a 2-prompt warm-up
    seconds, tokens = timed(engine, prompts, cfg)
    shutdown_engines()
    return (f"vllm bfloat16{' eager' if eager else ''}", seconds, tokens, started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="16,64")
    parser.add_argument("--eager", choices=["no", "yes", "both"], default="both",
                        help="vLLM with torch.compile (no), without (yes) or both")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the HF engine (default 1: vLLM's CPU backend binds one core on "
                             "a 2-core machine, and 2 OpenMP threads on a shared 2-core machine crawl)")
    parser.add_argument("--data-dir", default=os.environ.get("SAFESTEER_BENCH_DATA"))
    parser.add_argument("--steer", type=int, default=None, metavar="LAYER",
                        help="measure a steered policy (an add hook at block LAYER) instead of the base model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    loaded = load_model(resolve_model(args.model))
    folder, _ = _safetensors_folder(loaded.spec)
    if args.steer is not None:
        global HOOKS
        from safesteer_bench.modeling.hooks import ResidualHook

        # A random direction (norm 8, arbitrary): the cost of adding a constant does not depend on it.
        direction = torch.randn(loaded.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
        HOOKS = (ResidualHook(args.steer, direction / direction.norm() * 8.0),)
    prompts = [p.text for p in seeded_subset(load_advbench(args.data_dir), args.prompts, seed=1)]
    eager = {"no": [False], "yes": [True], "both": [False, True]}[args.eager]
    lines = [f"{'batch':>5} {'engine':<20} {'new tok':>8} {'gen s':>7} {'tok/s':>7} {'vs hf fp32':>10} "
             f"{'start s':>8} {'tok/s incl. start':>18}"]
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        cfg = GenConfig(max_new_tokens=args.max_new_tokens, batch_size=batch)
        hf = hf_rows(loaded, prompts, cfg)
        reference = hf[0][2] / hf[0][1]
        measured = iter(hf + [None] * len(eager))  # vLLM rows are measured as they are printed
        for row in (r or vllm_row(loaded, folder, prompts, cfg, e) for r, e in zip(measured, [None] * 2 + eager)):
            name, seconds, tokens, start = row
            name = f"{name} steered" if HOOKS else name
            rate = tokens / seconds
            lines.append(f"{batch:>5} {name:<20} {tokens:>8} {seconds:>7.1f} {rate:>7.1f} {rate / reference:>9.2f}x "
                         f"{start:>8.1f} {tokens / (seconds + start):>18.1f}")
            print(lines[-1], flush=True)
    what = f"steered at block {args.steer}, " if HOOKS else ""
    print(f"\n{args.model}, {what}{len(prompts)} AdvBench prompts x {args.max_new_tokens} new tokens, greedy; "
          f"HF torch threads {args.threads}\n" + "\n".join(lines))


if __name__ == "__main__":  # vLLM's engine core is a spawned process: the guard is required
    main()
