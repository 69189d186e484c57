"""Fault injection: tear, truncate, corrupt and race the run store, and feed the CLI hostile input.

Each test reproduces one way a hostile but fair user broke a run or its store, and checks the fix:
the store repairs what is damaged (regenerating or re-judging only that), bad input is one line on
stderr with exit 2, Ctrl-C is exit 130 at once. check / summary / leaderboard faults are in
test_gate_leaderboard_faults.py.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safesteer_bench.cli import main
from safesteer_bench.records import valid_generation, valid_judged
from safesteer_bench.pipeline.runner import RunConfig, Runner, make_plan
from safesteer_bench.pipeline.store import append_jsonl, read_jsonl, repair_jsonl_tail, run_lock, write_json_atomic


REPO = Path(__file__).resolve().parents[1]


def _cfg(tiny_dir: Path, out: Path, data_dir: Path, **kw) -> RunConfig:
    base = dict(methods=["base"], model=str(tiny_dir), benchmarks="advbench,xstest", profile="smoke", out=out,
                data_dir=data_dir, limit=6, progress=False, run_id="faults")
    return RunConfig(**{**base, **kw})


def _run(tiny_dir: Path, out: Path, data_dir: Path, **kw):
    plan = make_plan(_cfg(tiny_dir, out, data_dir, **kw))
    return plan, Runner(plan).run()


@pytest.fixture(scope="module")
def finished(tiny_dir, tmp_path_factory, data_dir) -> Path:
    """One finished run of the module's plan, copied by :func:`_finished_copy` for each test
    (generating it again for every test cost minutes)."""
    plan, _ = _run(tiny_dir, tmp_path_factory.mktemp("finished"), data_dir)
    return plan.run_dir


def _finished_copy(finished: Path, tiny_dir: Path, out: Path, data_dir: Path):
    """The plan of a private copy of the finished run under ``out`` (same run id, same rows)."""
    import shutil

    plan = make_plan(_cfg(tiny_dir, out, data_dir))
    shutil.copytree(finished, plan.run_dir, ignore=shutil.ignore_patterns(".lock"))
    return plan


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _one_error_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


def _cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one command (argparse's errors exit through SystemExit)."""
    capsys.readouterr()  # drop what earlier steps of the test printed
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------------------------
# Torn and malformed rows (cases 1, 2, 16)
# ----------------------------------------------------------------------------------------------


def test_append_after_a_torn_tail_keeps_every_row_readable(tmp_path):
    path = tmp_path / "x.gen.jsonl"
    append_jsonl(path, [{"id": "a"}, {"id": "b"}])
    with path.open("a") as fh:
        fh.write('{"id": "c", "compl')  # killed mid-write
    append_jsonl(path, [{"id": "d"}])
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b", "d"]
    assert all(json.loads(line) for line in _lines(path))  # no fragment glued to a row


def test_repair_cuts_only_a_torn_tail(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n')
    assert repair_jsonl_tail(path) == 0 and path.read_text() == '{"a": 1}\n{"b": 2}\n'
    path.write_text('{"a": 1}\n{"b"')
    assert repair_jsonl_tail(path) == 4 and path.read_text() == '{"a": 1}\n'
    path.write_text('no newline at all')
    assert repair_jsonl_tail(path) == len("no newline at all") and path.read_text() == ""


def test_torn_generation_checkpoint_regenerates_only_the_torn_row(finished, tiny_dir, tmp_path, data_dir, monkeypatch):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    gen = plan.run_dir / "samples" / "base" / "advbench.gen.jsonl"
    judged = plan.run_dir / "samples" / "base" / "advbench.jsonl"
    text = gen.read_text()
    gen.write_text(text[: len(text) - 40])  # tear the last row
    judged.unlink()
    import safesteer_bench.evaluation.evaluate as evaluate

    seen: list[str] = []
    real = evaluate.Policy.generate
    monkeypatch.setattr(evaluate.Policy, "generate",
                        lambda self, p, c, progress=True: seen.extend(p) or real(self, p, c, progress))
    monkeypatch.setenv("SAFESTEER_BENCH_GENERATION", "bare")
    _, results = _run(tiny_dir, tmp_path, data_dir)
    assert len(seen) == 1  # only the torn prompt
    rows = [json.loads(line) for line in _lines(gen)]  # every line parses: no fragment left
    assert sorted(r["id"] for r in rows) == sorted({r["id"] for r in rows}) and len(rows) == 6
    assert results["results"]["base"]["advbench"]["n"] == 6


@pytest.mark.parametrize("field", ["parse_error", "prompt", "verdict", "refused"])
def test_judged_row_missing_a_field_is_rejudged_not_trusted(finished, tiny_dir, tmp_path, data_dir, field, monkeypatch):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    judged = plan.run_dir / "samples" / "base" / "advbench.jsonl"
    rows = [json.loads(line) for line in _lines(judged)]
    del rows[2][field]
    judged.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import safesteer_bench.evaluation.evaluate as evaluate

    # The completions are intact in the checkpoint: re-judging them needs no generation.
    monkeypatch.setattr(evaluate.Policy, "generate", lambda *a, **k: pytest.fail("regenerated"))
    monkeypatch.setenv("SAFESTEER_BENCH_GENERATION", "bare")
    _, results = _run(tiny_dir, tmp_path, data_dir)
    assert results["results"]["base"]["advbench"]["n"] == 6
    assert all(valid_judged(json.loads(line)) for line in _lines(judged))


def test_generation_row_missing_a_field_is_regenerated(finished, tiny_dir, tmp_path, data_dir):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    gen = plan.run_dir / "samples" / "base" / "advbench.gen.jsonl"
    rows = [json.loads(line) for line in _lines(gen)]
    rows[1].pop("completion")
    rows[3]["new_tokens"] = "many"
    gen.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (plan.run_dir / "samples" / "base" / "advbench.jsonl").unlink()
    _, results = _run(tiny_dir, tmp_path, data_dir)
    assert results["results"]["base"]["advbench"]["n"] == 6
    valid = [r for r in read_jsonl(gen) if valid_generation(r)]
    assert len({r["id"] for r in valid}) == 6


def test_rejudge_after_malformed_rows_repairs_from_the_checkpoint(finished, tiny_dir, tmp_path, data_dir, capsys):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    judged = plan.run_dir / "samples" / "base" / "advbench.jsonl"
    rows = [json.loads(line) for line in _lines(judged)]
    del rows[0]["prompt"]
    judged.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = _cli(capsys, ["rejudge", str(plan.run_dir), "--judge", "keywords", "--data-dir", str(data_dir)])
    assert code == 0, err
    doc = json.loads((plan.run_dir / "results.json").read_text())
    assert doc["results"]["base"]["advbench"]["n"] == 6


def test_rejudge_with_a_torn_samples_line_reports_no_false_changes(finished, tiny_dir, tmp_path, data_dir, capsys):
    """Same judge again: nothing changed. The torn row is 'newly judged', not 'changed'."""
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    judged = plan.run_dir / "samples" / "base" / "advbench.jsonl"
    text = judged.read_text()
    judged.write_text(text[: len(text) - 30])
    code, out, err = _cli(capsys, ["rejudge", str(plan.run_dir), "--judge", "keywords", "--benchmarks", "advbench",
                                   "--data-dir", str(data_dir)])
    assert code == 0, err
    change = json.loads((plan.run_dir / "results.json").read_text())["rejudge"][-1]["changes"][0]
    assert change["changed"] == 0 and change["new"] == 1 and change["n"] == 6
    assert "0 verdict(s) changed" in out


def test_rejudge_with_incomplete_completions_refuses_and_keeps_results(finished, tiny_dir, tmp_path, data_dir, capsys):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    samples = plan.run_dir / "samples" / "base"
    for name in ("advbench.jsonl", "advbench.gen.jsonl"):
        text = (samples / name).read_text()
        (samples / name).write_text(text[: len(text) - 30])
    before = (plan.run_dir / "results.json").read_bytes()
    code, out, err = _cli(capsys, ["rejudge", str(plan.run_dir), "--judge", "keywords", "--data-dir", str(data_dir)])
    line = _one_error_line(err)
    assert code == 2 and "base/advbench" in line and "re-run" in line
    assert (plan.run_dir / "results.json").read_bytes() == before  # n never rewritten to 0


@pytest.mark.parametrize("damage", [
    lambda p: p.write_text("{}"),
    lambda p: p.write_text("[1, 2]"),
    lambda p: p.write_text('{"run_id": "faults", "methods": ["base"]}'),
    lambda p: p.write_text('{"run_id": "faults", "model": "m", "methods": [], "benchmarks": ["advbench"], '
                           '"profile": {"name": "smoke"}}'),
    lambda p: p.write_text('{"run_id": "../x", "model": "m", "methods": ["base"], "benchmarks": ["advbench"], '
                           '"profile": {"name": "smoke"}}'),
    lambda p: p.write_bytes(b"\xff\xfe garbage"),
])
def test_rejudge_on_a_damaged_plan_is_one_line(finished, tiny_dir, tmp_path, data_dir, capsys, damage):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    damage(plan.run_dir / "plan.json")
    code, out, err = _cli(capsys, ["rejudge", str(plan.run_dir), "--judge", "keywords", "--data-dir", str(data_dir)])
    assert code == 2 and "plan" in _one_error_line(err)


@pytest.mark.parametrize("name, damage", [
    ("timing.json", '{"invocations": "x"}'),
    ("timing.json", '[]'),
    ("samples/base/advbench.meta.json", '[]'),
    ("samples/base/advbench.meta.json", '{"judge": "keywords", "n": "six"}'),
])
def test_damaged_stage_files_are_redone_not_trusted(finished, tiny_dir, tmp_path, data_dir, name, damage):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    (plan.run_dir / name).write_text(damage)
    _, results = _run(tiny_dir, tmp_path, data_dir)
    assert results["results"]["base"]["advbench"]["n"] == 6
    assert results["timing"]["invocations"] >= 1


# ----------------------------------------------------------------------------------------------
# Races (case 5)
# ----------------------------------------------------------------------------------------------


def test_a_second_process_on_a_locked_run_fails_in_one_line(tiny_dir, tmp_path, data_dir, capsys):
    plan = make_plan(_cfg(tiny_dir, tmp_path, data_dir))
    code = None
    # Another process holds the lock: run_lock is an OS lock, so a child process shows the race.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from safesteer_bench.pipeline.store import run_lock\n"
        f"with run_lock(Path({str(plan.run_dir)!r})):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, out, err = _cli(capsys, ["run", "--methods", "base", "--model", str(tiny_dir), "--benchmarks",
                                       "advbench", "--limit", "6", "--out", str(tmp_path), "--run-id", "faults",
                                       "--data-dir", str(data_dir)])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and "in use by another" in _one_error_line(err)
    assert not (plan.run_dir / "samples").exists()  # nothing generated by the loser


def test_two_identical_runs_started_together_never_interleave(tiny_dir, tmp_path, data_dir):
    cmd = [sys.executable, "-m", "safesteer_bench", "run", "--methods", "base", "--model", str(tiny_dir),
           "--benchmarks", "advbench", "--limit", "12", "--profile", "smoke", "--out", str(tmp_path),
           "--run-id", "race", "--data-dir", str(data_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SAFESTEER_BENCH_CHUNK": "4", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    rows = [json.loads(line) for line in _lines(tmp_path / "race" / "samples" / "base" / "advbench.gen.jsonl")]
    # Either the second waited for nothing (lost the lock: exit 2) or started after the first ended
    # and resumed a finished run (exit 0, nothing regenerated). Never two writers.
    assert codes in ([0, 0], [0, 2]), outs
    assert len(rows) == 12 == len({r["id"] for r in rows})
    if codes == [0, 2]:
        loser = outs[[p.returncode for p in procs].index(2)][1]
        assert "in use by another" in loser and "Traceback" not in loser


# ----------------------------------------------------------------------------------------------
# Hostile command lines (cases 6, 7, 9, 10, 11, 15, 17)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("methods", ["", ",", " , ,"])
def test_empty_methods_exit_2_and_write_nothing(tmp_path, capsys, methods):
    code, out, err = _cli(capsys, ["run", "--methods", methods, "--benchmarks", "advbench", "--out", str(tmp_path)])
    assert code == 2 and "method" in _one_error_line(err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("run_id", ["../../x", "/tmp/abs-run", ".", "..", "a/b", "", ".hidden", "-rf",
                                    "javascript:alert(1)", "a\nb", "x" * 200, "a\\b"])
def test_unsafe_run_ids_exit_2_and_write_nothing(tmp_path, capsys, run_id):
    out_dir = tmp_path / "out" / "runs"
    code, out, err = _cli(capsys, ["run", "--methods", "base", "--benchmarks", "advbench", "--out", str(out_dir),
                                   f"--run-id={run_id}"])
    assert code == 2 and "run id" in _one_error_line(err)
    assert [p for p in tmp_path.rglob("*")] == []  # not even --out was created


@pytest.mark.parametrize("argv, needle", [
    (["--device", "quantum"], "unknown device 'quantum'"),
    (["--device", "cuda"], "CUDA is not available"),
    (["--device", "cuda:7"], "CUDA is not available"),
    (["--dtype", "int3"], "unknown dtype 'int3'"),
    (["--dtype", "float8_e4m3fn"], "unknown dtype"),
    (["--limit", "0"], "--limit"),
    (["--limit", "-3"], "--limit"),
    (["--limit", "many"], "--limit"),
    (["--capability-limit", "0"], "--capability-limit"),
])
def test_bad_values_exit_2_in_one_line_before_any_work(tmp_path, capsys, argv, needle):
    import torch

    if "cuda" in argv[-1] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the no-CUDA message cannot be produced here")
    code, out, err = _cli(capsys, ["run", "--methods", "base", "--benchmarks", "advbench", "--dry-run",
                                   "--out", str(tmp_path / "runs"), *argv])
    assert code == 2 and needle in _one_error_line(err)
    assert "cache" not in err  # int3 used to blame a damaged model cache
    assert not (tmp_path / "runs").exists()


def test_out_that_is_a_file_or_under_a_file_exits_2(tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for out_dir in (a_file, a_file / "runs"):
        code, out, err = _cli(capsys, ["run", "--methods", "base", "--benchmarks", "advbench", "--dry-run",
                                       "--out", str(out_dir)])
        assert code == 2 and str(a_file) in _one_error_line(err)


def test_out_in_a_read_only_folder_exits_2(tmp_path, capsys, monkeypatch):
    """Root ignores permission bits, so the read-only answer of access(2) is simulated here; the
    real-filesystem cases (a file in the way) are tested above."""
    import safesteer_bench.paths as paths

    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.setattr(paths.os, "access", lambda p, mode: Path(p) != ro)
    code, out, err = _cli(capsys, ["run", "--methods", "base", "--benchmarks", "advbench", "--dry-run",
                                   "--out", str(ro / "runs")])
    assert code == 2 and "not writable" in _one_error_line(err)


def test_an_os_error_while_writing_is_one_line(tmp_path, capsys, monkeypatch, tiny_dir, data_dir):
    """A failure of the disk or permissions mid-run (here: plan.json's place taken by a folder)."""
    run_dir = tmp_path / "faults"
    (run_dir / "plan.json").mkdir(parents=True)
    code, out, err = _cli(capsys, ["run", "--methods", "base", "--model", str(tiny_dir), "--benchmarks", "advbench",
                                   "--limit", "2", "--out", str(tmp_path), "--run-id", "faults",
                                   "--data-dir", str(data_dir)])
    assert code == 2 and "plan.json" in _one_error_line(err)


def test_duplicate_methods_plan_once_with_the_same_run_id(capsys):
    once = make_plan(RunConfig(methods=["base"], model="smollm2-135m", benchmarks="advbench"))
    twice = make_plan(RunConfig(methods=["base", "base", " base"], model="smollm2-135m", benchmarks="advbench"))
    assert twice.config.methods == ["base"] and twice.run_id == once.run_id


def test_debug_works_after_the_subcommand(tmp_path, capsys):
    code, out, err = _cli(capsys, ["run", "--methods", "nope", "--out", str(tmp_path), "--debug"])
    assert code == 2 and "Traceback" in err and "unknown method 'nope'" in err


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--limit"])  # a flag without its value
    assert info.value.code == 2
    assert "--limit" in _one_error_line(capsys.readouterr().err)
    assert main(["run"]) == 2  # --methods missing (it may come from --config)
    assert "--methods" in _one_error_line(capsys.readouterr().err)


def test_piping_into_head_ends_without_a_traceback(tmp_path):
    """`summary | head -1` closes the pipe early; the command must stop quietly."""
    results = REPO / "reports" / "history" / "smollm2-135m-quick-v1" / "results.json"
    script = f"{sys.executable} -m safesteer_bench summary {results} | head -c 10; exit ${{PIPESTATUS[0]}}"
    # A long table and a tiny pipe buffer make the write fail for sure.
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode in (0, 141)


# ----------------------------------------------------------------------------------------------
# Judges offline (case 14), timing after a kill, deterministic artifacts, file modes
# ----------------------------------------------------------------------------------------------


def test_model_judge_that_cannot_load_offline_is_one_line(tmp_path, data_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"),
           "SAFESTEER_BENCH_CACHE": str(tmp_path / "cache")}
    env.pop("SAFESTEER_BENCH_JUDGE_MODEL", None)
    cmd = [sys.executable, "-m", "safesteer_bench", "judges", "validate", "--judge", "llama-guard",
           "--data-dir", str(data_dir), "--limit", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    line = _one_error_line(done.stderr)
    assert "llama-guard" in line and "--judge-model" in line


def test_timing_of_an_interrupted_invocation_is_kept(tiny_dir, tmp_path, data_dir, monkeypatch):
    import safesteer_bench.pipeline.runner as runner_mod

    def killed(self, policy, spec):
        raise RuntimeError("killed")  # stands in for SIGKILL after the model load finished

    monkeypatch.setattr(runner_mod.Runner, "generate", killed)
    with pytest.raises(RuntimeError):
        _run(tiny_dir, tmp_path, data_dir)
    first = json.loads((tmp_path / "faults" / "timing.json").read_text())["invocations"]
    assert len(first) == 1 and first[0]["finished"] is False and first[0]["stages"]["load"] > 0
    monkeypatch.undo()
    _, results = _run(tiny_dir, tmp_path, data_dir)
    assert results["timing"]["invocations"] == 2
    assert results["timing"]["stages"]["load"] >= first[0]["stages"]["load"]


_SAVE_LORA = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import torch
from peft import LoraConfig, get_peft_model
from conftest import make_tiny_model, make_tiny_tokenizer
from safesteer_bench.training.students import file_sha256, save_lora
tok = make_tiny_tokenizer()
model = make_tiny_model(tok)
targets = {{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}
wrapper = get_peft_model(model, LoraConfig(r=4, target_modules=targets), adapter_name="student")
torch.manual_seed(0)
for p in wrapper.parameters():
    if p.requires_grad:
        torch.nn.init.normal_(p)
print(file_sha256(save_lora(wrapper, "student", Path(sys.argv[1]))))
"""


def test_identical_lora_trainings_get_identical_weight_hashes(tmp_path):
    """peft writes target_modules (a set) in hash order; PYTHONHASHSEED changes it per process."""
    script = _SAVE_LORA.format(tests=str(REPO / "tests"))
    hashes = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / seed)], capture_output=True,
                              text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        hashes.append(done.stdout.strip().splitlines()[-1])
    assert len(set(hashes)) == 1


def test_stage_files_get_the_usual_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "x.json").stat().st_mode)
    from safesteer_bench.pipeline.store import FILE_MODE

    assert mode == FILE_MODE and mode & stat.S_IRGRP  # readable by the group, like any plain file


def test_lock_is_released_after_a_run(finished, tiny_dir, tmp_path, data_dir):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    with run_lock(plan.run_dir):  # would raise if the finished run still held it
        pass


# ----------------------------------------------------------------------------------------------
# Ctrl-C on the real model (case 13)
# ----------------------------------------------------------------------------------------------


@pytest.mark.real
def test_one_ctrl_c_mid_generation_exits_130_promptly(smollm2, tmp_path, data_dir):
    """One SIGINT while a long batch decodes inside inspect-ai: exit 130 within seconds (it took
    ~80 s and ended in an IndexError traceback when inspect's control server owned SIGINT)."""
    cmd = [sys.executable, "-m", "safesteer_bench", "run", "--methods", "base", "--model", "smollm2-135m",
           "--benchmarks", "jailbreak-templates", "--limit", "40", "--profile", "smoke", "--out", str(tmp_path),
           "--run-id", "ctrlc", "--data-dir", str(data_dir)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    seen = ""
    while "generate" not in seen and time.monotonic() - started < 240:  # the progress bar: decoding began
        seen += proc.stderr.read(1)
    time.sleep(3)
    assert proc.poll() is None, "the run ended before the interrupt; raise --limit"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    waited = time.monotonic() - sent
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err
    # The batch in flight needs ~40 s to finish; stopping well before that shows it was cut.
    assert waited < 15, f"exit took {waited:.1f} s after SIGINT"
    gen = tmp_path / "ctrlc" / "samples" / "base" / "jailbreak-templates.gen.jsonl"
    assert not gen.exists() or all(valid_generation(json.loads(l)) for l in _lines(gen))


# ----------------------------------------------------------------------------------------------
# Second hostile pass: files json cannot read, index collisions, seeds, options, models
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("line", ['{"id": "x", "n": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000,
                                  '{"id": "x", "seconds": NaN}'])
def test_checkpoint_lines_json_cannot_read_are_skipped(finished, tiny_dir, tmp_path, data_dir, line):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    gen = plan.run_dir / "samples" / "base" / "advbench.gen.jsonl"
    with gen.open("a") as fh:
        fh.write(line + "\n")
    (plan.run_dir / "timing.json").write_text(line)
    _, results = _run(tiny_dir, tmp_path, data_dir)
    assert results["results"]["base"]["advbench"]["n"] == 6


def test_run_and_rejudge_survive_a_broken_leaderboard_index(tiny_dir, tmp_path, data_dir, capsys, caplog):
    (tmp_path / "index.sqlite").write_text("not a database " * 100)
    plan, _ = _run(tiny_dir, tmp_path, data_dir)  # finishes: the index only warns
    assert (plan.run_dir / "report.html").exists()
    code, out, err = _cli(capsys, ["rejudge", str(plan.run_dir), "--judge", "keywords", "--data-dir", str(data_dir)])
    assert code == 0, err
    assert "index" in caplog.text


@pytest.mark.parametrize("run_id", ["index.sqlite", "leaderboard.html"])
def test_run_ids_that_the_runs_folder_uses_are_refused(tmp_path, capsys, run_id):
    code, out, err = _cli(capsys, ["run", "--methods", "base", "--benchmarks", "advbench", "--dry-run",
                                   "--out", str(tmp_path), "--run-id", run_id])
    assert code == 2 and "run id" in _one_error_line(err)


def test_leaderboard_lists_runs_that_share_a_run_id(tmp_path, capsys):
    baseline = json.loads((REPO / "reports" / "smoke-baseline" / "results.json").read_text())
    for name in ("run-a", "run-b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(baseline))
    code, out, err = _cli(capsys, ["leaderboard", str(tmp_path)])
    assert code == 0, err
    page = (tmp_path / "leaderboard.html").read_text()
    assert "run-a/report.html" in page and "run-b/report.html" in page


def test_rejudge_refuses_judged_rows_of_other_prompts(finished, tiny_dir, tmp_path, data_dir, capsys):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    judged = plan.run_dir / "samples" / "base" / "advbench.jsonl"
    first = _lines(judged)[0]
    judged.write_text((first + "\n") * 6)  # six valid rows, all of one prompt
    code, out, err = _cli(capsys, ["rejudge", str(plan.run_dir), "--judge", "keywords", "--data-dir", str(data_dir)])
    assert code == 0, err  # repaired from the checkpoint, not trusted
    rows = [json.loads(l) for l in _lines(judged)]
    assert len({r["id"] for r in rows}) == 6


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999999", "x"])
def test_seeds_out_of_range_exit_2(tmp_path, capsys, seed):
    code, out, err = _cli(capsys, ["run", "--methods", "base", "--benchmarks", "advbench", "--dry-run",
                                   "--out", str(tmp_path), f"--seed={seed}"])
    assert code == 2 and "--seed" in _one_error_line(err)


@pytest.mark.parametrize("args, needle", [
    ("loss_varient=renormalize", "unknown --method-args key 'loss_varient'"),
    ("cof=2", "valid keys"),
    ("coef=abc", "coef"),
    ("layer=x", "layer"),
    ("target_refusal=high", "target_refusal"),
    ("direction_mode=bogus", "direction_mode"),
    ("judge=nope", "unknown judge 'nope'"),
    ("layer=-1", "layer"),
    ("loss_variant=partial", "valid keys"),  # no method of this run reads it (safesteer does)
])
def test_bad_method_args_exit_2_in_the_dry_run(tmp_path, capsys, args, needle):
    code, out, err = _cli(capsys, ["run", "--methods", "base,steering,alignbeam", "--benchmarks", "advbench", "--dry-run",
                                   "--out", str(tmp_path), "--method-args", args])
    assert code == 2 and needle in _one_error_line(err)


@pytest.mark.parametrize("model, needle", [("", "no model given"), (" ", "no model given"),
                                          (".", "not a model directory"), ("/no/such/dir", "does not exist")])
def test_bad_model_names_exit_2(tmp_path, capsys, model, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, ["run", "--methods", "base", "--benchmarks", "advbench", "--dry-run",
                                   "--out", str(tmp_path / "runs"), f"--model={model}"])
    assert code == 2 and needle in _one_error_line(err)


@pytest.mark.parametrize("flag", ["--tolerance=inf", "--margin=inf", "--tolerance=-1", "--margin=nan"])
def test_check_refuses_bands_that_pass_or_fail_everything(capsys, flag):
    baseline = str(REPO / "reports" / "smoke-baseline" / "results.json")
    code, out, err = _cli(capsys, ["check", baseline, "--against", baseline, flag])
    assert code == 2 and flag.split("=")[0] in _one_error_line(err)


def test_check_refuses_a_baseline_with_infinite_bounds(tmp_path, capsys):
    text = (REPO / "reports" / "smoke-baseline" / "results.json").read_text()
    bad = tmp_path / "results.json"
    bad.write_text(text.replace('"ci_high": ', '"ci_high": Infinity, "x": ', 1))
    code, out, err = _cli(capsys, ["check", str(REPO / "reports" / "smoke-baseline"), "--against", str(bad)])
    assert code == 2 and "finite" in _one_error_line(err)


def test_bad_chunk_size_in_the_environment_is_one_line(tiny_dir, tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.setenv("SAFESTEER_BENCH_CHUNK", "abc")
    code, out, err = _cli(capsys, ["run", "--methods", "base", "--model", str(tiny_dir), "--benchmarks", "advbench",
                                   "--limit", "2", "--out", str(tmp_path), "--data-dir", str(data_dir)])
    assert code == 2 and "SAFESTEER_BENCH_CHUNK" in _one_error_line(err)


def test_limited_validation_never_replaces_a_full_one(tmp_path, capsys, data_dir, monkeypatch):
    monkeypatch.setenv("SAFESTEER_BENCH_CACHE", str(tmp_path))
    assert _cli(capsys, ["judges", "validate", "--judge", "keywords", "--data-dir", str(data_dir)])[0] == 0
    stored = tmp_path / "judges" / "keywords.json"
    full = stored.read_bytes()
    code, out, err = _cli(capsys, ["judges", "validate", "--judge", "keywords", "--limit", "1",
                                   "--data-dir", str(data_dir)])
    assert code == 0 and "not stored" in out and stored.read_bytes() == full
    code, out, err = _cli(capsys, ["judges", "validate", "--judge", "keywords", "--limit", "0",
                                   "--data-dir", str(data_dir)])
    assert code == 2 and "--limit" in _one_error_line(err)


def test_rejudge_of_a_run_without_safety_benchmarks_exits_2(finished, tiny_dir, tmp_path, data_dir, capsys):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    doc = json.loads((plan.run_dir / "plan.json").read_text())
    doc["benchmarks"] = ["arc-easy"]
    (plan.run_dir / "plan.json").write_text(json.dumps(doc))
    code, out, err = _cli(capsys, ["rejudge", str(plan.run_dir), "--judge", "keywords", "--data-dir", str(data_dir)])
    assert code == 2 and "nothing to rejudge" in _one_error_line(err)


def test_rejudge_of_a_plan_naming_an_unknown_method_says_damaged(finished, tiny_dir, tmp_path, data_dir, capsys):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    doc = json.loads((plan.run_dir / "plan.json").read_text())
    doc["methods"] = ["base", "no-such-method"]
    (plan.run_dir / "plan.json").write_text(json.dumps(doc))
    code, out, err = _cli(capsys, ["rejudge", str(plan.run_dir), "--judge", "keywords", "--data-dir", str(data_dir)])
    assert code == 2 and "damaged" in _one_error_line(err)


def test_malformed_spent_compute_is_not_copied_into_results(finished, tiny_dir, tmp_path, data_dir, capsys):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    (plan.run_dir / "methods" / "base").mkdir(parents=True, exist_ok=True)
    (plan.run_dir / "methods" / "base" / "artifact.json").write_text('{"spent": {"generated_tokens": "lots"}}')
    code, out, err = _cli(capsys, ["rejudge", str(plan.run_dir), "--judge", "keywords", "--data-dir", str(data_dir)])
    assert code == 0, err
    assert _cli(capsys, ["summary", str(plan.run_dir)])[0] == 0


@pytest.mark.parametrize("damage", ['{"datasets": [1]}', '{"judge": "keywords", "datasets": {"xstest": "oops"}}',
                                    '{"judge": "keywords", "datasets": {"xstest": {"refusal": {"n": 3, "accuracy": "x"}}}}',
                                    "[]"])
def test_a_damaged_agreement_cache_is_ignored_not_rendered(finished, tiny_dir, tmp_path, data_dir, capsys,
                                                         monkeypatch, damage):
    """Reports show each judge's stored agreement; a damaged cache file crashed the report stage."""
    monkeypatch.setenv("SAFESTEER_BENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "judges").mkdir(parents=True)
    (tmp_path / "cache" / "judges" / "keywords.json").write_text(damage)
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    code, out, err = _cli(capsys, ["rejudge", str(plan.run_dir), "--judge", "keywords", "--data-dir", str(data_dir)])
    assert code == 0, err
    doc = json.loads((plan.run_dir / "results.json").read_text())
    assert doc["judges"]["keywords"]["datasets"]["xstest"]["refusal"]["n"] > 0  # measured again


def test_spent_compute_with_strings_and_phases_is_kept(tmp_path):
    from safesteer_bench.pipeline.runner import _method_info

    (tmp_path / "artifact.json").write_text(json.dumps({"spent": {
        "generated_tokens": 10, "trained_tokens": 8, "wall_seconds": 1.5, "peak_memory_mb": 100,
        "peak_memory_kind": "rss", "phases": {"train": 1.0}}}))
    assert _method_info(tmp_path, "sft")["artifact"]["spent"]["generated_tokens"] == 10


def test_rejudging_some_methods_with_another_judge_is_refused(finished, tiny_dir, tmp_path, data_dir, capsys):
    plan = _finished_copy(finished, tiny_dir, tmp_path, data_dir)
    doc = json.loads((plan.run_dir / "plan.json").read_text())
    # a second method that shares base's samples, so the run has two methods to choose between
    import shutil

    shutil.copytree(plan.run_dir / "samples" / "base", plan.run_dir / "samples" / "steering")
    doc["methods"] = ["base", "steering"]
    (plan.run_dir / "plan.json").write_text(json.dumps(doc))
    before = (plan.run_dir / "results.json").read_bytes()
    code, out, err = _cli(capsys, ["rejudge", str(plan.run_dir), "--judge", "keywords", "--methods", "steering",
                                   "--benchmarks", "advbench", "--data-dir", str(data_dir)])
    assert code == 2 and "base judged by another judge" in _one_error_line(err)
    assert (plan.run_dir / "results.json").read_bytes() == before
