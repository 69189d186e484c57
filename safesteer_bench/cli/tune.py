"""``tune``: choose every method's options on dev prompts (tuning.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def add_commands(sub, command) -> None:
    from safesteer_bench.cli.main import _csv, _kv, add_data_flag, add_model_flags, positive_int, seed_int
    from safesteer_bench.tuning.study import CRITERION, DEFAULT_BENCHMARKS

    tune = sub.add_parser(
        "tune", help="choose each method's options on dev prompts (Optuna; equal trials per method)",
        description=f"For each method, an Optuna study over the search space it declares (see `methods "
                    f"--details`), the same number of trials each, scored on the dev split only by "
                    f"'{CRITERION}'. The first trial is the method's defaults. Writes "
                    f"OUT/STUDY_ID/tuned.json; `run --tuned` that file applies the choices. "
                    f"Re-running the same command resumes the search.")
    tune.add_argument("--methods", required=True, type=_csv, help="comma-separated methods to tune")
    tune.add_argument("--model", default="smollm2-135m")
    tune.add_argument("--profile", default="smoke", help="profile of every trial (default: smoke)")
    tune.add_argument("--benchmarks", default=DEFAULT_BENCHMARKS,
                      help=f"benchmarks whose dev split scores trials (default: {DEFAULT_BENCHMARKS})")
    tune.add_argument("--trials", type=positive_int, default=6, help="trials per method (default 6)")
    tune.add_argument("--limit", type=positive_int, default=None,
                      help="dev prompts per benchmark (default: the profile's prompts per benchmark)")
    tune.add_argument("--budget-fraction", type=_fraction, default=0.5,
                      help="fraction of the training budget's steps a trial trains (default 0.5)")
    tune.add_argument("--judge", default=None, help="judge for every benchmark (default: each benchmark's own)")
    tune.add_argument("--method-args", type=_kv, default={}, help="options fixed in every trial")
    tune.add_argument("--out", type=Path, default=Path("runs"))
    tune.add_argument("--study-id", default="tune", help="folder under --out for the study (default: tune)")
    tune.add_argument("--seed", type=seed_int, default=0)
    add_model_flags(tune)
    add_data_flag(tune)
    command("tune")(cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from safesteer_bench.paths import check_run_id
    from safesteer_bench.tuning.study import TuneConfig, Tuner

    cfg = TuneConfig(methods=args.methods, model=args.model, profile=args.profile, benchmarks=args.benchmarks,
                     trials=args.trials, out=args.out, study_id=check_run_id(args.study_id),
                     data_dir=args.data_dir, device=args.device, dtype=args.dtype, seed=args.seed,
                     judge=args.judge, limit=args.limit, budget_fraction=args.budget_fraction,
                     method_args=args.method_args)
    doc = Tuner(cfg).run()
    for method, entry in doc["methods"].items():
        chosen = ", ".join(f"{k}={v}" for k, v in entry["chosen"].items()) or "(nothing to tune)"
        value = "—" if entry["value"] is None else f"{entry['value']:.3f}"
        print(f"{method:<12} {chosen}  [{CRITERION_SHORT}: {value}; {len(entry['trials'])} trial(s)]")
    print(f"tuned: {cfg.out / cfg.study_id / 'tuned.json'}  (apply with: run --tuned <that file>)")
    sys.stdout.flush()
    return 0


CRITERION_SHORT = "dev refusal (harmful) − over-refusal"
