"""Subcommands over finished runs: ``check`` (CI regression gate), ``leaderboard`` and ``summary``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def band_width(text: str) -> float:
    """An argparse type: a finite number >= 0 (inf would pass everything, nan fail everything)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add_commands(sub, command) -> None:
    # argparse %-formats help= strings (hence "%%" there) but a description only when it holds
    # "%(prog)", so descriptions spell a plain "%".
    check = sub.add_parser(
        "check", help="compare a run with a baseline results.json (exit 1 on regressions)",
        description="Exit 1 and print every metric outside its tolerance band; exit 0 otherwise. "
                    "Default band: the baseline's 95 % CI widened by --margin on each side. Shares "
                    "(rates, accuracies) are shown in % and --margin / --tolerance are percentage points "
                    "for them; perplexity and KL keep their own units. "
                    "Refuses (exit 2) a baseline or run with no metrics and a run planned differently "
                    "from its baseline.")
    check.add_argument("run", type=Path, help="run directory or its results.json")
    check.add_argument("--against", type=Path, required=True, help="baseline results.json (or its run dir)")
    check.add_argument("--tolerance", type=band_width, default=None,
                       help="absolute tolerance instead of the CI band, in percentage points for shares "
                            "(e.g. 5)")
    check.add_argument("--margin", type=band_width, default=None, help="added to each side of the CI band, in percentage points for shares (default 2)")
    check.add_argument("--all", action="store_true", help="print passing metrics too")
    command("check")(cmd_check)

    board = sub.add_parser("leaderboard", help="render one HTML page ranking every (model, method) in a runs dir")
    board.add_argument("runs_dir", type=Path, nargs="?", default=Path("runs"))
    board.add_argument("--out", type=Path, default=None, help="output file (default: RUNS_DIR/leaderboard.html)")
    command("leaderboard")(cmd_leaderboard)

    summary = sub.add_parser("summary", help="print a run's score table (Markdown): scores with 95 %% CIs "
                             "and the compute each method spent",
                             description="Print a run's score table (Markdown): scores with 95 % CIs and "
                                         "the compute each method spent.")
    summary.add_argument("run", type=Path, help="run directory or its results.json")
    shape = summary.add_mutually_exclusive_group()
    shape.add_argument("--brief", action="store_true",
                       help="the headline columns: scores, rbr refusal quality on harmful prompts, dominance")
    shape.add_argument("--style", action="store_true",
                       help="refusal style, diversity (self-BLEU, set distinct-2) and coherence (perplexity)")
    command("summary")(cmd_summary)


def cmd_check(args: argparse.Namespace) -> int:
    from safesteer_bench.reporting.gate import DEFAULT_MARGIN, check_run, format_checks

    checks = check_run(args.run, args.against, margin=DEFAULT_MARGIN if args.margin is None else args.margin,
                       tolerance=args.tolerance)
    failed = [c for c in checks if not c.ok]
    if failed or args.all:
        print(format_checks(checks, only_failures=not args.all))
    print(f"{len(checks) - len(failed)} of {len(checks)} metrics within tolerance; "
          f"{'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from safesteer_bench.errors import UserError
    from safesteer_bench.reporting.leaderboard import render

    if not args.runs_dir.is_dir():
        problem = "is not a folder" if args.runs_dir.exists() else "does not exist"
        raise UserError(f"runs directory {args.runs_dir} {problem}", "pass the --out folder of your runs")
    out = render(args.runs_dir, args.out)
    print(f"leaderboard: {out}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from safesteer_bench.reporting.gate import load_results
    from safesteer_bench.reporting.scores import brief_table, style_summary_table, summary_table

    table = brief_table if args.brief else style_summary_table if args.style else summary_table
    print(table(load_results(args.run)))
    return 0
