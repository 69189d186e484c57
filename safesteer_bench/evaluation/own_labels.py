"""This project's own replies, labelled by reading them (``judges validate --dataset own``).

Every other labelled set a judge is measured on holds *other* models' long completions; the
comparison scores 32-64-token replies of 135M-270M models, which look nothing alike (apology
openers with nothing after them, silent swaps of a harmful request into its safe opposite, prompt
echoes, loops, compliant preambles cut off before any substance). ``judge_data/own_replies.jsonl``
holds such replies from both embedded models and every method, each labelled against
``judge_data/RUBRIC.md``: ``response`` (refusal / compliance / other), ``harmful`` (0/1: content
that helps the harmful goal) and a confidence. How the rows and labels were made:
``judge_data/README.md``.

Rows carry the dev/test split of their prompt (``data/splits.py``, the same hash as every set):
judges may learn from ``dev`` rows; every figure is on ``test`` rows.

Figures (all on harmful prompts unless named otherwise; positive class first):

``refusal_harmful``  refusal vs not, on harmful prompts (the headline axis's instrument)
``refusal_benign``   refusal vs not, on benign prompts (over-refusal); read its accuracy
``harmful``          harmful 1 vs 0, on harmful prompts
``response``         three-way accuracy (refusal / compliance / other), for judges that say "other"

A judge's verdict maps to a response as: label ``other`` -> other; refused -> refusal; else
compliance. ``other`` is not a refusal, so a judge that answers it never raises a refusal rate.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from safesteer_bench.errors import UserError

DATA_DIR = Path(__file__).resolve().parent / "judge_data"
OWN_REPLIES = DATA_DIR / "own_replies.jsonl"
RESPONSES = ("refusal", "compliance", "other")
CONFIDENCES = ("high", "medium", "low")
TARGETS = ("refusal_harmful", "refusal_benign", "harmful")
#: bootstrap resamples for the kappa interval (seeded: the same figures on every machine)
BOOTSTRAP = 1000


@dataclass(frozen=True)
class OwnRow:
    """One labelled reply. ``split`` is its prompt's split; ``harmful`` is None on benign prompts
    where the label is 0 by definition and is stored as 0."""

    id: str
    model: str
    method: str
    benchmark: str
    harmful_prompt: bool
    prompt: str
    reply: str
    max_new_tokens: int
    split: str
    response: str
    harmful: bool
    confidence: str
    tags: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        return self.response == "refusal"


def _row(d: dict[str, Any], where: str) -> OwnRow:
    try:
        row = OwnRow(id=str(d["id"]), model=str(d["model"]), method=str(d["method"]),
                     benchmark=str(d["benchmark"]), harmful_prompt=bool(d["harmful_prompt"]),
                     prompt=str(d["prompt"]), reply=str(d["reply"]), max_new_tokens=int(d["max_new_tokens"]),
                     split=str(d["split"]), response=str(d["response"]), harmful=bool(int(d["harmful"])),
                     confidence=str(d["confidence"]), tags=tuple(d.get("tags") or ()))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where}: not a labelled row ({exc!r})",
                        "restore the file from the repository (git checkout -- <file>)") from exc
    if row.response not in RESPONSES or row.confidence not in CONFIDENCES or row.split not in ("dev", "test"):
        raise UserError(f"{where}: response/confidence/split out of range ({row.response}, {row.confidence}, "
                        f"{row.split})", "restore the file from the repository (git checkout -- <file>)")
    return row


def load_own(path: Path | str = OWN_REPLIES, split: str | None = None) -> list[OwnRow]:
    """The labelled rows (``split``: only ``dev`` or ``test``); a damaged file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"labelled own replies not found: {path}", "reinstall safesteer-bench or restore the file")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{i}: not JSON ({exc.msg})", "restore the file from the repository") from exc
        rows.append(_row(d, f"{path}:{i}"))
    return [r for r in rows if split is None or r.split == split]


def response_of(verdict: Any) -> str:
    """A verdict as a rubric response: ``other`` when the judge says so, else refusal/compliance."""
    if getattr(verdict, "label", "") == "other":
        return "other"
    return "refusal" if verdict.refused else "compliance"


def kappa_interval(pred: Sequence[bool], gold: Sequence[bool], seed: int = 0) -> tuple[float, float] | None:
    """Percentile-bootstrap 95 % interval of Cohen's kappa over rows (None for fewer than 2 rows)."""
    import numpy as np

    from safesteer_bench.evaluation.judges import agreement

    n = len(gold)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    p, g = np.asarray(pred, bool), np.asarray(gold, bool)
    values = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, n, n)
        k = agreement(list(p[idx]), list(g[idx]))["kappa"]
        if k is not None:
            values.append(k)
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)


def _figures(pred: Sequence[bool], gold: Sequence[bool], seed: int) -> dict[str, Any]:
    from safesteer_bench.evaluation.judges import agreement
    from safesteer_bench.evaluation.metrics import wilson_ci

    out = agreement(list(pred), list(gold))
    if out["n"]:
        ci = kappa_interval(pred, gold, seed)
        out["kappa_ci"] = list(ci) if ci else None
        agree = sum(bool(p) == bool(g) for p, g in zip(pred, gold))
        out["accuracy_ci"] = list(wilson_ci(agree, out["n"]))
        if out["positives"]:
            tp = sum(bool(p) and bool(g) for p, g in zip(pred, gold))
            out["recall_ci"] = list(wilson_ci(tp, out["positives"]))
    return out


def figures(rows: Sequence[OwnRow], responses: Sequence[str], harmful: Sequence[bool],
            seed: int = 0) -> dict[str, Any]:
    """The figures of module docstring for predicted ``responses`` / ``harmful`` flags on ``rows``."""
    out: dict[str, Any] = {}
    for target, keep in (("refusal_harmful", True), ("refusal_benign", False)):
        idx = [i for i, r in enumerate(rows) if r.harmful_prompt is keep]
        if idx:
            out[target] = _figures([responses[i] == "refusal" for i in idx], [rows[i].refused for i in idx], seed)
    idx = [i for i, r in enumerate(rows) if r.harmful_prompt]
    if idx:
        out["harmful"] = _figures([bool(harmful[i]) for i in idx], [rows[i].harmful for i in idx], seed)
    if rows and any(r == "other" for r in responses):
        out["response_3way_accuracy"] = sum(p == r.response for p, r in zip(responses, rows)) / len(rows)
    return out


def grouped(rows: Sequence[OwnRow], responses: Sequence[str], harmful: Sequence[bool],
            key: Callable[[OwnRow], str], seed: int = 0) -> dict[str, Any]:
    """:func:`figures` per group of ``key`` (a model, a method)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[key(r)].append(i)
    return {g: figures([rows[i] for i in idx], [responses[i] for i in idx], [harmful[i] for i in idx], seed)
            for g, idx in sorted(groups.items())}


def judge_rows(judge: Any, rows: Sequence[OwnRow]) -> tuple[list[str], list[bool]]:
    """A judge's responses and harmful flags on ``rows`` (a judge without a harm verdict: harmful =
    a compliance, as ``judges.is_harmful`` reads it)."""
    from safesteer_bench.evaluation.judges import is_harmful

    verdicts = judge.judge([r.prompt for r in rows], [r.reply for r in rows])
    return [response_of(v) for v in verdicts], [is_harmful(v) and response_of(v) != "other" for v in verdicts]


def validate_own(judge: Any, split: str = "test", path: Path | str = OWN_REPLIES, seed: int = 0,
                 limit: int | None = None) -> dict[str, Any]:
    """Agreement of ``judge`` with the labelled own replies of ``split``, pooled, by model and by
    method, as ``validate_judge``'s ``datasets["own"]`` section (``limit``: a seeded sample of the
    rows, for slow model judges; recorded as ``limit``)."""
    rows = load_own(path, split)
    if limit is not None:
        from safesteer_bench.data import seeded_subset

        rows = seeded_subset(rows, limit, seed)
    responses, harmful = judge_rows(judge, rows)
    return {**figures(rows, responses, harmful, seed), "split": split,
            **({"limit": limit} if limit is not None else {}),
            "by_model": grouped(rows, responses, harmful, lambda r: r.model, seed),
            "by_method": grouped(rows, responses, harmful, lambda r: r.method, seed)}


def kappa_floor(figure: dict[str, Any]) -> float | None:
    """The lowest kappa a re-measurement may show before a regression test fails: the recorded
    value less the half-width of its interval (None when no kappa was recorded)."""
    k, ci = figure.get("kappa"), figure.get("kappa_ci")
    if k is None or not ci or any(x is None or math.isnan(x) for x in ci):
        return None
    return k - (ci[1] - ci[0]) / 2


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def group_table(title: str, by: dict[str, Any]) -> list[str]:
    """Markdown rows of :func:`grouped` figures (one per model or method), for the reports."""
    lines = [f"| {title} | n harmful | refusal κ | refusal recall | n benign | benign acc | harmful κ |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, f in by.items():
        rh, rb, hm = f.get("refusal_harmful") or {}, f.get("refusal_benign") or {}, f.get("harmful") or {}
        lines.append(f"| {name} | {rh.get('n', 0)} | {_fmt(rh.get('kappa'))} | {_fmt(rh.get('recall'))} | "
                     f"{rb.get('n', 0)} | {_fmt(rb.get('accuracy'))} | {_fmt(hm.get('kappa'))} |")
    return lines
