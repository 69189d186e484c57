"""The dev / test partition of every evaluation set.

Every number a run reports comes from ``test``; ``dev`` exists only for choices (a method's
automatic settings, ``tune``). A prompt's split is a pure function of its text: the sha256 of a
salted, normalised key, so it is the same on every machine, for every seed and every profile, and a
prompt that appears in two benchmarks (or in a user's own file) falls on the same side in both.

The key is the normalised prompt text, except where a benchmark wraps one underlying request in
several prompts (jailbreak templates around a JailbreakBench behavior): its loader puts the
request's text in ``meta["split_key"]``, so no behavior is on both sides, and it falls on the same
side as the plain request does in its own benchmark.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Literal

from safesteer_bench.data import Prompt, normalize_text

Split = Literal["dev", "test"]
SPLITS: tuple[str, ...] = ("dev", "test")
#: Share of each evaluation set held out for choices. 0.3 leaves at least 64 test prompts in every
#: safety set (MaliciousInstruct: 64, JailbreakBench: 70), more than the quick profile's 50 per
#: set, while giving dev enough prompts to choose on.
DEV_FRACTION = 0.3
#: Changing the salt reshuffles every split: it is part of every plan, so runs stay comparable.
SALT = "safesteer-bench/split/v1"


def split_key(prompt: Prompt) -> str:
    """The text that decides ``prompt``'s split (its underlying request where it has one)."""
    key = prompt.meta.get("split_key") if isinstance(prompt.meta, dict) else None
    return normalize_text(key if isinstance(key, str) and key else prompt.text)


def split_of(prompt: Prompt, dev_fraction: float = DEV_FRACTION, salt: str = SALT) -> Split:
    """``"dev"`` or ``"test"``: the first 8 bytes of sha256(salt, key) as a uniform number."""
    digest = hashlib.sha256(f"{salt}\n{split_key(prompt)}".encode("utf-8")).digest()
    return "dev" if int.from_bytes(digest[:8], "big") / 2**64 < dev_fraction else "test"


def select(prompts: Iterable[Prompt], split: str | None, dev_fraction: float = DEV_FRACTION,
           salt: str = SALT) -> list[Prompt]:
    """The prompts of ``split`` in their original order (``None``: every prompt)."""
    if split is None:
        return list(prompts)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    return [p for p in prompts if split_of(p, dev_fraction, salt) == split]


def describe() -> dict[str, object]:
    """What a plan records about the partition (so a run says which prompts it could see)."""
    return {"evaluated": "test", "dev_fraction": DEV_FRACTION, "salt": SALT, "key": "normalized prompt text "
            "(the underlying request for prompts that wrap one: meta.split_key)"}
