"""Benchmark data: subsets and overlap (split from the data module at its own seams)."""

from __future__ import annotations

import random
import string
import unicodedata
from pathlib import Path
from typing import Callable, Sequence

from safesteer_bench.errors import UserError
from .registry import T
from .records import Prompt
from .prompts import load_advbench, load_harmbench, load_jailbreakbench_benign, load_jailbreakbench_harmful, load_maliciousinstruct, load_strongreject, load_xstest


def seeded_subset(items: Sequence[T], n: int | None, seed: int) -> list[T]:
    """``n`` items picked by a seeded shuffle, in the shuffled order.

    Same items, ``n`` and ``seed`` give the same list on every machine (``random.Random`` is
    stable across platforms), and a smaller ``n`` gives a prefix of a larger one, so a quick
    profile's prompts are a subset of the full profile's. ``n=None`` or ``n >= len(items)``
    returns all items in their original order.
    """
    if n is not None and n < 0:
        raise UserError(f"subset size {n} is negative", "use a size of 0 or more, or none for all")
    if n is None or n >= len(items):
        return list(items)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in order[:n]]


def normalize_text(s: str) -> str:
    """Lowercase, NFKC-normalised, whitespace collapsed, punctuation stripped at both ends:
    the key for spotting the same prompt in a training and an evaluation set."""
    s = " ".join(unicodedata.normalize("NFKC", s).lower().split())
    start, end = 0, len(s)
    while start < end and _is_edge_junk(s[start]):
        start += 1
    while end > start and _is_edge_junk(s[end - 1]):
        end -= 1
    return s[start:end]


def _is_edge_junk(ch: str) -> bool:
    return ch.isspace() or ch in string.punctuation or unicodedata.category(ch).startswith("P")


def overlap(a: Sequence[Prompt], b: Sequence[Prompt]) -> list[tuple[str, str]]:
    """``(a.id, b.id)`` for every pair whose normalised texts are equal (empty text ignored),
    in the order of ``a`` then ``b``."""
    by_text: dict[str, list[str]] = {}
    for p in b:
        key = normalize_text(p.text)
        if key:
            by_text.setdefault(key, []).append(p.id)
    return [(p.id, bid) for p in a for bid in by_text.get(normalize_text(p.text), [])]


# The safety evaluation sets: no training or direction pool may contain their prompts.
EVALUATION_LOADERS: tuple[Callable[..., list[Prompt]], ...] = (
    load_advbench, load_harmbench, load_strongreject, load_jailbreakbench_harmful,
    load_jailbreakbench_benign, load_maliciousinstruct, load_xstest,
)


def without_evaluation_prompts(pool: Sequence[Prompt], data_dir: str | Path | None = None
                               ) -> tuple[list[Prompt], list[str]]:
    """``(kept, dropped_ids)``: ``pool`` minus every prompt whose normalised text is in a safety
    evaluation set (TDC 2023 shares 30 behaviors with HarmBench and 16 with JailbreakBench)."""
    banned = {normalize_text(p.text) for load in EVALUATION_LOADERS for p in load(data_dir)}
    banned.discard("")
    kept = [p for p in pool if normalize_text(p.text) not in banned]
    dropped = [p.id for p in pool if normalize_text(p.text) in banned]
    return kept, dropped
