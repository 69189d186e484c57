"""Benchmark data: resolution and download (split from the data module at its own seams)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

from safesteer_bench.errors import UserError
from safesteer_bench.paths import cache_dir
from .registry import DOWNLOAD_TIMEOUT_S, DataFile, ENV_DATA, ENV_DATA_URL, ENV_OFFLINE, RAW_BASE, get_file


@dataclass(frozen=True)
class ResolvedFile:
    """Where a data file was found. ``origin`` is ``"--data-dir"``, ``"SAFESTEER_BENCH_DATA"``,
    ``"cache"`` or ``"download"`` (fetched just now into the cache)."""

    path: Path
    origin: str


def offline() -> bool:
    """True when ``SAFESTEER_BENCH_OFFLINE``, ``HF_DATASETS_OFFLINE`` or ``HF_HUB_OFFLINE`` is set
    to a true value (a user who turned the hub off expects no download of any kind)."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in ENV_OFFLINE)


def source_url(df: DataFile) -> str:
    """The URL to fetch ``df`` from; ``$SAFESTEER_BENCH_DATA_URL`` replaces the GitHub raw base
    (a mirror, or a local server in tests)."""
    base = os.environ.get(ENV_DATA_URL, "").strip().rstrip("/")
    if base and df.url.startswith(RAW_BASE):
        return base + df.url[len(RAW_BASE):]
    return df.url


def data_roots(data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """The local folders searched, in order, as ``(origin, folder)`` pairs.

    A given ``--data-dir`` or ``$SAFESTEER_BENCH_DATA`` that is not a folder is an error rather
    than silently skipped: it is almost always a typo the user wants to hear about.
    """
    roots: list[tuple[str, Path]] = []
    if data_dir is not None:
        roots.append(("--data-dir", _existing_dir(Path(data_dir), "--data-dir")))
    env = os.environ.get(ENV_DATA, "").strip()
    if env:
        roots.append((ENV_DATA, _existing_dir(Path(env), ENV_DATA)))
    roots.append(("cache", cache_dir() / "data"))
    return roots


def _existing_dir(path: Path, what: str) -> Path:
    path = path.expanduser()
    if not path.is_dir():
        raise UserError(f"{what} {path} is not a folder",
                        "point it at a folder laid out like ../shared/datasets")
    return path


def find_local(key: str, data_dir: str | Path | None = None) -> ResolvedFile | None:
    """The first local copy of ``key`` in resolution order, or None. Never downloads."""
    df = get_file(key)
    for origin, root in data_roots(data_dir):
        path = root / df.relpath
        if path.is_dir() if df.kind == "dir" else path.is_file():
            return ResolvedFile(path, origin)
    return None


def resolve(key: str, data_dir: str | Path | None = None, download: bool = True) -> ResolvedFile:
    """Find ``key`` locally, else download it into the cache; UserError if neither works."""
    df = get_file(key)
    found = find_local(key, data_dir)
    if found is not None:
        if df.kind == "dir":
            _check_folder_complete(df, found.path)
        return found
    if df.kind == "dir":
        raise _missing(df, data_dir, f"it is a folder of {df.files} files and is not downloaded")
    if not download:
        raise _missing(df, data_dir, "downloading was not allowed")
    if offline():
        raise _missing(df, data_dir, "offline mode is on (SAFESTEER_BENCH_OFFLINE / "
                                     "HF_DATASETS_OFFLINE / HF_HUB_OFFLINE), so it was not downloaded")
    path = _download(df, data_dir, cache_dir() / "data" / df.relpath)
    return ResolvedFile(path, "download")


def _fix_for(df: DataFile) -> str:
    return f"pass --data-dir DIR or set {ENV_DATA} to a folder holding {df.relpath}"


def _missing(df: DataFile, data_dir: str | Path | None, reason: str) -> UserError:
    """The one-line error for a file that is nowhere: what, where we looked, source, the fix."""
    looked = ", ".join(f"{o} {p}" for o, p in data_roots(data_dir))
    reason = " ".join(reason.split())  # keep the message on one line
    return UserError(
        f"data file {df.relpath} ({df.key}) not found (looked in {looked}); {reason}; "
        f"source: {source_url(df)}",
        _fix_for(df),
    )


def _check_folder_complete(df: DataFile, path: Path) -> None:
    """A folder entry (MMLU) is only usable when all its subject files are there."""
    found = len(list(path.glob("*.csv")))
    if found != df.files:
        raise UserError(f"data folder {path} holds {found} CSV files, expected {df.files}",
                        _fix_for(df))


def _download(df: DataFile, data_dir: str | Path | None, dest: Path) -> Path:
    """Fetch ``df`` to ``dest`` through a temp file in the same folder, then rename atomically,
    so a half-written or corrupt file never sits where the next run would trust it."""
    url = source_url(df)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise UserError(f"cannot write to the data cache {dest.parent}: {e}", _fix_for(df)) from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out)
        if digest != df.sha256:
            raise UserError(
                f"downloaded {df.relpath} from {url} but its sha256 is {digest}, "
                f"expected {df.sha256}; nothing was kept", _fix_for(df))
        os.replace(tmp, dest)
    except (urllib.error.URLError, HTTPException, OSError, ValueError) as e:
        raise _missing(df, data_dir, f"download failed: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _fetch(url: str, out: Any) -> str:
    """Stream ``url`` into ``out``; return the sha256 of what was written."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        while chunk := response.read(1 << 16):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()
