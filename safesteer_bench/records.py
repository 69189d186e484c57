"""The shapes of the rows a run stores, checked on every read.

A row that parses as JSON but lacks a field, or carries one of the wrong type (a hand edit, a
disk error, a file from another version), is treated exactly like a torn line: not trusted, and
regenerated or re-judged by the stage that owns it. Readers call :func:`valid_generation` /
:func:`valid_judged` instead of indexing rows and hoping.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

_NUMBER = (int, float)
_OPT_NUMBER = (int, float, type(None))
_OPT_BOOL = (bool, type(None))
_OPT_STR = (str, type(None))

# field -> accepted types. bool is a subclass of int: counts are checked not to be bools below.
GENERATION_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,), "id": (str,), "prompt": (str,), "completion": (str,),
    "prompt_tokens": (int,), "new_tokens": (int,), "finished": (bool,), "seconds": _OPT_NUMBER,
}
JUDGED_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,), "prompt": (str,), "completion": (str,), "harmful_prompt": (bool,),
    "judge": (str,), "verdict": (str,), "refused": (bool,), "harmful": _OPT_BOOL,
    "score": _OPT_NUMBER, "parse_error": (bool,), "category": _OPT_STR,
}
_COUNTS = ("prompt_tokens", "new_tokens")


def _valid(row: Any, fields: Mapping[str, tuple[type, ...]]) -> bool:
    if not isinstance(row, dict):
        return False
    for name, types in fields.items():
        if name not in row:
            if type(None) in types:  # an optional field may be absent (rows from older versions)
                continue
            return False
        if not isinstance(row[name], types):
            return False
    return not any(isinstance(row.get(c), bool) for c in _COUNTS)


def valid_generation(row: Any) -> bool:
    """A generation checkpoint row (``samples/<m>/<b>.gen.jsonl``) with every field typed."""
    return _valid(row, GENERATION_FIELDS)


SECOND_FIELDS: dict[str, tuple[type, ...]] = {
    "judge": (str,), "verdict": (str,), "refused": (bool,), "harmful": _OPT_BOOL, "parse_error": (bool,),
}


def valid_judged(row: Any) -> bool:
    """A judged samples row (``samples/<m>/<b>.jsonl``) with every field typed, its second
    judge's verdict (optional) included."""
    if not _valid(row, JUDGED_FIELDS):
        return False
    return "second" not in row or _valid(row["second"], SECOND_FIELDS)


def all_valid_judged(rows: Iterable[Any]) -> bool:
    return all(valid_judged(r) for r in rows)
