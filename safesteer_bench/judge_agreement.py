"""Stored agreement of judges with human labels, so every report can show it.

``judges validate --judge J`` writes ``<cache>/judges/<J>.json``. Rule-based judges (no model)
are cheap to validate — about a second over the 7,510 labelled rows — so a report that uses one
computes and stores it on the spot; model judges show agreement only once someone validated them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError
from .paths import cache_dir
from .store import read_json, write_json_atomic

RULE_JUDGES = ("keywords", "xstest-rules")


def agreement_path(judge: str) -> Path:
    return cache_dir() / "judges" / f"{judge.replace('/', '_')}.json"


def save_agreement(report: dict[str, Any]) -> Path:
    path = agreement_path(report["judge"])
    write_json_atomic(path, report)
    return path


def labels_root(data_dir: Path | None) -> Path:
    """The data root holding xstest/labeled_completions and gptfuzzer (resolving one file finds it)."""
    from .data import resolve

    return resolve("xstest-labeled-gpt4", data_dir).path.parents[2]


def validate_and_store(judge_name: str, dataset: str, data_dir: Path | None) -> dict[str, Any]:
    from .judges import get_judge, validate_judge

    report = validate_judge(get_judge(judge_name), dataset, labels_root(data_dir))
    if dataset == "all":
        save_agreement(report)
    return report


def stored_agreement(judge: str, data_dir: Path | None = None) -> dict[str, Any] | None:
    stored = read_json(agreement_path(judge))
    if stored is not None or judge not in RULE_JUDGES:
        return stored
    try:
        return validate_and_store(judge, "all", data_dir)
    except UserError:
        return None  # labelled files not available: the report says agreement was not measured
