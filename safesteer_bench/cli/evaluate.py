"""Evaluation subcommands: ``rejudge`` and the model-judge options of ``judges validate``.

``safesteer-bench rejudge RUN_DIR --judge J`` re-scores the completions a run already stored
(``samples/<method>/<benchmark>.jsonl``, or the generation checkpoint ``.gen.jsonl`` when judging
never finished) with another judge. Nothing is generated and no model is loaded (a model judge
loads its own judge model). The judged samples, their ``.meta.json``, ``results.json`` and
``report.html`` are rewritten; ``results.json`` gains a ``rejudge`` history entry.

``judges validate`` gains ``--judge-model``/``--judge-model-args`` (which model a model judge
uses) and ``--limit N`` (N seeded rows per labelled file: a model judge on a CPU cannot read all
7,510). Results are stored under the judge's label (judge + model) by
:func:`.judge_agreement.save_agreement`.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from safesteer_bench.errors import UserError

log = logging.getLogger(__name__)

_ORIGINAL_JUDGES: Callable[[argparse.Namespace], int] | None = None


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_judge_model_flags(p: argparse.ArgumentParser) -> None:
    from safesteer_bench.evaluation.model_judges import ENV_JUDGE_MODEL, ENV_JUDGE_MODEL_ARGS

    if "--judge-model" in p._option_string_actions:  # noqa: SLF001 - already added (cli.py grew it)
        return
    p.add_argument("--judge-model", default=None,
                   help=f"model of a model judge, any inspect model: hf/<id or dir>, vllm/<id>, "
                        f"openai/<model> (OPENAI_BASE_URL for compatible servers), safesteer/<alias> "
                        f"(default: ${ENV_JUDGE_MODEL}, else the judge's own)")
    p.add_argument("--judge-model-args", default=None,
                   help=f"extra model args, k=v,k=v or JSON (default: ${ENV_JUDGE_MODEL_ARGS})")


def add_commands(sub: Any, command: Callable) -> None:
    from safesteer_bench.evaluation import model_judges  # noqa: F401  (registers the model judges; no heavy imports)
    from safesteer_bench.cli.main import add_data_flag

    rejudge = sub.add_parser(
        "rejudge", help="re-score a run's stored completions with another judge (no generation)",
        description="Re-judge stored completions and rewrite the judged samples, results.json and "
                    "report.html. No completion is generated again.")
    rejudge.add_argument("run", type=Path, help="run directory (runs/<run-id>)")
    rejudge.add_argument("--judge", required=True, help="judge name (see `judges`)")
    rejudge.add_argument("--benchmarks", type=_csv, default=None,
                         help="only these benchmarks (default: every safety benchmark of the run)")
    rejudge.add_argument("--methods", type=_csv, default=None, help="only these methods (default: all)")
    _add_judge_model_flags(rejudge)
    add_data_flag(rejudge)
    command("rejudge")(cmd_rejudge)

    _extend_judges_validate(sub, command)


# --------------------------------------------------------------------------------------------
# rejudge
# --------------------------------------------------------------------------------------------


def _apply_judge_model(args: argparse.Namespace) -> None:
    """``--judge-model`` reaches every judge the process builds through the environment."""
    from safesteer_bench.evaluation.model_judges import ENV_JUDGE_MODEL, ENV_JUDGE_MODEL_ARGS, parse_model_args

    if getattr(args, "judge_model", None):
        os.environ[ENV_JUDGE_MODEL] = args.judge_model
        if getattr(args, "judge", None) == "rbr":  # rbr grades its propositions with the model when given one
            from safesteer_bench.evaluation.rbr import ENV_RBR_MODEL

            os.environ[ENV_RBR_MODEL] = args.judge_model
    if getattr(args, "judge_model_args", None):
        parse_model_args(args.judge_model_args)  # fail early on bad syntax
        os.environ[ENV_JUDGE_MODEL_ARGS] = args.judge_model_args


def cmd_rejudge(args: argparse.Namespace) -> int:
    _apply_judge_model(args)
    doc = rejudge_run(args.run, args.judge, benchmarks=args.benchmarks, methods=args.methods,
                      data_dir=args.data_dir)
    last = doc["rejudge"][-1]
    for c in last["changes"]:
        print(f"  {c['method']}/{c['benchmark']}: {c['from']} -> {args.judge}: {c['changed']}/{c['n']} "
              f"verdict(s) changed (refused/harmful), {c['new']} newly judged, {c['parse_errors']} parse error(s)")
    changed = sum(c["changed"] for c in last["changes"])
    total = sum(c["n"] for c in last["changes"])
    new = sum(c["new"] for c in last["changes"])
    print(f"rejudged {total} completions with {last['judge_label']}: {changed} verdict(s) changed, "
          f"{new} newly judged, {sum(c['parse_errors'] for c in last['changes'])} parse error(s)")
    print(f"results: {Path(args.run) / 'results.json'}\nreport:  {Path(args.run) / 'report.html'}")
    return 0


# plan.json fields rejudge needs, with their types (a damaged plan is refused, not guessed at).
_PLAN_FIELDS: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "model": (str,), "methods": (list,), "benchmarks": (list,), "profile": (dict,),
}


def _check_plan_doc(doc: Any, path: Path) -> dict[str, Any]:
    """``doc`` when it has every field rejudge reads, with the right types; else a UserError."""
    fix = "re-run the run's `safesteer-bench run` command to rewrite it (finished stages are kept)"
    if not isinstance(doc, dict):
        raise UserError(f"{path} is not a JSON object, so the run's plan cannot be read", fix)
    for key, types in _PLAN_FIELDS.items():
        if not isinstance(doc.get(key), types):
            raise UserError(f"{path} lacks a valid '{key}' field (damaged plan)", fix)
    if not isinstance(doc["profile"].get("name"), str):
        raise UserError(f"{path} lacks the profile's name (damaged plan)", fix)
    for key in ("methods", "benchmarks"):
        if not doc[key] or not all(isinstance(v, str) for v in doc[key]):
            raise UserError(f"{path} has no valid '{key}' list (damaged plan)", fix)
    for key, types in (("method_args", (dict, type(None))), ("seed", (int,)),
                       ("limit", (int, float, type(None))), ("capability_limit", (int, type(None)))):
        if key in doc and not isinstance(doc[key], types):
            raise UserError(f"{path} has an invalid '{key}' field (damaged plan)", fix)
    return doc


def _check_plan_names(doc: dict[str, Any], path: Path) -> None:
    """Methods, benchmarks, profile and seed of a plan must be ones this version knows."""
    from safesteer_bench.methods.api import get_method
    from safesteer_bench.paths import check_seed
    from safesteer_bench.evaluation.benchmark import resolve_benchmarks

    try:
        for name in doc["methods"]:
            get_method(name)
        resolve_benchmarks(",".join(doc["benchmarks"]))
        check_seed(doc.get("seed", 0))
    except UserError as exc:
        raise UserError(f"{path} is damaged or from another version: {exc.problem}",
                        "re-run the run's `safesteer-bench run` command to rewrite it") from None


def _plan_split(doc: dict[str, Any]) -> str | None:
    """The split a plan evaluated: its ``split.evaluated``, or None (whole sets) for old plans."""
    split = doc.get("split")
    if split is None:
        return None
    evaluated = split.get("evaluated") if isinstance(split, dict) else None
    if evaluated not in ("dev", "test"):
        raise UserError("plan.json has an invalid 'split' field (damaged plan)",
                        "re-run the run's `safesteer-bench run` command to rewrite it")
    return evaluated


def load_plan(run_dir: Path, data_dir: Path | None = None) -> Any:
    """The :class:`~.runner.Plan` a finished run was made from, rebuilt from its ``plan.json``
    (no model is resolved or loaded; the run keeps its directory and id)."""
    from safesteer_bench.evaluation.benchmark import BENCHMARKS, resolve_benchmarks
    from safesteer_bench.paths import check_run_id
    from safesteer_bench.profiles import get_profile
    from safesteer_bench.pipeline.runner import Plan, RunConfig
    from safesteer_bench.pipeline.store import read_json, read_json_dict

    run_dir = Path(run_dir)
    if not (run_dir / "plan.json").exists():
        raise UserError(f"{run_dir} holds no plan.json, so it is not a run directory",
                        "pass runs/<run-id> of a run made by `safesteer-bench run`")
    doc = _check_plan_doc(read_json(run_dir / "plan.json"), run_dir / "plan.json")
    _check_plan_names(doc, run_dir / "plan.json")
    try:
        check_run_id(doc["run_id"])
    except UserError:
        raise UserError(f"{run_dir / 'plan.json'} has an unsafe run_id {doc['run_id']!r} (damaged plan)",
                        "re-run the run's `safesteer-bench run` command to rewrite it") from None
    resolve_benchmarks("advbench")  # imports every benchmark spec
    files = doc.get("benchmark_files") or {}
    if isinstance(files, dict) and files:  # user benchmarks: rebuilt from their files
        resolve_benchmarks(",".join(str(path) for path in files.values()))
    old = read_json_dict(run_dir / "results.json") or {}
    profile = get_profile(doc["profile"]["name"])
    cfg = RunConfig(methods=list(doc["methods"]), model=doc["model"], benchmarks=",".join(doc["benchmarks"]),
                    profile=profile.name, out=run_dir.parent, judge=doc.get("judge"), data_dir=data_dir,
                    seed=doc.get("seed", 0), limit=doc.get("limit"), run_id=doc["run_id"], progress=False,
                    command=str(old.get("command", "")), adapter=doc.get("adapter", "lora"),
                    method_args=doc.get("method_args") or {}, capability_limit=doc.get("capability_limit"),
                    # plans written before generation tasks had their own cap used one limit for all
                    capability_generate_limit=doc.get("capability_generate_limit", doc.get("capability_limit")),
                    # plans written before the dev/test split evaluated whole sets
                    split=_plan_split(doc),
                    # plans written before the second judge had none
                    second_judge=str(doc.get("second_judge") or "none"),
                    # plans written before benign drift have none
                    drift=doc.get("drift") is True)
    return Plan(cfg, profile, [BENCHMARKS.get(n) for n in doc["benchmarks"]], doc["run_id"], run_dir)


@dataclass
class _Stored:
    """What a run stored for one method x benchmark: the completions to judge, in order, their
    prompts, the old meta, and the verdicts already given (by prompt id; empty when the judged
    file was missing or damaged and the completions came from the generation checkpoint)."""

    rows: list[dict[str, Any]]
    prompts: list[Any]
    meta: dict[str, Any]
    old_verdicts: dict[str, dict[str, Any]]


def _stored_rows(runner: Any, method: str, spec: Any) -> _Stored | None:
    """The completions of one method x benchmark from what the run stored, or None when they
    are incomplete. Rows that are torn or lack fields are never used (see :mod:`.records`)."""
    from safesteer_bench.data import Prompt
    from safesteer_bench.records import valid_judged
    from safesteer_bench.pipeline.store import read_json_dict, read_jsonl

    path = runner.dir / "samples" / method / f"{spec.name}.jsonl"
    meta = read_json_dict(path.with_suffix(".meta.json")) or {}
    judged = list(read_jsonl(path)) if meta else []
    expected = [p.id for p in runner.prompts(spec)]  # the plan's prompts, in the plan's order
    if judged and len(judged) == meta.get("n") and all(valid_judged(r) for r in judged) \
            and [r["id"] for r in judged] == expected:
        prompts = [Prompt(id=r["id"], text=r["prompt"], source=spec.name, category=r.get("category"),
                          label=None if spec.harmful is not None else ("unsafe" if r["harmful_prompt"] else "safe"))
                   for r in judged]
        return _Stored(judged, prompts, meta, {r["id"]: r for r in judged})
    # judging never finished, or its file is damaged: take the generation checkpoint, in the
    # plan's prompt order; verdicts still readable in the judged file count as the old ones
    rows = _checkpoint_rows(path.with_name(f"{spec.name}.gen.jsonl"), meta.get("gen_key"))
    prompts = runner.prompts(spec)
    if rows is None or not prompts or any(p.id not in rows for p in prompts):
        return None
    old = {r["id"]: r for r in judged if valid_judged(r)}
    return _Stored([rows[p.id] for p in prompts], prompts, meta, old)


def _checkpoint_rows(checkpoint: Path, gen_key: Any) -> dict[str, dict[str, Any]] | None:
    """The checkpoint's valid rows by prompt id, all of one policy key: the judged file's
    ``gen_key`` when known, else the only key present. None when the key is ambiguous (rows of
    several policies and no record of which one the run used: generating again decides)."""
    from safesteer_bench.records import valid_generation
    from safesteer_bench.pipeline.store import read_jsonl

    rows = [r for r in read_jsonl(checkpoint) if valid_generation(r)]
    keys = {r["key"] for r in rows}
    key = gen_key if isinstance(gen_key, str) and gen_key in keys else (keys.pop() if len(keys) == 1 else None)
    if key is None:
        return None
    return {r["id"]: r for r in rows if r["key"] == key}


def _outcome(row: dict[str, Any]) -> tuple[Any, Any]:
    """(refused, harmful) of a judged row; a judge without a harm verdict means 'did not refuse'."""
    harmful = row.get("harmful")
    return row.get("refused"), (not row.get("refused")) if harmful is None else harmful


@dataclass(frozen=True)
class _RejudgeScope:
    """What one rejudge covers: the run's plan and the chosen safety benchmarks and methods."""

    plan: Any
    benchmarks: list[str]
    methods: list[str]


@dataclass(frozen=True)
class _RejudgeJob:
    """What every method x benchmark of one rejudge shares: the plan, its runner and the new judge."""

    plan: Any
    runner: Any
    judge: str
    label: str  # the judge's label (judge + model)


def rejudge_run(run_dir: Path, judge: str, benchmarks: list[str] | None = None,
                methods: list[str] | None = None, data_dir: Path | None = None) -> dict[str, Any]:
    """Re-judge a run's stored completions with ``judge``; returns the new results.json document.

    Only ``benchmarks``/``methods`` (default: all safety benchmarks, all methods) change; the
    others keep their verdicts and judges. Never generates: completions come from the samples,
    and when any chosen method x benchmark lacks complete completions nothing is rewritten (a
    UserError says which, and that re-running the run finishes them). Holds the run's lock.
    """
    from safesteer_bench.evaluation.judges import get_judge
    from safesteer_bench.pipeline.store import run_lock

    get_judge(judge)  # unknown names fail before anything is touched
    scope = _rejudge_scope(load_plan(run_dir, data_dir), benchmarks, methods)
    _refuse_mixed_judges(scope.plan, judge, scope.benchmarks, scope.methods)
    with run_lock(scope.plan.run_dir):
        return _rejudge_locked(scope.plan, judge, scope.benchmarks, scope.methods)


def _rejudge_scope(plan: Any, benchmarks: list[str] | None, methods: list[str] | None) -> _RejudgeScope:
    """The chosen safety benchmarks and methods (default: all); a name the run lacks is a UserError."""
    safety = {s.name: s for s in plan.safety}
    if not safety:
        raise UserError(f"run {plan.run_id} has no safety benchmark, so there is nothing to rejudge",
                        "rejudge runs whose --benchmarks include safety or over-refusal sets")
    chosen = benchmarks or list(safety)
    unknown = [b for b in chosen if b not in safety]
    if unknown:
        raise UserError(f"run {plan.run_id} has no safety benchmark(s) {', '.join(unknown)}",
                        f"choose from: {', '.join(safety)}")
    chosen_methods = methods or list(plan.config.methods)
    bad = [m for m in chosen_methods if m not in plan.config.methods]
    if bad:
        raise UserError(f"run {plan.run_id} has no method(s) {', '.join(bad)}",
                        f"choose from: {', '.join(plan.config.methods)}")
    return _RejudgeScope(plan, chosen, chosen_methods)


def _refuse_mixed_judges(plan: Any, judge: str, chosen: list[str], chosen_methods: list[str]) -> None:
    """A benchmark's methods are compared under one judge: re-judging only some of them with
    another judge would leave the others scored by a judge the results no longer name."""
    from safesteer_bench.pipeline.store import read_json_dict

    others = [m for m in plan.config.methods if m not in chosen_methods]
    for name in chosen:
        mixed = [m for m in others
                 if (read_json_dict(plan.run_dir / "samples" / m / f"{name}.meta.json") or {}).get("judge") != judge]
        if mixed:
            raise UserError(f"rejudging only {', '.join(chosen_methods)} on {name} with {judge} would leave "
                            f"{', '.join(mixed)} judged by another judge",
                            "omit --methods to rejudge every method of the benchmark (completions are not regenerated)")


def _rejudge_locked(plan: Any, judge: str, chosen: list[str], chosen_methods: list[str]) -> dict[str, Any]:
    """Re-judge the chosen method x benchmark samples (all or none), then rewrite results.json and the report."""
    from safesteer_bench.evaluation.judges import get_judge
    from safesteer_bench.evaluation.model_judges import judge_label
    from safesteer_bench.pipeline.runner import Runner

    started = time.perf_counter()
    label = judge_label(get_judge(judge))
    safety = {s.name: s for s in plan.safety}
    job = _RejudgeJob(plan, Runner(plan), judge, label)
    judges = _current_judges(job.runner, plan, judge, chosen)
    stored = _complete_stored(job, safety, chosen, chosen_methods)
    changes: list[dict[str, Any]] = []
    for (method, name), found in stored.items():
        changes.append(_rejudge_samples(job, safety[name], method, found))
    return _write_rejudged_results(job, judges, changes, started)


def _complete_stored(job: _RejudgeJob, safety: dict[str, Any], chosen: list[str],
                     chosen_methods: list[str]) -> dict[tuple[str, str], _Stored]:
    """Every chosen method x benchmark's stored completions; any incomplete one is a UserError."""
    stored = {(m, b): _stored_rows(job.runner, m, safety[b]) for m in chosen_methods for b in chosen}
    missing = [f"{m}/{b}" for (m, b), found in stored.items() if found is None]
    if missing:
        plan = job.plan
        raise UserError(f"run {plan.run_id} has incomplete stored completions for {', '.join(missing)}; "
                        "nothing was rejudged",
                        f"re-run the run's command (`{plan.config.command or 'safesteer-bench run …'}`) to "
                        "generate the missing ones, then rejudge")
    return {key: found for key, found in stored.items() if found is not None}


def _rejudge_samples(job: _RejudgeJob, spec: Any, method: str, found: _Stored) -> dict[str, Any]:
    """Judge one method x benchmark's completions, rewrite its samples and meta; returns its change entry."""
    from safesteer_bench.evaluation.disagreement import second_judge_for
    from safesteer_bench.evaluation.evaluate import judge_rows
    from safesteer_bench.pipeline.store import write_json_atomic, write_jsonl_atomic

    plan, judge, name = job.plan, job.judge, spec.name
    judged = judge_rows(spec, found.prompts, found.rows, judge, second_judge_for(judge, plan.config.second_judge))
    path = job.runner.dir / "samples" / method / f"{name}.jsonl"
    write_jsonl_atomic(path, judged)
    write_json_atomic(path.with_suffix(".meta.json"), {
        "judge": judge, "judge_label": judged[0]["judge"] if judged else job.label, "n": len(judged),
        "second_judge": second_judge_for(judge, plan.config.second_judge),
        "gen_key": found.meta.get("gen_key") or found.rows[0].get("key"),
        "rejudged_from": found.meta.get("judge"),
    })
    job.runner._prompts[name] = found.prompts  # noqa: SLF001 - the samples are the truth here
    c = _change(method, name, found, judged)
    log.info("%s/%s: %s -> %s: %d/%d verdict(s) changed (refused/harmful), %d newly judged, "
             "%d parse error(s)", method, name, c["from"], judge, c["changed"], c["n"], c["new"],
             c["parse_errors"])
    return c


def _write_rejudged_results(job: _RejudgeJob, judges: dict[str, str], changes: list[dict[str, Any]],
                            started: float) -> dict[str, Any]:
    """Aggregate results.json under the benchmarks' judges, append the rejudge history entry, re-render."""
    from safesteer_bench.pipeline.store import read_json_dict, write_json_atomic

    plan, runner, judge = job.plan, job.runner, job.judge
    if all(j == judge for j in judges.values()):
        plan.config.judge = judge
    plan.judge_for = lambda spec: judges.get(spec.name, spec.default_judge)  # type: ignore[method-assign]
    elapsed = time.perf_counter() - started
    plan.stage_seconds["judge"] = elapsed
    old = read_json_dict(runner.dir / "results.json") or {}
    doc = runner.aggregate(wall_seconds=elapsed)
    history = [h for h in old.get("rejudge", []) if isinstance(h, dict)] if isinstance(old.get("rejudge"), list) else []
    history.append({"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "judge": judge,
                    "judge_label": job.label, "seconds": round(elapsed, 2), "changes": changes})
    doc["rejudge"] = history
    write_json_atomic(runner.dir / "results.json", doc)
    report = runner.render(doc)
    from safesteer_bench.reporting.leaderboard import index_quietly

    index_quietly(Path(plan.config.out), doc, report)
    return doc


def _current_judges(runner: Any, plan: Any, judge: str, chosen: list[str]) -> dict[str, str]:
    """benchmark -> the judge its samples carry after this rejudge (``judge`` for the chosen)."""
    from safesteer_bench.pipeline.store import read_json_dict

    judges: dict[str, str] = {}
    for spec in plan.safety:
        current = {(read_json_dict(runner.dir / "samples" / m / f"{spec.name}.meta.json") or {}).get("judge")
                   for m in plan.config.methods} - {None}
        judges[spec.name] = judge if spec.name in chosen else (
            current.pop() if len(current) == 1 else plan.judge_for(spec))
    return judges


def _change(method: str, name: str, found: _Stored, judged: list[dict[str, Any]]) -> dict[str, Any]:
    """How the new verdicts differ from the old ones. changed: the outcome (refused / harmful)
    differs; relabelled: only the label's wording; new: rows that had no readable old verdict
    (a damaged judged file), which are neither."""
    pairs = [(found.old_verdicts.get(r["id"]), r) for r in judged]
    compared = [(o, n) for o, n in pairs if o is not None]
    changed = sum(_outcome(o) != _outcome(n) for o, n in compared)
    relabelled = sum(o.get("verdict") != n["verdict"] for o, n in compared) - changed
    return {"method": method, "benchmark": name, "from": found.meta.get("judge"), "n": len(judged),
            "changed": changed, "relabelled": max(relabelled, 0), "new": len(pairs) - len(compared),
            "parse_errors": sum(bool(r["parse_error"]) for r in judged)}


# --------------------------------------------------------------------------------------------
# judges validate: model-judge options and a row limit
# --------------------------------------------------------------------------------------------


def _subparser(parser: argparse.ArgumentParser | None, name: str) -> argparse.ArgumentParser | None:
    if parser is None:
        return None
    for action in parser._actions:  # noqa: SLF001 - argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return action.choices.get(name)
    return None


def _extend_judges_validate(sub: Any, command: Callable) -> None:
    global _ORIGINAL_JUDGES
    from safesteer_bench.cli.main import COMMANDS, positive_int, seed_int

    validate = _subparser(sub.choices.get("judges"), "validate")
    if validate is None or "judges" not in COMMANDS:
        return
    _add_judge_model_flags(validate)
    if "--limit" not in validate._option_string_actions:  # noqa: SLF001
        validate.add_argument("--limit", type=positive_int, default=None,
                              help="seeded rows per labelled file (model judges on a CPU); stored with the result")
        validate.add_argument("--seed", type=seed_int, default=0, help="seed of the --limit subset")
    if not getattr(COMMANDS["judges"], "_safesteer_eval", False):
        _ORIGINAL_JUDGES = COMMANDS["judges"]
    command("judges")(_cmd_judges)


def _cmd_judges(args: argparse.Namespace) -> int:
    from safesteer_bench.evaluation.model_judges import MODEL_JUDGES

    extended = getattr(args, "judges_command", None) == "validate" and (
        getattr(args, "judge_model", None) or getattr(args, "judge_model_args", None)
        or getattr(args, "limit", None) is not None or args.judge in MODEL_JUDGES)
    if not extended:
        assert _ORIGINAL_JUDGES is not None
        return _ORIGINAL_JUDGES(args)
    from safesteer_bench.evaluation.judges import get_judge

    if callable(getattr(get_judge(args.judge), "validate", None)):
        # A trained judge reports its held-out figures; a row subset of its training data would
        # only measure how well it remembers them.
        raise UserError(f"--limit and --judge-model do not apply to the {args.judge} judge",
                        f"run `safesteer-bench judges validate --judge {args.judge}` for its held-out figures")
    _apply_judge_model(args)
    report, path = validate_model_judge(args.judge, args.dataset, args.data_dir, limit=args.limit, seed=args.seed)
    from safesteer_bench.evaluation.judges import format_agreement

    print(format_agreement(report))
    print(f"judge output parse errors: {report['parse_errors']} of {report['calls']} calls "
          "(counted as unsafe / refusal, i.e. against the judged model)")
    if path is not None:
        print(f"stored in {path} (reports show it)")
    elif args.dataset == "all":
        print("not stored: an agreement measured on more rows is already stored (reports show that one)")
    return 0


_cmd_judges._safesteer_eval = True  # type: ignore[attr-defined]


def validate_model_judge(judge_name: str, dataset: str = "all", data_dir: Path | None = None,
                         limit: int | None = None, seed: int = 0) -> tuple[dict[str, Any], Path | None]:
    """Validate a (model) judge on the labelled data, optionally on ``limit`` seeded rows per file.

    The report's ``judge`` is the judge's label (judge + model), so it is stored apart from the
    same judge run with another model; ``limit``/``seed``, ``calls`` and ``parse_errors`` are added.
    Stored (when ``dataset == "all"``) by :func:`.judge_agreement.save_agreement`.
    """
    from safesteer_bench.evaluation.judge_agreement import labels_root, save_agreement
    from safesteer_bench.evaluation.judges import get_judge, validate_judge

    judge = get_judge(judge_name)
    root = labels_root(data_dir)
    with tempfile.TemporaryDirectory(prefix="judge-subset-") as tmp:
        if limit is not None:
            root = _subset_labels(root, Path(tmp), limit, seed)
        report = validate_judge(judge, dataset, root, own_limit=limit, seed=seed)
    stats = getattr(judge, "stats", {})
    report.update({"model": getattr(judge, "model", None), "limit": limit, "seed": seed,
                   "calls": stats.get("calls", 0), "parse_errors": stats.get("parse_errors", 0)})
    path = save_agreement(report) if dataset == "all" and not _replaces_fuller(report) else None
    return report, path


def _replaces_fuller(report: dict[str, Any]) -> bool:
    """True when ``report`` (a --limit subset) would overwrite an agreement stored on more rows:
    reports show the stored one, so a 1-row sample must never replace a full validation."""
    from safesteer_bench.evaluation.judge_agreement import agreement_path
    from safesteer_bench.pipeline.store import read_json_dict

    if report.get("limit") is None:
        return False
    stored = read_json_dict(agreement_path(report["judge"]))
    if stored is None:
        return False
    old_limit = stored.get("limit")
    return old_limit is None or (isinstance(old_limit, int) and old_limit > report["limit"])


def _subset_labels(root: Path, out: Path, limit: int, seed: int) -> Path:
    """A copy of the labelled files' layout under ``out`` with ``limit`` seeded rows per file."""
    from safesteer_bench.data import seeded_subset
    from safesteer_bench.evaluation.judges import GPTFUZZER_LABELED, GPTFUZZER_QUESTIONS, XSTEST_LABELED_FILES

    for rel in [*XSTEST_LABELED_FILES.values(), GPTFUZZER_LABELED, GPTFUZZER_QUESTIONS]:
        src, dst = root / rel, out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        with src.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = list(reader)
        if rel != GPTFUZZER_QUESTIONS:
            rows = seeded_subset(rows, limit, seed)
        with dst.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
    return out
