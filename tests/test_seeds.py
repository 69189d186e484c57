"""--seeds: sub-runs per seed on the same prompts, combined with seed-aware intervals."""

from __future__ import annotations

import json
from statistics import mean, stdev

import pytest

from safesteer_bench.cli import main
from safesteer_bench.errors import UserError
from safesteer_bench.pipeline.seeds import combine_metric, combine_tree, parse_seeds


def _metric(value: float, low: float, high: float, n: int = 50) -> dict:
    return {"name": "harmful_rate", "value": value, "ci_low": low, "ci_high": high, "n": n,
            "direction": "lower"}


def test_combined_interval_holds_within_and_between_seed_error():
    per_seed = [_metric(0.2, 0.11, 0.33), _metric(0.3, 0.19, 0.44), _metric(0.5, 0.37, 0.63)]
    out = combine_metric(per_seed, [0, 1, 2])
    assert out["value"] == pytest.approx(mean([0.2, 0.3, 0.5]))
    assert out["seed_sd"] == pytest.approx(stdev([0.2, 0.3, 0.5]))
    assert out["seed_values"] == {"0": 0.2, "1": 0.3, "2": 0.5}
    # wider than the average single-seed interval on both sides, and covering every seed's value
    assert out["ci_low"] < out["value"] - (out["value"] - mean(m["ci_low"] for m in per_seed))
    assert out["ci_high"] > out["value"] + (mean(m["ci_high"] for m in per_seed) - out["value"])
    assert out["ci_low"] <= 0.2 and out["ci_high"] >= 0.5
    assert 0.0 <= out["ci_low"] and out["ci_high"] <= 1.0
    # the standard error the composite scores and the gate use includes the spread
    assert out["stderr"] > out["seed_sd"] / 3 ** 0.5


def test_identical_seeds_keep_the_prompt_interval():
    per_seed = [_metric(0.3, 0.19, 0.44)] * 3
    out = combine_metric(per_seed, [0, 1, 2])
    assert out["seed_sd"] == 0 and (out["ci_low"], out["ci_high"]) == pytest.approx((0.19, 0.44))


def test_one_seed_and_nested_trees():
    tree = {"n": 10, "harmful_rate": _metric(0.1, 0.0, 0.4), "by_category": {"x": _metric(0.2, 0.1, 0.5)}}
    assert combine_tree([tree], [7])["harmful_rate"]["seed_values"] == {"7": 0.1}
    two = combine_tree([tree, {**tree, "harmful_rate": _metric(0.3, 0.1, 0.6)}], [0, 1])
    assert two["harmful_rate"]["value"] == pytest.approx(0.2) and two["n"] == 10
    assert two["by_category"]["x"]["seed_sd"] == 0


@pytest.mark.parametrize("text, needle", [("0,0", "twice"), ("a", "not an integer"), (",", "empty"),
                                          ("-1", "seed"), (",".join(map(str, range(20))), "at most")])
def test_bad_seed_lists(text, needle):
    with pytest.raises(UserError, match=needle):
        parse_seeds(text)


def test_bad_seeds_flag_is_one_line_exit_2(capsys):
    assert main(["run", "--methods", "base", "--seeds", "1,x", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an integer" in err[0]


def test_seeds_run_end_to_end(tiny_dir, tmp_path, data_dir, capsys):
    argv = ["run", "--methods", "base,steering", "--model", str(tiny_dir), "--benchmarks", "advbench,xstest",
            "--limit", "6", "--seeds", "3,4", "--run-id", "multi", "--out", str(tmp_path),
            "--data-dir", str(data_dir), "--no-drift", "--second-judge", "none"]
    assert main(argv) == 0
    run = tmp_path / "multi"
    results = json.loads((run / "results.json").read_text())
    assert results["plan"]["seeds"] == [3, 4] and set(results["seeds"]) == {"3", "4"}
    # the base model is seed-free: it ran once; steering ran in both sub-runs
    assert (run / "seed-3" / "samples" / "base").is_dir() and not (run / "seed-4" / "samples" / "base").exists()
    base = results["results"]["base"]["advbench"]["harmful_rate"]
    steer = results["results"]["steering"]["advbench"]["harmful_rate"]
    assert set(base["seed_values"]) == {"3"} and set(steer["seed_values"]) == {"3", "4"}
    assert steer["value"] == pytest.approx(mean(steer["seed_values"].values()))
    # same evaluation prompts in every seed; the steering direction does depend on the seed
    ids = [[json.loads(line)["id"] for line in (run / f"seed-{s}" / "samples" / "steering" / "advbench.jsonl")
            .read_text().splitlines()] for s in (3, 4)]
    assert ids[0] == ids[1]
    requests = [json.loads((run / f"seed-{s}" / "methods" / "_shared" / "direction" / "direction.json")
                           .read_text())["info"]["request"]["seed"] for s in (3, 4)]
    assert requests == [3, 4]
    html = (run / "report.html").read_text()
    assert 'id="seeds"' in html and "seed 4" in html
    # the gate reads the combined intervals like any run's
    assert main(["check", str(run), "--against", str(run / "results.json")]) == 0
    # a second invocation resumes: nothing left to do, same numbers
    capsys.readouterr()
    assert main(argv) == 0
    again = json.loads((run / "results.json").read_text())
    assert again["results"]["steering"]["advbench"]["harmful_rate"]["value"] == steer["value"]
