"""The run store's files: atomic stage outputs, append-only checkpoints, and the run lock.

Every stage writes to a temporary file in the same directory and renames it into place, so a
SIGKILL mid-write leaves the previous state (or nothing), never a truncated file that a resumed run
would mistake for finished work. Checkpoints (generation chunks) are appended as whole lines only:
a tail torn by a crash is cut off before the next append, so a fragment can never swallow the row
written after it. Readers validate what they read (see :mod:`.records`) and redo what is invalid.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from safesteer_bench.errors import UserError

LOCK_NAME = ".lock"


def _umask() -> int:
    # os.umask can only be read by setting it; done once at import, before any thread starts.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; stage files get the mode a plain open() would give them.
FILE_MODE = 0o666 & ~_umask()


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), FILE_MODE)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path) -> Any | None:
    """The JSON at ``path``, or None when missing or unreadable (a damaged stage is redone)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    # ValueError covers JSONDecodeError, bad UTF-8, NaN/Infinity and integers past Python's digit
    # limit; RecursionError a hostile nesting depth. All of them mean: damaged, redo the stage.
    except (OSError, ValueError, RecursionError):
        return None


def _no_constant(name: str) -> Any:
    """json's hook for NaN / Infinity, which are not JSON: a file holding them is damaged."""
    raise ValueError(f"{name} is not valid JSON")


def read_json_dict(path: Path) -> dict[str, Any] | None:
    """Like :func:`read_json`, but anything other than a JSON object counts as damaged (None)."""
    doc = read_json(path)
    return doc if isinstance(doc, dict) else None


def write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def repair_jsonl_tail(path: Path) -> int:
    """Cut a torn last line (no trailing newline: killed mid-append) off ``path``; returns the
    number of bytes removed. A complete file is left untouched."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with path.open("rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        # Scan back in blocks for the last newline: everything after it is the fragment.
        end, block = size, 1 << 16
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return size - keep


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Append whole rows and fsync: checkpoints inside a long stage (generation chunks).

    The rows go out in one write after any torn tail is cut, so the file only ever grows by whole
    lines (a crash mid-write leaves a fragment that the next append or read discards)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_jsonl_tail(path)
    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> Iterator[dict]:
    """The JSON-object rows of a JSONL file; torn, undecodable or non-object lines are skipped
    (the stage that owns the file regenerates what is missing)."""
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                row = json.loads(line, parse_constant=_no_constant)
            except (ValueError, RecursionError):
                continue
            if isinstance(row, dict):
                yield row


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``<run_dir>/.lock`` for the duration: one writer per run directory.

    A second process that targets the same run (same command, or the same ``--run-id``) fails at
    once with a one-line error instead of interleaving its checkpoint rows with the first one's.
    The lock is an OS file lock (filelock), released by the kernel if the holder dies.
    """
    from filelock import FileLock, Timeout

    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"run directory {run_dir} is in use by another safesteer-bench process",
                        "wait for it to finish (re-running then resumes), or pass another --run-id") from None
    try:
        yield
    finally:
        lock.release()
