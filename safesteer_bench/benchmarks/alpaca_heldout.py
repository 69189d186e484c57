"""alpaca-heldout: Alpaca instructions that no method sees; over-refusal rate (lower is better).

Steering directions draw their harmless prompts as ``seeded_subset(load_alpaca(), n, seed)``:
the *first* ``n`` of a ``random.Random(seed)`` shuffle of the 31,323 instructions, with the run's
seed. This set walks the *same* shuffle from its end, so the two are disjoint for any direction
size up to ~30,000. It also skips the first ``RESERVED`` instructions of the safety-token-set
order (``token_set.harmless_candidates``, a different shuffle) so SafeSteer's token-set prompts
never appear here either. ``HELDOUT_SIZE`` (1000) instructions are kept, last-of-shuffle first; a
run's ``--limit`` takes a prefix, so smaller limits give subsets of larger ones. The pool depends
on the run seed (as the direction prompts do); ``load()`` gives the seed-0 pool.
"""

import random
from dataclasses import dataclass
from pathlib import Path

from safesteer_bench.evaluation.benchmark import BenchmarkSpec, register
from safesteer_bench.data import Prompt, load_alpaca, normalize_text

HELDOUT_SIZE = 1000
RESERVED = 4096  # token-set candidates skipped (profiles use at most a few dozen)


def _token_set_reserved(data_dir: str | Path | None, seed: int) -> set[str]:
    try:
        from safesteer_bench.training.token_set import harmless_candidates
    except ImportError:  # the safesteer method is not installed: nothing to reserve
        return set()
    return {normalize_text(p.text) for p in harmless_candidates(data_dir, RESERVED, seed)}


def heldout_pool(data_dir: str | Path | None = None, seed: int = 0) -> list[Prompt]:
    """The held-out instructions for ``seed``: the end of the direction shuffle, reserved ones skipped."""
    items = load_alpaca(data_dir)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)  # the shuffle of data.seeded_subset(items, n, seed)
    reserved = _token_set_reserved(data_dir, seed)
    out: list[Prompt] = []
    for i in reversed(order):
        if normalize_text(items[i].text) not in reserved:
            out.append(items[i])
            if len(out) == HELDOUT_SIZE:
                break
    return out


@dataclass(frozen=True)
class HeldoutSpec(BenchmarkSpec):
    """A spec whose pool depends on the run seed; ``--limit`` takes a prefix of it."""

    def prompts(self, data_dir: Path | None, limit: int | None, seed: int = 0,
                split: str | None = "test") -> list[Prompt]:
        """A prefix of the pool's ``split`` part (the dev / test partition of every set, splits.py)."""
        from safesteer_bench.data.splits import select

        pool = select(heldout_pool(data_dir, seed), split)
        return pool if limit is None else pool[:limit]


ALPACA_HELDOUT = register(HeldoutSpec(
    name="alpaca-heldout",
    kind="safety",
    description="1000 held-out Alpaca instructions (disjoint from steering/token-set prompts); "
                "over-refusal rate (lower is better)",
    load=heldout_pool,
    harmful=False,
    source="tatsu-lab/stanford_alpaca (no-input instructions, via andyrdt/refusal_direction)",
))
