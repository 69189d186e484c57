"""User-facing errors: one line naming the problem and the fix; the CLI exits 2 on them."""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix (unknown name, missing file, malformed data, offline model).

    The CLI prints ``error: <problem> — <fix>`` and exits with code 2, without a traceback unless
    ``--debug`` is given.
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)


def unknown_name(kind: str, name: str, known: list[str] | tuple[str, ...], command: str) -> UserError:
    """The error for an unknown method/model/benchmark/judge/profile name."""
    listing = ", ".join(sorted(known))
    return UserError(f"unknown {kind} '{name}'", f"choose one of: {listing} (see `safesteer-bench {command}`)")
