"""SafeSteer ablations on SmolLM2-135M (issue 8): one run per variant, then one Markdown table.

    python scripts/ablations.py --out reports/smollm2-135m-ablations          # all, ~1 h on 2 cores
    python scripts/ablations.py --out DIR --only ref,tail --profile smoke     # a subset, smaller

Every variant is ``safesteer-bench run`` with the same profile, benchmarks, limits and seed; only
the SafeSteer option named in VARIANTS differs from the reference (``layer`` and
``loss_variant=renormalize`` as in the reference comparison). Runs are resumable (their run dirs
live under ``runs/``); the table is rebuilt from their results.json, so a re-invocation after an
interruption costs only what was not finished. Written to ``OUT/ABLATIONS.md`` with each run's
results.json copied to ``OUT/<variant>.results.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REFERENCE = {"layer": "16", "loss_variant": "renormalize"}
# variant: (what it changes, method-args overrides, extra run flags, methods)
VARIANTS: dict[str, tuple[str, dict[str, str], list[str], str]] = {
    "ref": ("reference: |S| = 50, renormalize, LoRA, auto direction mode", {}, [], "base,steering,safesteer"),
    "s10": ("|S| = 10", {"token_set_size": "10"}, [], "safesteer"),
    "s200": ("|S| = 200", {"token_set_size": "200"}, [], "safesteer"),
    "partial": ("loss variant: partial", {"loss_variant": "partial"}, [], "safesteer"),
    "tail": ("loss variant: tail-bucket", {"loss_variant": "tail-bucket"}, [], "safesteer"),
    "full": ("full fine-tuning instead of LoRA", {}, ["--adapter", "full"], "safesteer"),
    "spec": ("the spec-prompted teacher (teacher=spec: the safety specification as system prompt, no hook) "
             "instead of the steered one", {"teacher": "spec"}, [], "safesteer"),
    "prompts": ("direction from prompts (difference of means at the last prompt token); steering too",
                {"direction_mode": "prompts"}, [], "steering,safesteer"),
}


def run_variant(name: str, args: argparse.Namespace) -> Path | None:
    _, overrides, flags, methods = VARIANTS[name]
    method_args = ",".join(f"{k}={v}" for k, v in {**REFERENCE, **overrides}.items())
    run_id = f"{args.prefix}-{name}"
    cmd = [str(Path(sys.executable).with_name("safesteer-bench")), "run", "--methods", methods,
           "--model", args.model, "--profile", args.profile, "--benchmarks", args.benchmarks,
           "--limit", str(args.limit), "--capability-limit", str(args.capability_limit),
           "--method-args", method_args, "--run-id", run_id, *flags, *(["--dry-run"] if args.dry_run else [])]
    print("$", " ".join(cmd), flush=True)
    started = time.perf_counter()
    code = subprocess.run(cmd).returncode
    print(f"{name}: {time.perf_counter() - started:.0f} s" + (f", failed (exit {code}), left out" if code else ""),
          flush=True)
    # A variant the model cannot support (prompts mode on a model that never refuses) is left
    # out of the table with the run's one-line error above, not a reason to lose the others.
    return None if code else Path("runs") / run_id / "results.json"


def table(paths: dict[str, Path]) -> str:
    """One row per (variant, method): SafeSteer everywhere, plus base and steering of the runs
    that have them (their direction differs in ``prompts``)."""
    from safesteer_bench.reporting.scores import SUMMARY_COLUMNS, markdown_table, summary_rows

    rows = []
    for name, path in paths.items():
        results = json.loads(path.read_text())
        rows += [[name, method, *cells] for method, cells in summary_rows(results)]
    return markdown_table(["variant", "method", *SUMMARY_COLUMNS], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for ABLATIONS.md and results")
    parser.add_argument("--only", default=",".join(VARIANTS), help=f"variants (default all: {','.join(VARIANTS)})")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--benchmarks", default="advbench,alpaca-heldout,arc-easy")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--capability-limit", type=int, default=100)
    parser.add_argument("--prefix", default="abl", help="run ids are PREFIX-VARIANT")
    parser.add_argument("--dry-run", action="store_true", help="print each variant's plan, run nothing")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    ran = {name: run_variant(name, args) for name in names}
    paths = {name: path for name, path in ran.items() if path is not None}
    if args.dry_run or not paths:
        return 0 if len(paths) == len(names) else 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, path in paths.items():
        shutil.copy(path, args.out / f"{name}.results.json")
    rows = "\n".join(f"- `{n}`: {VARIANTS[n][0]}" + ("" if n in paths else " — failed, see the log") for n in names)
    text = (f"# SafeSteer ablations ({args.model}, profile {args.profile}, {args.benchmarks}, "
            f"--limit {args.limit}, --capability-limit {args.capability_limit})\n\n{rows}\n\n{table(paths)}\n")
    (args.out / "ABLATIONS.md").write_text(text)
    print(text)
    return 0 if len(paths) == len(names) else 1


if __name__ == "__main__":
    raise SystemExit(main())
