"""A second judge on every safety verdict, and how often the two disagree.

One judge's verdicts are one instrument's reading: a method whose "gain" consists of verdicts the
judges dispute (a keyword judge counting "I'm sorry for any harm…, here is how…" as a refusal)
must be visible at a glance. Every judged row therefore carries the verdict of a second judge
(``row["second"]``), each benchmark reports ``judge_disagreement`` (the share of rows on which
the two judges reach a different outcome: refusal or not, on harmful and on benign prompts, as
the headline rates count it) and the second judge's own rates (``second_judge``), and the report shows disputed
completions to read.
"""

from __future__ import annotations

from typing import Any, Sequence

from safesteer_bench.evaluation.judges import JUDGES, Verdict, answers_other, conservative, get_judge
from safesteer_bench.evaluation.metrics import LOWER_IS_BETTER, rate_metric, summarize

AUTO = "auto"
NONE = "none"
# The default second judge: the learned classifier where it is installed, else the other rule judge.
_PREFERENCE = ("clf", "keywords", "xstest-rules")


def second_judge_for(primary: str, choice: str | None) -> str | None:
    """The second judge to run beside ``primary``: ``choice`` (a judge name, ``auto`` or
    ``none``); ``auto`` takes the first of clf, keywords, xstest-rules that is not ``primary``."""
    if choice in (None, NONE):
        return None
    if choice != AUTO:
        return None if choice == primary else choice
    return next((name for name in _PREFERENCE if name != primary and name in JUDGES), None)


def second_verdicts(judge_name: str, rows: Sequence[dict[str, Any]], harmful: Sequence[bool]) -> list[dict[str, Any]]:
    """The second judge's verdict per row (resolved conservatively, like the first judge's)."""
    judge = get_judge(judge_name)
    verdicts = judge.judge([r["prompt"] for r in rows], [r["completion"] for r in rows])
    out = []
    for verdict, harmful_prompt in zip(verdicts, harmful):
        v = conservative(verdict, harmful_set=harmful_prompt)
        out.append({"judge": judge.name, "verdict": v.label, "refused": v.refused, "harmful": v.harmful,
                    "parse_error": v.parse_error})
    return out


def disputed(row: dict[str, Any]) -> bool:
    """True when the row's two judges reach different outcomes (False without a second judge).

    The outcome is what the headline rates count: refusal, on harmful prompts (refusal rate) and on
    benign ones (over-refusal). Harm is not compared: no offline judge reads it validly on small
    models' replies (``judges validate --dataset own``)."""
    second = row.get("second")
    if not isinstance(second, dict):
        return False
    return bool(row["refused"]) != bool(second["refused"])


def disagreement_metrics(rows: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """``judge_disagreement`` (Wilson CI) and ``second_judge`` (its own rates) for one benchmark's
    judged rows; empty when the rows carry no second verdict."""
    if not rows or not all(isinstance(r.get("second"), dict) for r in rows):
        return {}
    name = rows[0]["second"]["judge"]
    out: dict[str, Any] = {"judge_disagreement": rate_metric(
        "judge_disagreement", [disputed(r) for r in rows], LOWER_IS_BETTER,
        f"share of verdicts on which the second judge ({name}) reaches another outcome than {rows[0]['judge']}",
        seed).to_dict()}
    second: dict[str, Any] = {"judge": name}
    for harmful_set in (True, False):
        part = [r for r in rows if r["harmful_prompt"] is harmful_set]
        if part:
            verdicts = [Verdict(r["second"]["verdict"], r["second"]["refused"], r["second"]["harmful"], None,
                                r["second"]["parse_error"]) for r in part]
            summary = summarize(verdicts, harmful_set=harmful_set, seed=seed, other=answers_other(name))
            second.update({k: v for k, v in summary.items() if k not in ("n", "parse_errors")})
    out["second_judge"] = second
    return out
