"""report.html: one self-contained page (jinja2, autoescape on: completions are adversarial text)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from safesteer_bench.reporting.plots import Point, bars_svg, frontier_svg
from safesteer_bench.reporting.scores import (CAPABILITY_DEF, OVER_REFUSAL_DEF, REFUSAL_DEF, capability_metric,
                                              dominated_by, method_scores, over_refusal, refusal_score)
from safesteer_bench.pipeline.seeds import is_metric
from safesteer_bench.pipeline.store import write_text_atomic

# Metric shown per benchmark in the summary table, and whether higher is better for its column.
# Refusal first: it is what the judges measure validly on small models' replies (harmful_rate is shown
# beside the judge's in-distribution agreement, never as the headline).
HEADLINE = [("refusal_rate", True), ("over_refusal_rate", False)]
SAMPLE_CHARS = 280  # harmful completions are cut here; the rest sits behind a click


def interval(metric: dict[str, Any]) -> tuple[float | None, float | None]:
    """95 % interval of a metric: its stored CI (Wilson for rates), or value ± 1.96·stderr (lm-eval metrics)."""
    if metric.get("ci_low") is not None:
        return metric["ci_low"], metric["ci_high"]
    if metric.get("stderr") is not None and metric.get("value") is not None:
        half = 1.96 * metric["stderr"]
        return max(0.0, metric["value"] - half), min(1.0, metric["value"] + half)
    return None, None


def _env() -> Environment:
    env = Environment(loader=PackageLoader("safesteer_bench.reporting", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: "—" if v is None else f"{100 * v:.1f}"
    env.filters["ci"] = lambda m: "[{}, {}]".format(*("—" if v is None else f"{100 * v:.1f}" for v in interval(m)))
    return env


def headline(metrics: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The first headline metric a benchmark's results carry (capability: lm-eval's primary)."""
    if metrics.get("primary_metric") and capability_metric(metrics):
        return metrics["primary_metric"], capability_metric(metrics)
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
        higher = dict(HEADLINE).get(metric, True)  # capability metrics: higher is better
        best = (max if higher else min)(scored, key=lambda mh: mh[1][1]["value"])[0]
        columns[bench] = (metric, best)
    rows = []
    for method, benches in per_method.items():
        cells = {b: benches.get(b, {}).get(metric) for b, (metric, _) in columns.items()}
        rows.append({"method": method, "cells": cells, "info": results["methods"].get(method, {})})
    return rows, columns


def _dominance_caption(scores: dict[str, dict[str, Any]]) -> str:
    beaten = {m: by for m, by in dominated_by(scores).items() if by}
    if not beaten:
        return " No method is dominated on refusal, over-refusal, capability and benign agreement (point estimates)."
    return (" Dominated on refusal, over-refusal, capability and benign agreement (point estimates): "
            + "; ".join(f"{m} by {', '.join(by)}" for m, by in beaten.items()) + ".")


def _points(scores: dict[str, dict[str, Any]], x_key: str) -> list[Point]:
    return [Point(m, s[x_key], s["refusal"], s["ci"].get(x_key), s["ci"].get("refusal"))
            for m, s in scores.items() if s["refusal"] is not None and s[x_key] is not None]


def tradeoff_plot(results: dict[str, Any]) -> tuple[str, str] | None:
    """(svg, caption): refusal on harmful prompts against over-refusal, the trade-off that separates
    methods at any size, with 95 % intervals and the Pareto frontier."""
    scores = method_scores(results)
    points = _points(scores, "over_refusal")
    if not points:
        return None
    caption = (f"y: refusal rate on harmful prompts — {REFUSAL_DEF}; x: over-refusal — {OVER_REFUSAL_DEF}. "
               "Up and to the left is "
               "better; error bars are 95 % intervals; ringed points joined by the dashed line form the Pareto "
               "frontier." + _dominance_caption(scores))
    return frontier_svg(points, "over-refusal: benign prompts refused", "harmful prompts refused",
                        x_better=-1), caption


def capability_plot(results: dict[str, Any]) -> tuple[str, str] | None:
    """(svg, caption): refusal on harmful prompts against capability (the capability tax is the distance to base's
    capability), with 95 % intervals and the Pareto frontier; None without capability tasks."""
    scores = method_scores(results)
    points = _points(scores, "capability")
    if not points:
        return None
    base = scores.get("base", {}).get("capability")
    tax = "" if base is None else f" Base capability is {100 * base:.1f} %; a method's tax is its distance to the left of it."
    caption = (f"y: refusal rate on harmful prompts — {REFUSAL_DEF}; x: capability score — {CAPABILITY_DEF}. "
               "Up and to the right is "
               f"better; error bars are 95 % intervals; ringed points form the Pareto frontier.{tax}")
    return frontier_svg(points, "capability score", "harmful prompts refused", x_better=1), caption


def drift_plot(results: dict[str, Any]) -> tuple[str, str] | None:
    """(svg, caption): refusal on harmful prompts against benign top-1 agreement with the base model (the capability
    tax that shows at any model size); None when the run measured no drift."""
    scores = method_scores(results)
    points = []
    for method, per in results["results"].items():
        agreement = (per.get("benign-drift") or {}).get("benign_top1_agreement")
        s = scores.get(method, {})
        if isinstance(agreement, dict) and agreement.get("value") is not None and s.get("refusal") is not None:
            ci = (agreement["ci_low"], agreement["ci_high"]) if agreement.get("ci_low") is not None else None
            points.append(Point(method, agreement["value"], s["refusal"], ci, s["ci"].get("refusal")))
    if not points:
        return None
    caption = (f"y: refusal rate on harmful prompts — {REFUSAL_DEF}; x: top-1 agreement with the base model on the base's own "
               "greedy completions of held-out benign prompts (1 = no drift; the distance to the right edge is "
               "the capability tax). Up and to the right is better; error bars are 95 % intervals; ringed points "
               "form the Pareto frontier.")
    return frontier_svg(points, "benign top-1 agreement with base", "harmful prompts refused",
                        x_better=1), caption


def benchmark_bars(results: dict[str, Any], columns: dict[str, tuple[str, str]]) -> list[tuple[str, str]]:
    """One bar chart per benchmark: the headline metric per method with its CI."""
    charts = []
    for bench, (metric, _) in columns.items():
        rows = []
        for method, per in results["results"].items():
            m = per.get(bench, {}).get(metric)
            if isinstance(m, dict) and m.get("value") is not None:
                rows.append((method, m["value"], *interval(m)))
        if rows:
            direction = rows and results["results"][rows[0][0]][bench][metric].get("direction", "")
            charts.append((bench, bars_svg(rows, f"{bench}: {metric} ({direction}), 95 % CI")))
    return charts


STYLE_KEYS = ("refusal_quality", "distinct_1", "distinct_2", "set_distinct_1", "set_distinct_2", "self_bleu",
              "perplexity")


def style_table(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{method: {harmful: {measure: value}, benign: {...}, harmful_quality, benign_quality}} from the
    style-harmful / style-benign pseudo-benchmarks (evaluation/style_stage.py); methods without them are left out."""
    out = {}
    for method, per in results.get("results", {}).items():
        parts = {part: {k: (m.get("value") if isinstance(m := (per.get(f"style-{part}") or {}).get(k), dict) else None)
                        for k in STYLE_KEYS} for part in ("harmful", "benign")}
        if any(v is not None for part in parts.values() for v in part.values()):
            out[method] = {**parts, "harmful_quality": parts["harmful"]["refusal_quality"],
                           "benign_quality": parts["benign"]["refusal_quality"]}
    return out


DISPUTED_SHOWN = 5  # disputed completions shown per method


def disagreement_rows(results: dict[str, Any], samples: dict[str, dict[str, list[dict]]]) -> list[dict[str, Any]]:
    """Per method: the share of safety verdicts the two judges dispute (pooled over benchmarks, Wilson
    CI), per benchmark, whether the method's refusal gain over ``base`` is no larger than its disputed
    share (then the gain may live in disputed verdicts), and a few disputed completions to read."""
    from safesteer_bench.evaluation.disagreement import disputed
    from safesteer_bench.evaluation.metrics import wilson_ci

    base = method_scores(results).get("base", {}).get("refusal")
    scores = method_scores(results)
    out = []
    for method, per in results["results"].items():
        rows = [r for bench_rows in samples.get(method, {}).values() for r in bench_rows]
        judged = [r for r in rows if isinstance(r.get("second"), dict)]
        if not judged:
            continue
        hits = [r for r in judged if disputed(r)]
        share = len(hits) / len(judged)
        gain = None if base is None or scores.get(method, {}).get("refusal") is None else scores[method]["refusal"] - base
        out.append({"method": method, "share": share, "ci": wilson_ci(len(hits), len(judged)), "n": len(judged),
                    "by_bench": {b: m["judge_disagreement"] for b, m in per.items()
                                 if isinstance(m, dict) and isinstance(m.get("judge_disagreement"), dict)},
                    "second": sorted({r["second"]["judge"] for r in judged}),
                    "suspect": method != "base" and gain is not None and gain > 0 and gain <= share,
                    "gain": gain, "examples": hits[:DISPUTED_SHOWN]})
    return out


def _at_seed(per_bench: dict[str, Any], seed: str) -> dict[str, Any] | None:
    """One method's per-benchmark metrics with each value replaced by ``seed``'s (None: not run)."""
    out, found = {}, False
    for bench, metrics in per_bench.items():
        out[bench] = {}
        for key, m in metrics.items():
            if is_metric(m) and seed in (m.get("seed_values") or {}):
                out[bench][key], found = {**m, "value": m["seed_values"][seed]}, True
            else:
                out[bench][key] = m
    return out if found else None


def seed_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per method, the refusal rate and over-refusal of every seed (a --seeds run; else [])."""
    seeds = list(results.get("seeds") or {})
    if len(seeds) < 2:
        return []
    kinds = {b: info.get("kind") for b, info in results.get("benchmarks", {}).items()}
    rows = []
    for method, per_bench in results["results"].items():
        cells = {s: (refusal_score(at, kinds), over_refusal(at, kinds))
                 for s in seeds if (at := _at_seed(per_bench, s)) is not None}
        rows.append({"method": method, "cells": cells})
    return rows


def own_figures(results: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{judge: {refusal_harmful, refusal_benign, harmful}} as text: each judge's in-distribution
    agreement on this project's own replies (κ; benign refusal as accuracy), from the stored
    validation a run recorded (``judges validate --dataset own``); judges without it are left out."""
    out = {}
    for judge, doc in (results.get("judges") or {}).items():
        own = ((doc or {}).get("datasets") or {}).get("own")
        if not isinstance(own, dict):
            continue

        def fig(target: str, key: str) -> str:
            value = (own.get(target) or {}).get(key)
            return "—" if value is None else f"{value:.2f}"
        out[judge] = {"refusal_harmful": fig("refusal_harmful", "kappa"),
                      "refusal_benign": fig("refusal_benign", "accuracy"), "harmful": fig("harmful", "kappa")}
    return out


def render_report(results: dict[str, Any], samples: dict[str, dict[str, list[dict]]], path: Path) -> Path:
    rows, columns = summary_rows(results)
    # The SVGs are built from escaped strings in plots.py, so they may be inserted as markup.
    figures = [(title, Markup(svg), caption) for title, fig in
               (("Refusal vs over-refusal", tradeoff_plot(results)),
                ("Refusal vs capability tax: benign drift", drift_plot(results)),
                ("Refusal vs capability", capability_plot(results)))
               if fig is not None for svg, caption in [fig]]
    html = _env().get_template("report.html.j2").render(
        r=results, rows=rows, columns=columns, samples=samples, sample_chars=SAMPLE_CHARS, figures=figures,
        bars=[(b, Markup(svg)) for b, svg in benchmark_bars(results, columns)],
        scores=method_scores(results), disagreement=disagreement_rows(results, samples),
        seeds=list(results.get("seeds") or {}), seed_rows=seed_rows(results),
        style=style_table(results), refusal_def=REFUSAL_DEF, over_refusal_def=OVER_REFUSAL_DEF,
        own_figures=own_figures(results),
    )
    write_text_atomic(path, html)
    return path
