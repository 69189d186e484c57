"""The leaderboard: a SQLite index of every run's (model, method) scores, rendered as one page.

The index (``<runs>/index.sqlite``) is rebuilt from the runs' results.json files on every call, so
it can never disagree with them; the runner also upserts each run as it finishes. A run whose
results.json is unreadable, invalid or of the wrong shape is left out with a warning: one bad run
must not hide the others.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape

from safesteer_bench.errors import UserError
from safesteer_bench.reporting.gate import validate_results
from safesteer_bench.reporting.scores import CAPABILITY_DEF, OVER_REFUSAL_DEF, REFUSAL_DEF, dominates, method_scores
from safesteer_bench.pipeline.store import write_text_atomic

log = logging.getLogger(__name__)

# Keyed by the run's report path, not its run id: two folders holding the same run id (a backup
# copy, a reused --run-id, a hostile file) must not replace each other's rows.
TABLE = "scores_v4"  # v4: the headline is the refusal rate (was "safety", 1 − harmful rate)
SCORES = ("refusal", "over_refusal", "capability")
COLUMNS = ("run_id", "model", "method", "profile", "created", "report", *SCORES, "benchmarks",
           *(f"{s}_{end}" for s in SCORES for end in ("low", "high")))
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    run_id TEXT, model TEXT, method TEXT, profile TEXT, created TEXT, report TEXT,
    refusal REAL, over_refusal REAL, capability REAL, benchmarks TEXT,
    refusal_low REAL, refusal_high REAL, over_refusal_low REAL, over_refusal_high REAL,
    capability_low REAL, capability_high REAL,
    PRIMARY KEY (report, method)
)"""
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # what a browser reads as a URL scheme


def connect(runs_dir: Path) -> sqlite3.Connection:
    runs_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(runs_dir / "index.sqlite")
    db.execute(SCHEMA)
    return db


def _text(value: Any) -> str | None:
    """A column's text: run documents are hostile input, and sqlite cannot bind a list or dict."""
    return None if value is None else str(value)


def score_rows(results: dict[str, Any], report: Path) -> list[tuple[Any, ...]]:
    """The index rows of one results document (one per method); raises on a malformed one."""
    plan = results.get("plan") or {}
    profile = plan.get("profile")
    profile_name = profile.get("name") if isinstance(profile, dict) else profile
    benchmarks = f"{_benchmark_set(results)} ({_split(plan)})"
    return [(_text(results["run_id"]), _text(plan.get("model")), method, _text(profile_name),
             _text(results.get("created")), str(report), s["refusal"], s["over_refusal"], s["capability"], benchmarks,
             *(None if s["ci"].get(k) is None else s["ci"][k][i] for k in SCORES for i in (0, 1)))
            for method, s in method_scores(results).items()]


def _benchmark_set(results: dict[str, Any]) -> str:
    """The scored benchmarks (not the benign-drift pseudo-benchmark), as the group key shows them."""
    benchmarks = results.get("benchmarks") or {}
    return ",".join(name for name, info in benchmarks.items()
                    if not (isinstance(info, dict) and info.get("kind") == "drift"))


def _split(plan: dict[str, Any]) -> str:
    """Which prompts were scored: runs on the test split and runs on whole sets are not comparable."""
    split = plan.get("split") if isinstance(plan, dict) else None
    evaluated = split.get("evaluated") if isinstance(split, dict) else None
    return f"{evaluated} split" if evaluated else "whole sets"


def index_run(db: sqlite3.Connection, results: dict[str, Any], report: Path) -> None:
    db.executemany(f"INSERT OR REPLACE INTO {TABLE} VALUES ({','.join('?' * len(COLUMNS))})",
                   score_rows(results, report))
    db.commit()


def index_quietly(runs_dir: Path, results: dict[str, Any], report: Path) -> None:
    """Upsert one finished run; an index that cannot be written only warns (the run's own files
    are complete, and ``safesteer-bench leaderboard`` rebuilds the index from them)."""
    try:
        with closing(connect(runs_dir)) as db:
            index_run(db, results, report)
    except (sqlite3.Error, OSError) as exc:
        log.warning("leaderboard index %s not updated (%s); `safesteer-bench leaderboard %s` rebuilds it",
                    runs_dir / "index.sqlite", exc, runs_dir)


def _load_run(results_file: Path) -> dict[str, Any] | None:
    """One run's validated results, or None (with a warning saying why) when it cannot be indexed."""
    try:
        doc = json.loads(results_file.read_text(encoding="utf-8"))
        return validate_results(doc, str(results_file))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: invalid JSON or UTF-8
        log.warning("leaderboard: skipping %s: unreadable or not valid JSON (%s)", results_file, exc)
    except UserError as exc:
        log.warning("leaderboard: skipping a run: %s", exc.problem)  # the problem names the file
    return None


def rebuild(runs_dir: Path) -> sqlite3.Connection:
    db = connect(runs_dir)
    db.execute(f"DELETE FROM {TABLE}")
    db.commit()  # so that rolling back one bad run below cannot bring the old rows back
    seen: dict[str, Path] = {}
    for results_file in sorted(runs_dir.glob("*/results.json")):
        results = _load_run(results_file)
        if results is None:
            continue
        other = seen.setdefault(str(results.get("run_id")), results_file)
        if other != results_file:
            log.warning("leaderboard: %s and %s both claim run id %r; both are listed, by folder",
                        other, results_file, results.get("run_id"))
        try:
            index_run(db, results, results_file.parent / "report.html")
        # This run's data (a missing run_id, a number sqlite cannot bind); an index that cannot be
        # written (sqlite3.OperationalError) is not one run's fault and goes up to render.
        except (LookupError, TypeError, ValueError, AttributeError, ArithmeticError,
                sqlite3.InterfaceError, sqlite3.ProgrammingError) as exc:
            db.rollback()  # drop the rows of this run already inserted
            log.warning("leaderboard: skipping %s: %s: %s", results_file, type(exc).__name__, exc)
    return db


def rows(db: sqlite3.Connection) -> list[dict[str, Any]]:
    cursor = db.execute(f"SELECT {', '.join(COLUMNS)} FROM {TABLE}")
    return [dict(zip(COLUMNS, r)) for r in cursor.fetchall()]


RANKING = ("Pareto frontier first (no other row of the group has at least the refusal rate, at most the "
           "over-refusal and at least the capability score, better on one), then by refusal rate − "
           "over-refusal, then by capability score")


def _key(entry: dict[str, Any]) -> float:
    return (entry["refusal"] or 0.0) - (entry["over_refusal"] or 0.0)


def ranked_groups(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by (model, profile, benchmark set) — scores are comparable only within a group —
    each group ranked by :data:`RANKING`, groups in order of model, profile, benchmarks."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault((str(e["model"]), str(e["profile"]), str(e["benchmarks"])), []).append(e)
    out = []
    for (model, profile, benchmarks), members in sorted(groups.items()):
        for e in members:
            e["frontier"] = not any(dominates(o, e) for o in members if o is not e)
        members.sort(key=lambda e: (not e["frontier"], -_key(e), -(e["capability"] or 0.0), str(e["method"])))
        out.append({"model": model, "profile": profile, "benchmarks": benchmarks, "entries": members})
    return out


def report_link(report: str | Path, page_dir: Path) -> str:
    """A relative URL from the page to a report, built from path components. Run directories are
    named after run ids, which are hostile text: quoting each component (":" becomes "%3A") and a
    leading "./" before one that looks like a scheme keep ``javascript:…`` a path, never a URL."""
    parts = Path(os.path.relpath(report, page_dir)).parts
    link = "/".join(quote(part, safe="") for part in parts)
    return "./" + link if parts and SCHEME.match(parts[0]) else link


def _index(runs_dir: Path) -> list[dict[str, Any]]:
    path = runs_dir / "index.sqlite"
    try:
        with closing(rebuild(runs_dir)) as db:
            return rows(db)
    except (sqlite3.Error, OSError) as exc:
        fix = (f"remove {path} (it is rebuilt from the runs' results.json) and make {runs_dir} writable"
               if path.is_file() else f"make {runs_dir} writable; {path} must not be a folder")
        raise UserError(f"cannot write the leaderboard index {path} ({exc})", fix) from None


def render(runs_dir: Path, out: Path | None = None) -> Path:
    out = out or runs_dir / "leaderboard.html"
    entries = _index(runs_dir)
    for entry in entries:
        entry["link"] = report_link(entry["report"], out.parent)
    env = Environment(loader=PackageLoader("safesteer_bench.reporting", "templates"), autoescape=select_autoescape(["j2"]))
    env.filters["pct"] = lambda v: "—" if v is None else f"{100 * v:.1f}"
    html = env.get_template("leaderboard.html.j2").render(
        groups=ranked_groups(entries), ranking=RANKING, refusal_def=REFUSAL_DEF, over_refusal_def=OVER_REFUSAL_DEF,
        capability_def=CAPABILITY_DEF)
    try:
        write_text_atomic(out, html)
    except OSError as exc:
        raise UserError(f"cannot write the leaderboard to {out} ({exc})",
                        "make its folder writable, or pass --out to a writable file") from None
    return out
