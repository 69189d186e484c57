"""The report's trade-off planes and the leaderboard's grouping and ranking."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from safesteer_bench.cli import main
from safesteer_bench.reporting.leaderboard import ranked_groups
from safesteer_bench.reporting.plots import Point, _fitted_range, _place_labels, frontier_svg, pareto_front
from safesteer_bench.reporting.report import capability_plot, tradeoff_plot

REFERENCE = Path(__file__).resolve().parents[1] / "reports" / "history" / "smollm2-135m-quick-v1" / "results.json"


def test_pareto_front_respects_each_axis_direction():
    pts = [Point("a", 0.0, 0.1), Point("b", 0.2, 0.4), Point("c", 0.3, 0.3), Point("d", 0.8, 0.9)]
    # over-refusal (lower better) vs safety (higher better): c is beaten by b
    assert [p.name for p in pareto_front(pts, x_better=-1)] == ["a", "b", "d"]
    # capability (higher better) vs safety: only d
    assert [p.name for p in pareto_front(pts, x_better=1)] == ["d"]


def test_axes_are_fitted_to_the_data_not_fixed_to_0_1():
    low, high, step = _fitted_range([0.242, 0.269, 0.22, 0.31])
    assert 0.15 <= low <= 0.22 and 0.31 <= high <= 0.4 and (high - low) / step <= 6
    low, high, step = _fitted_range([1.0])
    assert high == 1.0 and low < 1.0  # a single point at the edge still gets an axis


def test_labels_do_not_overlap_even_for_coincident_points():
    anchors = [(100.0, 100.0, "safesteer"), (101.0, 100.0, "alignbeam"), (100.0, 101.0, "steering")]
    placed = _place_labels(anchors, (0, 0, 400, 300))
    boxes = []
    for (x, y, anchor), (_, _, text) in zip(placed, anchors):
        w = 6.6 * len(text)
        x0 = x - (w if anchor == "end" else w / 2 if anchor == "middle" else 0)
        boxes.append((x0, y - 10, x0 + w, y + 3))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])


def test_reference_report_leads_with_both_planes_with_error_bars():
    results = json.loads(REFERENCE.read_text())
    svg, caption = tradeoff_plot(results)
    assert "over-refusal" in svg and "Pareto frontier" in caption and "95 %" in caption
    assert svg.count("<circle") == 6 and svg.count("<line") >= 6  # a point and whiskers per method
    assert "polyline" in svg  # the frontier
    cap_svg, cap_caption = capability_plot(results)
    assert "capability" in cap_svg and "Base capability" in cap_caption
    ticks = [float(t) for t in re.findall(r'text-anchor="middle">([\d.]+)%</text>', cap_svg)]
    assert ticks and min(ticks) > 10  # fitted: the capability axis does not start at 0 %


def test_methods_with_html_names_are_escaped_in_the_plane():
    svg = frontier_svg([Point("<script>x</script>", 0.1, 0.2), Point("b", 0.3, 0.4)], "x", "y")
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def _entry(method, model="m", profile="smoke", benchmarks="advbench", refusal=0.5, over=0.1, cap=None):
    return {"method": method, "model": model, "profile": profile, "benchmarks": benchmarks, "refusal": refusal,
            "over_refusal": over, "capability": cap}


def test_leaderboard_groups_and_ranks_frontier_first_never_by_refusal_alone():
    entries = [_entry("sft", refusal=0.94, over=0.83), _entry("safesteer", refusal=0.37, over=0.24),
               _entry("alignbeam", refusal=0.35, over=0.30), _entry("base", refusal=0.08, over=0.01),
               _entry("base", profile="quick", refusal=0.1, over=0.0)]
    groups = ranked_groups(entries)
    assert [(g["profile"], len(g["entries"])) for g in groups] == [("quick", 1), ("smoke", 4)]
    smoke = groups[1]["entries"]
    # within the frontier by refusal − over-refusal (safesteer 0.13, sft 0.11, base 0.07), not by
    # refusal alone (which would put sft first); alignbeam, dominated by safesteer, comes last
    assert [(e["method"], e["frontier"]) for e in smoke] == [
        ("safesteer", True), ("sft", True), ("base", True), ("alignbeam", False)]


def test_leaderboard_page_shows_intervals_per_group(tmp_path):
    results = json.loads(REFERENCE.read_text())
    other = copy.deepcopy(results)
    other["plan"]["profile"]["name"] = "demo"
    for name, doc in (("quick-run", results), ("demo-run", other)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(doc))
    assert main(["leaderboard", str(tmp_path)]) == 0
    page = (tmp_path / "leaderboard.html").read_text()
    assert page.count('<table class="leaderboard">') == 2 and "Pareto frontier first" in page
    assert re.search(r'\d+\.\d <span class="ci">\[\d+\.\d, \d+\.\d\]</span>', page)


def test_leaderboard_groups_by_scored_benchmarks_and_split_not_by_the_drift_stage():
    from pathlib import Path as P

    from safesteer_bench.reporting.leaderboard import score_rows

    results = json.loads((P(__file__).resolve().parents[1] / "reports" / "smoke-baseline" / "results.json").read_text())
    benchmarks = score_rows(results, P("r/report.html"))[0][9]
    assert benchmarks == "advbench,xstest (test split)"
    old = json.loads(REFERENCE.read_text())
    assert score_rows(old, P("r/report.html"))[0][9].endswith("(whole sets)")
