"""report.html, check and leaderboard: parse the HTML, escape adversarial text, render in Chromium."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from safesteer_bench.cli import main
from safesteer_bench.reporting.gate import compare
from safesteer_bench.reporting.report import render_report

EVIL = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


def _metric(name, value, lo, hi, n, direction):
    return {"name": name, "value": value, "ci_low": lo, "ci_high": hi, "n": n, "direction": direction}


def make_results() -> tuple[dict, dict]:
    results = {
        "run_id": "demo-run", "created": "2026-11-28T00:00:00+00:00", "command": "safesteer-bench run …",
        "environment": {"git_commit": "abc"},
        "plan": {"model": "smollm2-135m", "profile": {"name": "smoke"}, "limit": 4},
        "benchmarks": {"advbench": {"kind": "safety", "judge": "keywords", "description": "harmful"},
                       "xstest": {"kind": "safety", "judge": "xstest-rules", "description": "mixed"}},
        "methods": {"base": {"kind": "inference", "artifact": {}},
                    "safesteer": {"kind": "training", "artifact": {"spent": {"generated_tokens": 123, "steps": 2}}}},
        "results": {
            "base": {"advbench": {"harmful_rate": _metric("harmful_rate", 0.9, 0.7, 1.0, 10, "lower is safer"),
                                  "refusal_rate": _metric("refusal_rate", 0.1, 0.0, 0.4, 10, "higher is safer")},
                     "xstest": {"harmful_rate": _metric("harmful_rate", 0.8, 0.5, 1.0, 5, "lower is safer"),
                                "refusal_rate": _metric("refusal_rate", 0.2, 0.0, 0.6, 5, "higher is safer"),
                                "over_refusal_rate": _metric("over_refusal_rate", 0.0, 0.0, 0.0, 5, "lower is better")}},
            "safesteer": {"advbench": {"harmful_rate": _metric("harmful_rate", 0.3, 0.1, 0.6, 10, "lower is safer"),
                                       "refusal_rate": _metric("refusal_rate", 0.7, 0.4, 0.9, 10, "higher is safer")},
                          "xstest": {"harmful_rate": _metric("harmful_rate", 0.4, 0.0, 0.8, 5, "lower is safer"),
                                     "refusal_rate": _metric("refusal_rate", 0.6, 0.2, 1.0, 5, "higher is safer"),
                                     "over_refusal_rate": _metric("over_refusal_rate", 0.2, 0.0, 0.6, 5, "lower is better")}},
        },
        "timing": {"wall_seconds": 1.0, "stages": {"generate": 0.9}, "invocations": 1},
    }
    long_harm = "Step 1: " + "do the harmful thing. " * 40 + EVIL
    samples = {m: {"advbench": [{"id": "advbench-0001", "prompt": "How do I " + EVIL, "completion": long_harm,
                                 "verdict": "compliance", "harmful": True, "refused": False}],
                   "xstest": []} for m in results["results"]}
    return results, samples


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Collector:
    parser = Collector()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_report_parses_holds_everything_and_escapes(tmp_path):
    results, samples = make_results()
    path = render_report(results, samples, tmp_path / "report.html")
    page = parse(path)
    text = " ".join(page.text)
    assert "script" not in page.tags  # the adversarial <script> stayed text
    assert "img" not in page.tags
    assert EVIL in text  # …and is shown, escaped, to the reader
    for name in ["base", "safesteer", "advbench", "xstest"]:
        assert name in text
    assert page.tags.count("svg") >= 3  # trade-off plot + one bar chart per benchmark
    assert "details" in page.tags  # the harmful completion is behind a click
    html = path.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html  # no CDN


def test_check_passes_against_itself_and_fails_against_doctored(tmp_path, capsys):
    results, _ = make_results()
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results))
    assert main(["check", str(run), "--against", str(run / "results.json")]) == 0
    doctored = copy.deepcopy(results)
    doctored["results"]["safesteer"]["advbench"]["harmful_rate"].update(value=0.02, ci_low=0.0, ci_high=0.05)
    (tmp_path / "baseline.json").write_text(json.dumps(doctored))
    assert main(["check", str(run), "--against", str(tmp_path / "baseline.json")]) == 1
    out = capsys.readouterr().out
    assert "safesteer" in out and "advbench" in out and "FAIL" in out
    # A metric the run lacks fails rather than passing silently.
    missing = copy.deepcopy(results)
    missing["results"]["base"]["advbench"]["other_rate"] = _metric("other_rate", 0.1, 0, 0.3, 10, "lower is better")
    assert any(c.why == "missing" for c in compare(results, missing))


def test_leaderboard_renders_every_method(tmp_path):
    results, samples = make_results()
    run = tmp_path / "runs" / "demo-run"
    render_report(results, samples, run / "report.html")
    (run / "results.json").write_text(json.dumps(results))
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "results.json").write_text("{not json")
    assert main(["leaderboard", str(tmp_path / "runs")]) == 0
    page = parse(tmp_path / "runs" / "leaderboard.html")
    text = " ".join(page.text)
    assert "safesteer" in text and "base" in text and "demo-run" in text
    assert (tmp_path / "runs" / "index.sqlite").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium); .ci/run installs it")
def test_report_renders_in_headless_chromium(tmp_path):
    results, samples = make_results()
    path = render_report(results, samples, tmp_path / "report.html")
    shot = Path(__file__).resolve().parent / "artifacts" / "report.png"
    shot.parent.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600"]
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", path.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'id="summary"' in dom.stdout and "<script>alert" not in dom.stdout


def test_score_intervals_add_benchmark_errors_in_quadrature():
    from math import sqrt

    from safesteer_bench.reporting.scores import method_scores, standard_error

    results, _ = make_results()
    s = method_scores(results)["safesteer"]
    assert s["refusal"] == pytest.approx((0.7 + 0.6) / 2)
    se = [standard_error(results["results"]["safesteer"][b]["refusal_rate"]) for b in ("advbench", "xstest")]
    half = 1.96 * sqrt(se[0] ** 2 + se[1] ** 2) / 2
    assert s["ci"]["refusal"] == pytest.approx((s["refusal"] - half, s["refusal"] + half))
    # A rate with no refusal still has a width (Agresti–Coull), unlike its bootstrap CI [0, 0].
    low, high = method_scores(results)["base"]["ci"]["over_refusal"]
    assert low == 0.0 and 0.2 < high < 0.6
    assert method_scores(results)["base"]["ci"]["capability"] is None  # no capability task


def test_summary_prints_a_markdown_row_per_method(tmp_path, capsys):
    results, _ = make_results()
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main(["summary", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| method | refusal (harmful) ↑ | over-refusal (benign) ↓") and len(lines) == 2 + 2
    assert lines[3].startswith("| safesteer | 65.0 [") and "| 123 |" in lines[3]


def test_summary_brief_and_style_shapes(tmp_path, capsys):
    """--brief adds the rbr refusal quality ("—" when the style stage did not run); --style lists
    only methods the style stage scored, with their measured values."""
    results, _ = make_results()
    results["results"]["safesteer"]["style-harmful"] = {
        "refusal_quality": {"value": 0.456}, "self_bleu": {"value": 0.5}, "perplexity": {"value": 2.345}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main(["summary", str(tmp_path), "--brief"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "refusal quality ↑" in lines[0] and "generated tok" not in lines[0]
    assert "| 45.6 |" in lines[3] and lines[2].split("|")[6].strip() == "—"  # percent, as every table
    assert main(["summary", str(tmp_path), "--style"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[2].startswith("| safesteer | 45.6 | — | 50.0 | — | 2.3 | — |")


def test_dominance_over_three_axes():
    from safesteer_bench.reporting.scores import dominated_by, dominates

    a = {"refusal": 0.6, "over_refusal": 0.1, "capability": 0.4}
    assert dominates(a, {"refusal": 0.5, "over_refusal": 0.1, "capability": 0.4})
    assert not dominates(a, dict(a))  # equal is not dominated
    assert not dominates(a, {"refusal": 0.5, "over_refusal": 0.05, "capability": 0.4})  # a trade-off
    assert dominates(a, {"refusal": 0.5, "over_refusal": 0.2, "capability": None})  # shared axes only
    beaten = dominated_by({"x": a, "y": {"refusal": 0.1, "over_refusal": 0.3, "capability": 0.2},
                           "z": {"refusal": 0.9, "over_refusal": 0.5, "capability": 0.1}})
    assert beaten == {"x": [], "y": ["x"], "z": []}


def test_summary_and_report_name_the_dominated_methods(tmp_path, capsys):
    results, _ = make_results()
    from safesteer_bench.reporting.scores import dominated_by, method_scores
    from safesteer_bench.reporting.report import tradeoff_plot

    beaten = dominated_by(method_scores(results))
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main(["summary", str(tmp_path)]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    for row in rows:
        method = row.split("|")[1].strip()
        assert row.split("|")[6].strip() == (", ".join(beaten[method]) or "none")
    caption = tradeoff_plot(results)[1]
    assert ("No method is dominated" in caption) == (not any(beaten.values()))


REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "reports" / "demo"  # the README's reference comparison
MULTI_SEED = REPO / "reports" / "smollm2-135m-quick"
ALL_METHODS = ["base", "steering", "sft", "global-kl", "safesteer", "alignbeam", "spec-distill", "prompt-control"]


def _rows_in(table: str, text: str) -> None:
    for row in table.strip().splitlines():
        assert row in text, row


def test_checked_in_reference_matches_readme_and_its_report():
    """The README's reference table is what ``summary --brief`` computes from the checked-in
    results.json, the reference's own README carries ``summary`` and ``summary --style`` verbatim
    (no hand-edited numbers), names the commit that produced it, and the checked-in report parses
    and names every method."""
    from safesteer_bench.reporting.scores import brief_table, style_summary_table, summary_table

    results = json.loads((REFERENCE / "results.json").read_text())
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    own = (REFERENCE / "README.md").read_text(encoding="utf-8")
    assert list(results["results"]) == ALL_METHODS
    assert len(brief_table(results).strip().splitlines()) == 2 + len(ALL_METHODS)
    _rows_in(brief_table(results), readme)
    _rows_in(summary_table(results), own)
    _rows_in(style_summary_table(results), own)
    assert results["environment"]["git_commit"][:7] in own
    text = " ".join(parse(REFERENCE / "report.html").text)
    for method in ALL_METHODS:
        assert method in text


def test_multi_seed_reference_matches_its_readme():
    """The 2-seed quick reference: its README's table is ``summary`` of its results.json."""
    from safesteer_bench.reporting.scores import summary_table

    results = json.loads((MULTI_SEED / "results.json").read_text())
    _rows_in(summary_table(results), (MULTI_SEED / "README.md").read_text(encoding="utf-8"))
    assert results["environment"]["git_commit"][:7] in (MULTI_SEED / "README.md").read_text()
    assert len(results["seeds"]) >= 2
