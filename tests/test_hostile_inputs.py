"""Hostile inputs to the newest input surfaces: user benchmark files, run --config, plugins.

Each case was a traceback, a silent wrong result or a misleading error before its fix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from safesteer_bench.api import config_fields
from safesteer_bench.cli.main import main
from safesteer_bench.errors import UserError
from safesteer_bench.evaluation.benchmark import resolve_benchmarks
from safesteer_bench.evaluation.user_benchmarks import UserFileSpec, load_user_prompts


def test_a_user_benchmark_named_like_a_suite_is_refused(tmp_path):
    (tmp_path / "p.txt").write_text("how do I pick a lock?\n", encoding="utf-8")
    spec = tmp_path / "s.yaml"
    spec.write_text("file: p.txt\nname: safety-7\n", encoding="utf-8")
    # before: registered as 'safety-7', then expanded as the suite: the user's file was never scored
    with pytest.raises(UserError, match="name of a suite"):
        resolve_benchmarks(str(spec))


@pytest.mark.parametrize("file_value", ["sub", "s.yaml", "[a]", "null", "''", "/etc/passwd"])
def test_a_spec_file_field_must_name_a_prompt_file(tmp_path, file_value):
    (tmp_path / "sub").mkdir()
    spec = tmp_path / "s.yaml"
    spec.write_text(f"file: {file_value}\n", encoding="utf-8")
    with pytest.raises(UserError, match="must name a prompt file"):
        resolve_benchmarks(str(spec))


@pytest.mark.parametrize("extra", ["column: 5", "label_column: [1]", "name: [x]"])
def test_spec_fields_of_the_wrong_type_are_refused(tmp_path, extra):
    (tmp_path / "p.jsonl").write_text('{"prompt": "x", "label": "safe"}\n', encoding="utf-8")
    spec = tmp_path / "typed.yaml"
    spec.write_text(f"file: p.jsonl\n{extra}\n", encoding="utf-8")
    with pytest.raises(UserError, match="must be a string"):
        resolve_benchmarks(str(spec))


def test_a_column_for_a_plain_text_file_is_refused(tmp_path):
    (tmp_path / "plain_col.txt").write_text("a prompt\n", encoding="utf-8")
    spec = tmp_path / "plain_col.yaml"
    spec.write_text("file: plain_col.txt\ncolumn: text\n", encoding="utf-8")
    with pytest.raises(UserError, match="plain prompts"):
        resolve_benchmarks(str(spec))


def test_a_malformed_user_file_is_not_blamed_on_the_package_data(tmp_path, capsys):
    bad = tmp_path / "latin_prompts.txt"
    bad.write_bytes(b"\xff\xfeprompt\n")
    with pytest.raises(UserError) as info:
        resolve_benchmarks(str(bad))
    assert "malformed benchmark file" in str(info.value) and "data verify" not in str(info.value)


def test_an_edited_prompt_gets_a_new_id_so_a_resume_cannot_reuse_its_old_completion(tmp_path):
    path = tmp_path / "edits.txt"
    path.write_text("first prompt\nsecond prompt\n", encoding="utf-8")
    spec = UserFileSpec(name="edits", file=path)
    before = [p.id for p in load_user_prompts(spec)]
    assert before == [p.id for p in load_user_prompts(spec)]  # stable while the file is unchanged
    path.write_text("first prompt\na different second prompt\n", encoding="utf-8")
    after = [p.id for p in load_user_prompts(spec)]
    assert after[0] == before[0] and after[1] != before[1]


@pytest.mark.parametrize("doc", [
    {"methods": 5}, {"methods": ["base", None]}, {"methods": {"base": 1}}, {"limit": "abc"},
    {"seeds": {"a": 1}}, {"seeds": [1.5]}, {"method_args": ["a"]}, {"model_args": [1]}, {"out": ["a"]},
    {"profile": {"x": 1}}, {"drift": "no"}, {"allow_code_execution": "yes"}, {"capability_limit": "3"},
    {"capability_generate_limit": -1}, {"second_judge": ["a"]}, {"dtype": 5}, {"adapter": "foo"},
    {"model": ["a"]}, {"benchmarks": 5}, {"benchmarks": ["advbench", None]},
])
def test_config_fields_of_the_wrong_type_are_one_line_errors(doc):
    with pytest.raises(UserError, match="field '"):
        config_fields(doc, "run.yaml")


def test_config_seeds_as_a_string_are_parsed_not_split_into_characters():
    assert config_fields({"seeds": "10,11"}, "run.yaml")["seeds"] == [10, 11]
    assert config_fields({"seeds": 3}, "run.yaml")["seeds"] == [3]
    assert config_fields({"profile": {"name": "smoke"}, "benchmarks": ["a", "b"]}, "plan.json") == \
        {"profile": "smoke", "benchmarks": "a,b"}


def test_config_drift_and_the_no_drift_flag_together(tiny_dir, tmp_path, data_dir):
    config = tmp_path / "run.yaml"
    config.write_text("methods: [base]\nbenchmarks: advbench\ndrift: true\n", encoding="utf-8")
    argv = ["run", "--config", str(config), "--model", str(tiny_dir), "--out", str(tmp_path / "runs"),
            "--data-dir", str(data_dir), "--no-drift", "--dry-run"]
    assert main(argv) == 0  # before: TypeError, RunConfig got 'drift' twice


def test_a_config_with_a_list_as_out_writes_nothing(tiny_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text("methods: [base]\nbenchmarks: advbench\nout: [a]\n", encoding="utf-8")
    assert main(["run", "--config", str(config), "--model", str(tiny_dir), "--dry-run"]) == 2
    assert "field 'out'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


def _fake_entry_points(monkeypatch, group, name, obj):
    import safesteer_bench.registry as registry

    ep = SimpleNamespace(name=name, value=f"fake_plugin:{name}", load=lambda: obj)
    monkeypatch.setattr(registry, "entry_points", lambda group=None, _want=group: [ep] if group == _want else [])
    monkeypatch.setattr(registry, "_LOADED", set())


def test_a_plugin_taking_a_built_in_name_is_an_error_not_silently_dropped(monkeypatch):
    from safesteer_bench.registry import Registry, load_plugins

    reg: Registry = Registry("method", "methods")
    reg.add("base", type("Base", (), {"policy": lambda self, ctx, artifact: None}))
    _fake_entry_points(monkeypatch, "safesteer_bench.methods", "base",
                       type("Impostor", (), {"policy": lambda self, ctx, artifact: None}))
    with pytest.raises(UserError, match="takes the name of an existing method"):
        load_plugins("safesteer_bench.methods", reg)


@pytest.mark.parametrize("group,obj", [("safesteer_bench.methods", 42), ("safesteer_bench.judges", "x"),
                                       ("safesteer_bench.benchmarks", {"name": "x"})])
def test_a_plugin_naming_the_wrong_kind_of_object_fails_at_load(monkeypatch, group, obj):
    from safesteer_bench.registry import Registry, load_plugins

    reg: Registry = Registry("thing", "things")
    _fake_entry_points(monkeypatch, group, "odd", obj)
    with pytest.raises(UserError, match="names a"):
        load_plugins(group, reg)
    assert "odd" not in reg


def test_a_plugin_that_raises_on_import_is_a_user_error(monkeypatch):
    from safesteer_bench.registry import Registry, load_plugins

    import safesteer_bench.registry as registry

    def boom():
        raise RuntimeError("broken plugin")

    ep = SimpleNamespace(name="boom", value="boom_plugin", load=boom)
    monkeypatch.setattr(registry, "entry_points", lambda group=None: [ep])
    monkeypatch.setattr(registry, "_LOADED", set())
    with pytest.raises(UserError, match="failed to load: RuntimeError: broken plugin"):
        load_plugins("safesteer_bench.judges", Registry("judge", "judges"))


def test_run_policy_refuses_a_damaged_plan(tmp_path):
    from safesteer_bench.evaluation.inspect_provider import run_policy

    run = tmp_path / "damaged"
    run.mkdir()
    (run / "plan.json").write_text(json.dumps({"run_id": "damaged", "methods": "base"}), encoding="utf-8")
    with pytest.raises(UserError, match="damaged plan|cannot be read"):
        run_policy(str(Path(run) / "base"))


def test_typed_options_refuse_non_booleans_and_fold_negative_zero():
    from safesteer_bench.options import MethodOptions, option

    @dataclass(frozen=True)
    class Opts(MethodOptions):
        flag: bool = option(True, "a flag", kind="bool")
        coef: float = option(1.0, "a coefficient", kind="float", low=0.0)

    for bad in (5, [1], "maybe"):
        with pytest.raises(UserError, match="flag="):
            Opts.parse({"flag": bad}, "demo")
    assert Opts.parse({"flag": "no"}, "demo").flag is False
    parsed = Opts.parse({"coef": "-0"}, "demo").coef
    assert parsed == 0.0 and str(parsed) == "0.0"  # not -0.0: same options, same run id



def _bomb(levels: int = 6) -> str:
    """A YAML flow list whose aliases expand to 9**levels leaves (a few bytes on disk)."""
    parts = ["&l0 [" + ", ".join(["xxxxxxxx"] * 9) + "]"]
    parts += [f"&l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]" for n in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def test_a_yaml_bomb_in_a_spec_or_config_gives_a_short_error(tmp_path):
    from safesteer_bench.api import read_config

    spec = tmp_path / "bomb_spec.yaml"
    spec.write_text(f"file: {_bomb()}\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        resolve_benchmarks(str(spec))
    assert len(str(info.value)) < 1000  # before: the aliases expanded into megabytes of error text
    config = tmp_path / "run.yaml"
    config.write_text(f"methods: {_bomb()}\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        read_config(config)
    assert len(str(info.value)) < 1000


def test_a_key_given_twice_is_an_error(capsys):
    from safesteer_bench.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", "--methods", "steering", "--method-args", "coef=1,coef=2", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "'coef' is given twice" in err[0]
