"""Benchmark data: typed records (split from the data module at its own seams)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .resolve import resolve
from .readers import Row, _malformed, read_csv, read_json


@dataclass(frozen=True)
class Prompt:
    """One evaluation or training prompt.

    ``id`` is ``<source>-<row>`` with the 0-based position in the loader's output, zero-padded
    (``advbench-0007``); stable because the files are pinned. ``meta`` holds source-specific
    extras (original id, target string, ...); it is a plain dict so records serialise with
    ``dataclasses.asdict``, and it is left out of the hash (``hash=False``) so a Prompt stays
    hashable. Treat it as read-only.
    """

    id: str
    text: str
    source: str
    category: str | None = None
    label: str | None = None
    meta: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class LabeledCompletion:
    """A model completion with a human label, for measuring a judge's agreement.

    ``label`` is ``full_compliance`` / ``full_refusal`` / ``partial_refusal`` for XSTest and
    ``harmful`` / ``not_harmful`` for GPTFuzzer. ``question_index`` is the 0-based index of the
    prompt in its prompt list (GPTFuzzer's question_list.csv; XSTest's prompt file), so
    completions of one prompt can be grouped. ``meta`` as in :class:`Prompt`.
    """

    id: str
    prompt: str
    completion: str
    label: str
    source: str
    prompt_type: str | None = None
    question_index: int | None = None
    meta: dict = field(default_factory=dict, hash=False)


def _id(source: str, index: int, total: int) -> str:
    width = max(4, len(str(max(total - 1, 0))))
    return f"{source}-{index:0{width}d}"


def _number(source: str, records: list[dict[str, Any]]) -> list[Prompt]:
    """Give records their stable ids in order."""
    return [Prompt(id=_id(source, i, len(records)), source=source, **rec)
            for i, rec in enumerate(records)]


def _text(path: Path, line: int, row: Row, column: str) -> str:
    """A required, non-empty text cell (kept verbatim: benchmarks reproduce upstream prompts)."""
    value = row.get(column)
    if value is None or not value.strip():
        raise _malformed(path, f"line {line}", f"empty {column}")
    return value


def _csv_for(key: str, data_dir: str | Path | None, required: Sequence[str]
             ) -> tuple[Path, list[tuple[int, Row]]]:
    path = resolve(key, data_dir).path
    return path, read_csv(path, required)


def _json_list_for(key: str, data_dir: str | Path | None) -> tuple[Path, list[Any]]:
    path = resolve(key, data_dir).path
    doc = read_json(path)
    if not isinstance(doc, list):
        raise _malformed(path, "line 1", "expected a JSON list")
    return path, doc
