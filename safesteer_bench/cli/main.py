"""The ``safesteer-bench`` command line.

Bad input raises UserError anywhere below; ``main`` prints it as one line and exits 2 (with the
traceback only under ``--debug``). Heavy imports (torch, transformers) happen inside commands, so
``--help`` and listing commands stay fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, NoReturn

from safesteer_bench.errors import UserError

EPILOG = """examples:
  safesteer-bench run --methods base --model smollm2-135m --benchmarks advbench --profile smoke
  safesteer-bench run --methods base,steering,safesteer --model smollm2-135m --profile quick
  safesteer-bench models | methods | benchmarks | judges
  safesteer-bench data verify --data-dir ../shared/datasets
"""

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
# Modules that add their own subcommands: each defines ``add_commands(sub, command)`` where ``sub``
# is the subparsers object and ``command`` the registering decorator below.
COMMAND_MODULES = ["safesteer_bench.cli.train", "safesteer_bench.cli.evaluate", "safesteer_bench.cli.results",
                   "safesteer_bench.cli.tune"]


def command(name: str):
    def decorate(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = fn
        return fn

    return decorate


class OneLineParser(argparse.ArgumentParser):
    """argparse with the project's error format: one line naming the problem and the fix, exit 2
    (argparse's default prints the whole usage block first)."""

    lazy_epilog: Callable[[], str] | None = None  # built only when help is printed (imports every method)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} — see `{self.prog} --help`\n")

    def format_help(self) -> str:
        if self.lazy_epilog is not None:
            try:
                self.epilog = self.lazy_epilog()
            except UserError as exc:  # a broken plugin: help still prints, naming it
                self.epilog = f"(method options unavailable: {exc})"
            self.lazy_epilog = None
        return super().format_help()


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def seed_int(text: str) -> int:
    """An argparse type: a seed every library accepts (0 .. 2**32-1)."""
    from safesteer_bench.paths import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_SEED}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (``--limit 0`` would evaluate nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def count_or_fraction(text: str) -> int | float:
    """An argparse type for ``run --limit``: a count (``20``: a whole number of at least 1) or a
    fraction of each benchmark's test split (``0.1``: 0 < f <= 1), as lm-eval's ``--limit``."""
    import math

    hint = "give a count such as 20 or a fraction of each benchmark's test split such as 0.1"
    try:
        value = int(text)
    except ValueError:
        try:
            fraction = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a count or a fraction, got '{text}' — {hint}") from None
        if not (math.isfinite(fraction) and 0 < fraction <= 1):
            raise argparse.ArgumentTypeError(f"a fraction must be in 0 < f <= 1 and a count a whole number, "
                                             f"got '{text}' — {hint}")
        return fraction
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value} — {hint}")
    return value


def _kv(text: str) -> dict[str, str]:
    """``a=1,b=x`` -> {"a": "1", "b": "x"} (values stay strings; each method's options dataclass
    parses them, see safesteer_bench.options)."""
    out = {}
    for part in _csv(text):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected key=value, got '{part}'")
        if key.strip() in out:
            raise argparse.ArgumentTypeError(f"'{key.strip()}' is given twice")
        out[key.strip()] = value.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="safesteer-bench", description="Compare LLM safety-alignment methods side by side.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="train, generate, judge, aggregate and report",
                         description="Run methods x benchmarks on one model; re-running the same command resumes.",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.lazy_epilog = options_epilog
    run.add_argument("--methods", default=None, type=_csv,
                     help="comma-separated methods (see `methods`); required unless --config gives them")
    run.add_argument("--config", type=Path, default=None,
                     help="a run.yaml (or a finished run's plan.json) with plan.json's fields: methods, model, "
                          "benchmarks, profile, limit, seed(s), method_args, ...; flags given here override it")
    run.add_argument("--model", default="smollm2-135m", help="alias, Hugging Face id, local dir or .gguf (default: smollm2-135m)")
    run.add_argument("--benchmarks", default="safety-7,over-refusal",
                     help="comma-separated benchmarks or suites, e.g. safety-7,over-refusal,capability-5 "
                          "(see `benchmarks`; default: safety-7,over-refusal), or your own prompt file "
                          "(.jsonl/.csv/.json/.txt) or benchmark spec (.yaml)")
    run.add_argument("--profile", default=None,
                     help="smoke | demo | quick | paper (default: paper on a GPU, quick on CPU, smoke for a model "
                          "over 1B parameters on CPU; $SAFESTEER_BENCH_PROFILE overrides; see README)")
    run.add_argument("--judge", default=None, help="judge for every benchmark (default: each benchmark's own)")
    run.add_argument("--second-judge", default="auto",
                     help="judge that re-reads every safety verdict; the report shows where the two disagree "
                          "(default auto: clf, else the other rule judge; 'none' to skip)")
    run.add_argument("--limit", type=count_or_fraction, default=None,
                     help="prompts per benchmark (overrides the profile): a count, e.g. 20, or a fraction of "
                          "each benchmark's test split, e.g. 0.1 (max(1, ceil(f*n)) each; recorded in plan.json)")
    run.add_argument("--out", type=Path, default=Path("runs"), help="runs directory (default: runs/)")
    run.add_argument("--run-id", default=None, help="name of the run directory (default: derived from the plan)")
    run.add_argument("--seed", type=seed_int, default=0, help="seed of prompt subsets, training and sampling (default 0)")
    run.add_argument("--seeds", default=None,
                     help="several seeds, e.g. 0,1,2: one sub-run per seed on the same evaluation prompts, "
                          "reported as mean, spread and seed-aware intervals (replaces --seed)")
    run.add_argument("--tuned", type=Path, default=None,
                     help="a tuned.json from `tune`: each method gets the options chosen for it on dev "
                          "(over --method-args); the report shows every trial")
    run.add_argument("--dry-run", action="store_true", help="print the plan and the budget, then exit")
    run.add_argument("--adapter", default="lora", choices=["lora", "full"],
                     help="training methods' adapter, shared by all of them (default: lora)")
    run.add_argument("--method-args", type=_kv, default={},
                     help="options for the methods, e.g. coef=auto,direction_mode=responses,loss_variant=partial "
                          "(keys below; an unknown key or a bad value is an error)")
    run.add_argument("--capability-limit", type=positive_int, default=None,
                     help="documents per capability task, generation tasks included (overrides the profile, 'quick': 50 multiple-choice, 10 generation)")
    run.add_argument("--no-drift", action="store_true",
                     help="skip benign drift (each method's per-token KL and top-1 agreement with the base model "
                          "on the base's completions of held-out benign prompts)")
    run.add_argument("--allow-code-execution", action="store_true",
                     help="let HumanEval run model-written code (in a subprocess with a timeout)")
    run.add_argument("--executor", default="sequential", choices=["sequential", "ray", "slurm"],
                     help="who runs the per-method jobs: sequential (this process, default); ray (one Ray task "
                          "per method and seed; needs the 'ray' extra); slurm (submitit jobs; needs 'submitit'). "
                          "Results and resuming are the same under each")
    run.add_argument("--address", default=None,
                     help="with --executor ray: a running Ray cluster's address (e.g. ray://head:10001 or auto; "
                          "its nodes must see --out at the same path); default: start a local Ray")
    run.add_argument("--workers", type=positive_int, default=None,
                     help="with --executor ray/slurm: jobs at once, one CPU thread each (default: every CPU)")
    run.add_argument("--engine", default="hf", choices=["hf", "vllm"],
                     help="generation engine for the benchmark completions: hf (transformers, default) or vllm "
                          "(needs vLLM: `make setup-vllm`, then .venv-vllm/bin/safesteer-bench; bf16 unless --dtype). "
                          "Steering's add hook is folded into the weights vLLM serves; what cannot fold (ablation "
                          "hooks, models without mlp_bias such as Gemma 3) and alignbeam's own decoder stay on hf; "
                          "the report names each method's engine")
    _add_model_flags(run)
    add_model_args_flag(run)
    _add_data_flag(run)

    sub.add_parser("models", help="list model aliases and whether each is available here")
    methods = sub.add_parser("methods", help="list alignment methods")
    methods.add_argument("--details", action="store_true",
                         help="also each method's options (--method-args keys) and what `tune` searches")
    sub.add_parser("benchmarks", help="list benchmarks and suites")

    judges = sub.add_parser("judges", help="list judges, or validate one against human labels")
    judges_sub = judges.add_subparsers(dest="judges_command", metavar="ACTION")
    validate = judges_sub.add_parser("validate", help="agreement of a judge with the human labels")
    validate.add_argument("--judge", default="keywords")
    validate.add_argument("--dataset", default="all", choices=["all", "xstest", "gptfuzzer", "own"],
                          help="labelled set: xstest (refusal), gptfuzzer (harmful compliance), own (this "
                               "project's own short replies: refusal on harmful and benign prompts, harmful "
                               "content; test rows) or all (default; stored so reports show it)")
    _add_data_flag(validate)

    data = sub.add_parser("data", help="show or verify the benchmark data files")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    for action, text in (("list", "where each file resolves and its row count"),
                         ("verify", "also check sha256 and row counts")):
        _add_data_flag(data_sub.add_parser(action, help=text))
    for module in COMMAND_MODULES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.add_commands(sub, command)
    _debug_everywhere(parser)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:  # noqa: SLF001 - argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for child in dict.fromkeys(action.choices.values()):
                found += [child, *_subparsers(child)]
    return found


def _debug_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after the subcommand too (``run … --debug``), not only before it."""
    for child in _subparsers(parser):
        if "--debug" not in child._option_string_actions:  # noqa: SLF001
            child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                               help="show tracebacks on errors")


def add_model_flags(p: argparse.ArgumentParser) -> None:
    _add_model_flags(p)


def add_data_flag(p: argparse.ArgumentParser) -> None:
    _add_data_flag(p)


def kv_pairs(text: str) -> dict[str, str]:
    return _kv(text)


def add_model_args_flag(p: argparse.ArgumentParser) -> None:
    """``--model-args key=value,...`` (lm-eval's convention), for commands that thread it to
    ``load_model`` (``run``; a command that ignored it would silently load another model)."""
    p.add_argument("--model-args", type=_kv, default={},
                   help="how the model loads: revision=<branch|tag|commit> (Hugging Face ids; part of the "
                        "model's identity, so another revision never reuses outputs), dtype=float32|bfloat16|float16, "
                        "device_map=auto|cpu|cuda:0, trust_remote_code=true (default false); unknown keys are an error")


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if present, else cpu)")
    p.add_argument("--dtype", default=None, help="bfloat16, float16, float32 (default: bf16 on GPU, fp32 on CPU)")


def _add_data_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder holding the benchmark files (default: $SAFESTEER_BENCH_DATA, cache, download)")


#: ``--config`` fields that have a flag of the same name (the rest are set on the RunConfig as read).
_FLAGGED = ("methods", "model", "benchmarks", "profile", "out", "judge", "data_dir", "device", "dtype", "seed",
            "limit", "run_id", "adapter", "method_args", "capability_limit", "allow_code_execution",
            "second_judge", "model_args", "engine")


def _apply_config(args: argparse.Namespace) -> dict[str, Any]:
    """Fill the flags the user did not give from ``--config``; the config's other fields."""
    from safesteer_bench.api import read_config

    if args.config is None:
        return {}
    config = read_config(args.config)
    defaults = build_parser().parse_args(["run"])
    for key in _FLAGGED:
        if key in config and getattr(args, key) == getattr(defaults, key):
            setattr(args, key, config.pop(key))
        else:
            config.pop(key, None)
    drift = config.pop("drift", None)  # always popped: --no-drift wins, and RunConfig gets drift once
    if drift is not None and not args.no_drift:
        args.no_drift = not drift
    seeds = config.pop("seeds", None)  # a list of ints (read_config checked it)
    if seeds is not None and args.seeds is None:
        args.seeds = ",".join(map(str, seeds))
    return config  # split, capability_generate_limit, progress


@command("run")
def cmd_run(args: argparse.Namespace) -> int:
    from safesteer_bench.pipeline.estimate import check_fits, describe_estimate
    from safesteer_bench.pipeline.runner import RunConfig, Runner, describe_plan, make_plan

    extra = _apply_config(args)
    if not args.methods:
        raise UserError("no methods given", "pass --methods base,safesteer (or list them in --config run.yaml)")

    cfg = RunConfig(methods=args.methods, model=args.model, benchmarks=args.benchmarks, profile=args.profile,
                    out=args.out, judge=args.judge, data_dir=args.data_dir, device=args.device,
                    dtype=args.dtype, seed=args.seed, limit=args.limit, run_id=args.run_id,
                    adapter=args.adapter, method_args=args.method_args, capability_limit=args.capability_limit,
                    allow_code_execution=args.allow_code_execution, second_judge=args.second_judge,
                    drift=not args.no_drift, model_args=args.model_args,
                    executor=args.executor, address=args.address, workers=args.workers, engine=args.engine,
                    command="safesteer-bench " + shlex.join(sys.argv[1:]), **extra)
    if args.seeds is not None:
        from safesteer_bench.pipeline.seeds import parse_seeds

        seeds = parse_seeds(args.seeds)
        cfg.seed, cfg.seeds = seeds[0], (seeds if len(seeds) > 1 else None)
    if args.tuned is not None:
        from safesteer_bench.tuning.study import load_tuned

        cfg.method_options, cfg.tuning = load_tuned(args.tuned, cfg.methods)
    from safesteer_bench.training.parallel import check_supported, data_parallel

    check_supported(cfg.seeds)  # a multi-process launch: before any model loads
    plan = make_plan(cfg)
    if cfg.seeds:
        from safesteer_bench.pipeline.seed_runner import SeedRunner

        runner = SeedRunner(plan)
    else:
        runner = Runner(plan)
    runner.check_data()
    print(describe_plan(plan), flush=True)
    estimate = runner.estimate()
    print(describe_estimate(estimate), flush=True)
    check_fits(estimate)  # before any model loads: a plan that cannot fit is exit 2 with the fix
    if runner.budget is not None:
        print(f"  budget    {runner.budget.describe()}\n            (identical for every training method; key {runner.budget.key()})")
    for pair, count in runner.overlap().items():
        print(f"  overlap   {pair}: {count} prompt(s) with identical normalized text, excluded")
    if args.dry_run:
        return 0
    runner.run()
    if not data_parallel().is_main:
        return 0  # a non-main process of `accelerate launch`: it trained, the main one evaluated
    print(f"results: {plan.run_dir / 'results.json'}\nreport:  {plan.run_dir / 'report.html'}")
    return 0


@command("models")
def cmd_models(args: argparse.Namespace) -> int:
    from safesteer_bench.modeling.models import ALIASES, availability

    for spec in ALIASES.values():
        print(f"{spec.name:<14} {spec.source:<52} available: {availability(spec)}")
    print("\nAlso accepted: any Hugging Face id (org/name), a local model directory, or a .gguf file.")
    return 0


@command("methods")
def cmd_methods(args: argparse.Namespace) -> int:
    from safesteer_bench.methods.api import METHODS, get_method

    get_method("base")  # import the registrations
    for name, method in METHODS:
        print(f"{name:<12} {method.kind:<10} {method.description}")
        if getattr(args, "details", False):
            print(_method_details(name, method))
    return 0


def _method_details(name: str, method: object) -> str:
    """Every option a method takes (default, what a valid value looks like, meaning) and what
    ``tune`` searches."""
    from safesteer_bench.options import describe_options
    from safesteer_bench.tuning.search_space import describe

    from safesteer_bench.inference.steering import SteeringOptions
    from safesteer_bench.options import options_class

    cls = options_class(method)
    shared = cls is not SteeringOptions and issubclass(cls, SteeringOptions)
    inherited = set(SteeringOptions.keys()) if shared else set()
    lines = ["    the steering options (as for steering: " + ", ".join(SteeringOptions.keys()) + ")"] if shared else []
    lines += [f"    --method-args {o.name}={_shown(o.default)}  ({o.expected}) {o.help}"
              for o in describe_options(method) if o.name not in inherited]
    lines = lines or ["    (no options)"]
    space = getattr(method, "search_space", {}) or {}
    defaults = getattr(method, "defaults", {}) or {}
    for key, dist in space.items():
        default = f" (default {defaults[key]})" if key in defaults else ""
        lines.append(f"    tune: {key} in {describe(dist)}{default}")
    return "\n".join(lines)


def _shown(value: object) -> str:
    return "<unset>" if value is None else str(value)


def options_epilog() -> str:
    """``run --help``'s list of every method option once: default, valid values, meaning, readers."""
    from safesteer_bench.methods.api import METHODS, get_method
    from safesteer_bench.options import describe_options

    get_method("base")  # import the registrations (and plugins)
    seen: dict[str, tuple[Any, list[str]]] = {}
    for name, method in METHODS:
        for o in describe_options(method):
            seen.setdefault(o.name, (o, []))[1].append(name)
    lines = ["method options (--method-args key=value,...; each method reads the keys it knows):"]
    for key, (o, readers) in seen.items():
        lines.append(f"  {key}={_shown(o.default)}  ({o.expected}) {o.help} [{', '.join(readers)}]")
    return "\n".join(lines)


@command("benchmarks")
def cmd_benchmarks(args: argparse.Namespace) -> int:
    from safesteer_bench.evaluation.benchmark import BENCHMARKS, SUITES, resolve_benchmarks

    resolve_benchmarks("advbench")  # import the registrations
    for name, spec in BENCHMARKS:
        print(f"{name:<22} {spec.kind:<10} judge={spec.default_judge:<13} {spec.description}")
    for suite, members in SUITES.items():
        print(f"suite {suite:<16} {', '.join(members)}")
    return 0


@command("judges")
def cmd_judges(args: argparse.Namespace) -> int:
    from safesteer_bench.evaluation.judge_agreement import agreement_path, validate_and_store
    from safesteer_bench.evaluation.judges import JUDGES, format_agreement, load_judge_plugins

    load_judge_plugins()
    if args.judges_command != "validate":
        for name, factory in JUDGES:
            print(f"{name:<14} {getattr(factory, 'description', '')}")
        return 0
    report = validate_and_store(args.judge, args.dataset, args.data_dir)
    print(format_agreement(report))
    if args.dataset == "all":
        print(f"stored in {agreement_path(args.judge)} (reports show it)")
    return 0


@command("data")
def cmd_data(args: argparse.Namespace) -> int:
    from safesteer_bench.data import format_status_table, status, verify

    if args.data_command == "verify":
        rows = verify(args.data_dir)
        print(format_status_table(rows))
        bad = [r for r in rows if not r.ok]
        return 1 if bad else 0
    print(format_status_table(status(getattr(args, "data_dir", None))))
    return 0


# errno values of OSErrors that come from the user's paths or machine, not from a bug: shown as
# one line (with the path) instead of a traceback.
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                errno.ENOSPC, errno.ENOENT, errno.ENAMETOOLONG, errno.EDQUOT}


def main(argv: list[str] | None = None) -> int:
    from safesteer_bench.interrupt import sigint_raises

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _quiet_libraries()
    debug = getattr(args, "debug", False)
    try:
        with sigint_raises():
            return COMMANDS[args.command](args)
    except UserError as exc:
        return _fail(f"error: {exc}", debug)
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages are saved; re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_pipe()
    except OSError as exc:
        if exc.errno not in _PATH_ERRNOS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(f"error: cannot use{where}: {exc.strerror or exc} — check that the path exists, "
                     "is the kind expected (file or folder) and is writable", debug)


def _fail(message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(message, file=sys.stderr)
    return 2


def _closed_pipe() -> int:
    """The reader of stdout went away (``… | head``): stop quietly, as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail again
    except (OSError, ValueError):
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and wrappers replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The library logs its progress notes (steering search, training summaries) at INFO; the
    # command line shows them on stderr, as lm-eval and TRL do. Other libraries stay at WARNING.
    package = logging.getLogger("safesteer_bench")
    if not any(isinstance(h, _StderrHandler) for h in package.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def entry() -> None:
    """The console script: ``main`` and its exit code. After Ctrl-C the process ends at once:
    inspect-ai's and torch's exit handlers took ~6 s more, and every store write is already
    atomic and fsync'd, so there is nothing left for them to save."""
    code = main()
    if code == 130:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(130)
    sys.exit(code)

