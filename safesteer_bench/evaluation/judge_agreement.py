"""Stored agreement of judges with human labels, so every report can show it.

``judges validate --judge J`` writes ``<cache>/judges/<J>.json``. Rule-based judges (no model)
are cheap to validate — about a second over the 7,510 labelled rows — so a report that uses one
computes and stores it on the spot; model judges show agreement only once someone validated them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from safesteer_bench.errors import UserError
from safesteer_bench.paths import cache_dir
from safesteer_bench.pipeline.store import read_json, write_json_atomic

#: offline judges whose agreement is cheap to get, so a report computes and stores it on the spot
#: ("clf" returns the leave-one-source-out figures stored with its model, after a sha256 check)
log = logging.getLogger(__name__)

RULE_JUDGES = ("keywords", "xstest-rules", "clf", "rbr")


def agreement_path(judge: str) -> Path:
    return cache_dir() / "judges" / f"{judge.replace('/', '_')}.json"


def save_agreement(report: dict[str, Any]) -> Path:
    path = agreement_path(report["judge"])
    write_json_atomic(path, report)
    return path


def labels_root(data_dir: Path | None) -> Path:
    """The data root holding xstest/labeled_completions and gptfuzzer (resolving one file finds it)."""
    from safesteer_bench.data import resolve

    return resolve("xstest-labeled-gpt4", data_dir).path.parents[2]


def validate_and_store(judge_name: str, dataset: str, data_dir: Path | None) -> dict[str, Any]:
    from safesteer_bench.evaluation.judges import get_judge, validate_judge

    judge = get_judge(judge_name)
    # The own replies ship inside the package: validating on them alone needs no data folder.
    root = Path(".") if dataset == "own" else labels_root(data_dir)
    validate = getattr(judge, "validate", None)  # a trained judge reports held-out agreement itself
    report = validate(root, dataset) if callable(validate) else validate_judge(judge, dataset, root)
    report["version"] = judge_version(judge)
    if dataset == "all":
        save_agreement(report)
    return report


def judge_version(judge: Any) -> str | None:
    """What a stored agreement was measured on: the judge's ``version`` attribute (rule judges and
    ``clf`` change it with their rules or model), so a stored figure of an older judge is redone."""
    version = getattr(judge, "version", None)
    return None if version is None else str(version)


def valid_agreement(doc: Any) -> bool:
    """The shape reports read: ``{"judge": str, "datasets": {name: {target: {n, accuracy, …}}}}``
    (a grouping such as ``by_file`` / ``by_model`` maps a group to figures or to targets' figures),
    every figure a number or None (a hand-edited or truncated cache file must not crash a report)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("judge"), str) or not isinstance(doc.get("datasets"), dict):
        return False
    for targets in doc["datasets"].values():
        if not isinstance(targets, dict):
            return False
        for name, figures in targets.items():
            if name.startswith("by_"):
                if not isinstance(figures, dict) or not all(_valid_group(f) for f in figures.values()):
                    return False
            elif isinstance(figures, dict):
                if not _valid_figures(figures):
                    return False
            elif not (figures is None or _number(figures) or (name == "split" and isinstance(figures, str))):
                return False
    return True


def _valid_group(group: Any) -> bool:
    """One group of a grouping: figures, or {target: figures}."""
    if isinstance(group, dict) and "n" in group:
        return _valid_figures(group)
    return isinstance(group, dict) and all(_valid_figures(f) or _number(f) for f in group.values())


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _valid_figures(figures: Any) -> bool:
    if not isinstance(figures, dict) or not _number(figures.get("n")):
        return False
    return all(figures.get(k) is None or _number(figures.get(k))
               for k in ("positives", "accuracy", "kappa", "precision", "recall")) and all(
        figures.get(k) is None or (isinstance(figures[k], list) and all(_number(x) for x in figures[k]))
        for k in ("kappa_ci", "accuracy_ci", "recall_ci"))


def stored_agreement(judge: str, data_dir: Path | None = None) -> dict[str, Any] | None:
    """The stored agreement of ``judge``; a damaged file is ignored (rule judges measure again)."""
    stored = read_json(agreement_path(judge))
    if stored is not None and not valid_agreement(stored):
        log.warning("stored agreement of %s (%s) is damaged; ignored", judge, agreement_path(judge))
        stored = None
    if stored is not None and judge in RULE_JUDGES:
        from safesteer_bench.evaluation.judges import get_judge

        if stored.get("version") != judge_version(get_judge(judge)) or "own" not in stored["datasets"]:
            stored = None  # measured on an older judge, or before the own replies existed: measure again
    if stored is not None or judge not in RULE_JUDGES:
        return stored
    try:
        return validate_and_store(judge, "all", data_dir)
    except UserError:
        return None  # labelled files not available: the report says agreement was not measured
