#!/usr/bin/env python
"""Dev-only comparison of the two coef=auto rules (issue 19 item 4): ``threshold`` (the default:
the smallest c reaching target_refusal) vs ``harmonic`` (the highest harmonic mean of refusal,
coherence and diversity).

Both rules run on the direction's validation prompts (TDC 2023, never an evaluation set) with a
stored direction; then the steered model at each chosen c is measured on the **dev** split of
AdvBench (harmful) and XSTest-safe (benign): clf-judged refusal rates, rbr refusal quality,
distinct-2, self-BLEU and the base model's perplexity. Writes JSON and prints a markdown table.

    nice -n 10 .venv/bin/python scripts/coef_rule_dev.py \\
        --direction runs/smollm2-135m-quick/seed-0/methods/_shared/direction --out reports/measured/coef_rule.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from safesteer_bench.evaluation import diversity as d  # noqa: E402
from safesteer_bench.evaluation.benchmark import resolve_benchmarks  # noqa: E402
from safesteer_bench.evaluation.judges import get_judge  # noqa: E402
from safesteer_bench.evaluation.rbr import grade_rows  # noqa: E402
from safesteer_bench.inference import steering as st  # noqa: E402
from safesteer_bench.modeling.generation import GenConfig  # noqa: E402
from safesteer_bench.modeling.models import load_model, resolve_model  # noqa: E402
from safesteer_bench.modeling.policy import Policy  # noqa: E402
from safesteer_bench.profiles import get_profile  # noqa: E402


def dev_figures(base, direction, coef: float, sets: dict, tokens: int) -> dict:
    """The steered model at ``coef`` on the dev prompts of each set."""
    hooks = (st.ResidualHook(direction.layer, direction.direction, float(coef), "add"),)
    steered = Policy(f"steering@{coef}", base.model, base.tokenizer, f"coef-{coef}", hooks=hooks)
    plain = Policy("base", base.model, base.tokenizer, "base")
    judge = get_judge("clf")
    out = {}
    for name, (prompts, harmful) in sets.items():
        texts = [c.text for c in steered.generate(prompts, GenConfig(max_new_tokens=tokens, batch_size=16),
                                                 progress=False)]
        refused = [v.refused for v in judge.judge(prompts, texts)]
        rows = [{"prompt": p, "completion": t, "harmful_prompt": harmful} for p, t in zip(prompts, texts)]
        out[name] = {"refusal_rate": sum(refused) / len(refused), "refusal_quality": sum(grade_rows(rows)) / len(rows),
                     "distinct_2": d.sample_distinct(texts, 2), "self_bleu": d.self_bleu(texts),
                     "perplexity": d.perplexity(d.completion_nll(plain, prompts, texts)), "n": len(prompts)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--direction", type=Path, required=True, help="a saved direction folder")
    parser.add_argument("--profile", default="quick", help="its direction_val_prompts are the coef prompts")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--dev-prompts", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    base = load_model(resolve_model(args.model))
    direction = st.SteeringDirection.load(args.direction)
    profile = get_profile(args.profile)
    data = st.direction_prompts(args.data_dir, profile.direction_prompts, profile.direction_val_prompts,
                                direction.info.get("seed", 0))
    prompts = data.harmful_val
    chosen, searches = {}, {}
    for rule in st.COEF_RULES:
        t0 = time.perf_counter()
        chosen[rule], searches[rule] = st.choose_coef(base, direction, prompts, rule=rule)
        searches[rule] = {"tried": searches[rule], "seconds": round(time.perf_counter() - t0, 1)}
    sets = {}
    for bench, harmful in (("advbench", True), ("xstest-safe", False)):
        (spec,) = resolve_benchmarks(bench)
        sets[bench] = ([p.text for p in spec.prompts(args.data_dir, args.dev_prompts, 0, split="dev")], harmful)
    dev = {rule: dev_figures(base, direction, c, sets, args.tokens) for rule, c in chosen.items()}
    doc = {"model": args.model, "direction": str(args.direction), "layer": direction.layer,
           "coef_prompts": len(prompts), "chosen": chosen, "searches": searches, "dev": dev,
           "seconds": round(time.perf_counter() - started, 1)}
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
