"""``safesteer-bench train``: train one method on its own and print where the artifact is.

    safesteer-bench train --method safesteer --model smollm2-135m --profile smoke
    safesteer-bench train --method global-kl --adapter full --out runs/train-full
    accelerate launch --num_processes 4 -m safesteer_bench train --method safesteer   # data-parallel, GPUs
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m safesteer_bench train ...  # CPU, gloo

The layout is a run directory's (``<out>/methods/<method>/artifact.json`` beside the shared
steering direction in ``<out>/methods/_shared``), so several ``train`` calls with one ``--out``
share one teacher and one Budget (``<out>/budget.json``), as the methods of one run do. The Budget
excludes the prompts of ``--exclude-benchmarks`` (default: the safety-7 suite) from training.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from safesteer_bench.errors import UserError

LOSS_VARIANTS = ("partial", "renormalize", "tail-bucket")


def add_commands(sub: Any, command: Callable) -> None:
    from safesteer_bench.cli.main import add_data_flag, add_model_args_flag, add_model_flags, kv_pairs, seed_int

    p = sub.add_parser(
        "train", help="train one method (safesteer, global-kl, sft, ...) and save its artifact",
        description="Train one method with the profile's budget and save a reloadable artifact "
                    "(LoRA adapter or full weights, token set, config, budget, spent compute).")
    p.add_argument("--method", required=True, help="training method (see `methods`)")
    p.add_argument("--model", default="smollm2-135m", help="alias, Hugging Face id, local dir or .gguf")
    p.add_argument("--profile", default="smoke", help="smoke | demo | quick | paper (default: smoke; see README)")
    p.add_argument("--adapter", default="lora", choices=["lora", "full"],
                   help="LoRA student sharing the base weights (default) or full fine-tuning")
    p.add_argument("--method-args", type=kv_pairs, default={},
                   help="the method's options, as for `run` (e.g. loss_variant=partial,token_set_size=50; "
                        "see `safesteer-bench methods --details`)")
    p.add_argument("--loss-variant", default=None, choices=LOSS_VARIANTS,
                   help="same as --method-args loss_variant=... (kept for old scripts)")
    p.add_argument("--token-set-size", type=int, default=None, help="same as --method-args token_set_size=...")
    p.add_argument("--exclude-benchmarks", default="safety-7",
                   help="benchmarks/suites whose prompts never enter training ('none' to skip; default: safety-7)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: runs/train-<model>-<profile>-seed<seed>)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the budget's prompts and of training (default 0)")
    p.add_argument("--force", action="store_true", help="retrain even when the artifact exists")
    add_model_flags(p)
    add_model_args_flag(p)
    add_data_flag(p)
    command("train")(cmd_train)


def _exclusions(names: str, data_dir: Path | None) -> list[Any]:
    if names.strip().lower() in ("", "none"):
        return []
    from safesteer_bench.evaluation.benchmark import resolve_benchmarks

    return [p for spec in resolve_benchmarks(names) if spec.kind == "safety" and spec.load is not None
            for p in spec.load(data_dir)]


def cmd_train(args: argparse.Namespace) -> int:
    from safesteer_bench.training.budget import make_budget
    from safesteer_bench.methods.api import METHODS, get_method, method_context
    from safesteer_bench.options import check_method_args
    from safesteer_bench.modeling.models import check_device, check_dtype, load_model, parse_model_args, resolve_model
    from safesteer_bench.paths import check_output_dir, safe_component
    from safesteer_bench.profiles import get_profile
    from safesteer_bench.pipeline.store import write_json_atomic
    from safesteer_bench.training.parallel import check_supported, data_parallel

    par = data_parallel()  # before the model loads: under a GPU launch it picks this process's GPU
    check_supported()
    method = get_method(args.method)
    if getattr(method, "kind", "") != "training":
        trainable = sorted(n for n, m in METHODS if getattr(m, "kind", "") == "training")
        raise UserError(f"'{args.method}' is not a training method", f"choose one of: {', '.join(trainable)}")
    options = dict(args.method_args)
    for key in ("loss_variant", "token_set_size"):
        if getattr(args, key) is not None:
            options[key] = str(getattr(args, key))
    check_method_args(options, [args.method])
    profile = get_profile(args.profile)
    loading = parse_model_args(args.model_args)
    spec = resolve_model(args.model, loading.trust_remote_code, loading.revision)
    check_device(args.device)
    check_dtype(args.dtype)
    out = args.out or Path("runs") / f"train-{safe_component(spec.name)}-{profile.name}-seed{args.seed}"
    check_output_dir(out)
    workdir = out / "methods" / args.method
    artifact_path = workdir / "artifact.json"
    if artifact_path.exists() and not args.force:
        if par.is_main:
            print(f"already trained: {artifact_path} (use --force to retrain)")
        return 0

    # make_budget is deterministic in (profile, seed, adapter, exclusions): train calls sharing --out
    # and these flags get the identical Budget, as the methods of one run do.
    budget = make_budget(profile, args.data_dir, args.seed, adapter=args.adapter,
                         exclude=_exclusions(args.exclude_benchmarks, args.data_dir))
    if par.is_main:  # under a multi-process launch only the main process writes and prints
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "budget.json", budget.to_dict())
        print(f"budget: {budget.describe()}", flush=True)
    par.wait()

    base = load_model(spec, args.device, loading.dtype or args.dtype, device_map=loading.device_map)
    ctx = method_context(args.method, base, profile, workdir, data_dir=args.data_dir, seed=args.seed,
                         budget=budget, options=options)
    artifact = method.prepare(ctx)
    if not par.is_main:
        return 0  # the main process saves, reloads and reports the artifact
    write_json_atomic(artifact_path, artifact)
    method.policy(ctx, artifact)  # prove the artifact reloads
    print(f"artifact: {artifact_path}")
    if artifact.get("weights"):
        print(f"weights:  {workdir / artifact['weights']}")
    if artifact.get("token_set"):
        print(f"token set: {workdir / artifact['token_set']['path']} (top: {artifact['token_set']['top'][:10]})")
    return 0
