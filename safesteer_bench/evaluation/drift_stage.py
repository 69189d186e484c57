"""The benign-drift stage of a run: base completions once, then every method's drift from them.

Stored under ``<run>/drift/``: ``_completions.json`` (the held-out benign prompts, the base model's greedy
completions and their token ids, keyed by the base policy's generation key) and ``<method>.json``
(the method's drift metrics, keyed by its policy fingerprint and the base completions' key), so a
resumed run redoes only what is missing or stale. The prompts are the test split of
``alpaca-heldout`` (never seen by training, direction or token-set selection), as many as the
run's prompts per benchmark, at most :data:`MAX_PROMPTS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safesteer_bench.modeling.generation import Completion, GenConfig
from safesteer_bench.modeling.policy import Policy, fingerprint
from safesteer_bench.pipeline.store import read_json_dict, write_json_atomic

BENCHMARK = "benign-drift"  # the pseudo-benchmark its metrics are filed under in results.json
PROMPT_SET = "alpaca-heldout"
MAX_PROMPTS = 100
COMPLETIONS = "_completions.json"  # "_": never a method name, whose metrics sit beside it
INFO = {"kind": "drift", "judge": None, "harmful": False, "source": "alpaca-heldout (test split)",
        "description": "capability tax at any scale: per-token KL(π‖π0) and top-1 agreement with the base model, "
                       "teacher-forced on the base's greedy completions of held-out benign prompts"}


def drift_prompts(data_dir: Path | None, limit: int | None, seed: int) -> list[str]:
    from safesteer_bench.evaluation.benchmark import resolve_benchmarks

    (spec,) = resolve_benchmarks(PROMPT_SET)
    n = min(limit or MAX_PROMPTS, MAX_PROMPTS)
    return [p.text for p in spec.prompts(data_dir, n, seed, split="test")]


def base_completions(folder: Path, base: Policy, prompts: list[str], cfg: GenConfig) -> tuple[list[Completion], str]:
    """(completions, key): stored ones when they match the base policy, the prompts and ``cfg``."""
    from safesteer_bench.evaluation.drift import base_completions as generate

    key = completions_key(base.key(cfg), prompts)
    stored = read_json_dict(folder / COMPLETIONS)
    if stored is not None and stored.get("key") == key and _valid_rows(stored.get("rows"), len(prompts)):
        return [Completion(r["prompt"], r["text"], r["prompt_tokens"], len(r["token_ids"]) + r["finished"],
                           r["finished"], list(r["token_ids"])) for r in stored["rows"]], key
    completions = generate(base, prompts, cfg)
    rows = [{"prompt": c.prompt, "text": c.text, "prompt_tokens": c.prompt_tokens, "token_ids": c.token_ids,
             "finished": c.finished} for c in completions]
    write_json_atomic(folder / COMPLETIONS, {"key": key, "rows": rows})
    return completions, key


def completions_key(base_key: str, prompts: list[str]) -> str:
    return fingerprint(base_key, prompts)


def stored_completions_key(folder: Path) -> str | None:
    """The key of the stored base completions (read without a model), or None."""
    stored = read_json_dict(folder / COMPLETIONS)
    key = stored.get("key") if stored is not None else None
    return key if isinstance(key, str) else None


def _valid_rows(rows: Any, n: int) -> bool:
    return isinstance(rows, list) and len(rows) == n and all(
        isinstance(r, dict) and isinstance(r.get("prompt"), str) and isinstance(r.get("text"), str)
        and isinstance(r.get("prompt_tokens"), int) and isinstance(r.get("finished"), bool)
        and isinstance(r.get("token_ids"), list) and all(isinstance(t, int) for t in r["token_ids"])
        for r in rows)


def prompts_key(prompts: list[str], cfg: GenConfig, seed: int) -> str:
    """What a method's stored drift depends on besides its weights: the prompts, decoding, seed."""
    return fingerprint(prompts, cfg.key(), seed)


def method_key(prompts_key: str, completions_key: str | None, artifact: Any) -> str:
    """What a method's stored drift was measured on: the prompts and decoding, the base completions
    it was teacher-forced on, and the method's artifact (retrained weights change it)."""
    return fingerprint(prompts_key, completions_key, artifact)


def stored_metrics(folder: Path, name: str, key: str) -> dict[str, Any] | None:
    """A method's stored drift metrics for ``key`` (:func:`method_key`; checked without loading any
    model, like the other stages)."""
    stored = read_json_dict(folder / f"{name}.json")
    if stored is None or stored.get("key") != key or not isinstance(stored.get("metrics"), dict):
        return None
    metrics = stored["metrics"]
    ok = all(isinstance(metrics.get(m), dict) and isinstance(metrics[m].get("value"), (int, float))
             for m in ("benign_kl", "benign_top1_agreement"))
    return metrics if ok else None


def method_drift(folder: Path, name: str, policy: Policy, base: Policy, prompts: list[str],
                 completions: list[Completion], key: str, seed: int) -> dict[str, Any]:
    """Measure and store the drift of ``policy`` from ``base`` on the base completions."""
    from safesteer_bench.evaluation.drift import drift

    metrics = drift(policy, base, prompts, completions).to_dict(seed=seed)
    write_json_atomic(folder / f"{name}.json", {"key": key, "metrics": metrics})
    return metrics
