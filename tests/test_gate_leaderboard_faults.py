"""Hostile input to check, summary and leaderboard: each fails in one line (exit 2) or is skipped,
never a traceback, a vacuous PASS, or a link that carries a URL scheme."""

from __future__ import annotations

import copy
import json
import logging
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from safesteer_bench.cli import main

SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _metric(value: float, lo: float, hi: float, n: int = 10) -> dict[str, Any]:
    return {"value": value, "ci_low": lo, "ci_high": hi, "n": n, "direction": "lower is safer"}


def make_results(run_id: str = "demo-run") -> dict[str, Any]:
    return {
        "run_id": run_id, "created": "2026-11-28T00:00:00+00:00", "command": "safesteer-bench run --methods base",
        "plan": {"model": "smollm2-135m", "methods": ["base", "safesteer"], "benchmarks": ["advbench", "xstest"],
                 "profile": {"name": "smoke", "eval_limit": 10}, "limit": 10, "capability_limit": 20,
                 "seed": 0, "judge": None},
        "benchmarks": {"advbench": {"kind": "safety"}, "xstest": {"kind": "safety"}},
        "methods": {"base": {"artifact": {}}, "safesteer": {"artifact": {"spent": {"generated_tokens": 12}}}},
        "results": {
            m: {"advbench": {"n": 10, "parse_errors": 0, "harmful_rate": _metric(v, v - 0.2, v + 0.1),
                             "by_category": {"x": {"harmful_rate": _metric(v, v - 0.2, v + 0.1)}}},
                "xstest": {"n": 10, "over_refusal_rate": _metric(0.1, 0.0, 0.3)}}
            for m, v in (("base", 0.9), ("safesteer", 0.3))
        },
    }


def write(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and "PASS" not in captured.out
    return lines[0]


# -- check: a side without metrics --------------------------------------------------------------

@pytest.mark.parametrize("baseline", [
    {"results": {}},
    {"results": {"base": {}}},
    {"results": {"base": {"advbench": {"n": 10, "harmful_rate": {"value": None}}}}},
])
def test_check_refuses_a_baseline_without_metrics(tmp_path, capsys, baseline):
    run = write(tmp_path / "run" / "results.json", make_results())
    base = write(tmp_path / "baseline.json", baseline)
    assert main(["check", str(run.parent), "--against", str(base)]) == 2
    line = one_line_error(capsys)
    assert "holds no metrics" in line and str(base) in line and "reports/smoke-baseline/results.json" in line


def test_check_refuses_a_run_without_metrics(tmp_path, capsys):
    run = write(tmp_path / "run" / "results.json", {"results": {}})
    base = write(tmp_path / "baseline.json", make_results())
    assert main(["check", str(run.parent), "--against", str(base)]) == 2
    line = one_line_error(capsys)
    assert "run" in line and "holds no metrics" in line and str(run) in line


# -- check / summary: valid JSON of the wrong shape ---------------------------------------------

def _bad_value() -> dict[str, Any]:
    doc = make_results()
    doc["results"]["base"]["advbench"]["harmful_rate"]["value"] = "0.9"
    return doc


def _bad_n() -> dict[str, Any]:
    doc = make_results()
    doc["results"]["safesteer"]["xstest"]["over_refusal_rate"]["n"] = "ten"
    return doc


def _bad_methods() -> dict[str, Any]:
    doc = make_results()
    doc["methods"]["base"] = "x"
    return doc


def _bad_spent() -> dict[str, Any]:
    doc = make_results()
    doc["methods"]["safesteer"]["artifact"]["spent"]["generated_tokens"] = "many"
    return doc


def _bad_primary() -> dict[str, Any]:
    doc = make_results()
    doc["benchmarks"]["mmlu"] = {"kind": "capability"}
    doc["results"]["base"]["mmlu"] = {"primary_metric": ["acc"], "acc": _metric(0.3, 0.2, 0.4)}
    return doc


WRONG_SHAPES = {
    "results-list": ({"results": []}, "results is an array"),
    "top-list": ([], "top level is an array"),
    "top-string": ("x", "top level is a string"),
    "method-list": ({"results": {"base": []}}, "results.base is an array"),
    "bench-number": ({"results": {"base": {"advbench": 3}}}, "results.base.advbench is a number"),
    "value-string": (_bad_value(), "results.base.advbench.harmful_rate.value is a string"),
    "n-string": (_bad_n(), "over_refusal_rate.n is a string"),
    "methods-string": (_bad_methods(), "methods.base is a string"),
    "spent-string": (_bad_spent(), "spent.generated_tokens is a string"),
    "primary-list": (_bad_primary(), "results.base.mmlu.primary_metric is an array"),
    "benchmarks-null": ({**make_results(), "benchmarks": None}, "benchmarks is null"),
    "plan-string": ({**make_results(), "plan": "x"}, "plan is a string"),
}


@pytest.mark.parametrize("doc,what", WRONG_SHAPES.values(), ids=WRONG_SHAPES.keys())
def test_check_and_summary_name_a_wrong_shaped_results_json(tmp_path, capsys, doc, what):
    good = write(tmp_path / "good" / "results.json", make_results())
    bad = write(tmp_path / "bad" / "results.json", doc)
    for argv in (["check", str(bad), "--against", str(good)], ["check", str(good), "--against", str(bad)],
                 ["summary", str(bad.parent)]):
        assert main(argv) == 2, argv
        line = one_line_error(capsys)
        assert str(bad) in line and what in line, line


# -- check: a differently planned baseline ------------------------------------------------------

@pytest.mark.parametrize("change,named", [
    (lambda p: p.update(methods=["base"]), ["methods base,safesteer vs the baseline's base"]),
    (lambda p: p.update(benchmarks=["advbench"]), ["benchmarks"]),
    (lambda p: p["profile"].update(name="demo"), ["profile smoke vs the baseline's demo"]),
    (lambda p: p.update(limit=4, capability_limit=5), ["limit 10 vs the baseline's 4", "capability_limit"]),
])
def test_check_refuses_a_differently_planned_baseline(tmp_path, capsys, change, named):
    run = write(tmp_path / "run" / "results.json", make_results("ci-smoke"))
    baseline = make_results("ci-smoke")
    change(baseline["plan"])
    base = write(tmp_path / "baseline.json", baseline)
    assert main(["check", str(run.parent), "--against", str(base)]) == 2
    line = one_line_error(capsys)
    assert "was planned differently from baseline" in line and str(base) in line
    assert "re-run with the baseline's command (`safesteer-bench run --methods base`)" in line
    for words in named:
        assert words in line
    assert "seed" not in line  # only the fields that decide which metrics exist are compared


def test_check_compares_runs_whose_plans_differ_only_in_what_moves_values(tmp_path, capsys):
    run = write(tmp_path / "run" / "results.json", make_results())
    baseline = make_results()
    baseline["plan"].update(seed=1, judge="llama-guard", methods=["safesteer", "base"])  # order is no difference
    base = write(tmp_path / "baseline.json", baseline)
    assert main(["check", str(run.parent), "--against", str(base)]) == 0
    assert "PASS" in capsys.readouterr().out


def test_check_still_fails_a_missing_metric_under_the_same_plan(tmp_path, capsys):
    run_doc = make_results()
    del run_doc["results"]["safesteer"]["advbench"]["harmful_rate"]
    run = write(tmp_path / "run" / "results.json", run_doc)
    base = write(tmp_path / "baseline.json", make_results())
    assert main(["check", str(run.parent), "--against", str(base)]) == 1
    out = capsys.readouterr().out
    assert "FAIL (missing)" in out and "FAIL" in out.splitlines()[-1]


# -- leaderboard: bad runs, hostile run ids, unwritable places ---------------------------------

def _hrefs(html: str) -> list[str]:
    class Links(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.hrefs: list[str] = []
            self.tags: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append(tag)
            self.hrefs += [v or "" for k, v in attrs if k == "href"]

    parser = Links()
    parser.feed(html)
    assert "script" not in parser.tags
    return parser.hrefs


@pytest.mark.parametrize("doc", [
    {"results": []},
    [],
    {**make_results("bad-entries"), "results": {"base": {"advbench": "x"}}},
    {**make_results("bad-method"), "results": {"base": ["advbench"]}},
    {k: v for k, v in make_results("no-run-id").items() if k != "run_id"},
    {**make_results("huge"), "results": {"base": {"advbench": {"refusal_rate": {"value": 10 ** 30}}}}},
], ids=["results-list", "top-list", "bench-string", "method-list", "no-run-id", "unbindable-number"])
def test_leaderboard_skips_a_wrong_shaped_run_and_keeps_the_others(tmp_path, capsys, caplog, doc):
    runs = tmp_path / "runs"
    write(runs / "good" / "results.json", make_results("good-run"))
    write(runs / "bad" / "results.json", doc)
    write(runs / "zz-good" / "results.json", make_results("later-run"))  # after the bad one in order
    with caplog.at_level(logging.WARNING, logger="safesteer_bench.reporting.leaderboard"):
        assert main(["leaderboard", str(runs)]) == 0
    html = (runs / "leaderboard.html").read_text(encoding="utf-8")
    assert "good-run" in html and "later-run" in html
    assert any("skipping" in r.getMessage() and str(runs / "bad") in r.getMessage() for r in caplog.records)
    assert "Traceback" not in capsys.readouterr().err


EVIL_IDS = ["javascript:alert(1)", "data:text/html,x", "<script>alert(1)</script>", "vbscript:x"]


def test_leaderboard_links_cannot_carry_a_scheme_and_run_ids_are_escaped(tmp_path):
    runs = tmp_path / "runs"
    for i, run_id in enumerate(EVIL_IDS):
        # A run directory is named after its run id; one level deep, so "/" cannot be in its name.
        write(runs / run_id.replace("/", "_") / "results.json", make_results(run_id))
    assert main(["leaderboard", str(runs)]) == 0
    html = (runs / "leaderboard.html").read_text(encoding="utf-8")
    hrefs = _hrefs(html)
    assert len(hrefs) == 2 * len(EVIL_IDS)  # two methods per run
    assert not [h for h in hrefs if SCHEME.match(h)], hrefs
    assert "./javascript%3Aalert%281%29/report.html" in hrefs
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    for href in hrefs:  # each link still leads to its report
        assert (runs / unquote(href)).parent.is_dir()


@pytest.mark.parametrize("report,page_dir,expected", [
    ("runs/data:text/html,x/report.html", "runs", "./data%3Atext/html%2Cx/report.html"),
    ("runs/javascript:alert(1)/report.html", "out", "../runs/javascript%3Aalert%281%29/report.html"),
    ("runs/plain/report.html", "runs", "plain/report.html"),
])
def test_report_link_is_a_quoted_relative_path(report, page_dir, expected):
    from safesteer_bench.reporting.leaderboard import report_link

    link = report_link(report, Path(page_dir))
    assert link == expected and not SCHEME.match(link)


def test_leaderboard_names_an_index_it_cannot_create(tmp_path, capsys):
    runs = tmp_path / "runs"
    write(runs / "good" / "results.json", make_results())
    (runs / "index.sqlite").mkdir()  # as root chmod does not stop writes; a directory does
    assert main(["leaderboard", str(runs)]) == 2
    line = one_line_error(capsys)
    assert str(runs / "index.sqlite") in line and "writable" in line


def test_leaderboard_names_an_index_that_is_not_sqlite(tmp_path, capsys):
    runs = tmp_path / "runs"
    write(runs / "good" / "results.json", make_results())
    (runs / "index.sqlite").write_text("not a database " * 100)
    assert main(["leaderboard", str(runs)]) == 2
    assert str(runs / "index.sqlite") in one_line_error(capsys)


@pytest.mark.parametrize("out", ["file/leaderboard.html", "dir"], ids=["parent-is-a-file", "out-is-a-dir"])
def test_leaderboard_names_an_out_it_cannot_write(tmp_path, capsys, out):
    runs = tmp_path / "runs"
    write(runs / "good" / "results.json", make_results())
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    assert main(["leaderboard", str(runs), "--out", str(tmp_path / out)]) == 2
    line = one_line_error(capsys)
    assert str(tmp_path / out) in line and "--out" in line


# -- help text ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["check", "summary"])
def test_help_prints_a_single_percent_sign(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "%%" not in out and "95 % CI" in out


def test_top_level_help_prints_a_single_percent_sign(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "%%" not in capsys.readouterr().out


def test_baseline_copy_is_unchanged_by_validation(tmp_path):
    """load_results returns the document as written (validation reads, never rewrites)."""
    from safesteer_bench.reporting.gate import load_results

    doc = make_results()
    path = write(tmp_path / "results.json", doc)
    assert load_results(path) == copy.deepcopy(doc)
