#!/usr/bin/env python
"""Distillation throughput: our on-policy trainer vs TRL's GKDTrainer on the same work.

Fixed work per optimizer step: ``--prompts`` GPTFuzzer questions x ``--samples`` samples x up to
``--tokens`` new tokens (temperature 1, top-p 1), LoRA r=16 on all linear layers, AdamW lr 2e-4,
teacher = the same model with a steering hook at block 20 (a fixed random direction: the cost
does not depend on which direction it is). The first step is a warm-up and is not timed.

    .venv/bin/python scripts/bench_distill.py                  # ours, global-kl (S = V)
    .venv/bin/python scripts/bench_distill.py --ours safesteer # ours, |S| = 50
    /tmp/trlvenv/bin/python scripts/bench_distill.py --trl     # TRL GKD, lmbda = 1, beta = 1 (reverse KL)
    .venv-vllm/bin/python scripts/bench_distill.py --rollouts vllm   # ours, rollouts sampled by vLLM

``--rollouts vllm`` samples each step's rollouts with vLLM (training/rollouts.py: the LoRA
adapter saved and loaded into the running engine every step; the engine start falls in the
untimed warm-up step and is printed apart). Each row adds the rollout (sampling) seconds per step
and the sampled tokens per second of those seconds. With vLLM the peak memory is this process's
only: vLLM's engine core is a separate process.

Prints, per trainer: mean step time, completion tokens trained per second, sequence tokens
(prompt + completion) per second, and peak memory (CPU: peak RSS of the process during training,
reset at start; CUDA: max_memory_allocated), with the memory the model already used at the start.
The ``--trl`` side needs only torch, transformers, peft and trl (make a venv in /tmp:
``python3 -m venv /tmp/trlvenv && /tmp/trlvenv/bin/pip install torch==2.13.0 trl peft``); it
imports this repository's model loader from source.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from safesteer_bench.training.budget import Spent, SpentTracker  # noqa: E402
from safesteer_bench.data import load_gptfuzzer_questions  # noqa: E402
from safesteer_bench.modeling.hooks import ResidualHook, installed  # noqa: E402
from safesteer_bench.modeling.models import load_model, resolve_model  # noqa: E402

LAYER = 20


def teacher_hooks(model) -> tuple[ResidualHook, ...]:
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(model.config.hidden_size, generator=g) * 5.0
    return (ResidualHook(layer=LAYER, direction=direction, coef=1.0),)


def prompts_for(args) -> list[str]:
    questions = load_gptfuzzer_questions(args.data_dir)
    n = args.prompts * (args.steps + 1)
    return [questions[i % len(questions)].text for i in range(n)]


def report(name: str, seconds: list[float], completion_tokens: list[int], sequence_tokens: list[int],
           spent: Spent, sampling: list[tuple[float, int]] | None = None) -> dict:
    timed = seconds[1:] or seconds  # drop the warm-up step
    ctok, stok = completion_tokens[1:] or completion_tokens, sequence_tokens[1:] or sequence_tokens
    extra = {}
    if sampling:
        first, rest = sampling[0], sampling[1:] or sampling
        extra = {"warmup_sample_seconds": round(first[0], 2),
                 "sample_seconds_per_step": round(statistics.mean(s for s, _ in rest), 2),
                 "sampled_tokens_per_s": round(sum(n for _, n in rest) / sum(s for s, _ in rest), 1)}
    row = {
        "trainer": name, "steps_timed": len(timed), "step_seconds": round(statistics.mean(timed), 2),
        "completion_tokens_per_step": round(statistics.mean(ctok), 1),
        "trained_tokens_per_s": round(sum(ctok) / sum(timed), 1),
        "sequence_tokens_per_s": round(sum(stok) / sum(timed), 1),
        "peak_memory_mb": round(spent.peak_memory_bytes / 2**20), "start_memory_mb": round(spent.start_memory_bytes / 2**20),
        "added_memory_mb": round((spent.peak_memory_bytes - spent.start_memory_bytes) / 2**20),
        "memory_kind": spent.peak_memory_kind, **extra,
    }
    print(json.dumps(row), flush=True)
    return row


def bench_ours(args, lm) -> list[dict]:
    from safesteer_bench.training.budget import Budget
    from safesteer_bench.training.distill import OnPolicyDistiller
    from safesteer_bench.training import students
    from safesteer_bench.training.rollouts import rollout_engine_for

    prompts = prompts_for(args)
    budget = Budget(prompt_ids=tuple(f"q{i}" for i in range(len(prompts))), prompts=tuple(prompts), seed=0,
                    steps=args.steps + 1, prompts_per_step=args.prompts, samples_per_prompt=args.samples,
                    max_new_tokens=args.tokens, learning_rate=2e-4, lora_rank=16, lora_alpha=32)
    hooks = teacher_hooks(lm.model)
    rows = []
    variants = {"global-kl": ("ours global-kl (S=V)", None),
                "safesteer": ("ours safesteer (|S|=50)", list(range(100, 150)))}
    for name, token_ids in [variants[args.ours]]:
        spent = Spent()
        with students.training_adapter(lm, "bench", budget) as student:
            engine = rollout_engine_for(args.rollouts, student, lm, "bench", args.sync)
            trainer = OnPolicyDistiller(student, lm.tokenizer, budget, hooks, token_ids=token_ids,
                                        progress=False, spent=spent, engine=engine)
            seen = {"trained": 0, "forward": 0, "sample": 0.0, "generated": 0}
            sampling: list[tuple[float, int]] = []

            def count(step, prompts, _orig=trainer.step_loss):
                row = _orig(step, prompts)
                row["trained_tokens"] = spent.trained_tokens - seen["trained"]
                # forward_tokens counts the teacher and the student pass: half is the sequence tokens
                row["sequence_tokens"] = (spent.forward_tokens - seen["forward"]) // 2
                sampling.append((spent.phases["sample"] - seen["sample"], spent.generated_tokens - seen["generated"]))
                seen.update(trained=spent.trained_tokens, forward=spent.forward_tokens, sample=spent.phases["sample"],
                            generated=spent.generated_tokens)
                return row

            trainer.step_loss = count
            result = trainer.train()
        label = args.rollouts + (f" ({engine.mode} sync)" if engine is not None else "")
        rows.append(report(f"{name}, {label} rollouts", [r["seconds"] for r in result.log],
                           [r["trained_tokens"] for r in result.log], [r["sequence_tokens"] for r in result.log],
                           spent, sampling))
    return rows


def bench_trl(args, lm) -> list[dict]:
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback

    try:
        from trl import GKDConfig, GKDTrainer
    except ImportError:
        from trl.experimental.gkd import GKDConfig, GKDTrainer

    prompts = prompts_for(args)
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "."}]}
            for p in prompts for _ in range(args.samples)]
    dataset = Dataset.from_list(rows)
    student = lm.model
    teacher = copy.deepcopy(lm.model).eval()
    hooks = teacher_hooks(lm.model)
    counts: list[tuple[int, int]] = []

    class CountingGKD(GKDTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            counts.append((int((labels != -100).sum()), int(inputs["attention_mask"].sum())))
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    step_seconds: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_seconds.append(time.perf_counter() - self.t)

    config = GKDConfig(
        output_dir="/tmp/bench_gkd", per_device_train_batch_size=args.prompts * args.samples,
        gradient_accumulation_steps=1, max_steps=args.steps + 1, learning_rate=2e-4, lr_scheduler_type="cosine",
        warmup_steps=0.1, max_grad_norm=1.0, lmbda=1.0, beta=1.0, temperature=1.0, max_new_tokens=args.tokens,
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=not torch.cuda.is_available(),
        bf16=False, seed=0, dataloader_num_workers=0, disable_tqdm=True, gradient_checkpointing=False,
    )
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                             task_type="CAUSAL_LM")
    trainer = CountingGKD(model=student, teacher_model=teacher, args=config, train_dataset=dataset,
                          processing_class=lm.tokenizer, peft_config=peft_config, callbacks=[Timer()])
    spent = Spent()
    with installed(teacher, hooks), SpentTracker(lm.device, spent):
        trainer.train()
    return [report("trl GKDTrainer (lmbda=1, beta=1)", step_seconds, [c for c, _ in counts],
                   [s for _, s in counts], spent)]


def load(args):
    """The model through the project's loader; in a venv without the embedded-model package,
    its cached safetensors conversion (``~/.cache/safesteer-bench/models/<name>-<hash>``)."""
    from safesteer_bench.errors import UserError
    from safesteer_bench.paths import cache_dir

    try:
        return load_model(resolve_model(args.model), args.device)
    except UserError:
        cached = sorted((cache_dir() / "models").glob("SmolLM2-135M-Instruct*"))
        if args.model != "smollm2-135m" or not cached:
            raise
        return load_model(resolve_model(str(cached[-1])), args.device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trl", action="store_true", help="benchmark TRL's GKDTrainer instead of ours")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--ours", default="global-kl", choices=["global-kl", "safesteer"],
                        help="which of our two losses (one per process, so peak memory is its own)")
    parser.add_argument("--rollouts", default="hf", choices=["hf", "vllm"],
                        help="our trainer's rollout engine (vllm: run with .venv-vllm/bin/python)")
    parser.add_argument("--sync", default=None, choices=["merged", "adapter"],
                        help="how vLLM rollouts get the student's weights (default: merged on CPU, adapter on CUDA)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lm = load(args)
    print(f"model {args.model} on {lm.device} ({lm.dtype}), torch threads {torch.get_num_threads()}, "
          f"work/step: {args.prompts} prompts x {args.samples} samples x <= {args.tokens} tokens", flush=True)
    bench_trl(args, lm) if args.trl else bench_ours(args, lm)
    return 0


if __name__ == "__main__":  # also the guard vLLM's spawned engine core needs
    sys.exit(main())
