"""report.html: one self-contained page (jinja2, autoescape on: completions are adversarial text)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from .store import write_text_atomic

# Metric shown per benchmark in the summary table, and whether higher is better for its column.
HEADLINE = [("harmful_rate", False), ("over_refusal_rate", False), ("refusal_rate", True)]
SAMPLE_CHARS = 280  # harmful completions are cut here; the rest sits behind a click


def _env() -> Environment:
    env = Environment(loader=PackageLoader("safesteer_bench", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: "—" if v is None else f"{100 * v:.1f}"
    return env


def headline(metrics: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The first headline metric a benchmark's results carry."""
    for name, _ in HEADLINE:
        if isinstance(metrics.get(name), dict):
            return name, metrics[name]
    return None


def summary_rows(results: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, tuple[str, str]]]:
    """Table rows per method, plus for each benchmark (metric name, best method)."""
    columns: dict[str, tuple[str, str]] = {}
    per_method = results["results"]
    for bench in results["benchmarks"]:
        scored = [(m, headline(per_method[m].get(bench, {}))) for m in per_method]
        scored = [(m, h) for m, h in scored if h]
        if not scored:
            continue
        metric = scored[0][1][0]
        higher = dict(HEADLINE)[metric]
        best = (max if higher else min)(scored, key=lambda mh: mh[1][1]["value"])[0]
        columns[bench] = (metric, best)
    rows = []
    for method, benches in per_method.items():
        cells = {b: benches.get(b, {}).get(metric) for b, (metric, _) in columns.items()}
        rows.append({"method": method, "cells": cells, "info": results["methods"].get(method, {})})
    return rows, columns


def render_report(results: dict[str, Any], samples: dict[str, dict[str, list[dict]]], path: Path) -> Path:
    rows, columns = summary_rows(results)
    html = _env().get_template("report.html.j2").render(
        r=results, rows=rows, columns=columns, samples=samples, sample_chars=SAMPLE_CHARS,
    )
    write_text_atomic(path, html)
    return path
