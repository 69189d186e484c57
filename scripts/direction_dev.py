#!/usr/bin/env python
"""Dev-split experiment behind the steering direction's selection rule (issue 15 item 2).

For every candidate block of the ``responses`` direction (the mode SmolLM2 needs), this prints and
saves (JSON) what each selection rule would see, and what the steered teacher then does on the
**dev** split of the evaluation sets (never test):

- ``add_harmful``: the old rule (first-token refusal log-odds at the last prompt position);
- ``gen_harmful`` / ``gen_harmless``: keyword refusal rate of greedy teacher generations on the
  direction's own validation prompts (TDC harmful, Alpaca harmless);
- ``kl_harmless``: KL(base || steered) of the first response token on the harmless validation
  prompts (the harmless-side constraint, as Arditi et al. do for ablation);
- ``dev_advbench`` / ``dev_alpaca``: the clf judge's refusal rate of the steered teacher on the
  dev split of AdvBench and Alpaca-heldout (what a good teacher should do);
- with ``--vote``: the top of the safety-token vote S for a few blocks.

    .venv/bin/python scripts/direction_dev.py --profile quick --out reports/direction-dev/quick.json
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

from safesteer_bench.evaluation.benchmark import resolve_benchmarks  # noqa: E402
from safesteer_bench.modeling.generation import GenConfig, HFEngine, chat_text  # noqa: E402
from safesteer_bench.modeling.hooks import ResidualHook, decoder_layers, installed  # noqa: E402
from safesteer_bench.evaluation.judges import get_judge  # noqa: E402
from safesteer_bench.modeling.models import load_model, resolve_model  # noqa: E402
from safesteer_bench.profiles import get_profile  # noqa: E402
from safesteer_bench.inference import steering as st  # noqa: E402


def generate(base, prompts, hooks, tokens, bs):
    with installed(base.model, hooks):
        return [c.text for c in HFEngine(base.model, base.tokenizer).generate(
            prompts, GenConfig(max_new_tokens=tokens, batch_size=bs), progress=False)]


def rate(judge, prompts, responses):
    return sum(v.refused for v in judge.judge(list(prompts), list(responses))) / max(1, len(prompts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--dev-limit", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--layers", default="", help="comma list (default: every candidate block)")
    ap.add_argument("--vote", default="", help="comma list of blocks whose safety-token vote to print")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    profile = get_profile(args.profile)
    base = load_model(resolve_model("smollm2-135m"))
    model, tok = base.model, base.tokenizer
    bs = profile.batch_size
    n_layers = len(decoder_layers(model))
    max_layer = int(st.MAX_LAYER_FRACTION * n_layers)
    data = st.direction_prompts(args.data_dir, profile.direction_prompts, profile.direction_val_prompts, args.seed)
    cands = st.candidate_directions(model, tok, data, "responses", max_layer, bs)
    ids = st.refusal_token_ids(tok)
    kw, clf = get_judge("keywords"), get_judge("clf")
    dev_harm = [p.text for p in resolve_benchmarks("advbench")[0].prompts(args.data_dir, args.dev_limit, 0, "dev")]
    dev_safe = [p.text for p in resolve_benchmarks("alpaca-heldout")[0].prompts(args.data_dir, args.dev_limit, 0, "dev")]
    harmless_chat = [chat_text(tok, p) for p in data.harmless_val]
    base_logits = st.last_token_logits(model, tok, harmless_chat, bs)
    rows = []
    base_row = {"layer": None, "dev_advbench": rate(clf, dev_harm, generate(base, dev_harm, (), args.tokens, bs)),
                "dev_alpaca": rate(clf, dev_safe, generate(base, dev_safe, (), args.tokens, bs))}
    print(json.dumps(base_row), flush=True)
    layers = [int(x) for x in args.layers.split(",") if x] or list(range(max_layer))
    for layer in layers:
        t0 = time.perf_counter()
        hook = (ResidualHook(layer, cands[layer, 0], 1.0, "add"),)
        row = {"layer": layer, "norm": float(cands[layer, 0].norm())}
        row["add_harmful"] = float(st.refusal_score(model, tok, data.harmful_val, bs, hook).mean())
        logits = st.last_token_logits(model, tok, harmless_chat, bs, hook)
        row["kl_harmless"] = float(st.kl_divergence(base_logits, logits).mean())
        val = data.harmful_val + data.harmless_val
        out = generate(base, val, hook, 16, bs)
        n = len(data.harmful_val)
        row["gen_harmful"] = rate(kw, data.harmful_val, out[:n])
        row["gen_harmless"] = rate(kw, data.harmless_val, out[n:])
        h = generate(base, dev_harm, hook, args.tokens, bs)
        s = generate(base, dev_safe, hook, args.tokens, bs)
        row["dev_advbench"], row["dev_alpaca"] = rate(clf, dev_harm, h), rate(clf, dev_safe, s)
        row["sample_harmful"], row["sample_harmless"] = h[0][:120], s[0][:120]
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    votes = {}
    if args.vote:
        from safesteer_bench.training.token_set import TokenSetConfig, harmless_candidates, select_safety_tokens

        cfg = TokenSetConfig(prompts=profile.token_set_prompts, samples=profile.token_set_samples)
        pool = harmless_candidates(args.data_dir, 2 * cfg.prompts, args.seed)
        for layer in [int(x) for x in args.vote.split(",")]:
            hook = (ResidualHook(layer, cands[layer, 0], 1.0, "add"),)
            s = select_safety_tokens(model, tok, hook, pool, cfg, args.seed, progress=False)
            votes[layer] = s.strings[:15]
            print(layer, s.strings[:15], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"profile": args.profile, "seed": args.seed, "dev_limit": args.dev_limit,
                                          "tokens": args.tokens, "base": base_row, "rows": rows,
                                          "votes": votes}, indent=1) + "\n")


if __name__ == "__main__":
    main()
