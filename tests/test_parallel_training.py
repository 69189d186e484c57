"""Data-parallel training through accelerate (training/parallel.py): 2 CPU processes (gloo) train
the same Budget as one process, with the same per-step losses and final LoRA weights.

Each comparison launches real processes: `accelerate launch` (through torchrun, gloo on the CPU,
one torch thread per process) against a plain one-process run of the same script or command.

Tolerance: the two runs differ only in float summation order (each process back-propagates its
share of the step's sequences, DDP averages the two gradients; micro-batches are padded to other
widths), so values agree to float32 rounding, amplified a little by a few AdamW steps: losses
within 1e-4 relative (measured: <= 1.3e-6), gradient norms 1e-3, each LoRA tensor within 1e-3 of
its largest entry (measured: 4e-5). A real error (a wrong loss divisor, a process missing its share,
rollouts differing between processes) moves the losses by 10 % or more (a divisor of n instead of
n / 2 halves them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


REL = 1e-4
REL_WEIGHTS = 1e-3

WORKER = textwrap.dedent('''
    """Trains a LoRA student on the tiny model with both trainers; the main process writes the logs."""
    import json, sys
    import torch
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from safetensors.torch import save_file
    from safesteer_bench.training.budget import Budget
    from safesteer_bench.training.students import lora_config
    from safesteer_bench.training.distill import OnPolicyDistiller, SupervisedTrainer
    from safesteer_bench.training.parallel import data_parallel
    from safesteer_bench.modeling.hooks import ResidualHook

    model_dir, out = sys.argv[1], sys.argv[2]
    par = data_parallel()
    prompts = ["Write a poem about the sea.", "How do I make a cake?", "Tell me about bread.",
               "The ocean is deep.", "Say something kind.", "Explain the sky."]
    budget = Budget(prompt_ids=tuple(f"p{i}" for i in range(6)), prompts=tuple(prompts), seed=3, steps=3,
                    prompts_per_step=2, samples_per_prompt=2, max_new_tokens=8, learning_rate=2e-2,
                    lora_rank=4, lora_alpha=8)

    def student():
        from peft import get_peft_model
        tok = AutoTokenizer.from_pretrained(model_dir)
        tok.padding_side = "left"  # as load_model sets it: batched generation pads on the left
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        torch.manual_seed(budget.seed)
        wrapper = get_peft_model(model, lora_config(budget)).eval()
        return wrapper, tok

    def lora(wrapper):
        return {k: v.detach().clone().contiguous() for k, v in wrapper.named_parameters() if "lora_" in k}

    results = {"world_size": par.world_size}
    wrapper, tok = student()
    gen = torch.Generator().manual_seed(1)
    hook = ResidualHook(1, torch.randn(32, generator=gen), 16.0, "add")
    trainer = OnPolicyDistiller(wrapper, tok, budget, [hook], token_ids=list(range(40)), variant="tail-bucket",
                                micro_batch_size=1, progress=False)
    results["distill"] = trainer.train().log
    results["distill_trained_tokens"] = trainer.spent.trained_tokens
    distill_weights = lora(wrapper)

    wrapper, tok = student()
    targets = {p: tok("I'm sorry, but I cannot help with that.", add_special_tokens=False)["input_ids"]
               for p in prompts}
    sft = SupervisedTrainer(wrapper, tok, budget, targets, micro_batch_size=1, progress=False)
    results["sft"] = sft.train().log
    sft_weights = lora(wrapper)
    if par.is_main:
        save_file(distill_weights, out + "/distill.safetensors")
        save_file(sft_weights, out + "/sft.safetensors")
        with open(out + "/log.json", "w") as f:
            json.dump(results, f)
    par.wait()
''')


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    if env.get("SAFESTEER_BENCH_DATA"):  # `make test` passes it relative to the repository; the launch runs elsewhere
        env["SAFESTEER_BENCH_DATA"] = str(Path(env["SAFESTEER_BENCH_DATA"]).resolve())
    # One torch thread per process, CPU only (gloo), no network and no accelerate config file.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ACCELERATE_USE_CPU="1", CUDA_VISIBLE_DEVICES="",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_HOME=env.get("HF_HOME", "/tmp/hf-none"))
    return env


def _launch(args: list[str], processes: int, cwd: Path) -> subprocess.CompletedProcess:
    if processes == 1:
        cmd = [sys.executable, *args]
    else:  # `--cpu` would start one process only; --multi_gpu + ACCELERATE_USE_CPU=1 runs torchrun with gloo
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "0", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _close(a: float, b: float, rel: float = REL) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-8)


def _compare_logs(one: list[dict], two: list[dict]) -> None:
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for r1, r2 in zip(one, two):
        assert r1["lr"] == r2["lr"] and r1["sequences"] == r2["sequences"]
        assert _close(r1["loss"], r2["loss"]), (r1, r2)
        assert _close(r1["grad_norm"], r2["grad_norm"], 1e-3), (r1, r2)


def _compare_weights(path1: Path, path2: Path) -> None:
    from safetensors.torch import load_file

    w1, w2 = load_file(str(path1)), load_file(str(path2))
    assert w1.keys() == w2.keys() and w1
    for key in w1:
        # lora_B starts at 0, so its scale is what training moved: the runs really trained.
        scale = w1[key].abs().max().item()
        assert scale > 0, key
        assert (w1[key] - w2[key]).abs().max().item() <= REL_WEIGHTS * scale, key


def test_two_processes_match_one_process(tiny_dir, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _launch([str(script), str(tiny_dir), str(one)], 1, tmp_path)
    _launch([str(script), str(tiny_dir), str(two)], 2, tmp_path)
    log1, log2 = json.loads((one / "log.json").read_text()), json.loads((two / "log.json").read_text())
    assert (log1["world_size"], log2["world_size"]) == (1, 2)
    for trainer in ("distill", "sft"):
        _compare_logs(log1[trainer], log2[trainer])
        _compare_weights(one / f"{trainer}.safetensors", two / f"{trainer}.safetensors")
    # Token accounting: the main process reports both processes' trained tokens.
    assert log1["distill_trained_tokens"] == log2["distill_trained_tokens"] > 0
    # The losses move over the steps (a trajectory, not one repeated number).
    assert len({round(r["loss"], 6) for r in log1["distill"]}) == 3


def test_run_trains_on_two_processes_and_evaluates_on_the_main_one(tiny_dir, tmp_path, data_dir):
    """`run` under accelerate launch: only the training stage is distributed, the main process
    evaluates; its sft student equals a one-process `train` on the same Budget."""
    common = ["--model", str(tiny_dir), "--profile", "smoke", "--data-dir", str(data_dir)]
    proc = _launch(["-m", "safesteer_bench", "run", "--methods", "sft", "--benchmarks", "advbench", "--limit", "2",
                    "--no-drift", "--out", str(tmp_path / "runs"), *common], 2, tmp_path)
    assert proc.stdout.count("results: ") == 1  # printed by the main process only
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())  # beside index.sqlite
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["methods"]) == ["sft"]
    samples = (run_dir / "samples" / "sft" / "advbench.jsonl").read_text().splitlines()
    assert len(samples) == 2  # evaluated once (by the main process), --limit 2
    parallel = run_dir / "methods" / "sft"
    # The same Budget from `train`: its exclusions are the run's safety benchmark (advbench).
    _launch(["-m", "safesteer_bench", "train", "--method", "sft", "--exclude-benchmarks", "advbench",
             "--out", str(tmp_path / "one"), *common], 1, tmp_path)
    single = tmp_path / "one" / "methods" / "sft"
    a2, a1 = (json.loads((d / "training.json").read_text()) for d in (parallel, single))
    assert a2["budget_key"] == a1["budget_key"]
    assert a2["spent"]["trained_tokens"] == a1["spent"]["trained_tokens"] > 0
    read = lambda d: [json.loads(line) for line in (d / "train_log.jsonl").read_text().splitlines()]  # noqa: E731
    _compare_logs(read(single), read(parallel))
    _compare_weights(single / a1["weights"] / "adapter_model.safetensors",
                     parallel / a2["weights"] / "adapter_model.safetensors")


def test_without_a_launcher_the_single_process_path_is_untouched(monkeypatch):
    """No WORLD_SIZE: no accelerator, every step's sequences on this process, the loss divided by
    exactly n (an int, as before), so single-process numbers (the CI gate's baseline) cannot move."""
    from safesteer_bench.training.parallel import DataParallel, launched

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched()
    par = DataParallel()
    assert not par.enabled and par.is_main and par.world_size == 1
    assert par.share(5) == range(5)
    assert par.divisor(5) == 5 and isinstance(par.divisor(5), int)
    assert par.sum(1.25) == 1.25


def test_shares_cover_every_sequence_once():
    from types import SimpleNamespace

    from safesteer_bench.errors import UserError
    from safesteer_bench.training.parallel import DataParallel

    def shares(n: int, world: int) -> list[range]:
        return [DataParallel(SimpleNamespace(num_processes=world, process_index=r)).share(n) for r in range(world)]

    for n, world in ((8, 2), (7, 2), (9, 4), (3, 3)):
        parts = shares(n, world)
        assert [i for part in parts for i in part] == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    try:
        shares(1, 2)
    except UserError as exc:
        assert "sequences" in str(exc)
    else:
        raise AssertionError("a step with fewer sequences than processes must be refused")
