"""The one text normalisation every rule judge matches against."""

from __future__ import annotations

import re


def normalize(text: str) -> str:
    """ASCII apostrophes/quotes, single spaces, stripped, lower-case: the form all rules match."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u02bc", "'")
    text = text.replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", text).strip().lower()
