"""Benchmark data: status / verify (for `safesteer-bench data list|verify`) (split from the data module at its own seams)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from safesteer_bench.errors import UserError
from .registry import DATA_FILES, DataFile
from .resolve import ResolvedFile, find_local
from .readers import count_rows, file_sha256


@dataclass(frozen=True)
class FileStatus:
    """One line of ``data list`` / ``data verify``.

    ``origin`` is ``"--data-dir"``, ``"SAFESTEER_BENCH_DATA"``, ``"cache"`` or ``"missing"``.
    ``rows`` is the registered count for ``status`` and the counted one for ``verify``;
    ``check`` is empty for ``status`` and ``match`` / ``mismatch: ...`` / ``missing`` for
    ``verify``.
    """

    key: str
    relpath: str
    origin: str
    path: Path | None
    rows: int | None
    expected_rows: int
    sha256: str | None = None
    check: str = ""

    @property
    def ok(self) -> bool:
        return self.check == "match"


def status(data_dir: str | Path | None = None) -> list[FileStatus]:
    """Where every registered file resolves locally; cheap (no hashing), never downloads."""
    out = []
    for key, df in DATA_FILES.items():
        found = find_local(key, data_dir)
        out.append(FileStatus(key, df.relpath, found.origin if found else "missing",
                              found.path if found else None, df.rows, df.rows))
    return out


def verify(data_dir: str | Path | None = None) -> list[FileStatus]:
    """Like :func:`status`, plus sha256 and row counts checked against the registry."""
    return [_verify_one(df, find_local(key, data_dir)) for key, df in DATA_FILES.items()]


def _verify_one(df: DataFile, found: ResolvedFile | None) -> FileStatus:
    if found is None:
        return FileStatus(df.key, df.relpath, "missing", None, None, df.rows, check="missing")
    digest = file_sha256(found.path)
    try:
        rows: int | None = count_rows(found.path)
    except UserError as e:
        rows, problems = None, [f"unreadable ({e.problem})"]
    else:
        problems = [] if rows == df.rows else [f"rows {rows} != {df.rows}"]
    if digest != df.sha256:
        problems.insert(0, "sha256 differs")
    check = "match" if not problems else "mismatch: " + "; ".join(problems)
    return FileStatus(df.key, df.relpath, found.origin, found.path, rows, df.rows, digest, check)


def format_status_table(rows: Iterable[FileStatus]) -> str:
    """Plain aligned columns: key, origin, rows, [check], path (relpath when missing)."""
    rows = list(rows)
    with_check = any(r.check for r in rows)
    header = ["KEY", "ORIGIN", "ROWS"] + (["CHECK"] if with_check else []) + ["PATH"]
    table = [header]
    for r in rows:
        cells = [r.key, r.origin, "-" if r.rows is None else str(r.rows)]
        cells += [r.check] if with_check else []
        cells.append(str(r.path) if r.path else f"({r.relpath})")
        table.append(cells)
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in table)
