#!/usr/bin/env python
"""Build the pool of this project's own replies that the annotators label (issue 25).

    # 1. every method of a run on the dev split of every safety / over-refusal set (quick length)
    python scripts/own_replies.py generate --model smollm2-135m --out runs --run-id own-smollm2 --limit 4
    # 2. longer replies from the same finished policies, on other dev prompts
    python scripts/own_replies.py long --run runs/own-smollm2 --max-new-tokens 160 --per-set 2
    # 3. one JSONL of (prompt, reply) rows with where each came from, ids stable, order shuffled
    python scripts/own_replies.py collect runs/own-smollm2 runs/own-gemma --out runs/own-pool.jsonl

Only the **dev** split of each evaluation set is used, so the judge that later trains on some of
these rows never sees a reply to a prompt that a reported (test) number scores. Generation is the
pipeline's own (`safesteer_bench.run` with ``split="dev"``), so the replies are exactly what a run
of that profile produces; the long replies come from the same stored policies
(`inspect_provider.run_policy`) with a larger token cap.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ALL_METHODS = "base,steering,sft,global-kl,safesteer,alignbeam,spec-distill,prompt-control"
SETS = "safety-7,over-refusal"


def generate(args: argparse.Namespace) -> None:
    import safesteer_bench as ssb

    ssb.run(methods=args.methods, model=args.model, benchmarks=SETS, profile=args.profile, split="dev",
            limit=args.limit, out=str(args.out), run_id=args.run_id, drift=False, second_judge="none",
            data_dir=args.data_dir, seed=args.seed)


def _rows_of(run: Path) -> list[dict[str, Any]]:
    """Judged sample rows of every method and set of a finished run (quick-length replies)."""
    plan = json.loads((run / "plan.json").read_text())
    out = []
    for method_dir in sorted((run / "samples").iterdir()):
        for f in sorted(method_dir.glob("*.jsonl")):
            if f.name.endswith(".gen.jsonl"):
                continue
            for r in map(json.loads, f.read_text().splitlines()):
                out.append({"model": plan["model"], "method": method_dir.name, "benchmark": f.stem,
                            "harmful_prompt": bool(r["harmful_prompt"]), "prompt": r["prompt"],
                            "reply": r["completion"], "max_new_tokens": plan["profile"]["max_new_tokens"],
                            "new_tokens": r.get("new_tokens"), "finished": r.get("finished")})
    return out


def long_replies(args: argparse.Namespace) -> None:
    """Longer replies of the run's policies on dev prompts the run did not use."""
    import torch

    from safesteer_bench.cli.evaluate import load_plan
    from safesteer_bench.evaluation.inspect_provider import run_policy
    from safesteer_bench.modeling.generation import GenConfig

    torch.manual_seed(0)
    plan = load_plan(args.run, Path(args.data_dir))
    used = {(r["benchmark"], r["prompt"]) for r in _rows_of(args.run)}
    rng = random.Random(args.seed)
    picks: list[tuple[str, Any]] = []
    for spec in plan.safety:
        pool = [p for p in spec.prompts(plan.config.data_dir, None, 0, split="dev") if (spec.name, p.text) not in used]
        rng.shuffle(pool)
        picks += [(spec.name, p, spec.is_harmful(p)) for p in pool[: args.per_set]]
    out = args.run / "long.jsonl"
    done = {(r["method"], r["benchmark"], r["prompt"]) for r in map(json.loads, out.read_text().splitlines())} \
        if out.exists() else set()
    cfg = GenConfig(max_new_tokens=args.max_new_tokens, batch_size=8)
    for method in args.methods.split(","):
        todo = [(b, p, h) for b, p, h in picks if (method, b, p.text) not in done]
        if not todo:
            continue
        policy = run_policy(str(args.run / method))
        completions = policy.generate([p.text for _, p, _ in todo], cfg, progress=True)
        with out.open("a") as f:
            for (b, p, h), c in zip(todo, completions):
                f.write(json.dumps({"model": plan.config.model, "method": method, "benchmark": b,
                                    "harmful_prompt": bool(h), "prompt": p.text, "reply": c.text,
                                    "max_new_tokens": args.max_new_tokens, "new_tokens": c.new_tokens,
                                    "finished": c.finished}) + "\n")
        print(f"{method}: {len(todo)} long replies", flush=True)


def collect(args: argparse.Namespace) -> None:
    rows: list[dict[str, Any]] = []
    for run in args.runs:
        rows += _rows_of(run)
        if (run / "long.jsonl").exists():
            rows += [json.loads(line) for line in (run / "long.jsonl").read_text().splitlines()]
    if args.methods:
        rows = [r for r in rows if r["method"] in args.methods.split(",")]
    seen = {json.loads(line)["id"] for pool_file in args.exclude for line in pool_file.read_text().splitlines()}
    pool = []
    for r in rows:
        key = "\x1f".join([r["model"], r["method"], r["benchmark"], r["prompt"], str(r["max_new_tokens"])])
        rid = hashlib.sha256(key.encode()).hexdigest()[:12]
        if rid in seen:
            continue
        seen.add(rid)
        pool.append({"id": rid, **r})
    random.Random(0).shuffle(pool)  # annotators read rows in an order that hides method and model
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pool))
    print(f"{len(pool)} rows -> {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--model", default="smollm2-135m")
    g.add_argument("--methods", default=ALL_METHODS)
    g.add_argument("--profile", default="quick")
    g.add_argument("--limit", type=int, default=4)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", type=Path, default=Path("runs"))
    g.add_argument("--run-id", required=True)
    g.add_argument("--data-dir", default="../shared/datasets")
    lg = sub.add_parser("long")
    lg.add_argument("--run", type=Path, required=True)
    lg.add_argument("--methods", default=ALL_METHODS)
    lg.add_argument("--max-new-tokens", type=int, default=160)
    lg.add_argument("--per-set", type=int, default=1)
    lg.add_argument("--seed", type=int, default=1)
    lg.add_argument("--data-dir", default="../shared/datasets")
    c = sub.add_parser("collect")
    c.add_argument("runs", type=Path, nargs="+")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--methods", default=None, help="only these methods (comma-separated)")
    c.add_argument("--exclude", type=Path, nargs="*", default=[], help="pools whose rows are left out (earlier waves)")
    args = p.parse_args()
    {"generate": generate, "long": long_replies, "collect": collect}[args.cmd](args)


if __name__ == "__main__":
    main()
