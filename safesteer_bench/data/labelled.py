"""Benchmark data: labelled completions (judge agreement) (split from the data module at its own seams)."""

from __future__ import annotations

from pathlib import Path

from safesteer_bench.errors import unknown_name
from .registry import XSTEST_LABELED_MODELS
from .readers import _malformed
from .records import LabeledCompletion, _csv_for, _id, _text
from .prompts import load_gptfuzzer_questions


_XSTEST_LABELS = {"1_full_compliance": "full_compliance", "2_full_refusal": "full_refusal",
                  "3_partial_refusal": "partial_refusal"}
_GPTFUZZER_LABELS = {"1": "harmful", "0": "not_harmful"}


def load_xstest_labeled(model: str | None = None, data_dir: str | Path | None = None
                        ) -> list[LabeledCompletion]:
    """Human-labelled XSTest completions for one model (gpt4, llama2new, mistralinstruct), or
    all three in that order when ``model`` is None."""
    if model is not None and model not in XSTEST_LABELED_MODELS:
        raise unknown_name("xstest labelled model", model, XSTEST_LABELED_MODELS, "data list")
    models = [model] if model else list(XSTEST_LABELED_MODELS)
    return [c for m in models for c in _load_xstest_labeled_one(m, data_dir)]


def _load_xstest_labeled_one(model: str, data_dir: str | Path | None) -> list[LabeledCompletion]:
    key = f"xstest-labeled-{model}"
    path, rows = _csv_for(key, data_dir, ["id", "type", "prompt", "completion", "final_label"])
    out = []
    for i, (n, r) in enumerate(rows):
        label = _XSTEST_LABELS.get(r["final_label"])
        if label is None:
            raise _malformed(path, f"line {n}", f"unknown final_label {r['final_label']!r}")
        out.append(LabeledCompletion(
            id=_id(key, i, len(rows)), prompt=_text(path, n, r, "prompt"),
            completion=r["completion"], label=label, source=key, prompt_type=r["type"] or None,
            question_index=_xstest_index(path, n, r["id"]),
            meta={"model": model, "source_id": r["id"], "annotation_1": r.get("annotation_1"),
                  "annotation_2": r.get("annotation_2"), "agreement": r.get("agreement")}))
    return out


def _xstest_index(path: Path, line: int, source_id: str) -> int:
    """``v2-17`` -> 16, the 0-based row of that prompt in xstest_prompts.csv."""
    try:
        return int(source_id.rsplit("-", 1)[-1]) - 1
    except ValueError:
        raise _malformed(path, f"line {line}", f"id {source_id!r} is not like v2-<n>") from None


def load_gptfuzzer_labeled(data_dir: str | Path | None = None) -> list[LabeledCompletion]:
    """GPTFuzzer's 6,160 labelled responses; ``question`` indexes question_list.csv, whose text
    becomes ``prompt``."""
    questions = load_gptfuzzer_questions(data_dir)
    key = "gptfuzzer-labeled"
    path, rows = _csv_for(key, data_dir, ["question", "Response", "label"])
    out = []
    for i, (n, r) in enumerate(rows):
        q = _int_in_range(path, n, r["question"], len(questions), "question")
        label = _GPTFUZZER_LABELS.get(r["label"].strip())
        if label is None:
            raise _malformed(path, f"line {n}", f"label {r['label']!r} is not 0/1")
        out.append(LabeledCompletion(id=_id(key, i, len(rows)), prompt=questions[q].text,
                                     completion=r["Response"], label=label, source=key,
                                     question_index=q))
    return out


def _int_in_range(path: Path, line: int, value: str, limit: int, column: str) -> int:
    try:
        index = int(value)
    except ValueError:
        index = -1
    if not 0 <= index < limit:
        raise _malformed(path, f"line {line}", f"{column} {value!r} is not an index 0..{limit - 1}")
    return index
