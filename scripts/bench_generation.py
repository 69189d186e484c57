"""Generation throughput: our engine vs a plain ``model.generate`` call on the same prompts and batch.

Prints tokens/s at batch sizes 1, 8 and 32 on SmolLM2-135M (or --model). Both sides use greedy
decoding, left padding, the chat template and the same max new tokens; new tokens are counted up to
and including the first end-of-turn token. Not a test: figures vary with the machine's load.

    python scripts/bench_generation.py [--model smollm2-135m] [--max-new-tokens 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from safesteer_bench.data import load_alpaca, seeded_subset
from safesteer_bench.modeling.generation import GenConfig, HFEngine, chat_text, stop_token_ids
from safesteer_bench.modeling.models import load_model, resolve_model


def plain_generate(model, tokenizer, prompts, max_new_tokens) -> int:
    texts = [chat_text(tokenizer, p) for p in prompts]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    stops = stop_token_ids(model, tokenizer)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
    new = out[:, enc["input_ids"].shape[1]:].tolist()
    return sum(next((i + 1 for i, t in enumerate(row) if t in stops), len(row)) for row in new)


def best_of(repeats: int, fn) -> tuple[float, int]:
    """Fastest of ``repeats`` runs (the least disturbed by other load) and its token count."""
    best = (float("inf"), 0)
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = fn()
        best = min(best, (time.perf_counter() - start, tokens))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    loaded = load_model(resolve_model(args.model))
    print(f"model {args.model} on {loaded.device}/{loaded.dtype}, loaded in {time.perf_counter() - started:.2f} s")
    engine = HFEngine(loaded.model, loaded.tokenizer)
    print(f"{'batch':>5} {'prompts':>7} {'engine tok/s':>13} {'plain tok/s':>12} {'ratio':>6}")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        prompts = [p.text for p in seeded_subset(load_alpaca(args.data_dir), max(batch, 4), seed=1)]
        cfg = GenConfig(max_new_tokens=args.max_new_tokens, batch_size=batch)
        plain_generate(loaded.model, loaded.tokenizer, prompts[:batch], 4)  # warm-up
        t_eng, n_eng = best_of(args.repeats, lambda: sum(c.new_tokens for c in engine.generate(prompts, cfg, progress=False)))
        t_plain, n_plain = best_of(args.repeats, lambda: sum(
            plain_generate(loaded.model, loaded.tokenizer, prompts[i:i + batch], args.max_new_tokens)
            for i in range(0, len(prompts), batch)))
        eng, plain = n_eng / t_eng, n_plain / t_plain
        print(f"{batch:>5} {len(prompts):>7} {eng:>13.1f} {plain:>12.1f} {eng / plain:>6.2f}")


if __name__ == "__main__":
    main()
