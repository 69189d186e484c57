"""The leaderboard: a SQLite index of every run's (model, method) scores, rendered as one page.

The index (``<runs>/index.sqlite``) is rebuilt from the runs' results.json files on every call, so
it can never disagree with them; the runner also upserts each run as it finishes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from .scores import CAPABILITY_DEF, OVER_REFUSAL_DEF, SAFETY_DEF, method_scores
from .store import write_text_atomic

SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    run_id TEXT, model TEXT, method TEXT, profile TEXT, created TEXT, report TEXT,
    safety REAL, over_refusal REAL, capability REAL, benchmarks TEXT,
    PRIMARY KEY (run_id, method)
)"""


def connect(runs_dir: Path) -> sqlite3.Connection:
    runs_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(runs_dir / "index.sqlite")
    db.execute(SCHEMA)
    return db


def index_run(db: sqlite3.Connection, results: dict[str, Any], report: Path) -> None:
    plan = results.get("plan", {})
    for method, s in method_scores(results).items():
        db.execute(
            "INSERT OR REPLACE INTO scores VALUES (?,?,?,?,?,?,?,?,?,?)",
            (results["run_id"], plan.get("model"), method, (plan.get("profile") or {}).get("name"),
             results.get("created"), str(report), s["safety"], s["over_refusal"], s["capability"],
             ",".join(results.get("benchmarks", {}))),
        )
    db.commit()


def rebuild(runs_dir: Path) -> sqlite3.Connection:
    db = connect(runs_dir)
    db.execute("DELETE FROM scores")
    for results_file in sorted(runs_dir.glob("*/results.json")):
        try:
            results = json.loads(results_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # an unfinished or damaged run is left out, not fatal
        index_run(db, results, results_file.parent / "report.html")
    return db


def rows(db: sqlite3.Connection) -> list[dict[str, Any]]:
    cursor = db.execute(
        "SELECT run_id, model, method, profile, created, report, safety, over_refusal, capability, benchmarks "
        "FROM scores ORDER BY safety IS NULL, safety DESC, capability DESC")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r)) for r in cursor.fetchall()]


def render(runs_dir: Path, out: Path | None = None) -> Path:
    out = out or runs_dir / "leaderboard.html"
    entries = rows(rebuild(runs_dir))
    for entry in entries:
        entry["link"] = os.path.relpath(entry["report"], out.parent)
    env = Environment(loader=PackageLoader("safesteer_bench", "templates"), autoescape=select_autoescape(["j2"]))
    env.filters["pct"] = lambda v: "—" if v is None else f"{100 * v:.1f}"
    html = env.get_template("leaderboard.html.j2").render(
        entries=entries, safety_def=SAFETY_DEF, over_refusal_def=OVER_REFUSAL_DEF, capability_def=CAPABILITY_DEF)
    write_text_atomic(out, html)
    return out
