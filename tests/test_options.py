"""Typed method options: one dataclass per method, parsed once, errors that list the valid keys."""

from __future__ import annotations

import pytest

from safesteer_bench.cli import main
from safesteer_bench.errors import UserError
from safesteer_bench.methods.api import METHODS, get_method
from safesteer_bench.options import check_method_args, method_args_for, options_class
from safesteer_bench.methods.safesteer import SafeSteerOptions
from safesteer_bench.training.students import TrainingOptions


def test_strings_from_the_command_line_become_typed_values():
    opts = SafeSteerOptions.parse({"loss_variant": "partial", "token_set_size": "10", "coef": "auto",
                                   "learning_rate": "3e-4", "layer": "12", "teacher_coef": ""}, "safesteer")
    assert (opts.loss_variant, opts.token_set_size, opts.coef, opts.learning_rate, opts.layer) == \
        ("partial", 10, "auto", 3e-4, 12)
    assert opts.teacher_coef is None  # empty means unset
    assert SafeSteerOptions.parse({"coef": "1.5"}, "safesteer").coef == 1.5
    assert SafeSteerOptions().loss_variant == "tail-bucket"  # the dev-chosen default


@pytest.mark.parametrize("raw, needle", [
    ({"loss_varient": "renormalize"}, "unknown option 'loss_varient'"),
    ({"token_set_size": "0"}, "token_set_size"),
    ({"token_set_size": "2.5"}, "integer"),
    ({"learning_rate": "nan"}, "learning_rate"),
    ({"loss_variant": "bogus"}, "partial | renormalize | tail-bucket"),
    ({"train_fraction": "1.5"}, "[0.001, 1]"),
])
def test_unknown_keys_and_bad_values_are_one_line_errors(raw, needle):
    with pytest.raises(UserError) as err:
        SafeSteerOptions.parse(raw, "safesteer")
    text = str(err.value)
    assert needle in text and "\n" not in text
    if "unknown" in text:
        assert "loss_variant" in text and "token_set_size" in text  # the valid keys are listed


def test_each_method_reads_only_its_own_keys():
    args = {"loss_variant": "partial", "coef": "2", "alpha": "0.3"}
    assert method_args_for("base", args) == {}
    assert method_args_for("steering", args) == {"coef": "2"}
    assert method_args_for("global-kl", args) == {"coef": "2"}  # no loss variant to choose
    assert method_args_for("safesteer", args) == {"loss_variant": "partial", "coef": "2"}
    assert method_args_for("alignbeam", args) == {"coef": "2", "alpha": "0.3"}
    check_method_args(args, ["base", "safesteer", "alignbeam"])
    with pytest.raises(UserError, match="unknown --method-args key 'alpha'"):
        check_method_args({"alpha": "0.3"}, ["base", "safesteer"])


def test_every_tunable_key_is_an_option_and_every_default_parses():
    get_method("base")
    for name, method in METHODS:
        cls = options_class(method)
        keys = set(cls.keys())
        assert set(getattr(method, "search_space", {}) or {}) <= keys, name
        parsed = cls.parse({k: str(v) for k, v in (getattr(method, "defaults", {}) or {}).items()}, name)
        assert isinstance(parsed, cls)
    assert issubclass(options_class(get_method("sft")), TrainingOptions)


def test_methods_details_and_run_help_list_every_option(capsys):
    assert main(["methods", "--details"]) == 0
    out = capsys.readouterr().out
    for key in SafeSteerOptions.keys():
        assert key in out
    assert "--method-args token_set_size=50" in out and "(partial | renormalize | tail-bucket)" in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    for key in SafeSteerOptions.keys():  # every option once, with default, valid values, meaning, readers
        assert help_text.count(f"\n  {key}=") == 1, key
    assert "loss_variant=tail-bucket  (partial | renormalize | tail-bucket)" in help_text
    assert "[steering, safesteer, global-kl, sft, alignbeam]" in help_text and "alpha=0.5" in help_text
    # spec-distill reads the training options but not the steering ones (its teacher has no hook)
    assert "default: the profile's) [safesteer, global-kl, sft, spec-distill]" in help_text
    assert "(default: the same) [safesteer, global-kl, sft]" in help_text  # teacher_coef


def test_train_takes_the_same_options_the_same_way(capsys, tmp_path):
    code = main(["train", "--method", "safesteer", "--out", str(tmp_path / "t"), "--method-args", "loss_varient=partial"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "valid keys" in err[0]
    code = main(["train", "--method", "sft", "--out", str(tmp_path / "t"), "--method-args", "loss_variant=partial"])
    assert code == 2 and "loss_variant" in capsys.readouterr().err


@pytest.mark.real
def test_a_layer_beyond_the_searched_blocks_fails_in_the_dry_run(smollm2, capsys, tmp_path):
    code = main(["run", "--methods", "base,steering", "--model", "smollm2-135m", "--method-args", "layer=99",
                 "--dry-run", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "layer=99 is outside the searched blocks" in err[0]
    assert "30 blocks" in err[0] and "layer=0..23" in err[0]


def test_resuming_with_other_options_prepares_the_method_again(tiny_dir, tmp_path, data_dir, caplog):
    """Stored outputs are reused only for the request they were made for (options with their
    defaults, budget, model); `make demo` after a default changed used to resume stale results."""
    import json

    argv = ["run", "--methods", "base,steering", "--model", str(tiny_dir), "--benchmarks", "advbench",
            "--profile", "smoke", "--limit", "2", "--out", str(tmp_path), "--run-id", "r", "--no-drift",
            "--second-judge", "none", "--data-dir", str(data_dir)]
    artifact = tmp_path / "r" / "methods" / "steering" / "artifact.json"
    assert main(argv + ["--method-args", "layer=1"]) == 0
    first = json.loads(artifact.read_text())
    assert first["layer"] == 1 and first["request_key"]
    caplog.clear()
    assert main(argv + ["--method-args", "layer=1"]) == 0  # same request: reused, no warning
    assert "preparing it again" not in caplog.text
    assert main(argv + ["--method-args", "layer=2"]) == 0
    second = json.loads(artifact.read_text())
    assert second["layer"] == 2 and second["request_key"] != first["request_key"]
    assert "steering: its stored outputs were made with other options" in caplog.text
    assert list((tmp_path / "r" / "stale").glob("steering-*/methods/steering/artifact.json"))  # kept, not lost
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["methods"]["steering"]["artifact"]["layer"] == 2  # the results are the new request's
