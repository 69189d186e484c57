"""Benchmark data: low-level readers (errors name file and line) (split from the data module at its own seams)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from safesteer_bench.errors import UserError



Row = dict[str, str]


def _malformed(path: Path, where: str, problem: str) -> UserError:
    return UserError(f"malformed data file {path}, {where}: {problem}",
                     "restore the original file (`safesteer-bench data verify` shows which differ)")


def read_csv(path: Path, required: Sequence[str] = ()) -> list[tuple[int, Row]]:
    """Rows of a CSV as ``(line, row)`` pairs, ``line`` being the row's first physical line.

    Opened with ``newline=''`` (quoted fields hold LF while HarmBench rows end in CRLF) and
    ``utf-8-sig`` (TruthfulQA v1 starts with a BOM). Blank lines are skipped; a row with the
    wrong number of fields, a missing column or bad quoting is a UserError.
    """
    line = 1
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, strict=True)
            header = _check_header(path, next(reader, None), required)
            rows: list[tuple[int, Row]] = []
            line = reader.line_num + 1
            for fields in reader:
                start, line = line, reader.line_num + 1
                if fields:
                    rows.append((start, _row(path, start, header, fields)))
            return rows
    except csv.Error as e:
        raise _malformed(path, f"line {line}", str(e)) from e
    except UnicodeDecodeError as e:
        raise _malformed(path, f"near line {line}", "not valid UTF-8") from e


def _check_header(path: Path, header: list[str] | None, required: Sequence[str]) -> list[str]:
    if not header:
        raise _malformed(path, "line 1", "no header row")
    missing = [c for c in required if c not in header]
    if missing:
        raise _malformed(path, "line 1", f"missing column(s) {', '.join(missing)} "
                                         f"(header: {', '.join(header)})")
    return header


def _row(path: Path, line: int, header: list[str], fields: list[str]) -> Row:
    if len(fields) != len(header):
        raise _malformed(path, f"line {line}",
                         f"expected {len(header)} fields, found {len(fields)}")
    return dict(zip(header, fields))


def read_json(path: Path) -> Any:
    """A whole JSON document; a syntax error names its line."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise _malformed(path, f"line {e.lineno}", e.msg) from e
    except UnicodeDecodeError as e:
        raise _malformed(path, "somewhere", "not valid UTF-8") from e


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """Records of a JSONL file (``.gz`` is decompressed) as ``(line, record)`` pairs."""
    opener: Callable[..., Any] = gzip.open if path.name.endswith(".gz") else open
    records: list[tuple[int, Any]] = []
    line = 0
    try:
        with opener(path, "rt", encoding="utf-8-sig") as f:
            for line, text in enumerate(f, start=1):
                if text.strip():
                    records.append((line, json.loads(text)))
    except json.JSONDecodeError as e:
        raise _malformed(path, f"line {line}", e.msg) from e
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise _malformed(path, f"near line {line + 1}", str(e)) from e
    return records


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty lines of a text file as ``(line, text)`` pairs (trailing newline dropped)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return [(n, t.rstrip("\r\n")) for n, t in enumerate(f, start=1) if t.strip()]
    except UnicodeDecodeError as e:
        raise _malformed(path, "somewhere", "not valid UTF-8") from e


def count_rows(path: Path) -> int:
    """Rows as the MANIFEST counts them, chosen by file extension (see :class:`DataFile`)."""
    if path.is_dir():
        return sum(count_rows(p) for p in sorted(path.glob("*.csv")))
    name = path.name
    if name.endswith(".csv"):
        return len(read_csv(path))
    if name.endswith((".jsonl", ".jsonl.gz")):
        return len(read_jsonl(path))
    if name.endswith(".json"):
        doc = read_json(path)
        return len(doc) if isinstance(doc, list) else 1
    return len(read_lines(path))


def file_sha256(path: Path) -> str:
    """sha256 of a file, or for a folder the digest described in :class:`DataFile`."""
    if path.is_dir():
        lines = "".join(f"{p.name}\t{file_sha256(p)}\n" for p in sorted(path.glob("*.csv")))
        return hashlib.sha256(lines.encode()).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
