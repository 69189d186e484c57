"""Students of the training methods: LoRA adapters on the shared base model, or full copies.

**LoRA (default): no copy of the base weights.** Every LoRA student of a process lives as a named
adapter (``adapter_name`` = the method name) in *one* PeftModel wrapper around ``base.model``,
kept in ``base.extra["peft"]``. The rule that keeps methods apart: **outside an
``AdapterPolicy.active()`` block (or a training run) every adapter layer is disabled**, so the
``base`` policy, the steering policy (hooks only) and the teacher pass see the untouched base
weights, and ``AdapterPolicy.active()`` selects its own adapter with ``set_adapter`` and disables
all adapter layers again on exit (also after an exception). Memory cost per LoRA method: its
adapter weights only (SmolLM2-135M, r=16 on all linear layers: 4.9 M parameters, ~19 MB fp32).

**Full fine-tuning**: the student is a deep copy of the base model (the base itself stays the
frozen teacher); reloading a full-weight artifact builds one more copy of the model per method
(135M fp32: ~540 MB; a 7B model in bf16: ~15 GB).
"""

from __future__ import annotations

import copy
import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from safesteer_bench.inference.steering import SteeringOptions
from safesteer_bench.modeling.hooks import installed
from safesteer_bench.modeling.models import LoadedModel
from safesteer_bench.modeling.policy import Policy
from safesteer_bench.options import MethodOptions, option, options_of
from safesteer_bench.specs import load_spec
from safesteer_bench.training.budget import Budget

PEFT_KEY = "peft"
ROLLOUT_ENGINES = ("hf", "vllm")  # training/rollouts.py
TEACHERS = ("steer", "spec")  # docs/architecture.md §4: the steered teacher, the spec-prompted one


def shared_wrapper(base: LoadedModel) -> Any | None:
    """The process's PeftModel around ``base.model`` (None until a LoRA student exists)."""
    return base.extra.get(PEFT_KEY)


def adapters_off(base: LoadedModel) -> None:
    """Restore the rule: every adapter layer disabled (base weights only)."""
    wrapper = shared_wrapper(base)
    if wrapper is not None:
        wrapper.base_model.disable_adapter_layers()


def lora_config(budget: Budget) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=budget.lora_rank, lora_alpha=budget.lora_alpha, lora_dropout=budget.lora_dropout,
                      target_modules=budget.peft_targets, bias="none", task_type="CAUSAL_LM")


def _only_trainable(wrapper: Any, name: str) -> None:
    for pname, param in wrapper.named_parameters():
        param.requires_grad = "lora_" in pname and f".{name}." in pname


def add_lora_student(base: LoadedModel, name: str, budget: Budget) -> Any:
    """A fresh trainable adapter ``name`` on the shared wrapper, active and enabled.

    The initialisation is seeded with the budget's seed. Call :func:`adapters_off` (or use
    :func:`training_adapter`) when training ends.
    """
    import torch
    from peft import get_peft_model

    torch.manual_seed(budget.seed)
    wrapper = shared_wrapper(base)
    if wrapper is None:
        wrapper = get_peft_model(base.model, lora_config(budget), adapter_name=name)
        base.extra[PEFT_KEY] = wrapper
    else:
        if name in wrapper.peft_config:
            wrapper.delete_adapter(name)
        wrapper.add_adapter(name, lora_config(budget))
    wrapper.set_adapter(name)
    wrapper.base_model.enable_adapter_layers()
    _only_trainable(wrapper, name)
    wrapper.eval()  # no dropout anywhere; gradients still flow
    return wrapper


@contextmanager
def training_adapter(base: LoadedModel, name: str, budget: Budget) -> Iterator[Any]:
    """``with training_adapter(base, "safesteer", budget) as student:`` — adapters off afterwards."""
    wrapper = add_lora_student(base, name, budget)
    try:
        yield wrapper
    finally:
        for param in wrapper.parameters():
            param.requires_grad = False
        adapters_off(base)


def save_lora(wrapper: Any, name: str, folder: Path) -> Path:
    """Save adapter ``name`` (safetensors) and return the folder holding adapter_config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    wrapper.save_pretrained(str(folder), selected_adapters=[name], safe_serialization=True)
    # peft writes adapters other than "default" into a sub-folder named after the adapter.
    saved = folder / name if name != "default" and (folder / name).exists() else folder
    _canonical_adapter_config(saved / "adapter_config.json")
    return saved


def _canonical_adapter_config(path: Path) -> None:
    """Rewrite adapter_config.json with sorted keys and sorted module lists.

    peft keeps ``target_modules`` as a set and writes it in hash order, which differs between
    processes: two identical trainings would get different ``weights_sha256`` (and policy
    fingerprints) without this.
    """
    if not path.exists():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    for key, value in config.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            config[key] = sorted(value)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_lora(base: LoadedModel, name: str, folder: Path) -> Any:
    """(Re)load adapter ``name`` from ``folder`` onto the shared wrapper; adapters left off."""
    from peft import PeftModel

    wrapper = shared_wrapper(base)
    if wrapper is None:
        wrapper = PeftModel.from_pretrained(base.model, str(folder), adapter_name=name, is_trainable=False)
        base.extra[PEFT_KEY] = wrapper
    else:
        if name in wrapper.peft_config:
            wrapper.delete_adapter(name)
        wrapper.load_adapter(str(folder), adapter_name=name, is_trainable=False)
    for param in wrapper.parameters():
        param.requires_grad = False
    wrapper.eval()
    adapters_off(base)
    return wrapper


def clean_copy(base: LoadedModel) -> nn.Module:
    """A deep copy of the base model without any adapter layers (a full-FT student or reload)."""
    wrapper = shared_wrapper(base)
    if wrapper is None:
        return copy.deepcopy(base.model)
    return copy.deepcopy(wrapper).unload()


def full_student(base: LoadedModel) -> nn.Module:
    model = clean_copy(base)
    model.requires_grad_(True)
    return model.eval()


def save_full(model: nn.Module, path: Path) -> Path:
    """Full weights as one safetensors file (tied weights stored once)."""
    from safetensors.torch import save_model

    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path))
    return path


def load_full(base: LoadedModel, path: Path) -> nn.Module:
    from safetensors.torch import load_model

    model = clean_copy(base)
    load_model(model, str(path), strict=True)
    model.requires_grad_(False)
    return model.eval()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file() and file.suffix in (".safetensors", ".json"):
            h.update(file.name.encode())
            h.update(file.read_bytes())
    return h.hexdigest()


@dataclass
class AdapterPolicy(Policy):
    """A LoRA student sharing the base weights: selects and enables its adapter only while active."""

    adapter_name: str = ""

    @contextmanager
    def active(self) -> Iterator[None]:
        wrapper = self.model
        wrapper.set_adapter(self.adapter_name)
        wrapper.base_model.enable_adapter_layers()
        try:
            with installed(wrapper, self.hooks):
                yield
        finally:
            wrapper.base_model.disable_adapter_layers()


# --------------------------------------------------------------------------------------------
# What the three training methods share: budget, teacher, student, artifact, policy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingCoreOptions(MethodOptions):
    """What every training method may choose within the run's Budget, and its teacher; no steering
    options (spec-distill's teacher has no hook). The compute itself (prompts, samples, tokens,
    steps) is the run's."""

    learning_rate: float | None = option(None, "the optimizer's learning rate (default: the profile's)",
                                         kind="float", low=1e-8, high=1.0)
    train_fraction: float = option(1.0, "the fraction of the budget's steps to train (its first steps' "
                                   "prompts; never more than the budget)", kind="float", low=1e-3, high=1.0)
    budget_fraction: float = option(1.0, "set by `tune` for cheap trials; multiplies train_fraction",
                                    kind="float", low=1e-3, high=1.0)
    micro_batch_size: int | None = option(None, "sequences per backward pass (gradient accumulation "
                                          "fills the step; default: the whole step)", kind="int", low=1)
    adapter: str = option("lora", "lora | full when no run Budget is given (Python only)", kind="choice",
                          choices=("lora", "full"), cli=False)
    progress: bool = option(True, "progress bars (Python only)", kind="bool", cli=False)
    teacher: str = option("steer", "the teacher: steer (the base model + the steering hook) or spec (the base "
                          "model with the safety specification as its system prompt, no hook)",
                          kind="choice", choices=TEACHERS)
    spec_file: str | None = option(None, "the specification the spec teacher reads (default: the checked-in "
                                   "safesteer_bench/specs/safety_spec.md; only with teacher=spec)", kind="str")

    def __post_init__(self) -> None:
        if self.teacher == "spec":
            load_spec(self.spec_file)  # a missing, empty or huge file fails here, in the dry run
        if getattr(self, "rollout_engine", "hf") == "vllm":  # RolloutOptions, on-policy methods only
            from safesteer_bench.modeling.vllm_engine import check_engine

            check_engine("vllm", "rollout_engine=")  # not installed: a UserError in the dry run

    def to_dict(self) -> dict[str, Any]:
        """The options for the method key: with the spec teacher, the specification's sha256 (an
        edited file retrains); with the steered one, neither ``teacher`` nor ``spec_file``, so the
        keys of runs from before the option stay valid."""
        data = super().to_dict()
        if data.get("rollout_engine") == "hf":  # keys of runs from before the option stay valid
            data.pop("rollout_engine")
        if self.teacher == "steer":
            data.pop("teacher")
            data.pop("spec_file")
        else:
            data["spec_sha256"] = load_spec(self.spec_file).sha256
        return data


@dataclass(frozen=True)
class TrainingOptions(TrainingCoreOptions, SteeringOptions):
    """The training options of the methods whose teacher may be steered (safesteer, global-kl,
    sft): the core ones, the steering options that find the teacher's direction, and its strength."""

    teacher_coef: float | None = option(None, "the teacher's steering strength, apart from the steering "
                                        "baseline's coef (default: the same)", kind="float", low=0)
    teacher_hooks: Any = option(None, "ResidualHooks replacing the shared direction (Python only)",
                                kind="any", cli=False)


@dataclass(frozen=True)
class RolloutOptions(MethodOptions):
    """The on-policy trainers' choice of rollout engine (training/rollouts.py); checked and kept
    out of the method key at its default by :class:`TrainingCoreOptions`."""

    rollout_engine: str = option("hf", "the on-policy trainers' rollouts: hf (the student itself) or vllm (the "
                                 "LoRA student's adapter synced into vLLM every step; .venv-vllm)",
                                 kind="choice", choices=ROLLOUT_ENGINES)


@dataclass(frozen=True)
class OnPolicyOptions(TrainingOptions, RolloutOptions):
    """global-kl's options: the training options and the rollout engine."""


def resolve_budget(ctx: Any) -> Budget:
    """The run's shared Budget (``ctx.budget``, else one built from the profile), with the
    method's own choices within it: ``learning_rate``, and ``train_fraction`` x ``budget_fraction``
    of its steps (the first steps' prompts; never more than the budget)."""
    import math
    from dataclasses import replace

    from safesteer_bench.training.budget import make_budget

    opts = options_of(ctx, TrainingCoreOptions)
    budget = ctx.budget if ctx.budget is not None else make_budget(
        ctx.profile, ctx.data_dir, ctx.seed, adapter=opts.adapter)
    fraction = opts.train_fraction * opts.budget_fraction
    changes: dict[str, Any] = {}
    if fraction < 1.0:
        changes["steps"] = max(1, math.ceil(fraction * budget.steps))
    if opts.learning_rate is not None:
        changes["learning_rate"] = opts.learning_rate
    return replace(budget, **changes) if changes else budget


def resolve_teacher(ctx: Any) -> tuple[tuple[Any, ...], Any]:
    """(steering hooks of the teacher πt, their identity for the artifact); with ``teacher=spec``
    no hooks and the specification's identity (its text comes from :func:`teacher_system`).

    ``teacher_hooks`` (a sequence of ResidualHook, from Python) overrides the run's shared
    steering direction (tests, experiments); otherwise ``steering.shared_direction(ctx)``.
    """
    core = options_of(ctx, TrainingCoreOptions)
    if core.teacher == "spec":  # context distillation: no hook, the specification in the system prompt
        return (), load_spec(core.spec_file).key()
    opts = options_of(ctx, TrainingOptions)  # a steered teacher: its options exist (not spec-distill)
    if opts.teacher_hooks is not None:
        hooks = tuple(opts.teacher_hooks)
        return hooks, {"hooks": [h.key() for h in hooks], "source": "options"}
    from safesteer_bench.modeling.hooks import ResidualHook
    from safesteer_bench.inference.steering import shared_direction

    direction = shared_direction(ctx)
    if opts.teacher_coef is None:
        return tuple(direction.hooks()), direction.key()
    # The teacher's strength apart from the steering baseline's: same direction and block.
    coef = float(opts.teacher_coef)
    return (ResidualHook(direction.layer, direction.direction, coef, "add"),), {**direction.key(), "coef": coef}


def teacher_system(ctx: Any) -> str | None:
    """The teacher's system prompt: the specification's text with ``teacher=spec``, else None."""
    opts = options_of(ctx, TrainingCoreOptions)
    return load_spec(opts.spec_file).text if opts.teacher == "spec" else None


@contextmanager
def student_for(ctx: Any, name: str, budget: Budget) -> Iterator[tuple[nn.Module, nn.Module | None]]:
    """``(student, teacher)`` for the budget's adapter: LoRA -> (shared wrapper with adapter
    ``name`` active, None: the teacher is the same weights with the adapter disabled); full ->
    (deep copy of the base, the base model itself as frozen teacher)."""
    if budget.adapter == "lora":
        with training_adapter(ctx.base, name, budget) as wrapper:
            yield wrapper, None
    else:
        yield full_student(ctx.base), ctx.base.model


def save_student(ctx: Any, name: str, budget: Budget, student: nn.Module) -> dict[str, Any]:
    """Save the trained weights under ``ctx.workdir``; the artifact fields that locate them."""
    if budget.adapter == "lora":
        folder = save_lora(student, name, ctx.workdir / "adapter")
    else:
        folder = save_full(student, ctx.workdir / "model.safetensors")
    return {"adapter": budget.adapter, "weights": str(folder.relative_to(ctx.workdir)),
            "weights_sha256": file_sha256(folder)}


def saved_student(ctx: Any, name: str, budget: Budget) -> dict[str, Any]:
    """:func:`save_student`'s fields for weights another process saved (multi-process training)."""
    folder = ctx.workdir / "model.safetensors"
    if budget.adapter == "lora":  # save_lora's layout: a sub-folder per adapter name, when peft made one
        folder = ctx.workdir / "adapter" / name
        folder = folder if folder.exists() else folder.parent
    return {"adapter": budget.adapter, "weights": str(folder.relative_to(ctx.workdir)),
            "weights_sha256": file_sha256(folder)}


@contextmanager
def scratch_workdir(ctx: Any, own: bool) -> Iterator[Any]:
    """``ctx`` itself when ``own``; else a copy whose ``workdir`` is a temporary folder (removed on
    exit) with the same ``shared_dir``: a non-main process of a multi-process launch writes its
    copies of the method's setup files there, never into the run."""
    if own:
        yield ctx
        return
    import dataclasses
    import tempfile

    with tempfile.TemporaryDirectory(prefix="safesteer-rank-") as tmp:
        yield dataclasses.replace(ctx, workdir=Path(tmp) / ctx.workdir.name)


def student_policy(ctx: Any, artifact: dict[str, Any]) -> Policy:
    """The trained student of ``artifact`` as a Policy (LoRA: adapter on the shared base)."""
    from safesteer_bench.errors import UserError
    from safesteer_bench.modeling.policy import fingerprint

    name = artifact["method"]
    path = ctx.workdir / artifact["weights"]
    if not path.exists():
        raise UserError(f"the {name} artifact's weights are missing ({path})",
                        f"delete {ctx.workdir / 'artifact.json'} to retrain, or restore the folder")
    if file_sha256(path) != artifact["weights_sha256"]:
        # ValueError: the runner treats the artifact as damaged and trains again.
        raise ValueError(f"the {name} weights in {path} do not match the artifact's weights_sha256")
    fp = fingerprint(ctx.base.identity, name, artifact["weights_sha256"], artifact.get("budget_key"))
    info = {k: artifact.get(k) for k in ("adapter", "budget_key", "teacher", "config")}
    if artifact["adapter"] == "lora":
        wrapper = load_lora(ctx.base, name, path)
        return AdapterPolicy(name, wrapper, ctx.base.tokenizer, fp, info=info, adapter_name=name)
    return Policy(name, load_full(ctx.base, path), ctx.base.tokenizer, fp, info=info)
