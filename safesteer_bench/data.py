"""Benchmark data: where each file comes from, where it is found locally, and how it is read.

Every file the harness reads is pinned here (source URL at a fixed commit, sha256, row count), so
a run is reproducible and ``safesteer-bench data verify`` can prove a data folder is the expected
one. Files are found in this order (docs/architecture.md §6):

1. the explicit ``data_dir`` (the CLI's ``--data-dir``),
2. ``$SAFESTEER_BENCH_DATA``,
3. the user cache ``cache_dir()/"data"``,
4. a download from the pinned URL into the cache (sha256-checked, atomic), unless offline.

A data folder has the layout of ``../shared/datasets`` (see its MANIFEST.md). Local files are
trusted as they are (checking sha256 on every load would reject deliberately edited copies);
``verify`` is the explicit check. Loaders use only the stdlib (csv/json/gzip) so they are fast
and have no heavy imports; every malformed row is a :class:`UserError` naming file and line.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import random
import string
import tempfile
import unicodedata
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from .errors import UserError, unknown_name
from .paths import cache_dir

T = TypeVar("T")

ENV_DATA = "SAFESTEER_BENCH_DATA"
ENV_DATA_URL = "SAFESTEER_BENCH_DATA_URL"
ENV_OFFLINE = ("SAFESTEER_BENCH_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
RAW_BASE = "https://raw.githubusercontent.com"
DOWNLOAD_TIMEOUT_S = 60
PLACEHOLDER = "[INSERT PROMPT HERE]"

# --------------------------------------------------------------------------------------------
# Registry of pinned files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFile:
    """One pinned data file (or, for ``kind="dir"``, a folder of CSV files such as MMLU).

    ``rows`` follows the MANIFEST: data rows of a CSV (header excluded), records of a JSON list
    or JSONL file (gz: after decompression), non-empty lines of a TXT file; for a folder, the sum
    over its ``files`` CSVs. For a folder, ``sha256`` is the digest of the lines
    ``"<name>\\t<sha256 of file>\\n"`` over its ``*.csv`` files in sorted order, and ``url``
    names the source folder (folders are never downloaded).
    """

    key: str
    relpath: str
    url: str
    sha256: str
    rows: int
    description: str
    licence: str
    kind: str = "file"
    files: int = 1


def _gh(repo: str, commit: str, path: str) -> str:
    """The raw.githubusercontent URL of ``path`` in ``repo`` at ``commit`` (pinned, immutable)."""
    return f"{RAW_BASE}/{repo}/{commit}/{path}"


_RD = ("andyrdt/refusal_direction", "9d852fae1a9121c78b29142de733cb1340770cc3")
_XS = ("paul-rottger/exaggerated-safety", "d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d")
_GF = ("sherdencooper/GPTFuzz", "1eddeb565740ae311b5f4950492b011a6f866fe7")
_TQA = ("koppula/TruthfulQA", "4dee2311b23de20b43bfc12ace7037f3f71ba421")
_ARC = ("RazvanDu/TemporalRNNs", "93811e3f9f8c5c1f63650153541cd6c626dafcc0")
_MMLU = ("HaeChan0305/MLILAB-FedLLM", "d92730e8bacd7b3a61e551e015e40588e10234b4")
_XS_LABELED_SHA = {
    "gpt4": "71af323af8ecdec0efae23992317721441d2cfedddedeef3248f842f4e15c9ca",
    "llama2new": "6365cc55ce0a593c7ab8785853d02784be027d97199d4077912b4313cd010099",
    "mistralinstruct": "6a146b65a5b96ec8249729bc2db459697175125998d7cbbcc88f7688ecf31dad",
}
XSTEST_LABELED_MODELS: tuple[str, ...] = tuple(_XS_LABELED_SHA)

_SAFETY_FILES = [
    DataFile("advbench", "advbench/harmful_behaviors.csv",
             _gh(*_RD, "dataset/raw/advbench.csv"),
             "6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1", 520,
             "AdvBench harmful behaviors (goal, target)",
             "MIT (llm-attacks); copy in Apache-2.0 repo"),
    DataFile("harmbench", "harmbench/harmbench_behaviors_text_test.csv",
             _gh(*_RD, "dataset/raw/harmbench_test.csv"),
             "75d257b3e7428c52eb7b0154318f455af3e01b09a3794b5e2f3d36054f3c0e29", 320,
             "HarmBench text test behaviors (240 used: copyright rows excluded)", "MIT"),
    DataFile("strongreject", "strongreject/strongreject_dataset.csv",
             _gh(*_RD, "dataset/raw/strongreject.csv"),
             "4dd70357e4ff8b5d0ba5ebafecab5d6dd5633ce8046e3dd1c8bd93e64de44381", 313,
             "StrongREJECT forbidden prompts", "not verified (copy in Apache-2.0 repo)"),
    DataFile("jailbreakbench-harmful", "jailbreakbench/harmful-behaviors.csv",
             _gh(*_RD, "dataset/raw/jailbreakbench.csv"),
             "45e9a8923b28f547bb372fbaa9af7df8b38c818a80ae50c3bab97704197ff516", 100,
             "JailbreakBench JBB-Behaviors, harmful", "MIT"),
    DataFile("jailbreakbench-benign", "jailbreakbench/benign-behaviors.csv",
             _gh("Baisayan/hack", "2b37da1c255e43e16a74ecd3e51c99ea992b5237",
                 "data/benign-behaviors.csv"),
             "c0958ac974fb6629527aeff6c81c88154a877190d07313ac377d36951fde5d3e", 100,
             "JailbreakBench JBB-Behaviors, benign (third-party copy, not a git snapshot)",
             "MIT (JailbreakBench)"),
    DataFile("maliciousinstruct", "maliciousinstruct/MaliciousInstruct.txt",
             _gh("Princeton-SysML/Jailbreak_LLM", "1e490531c0ef4bc13430178bf1fbc8f813e34b1a",
                 "data/MaliciousInstruct.txt"),
             "a64d69dd1004aac4a23aaff3748fb8f17161893f74db36f45b8bc849eb1bcce5", 100,
             "MaliciousInstruct, one instruction per line", "none stated"),
    DataFile("xstest", "xstest/xstest_prompts.csv", _gh(*_XS, "xstest_prompts.csv"),
             "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a", 450,
             "XSTest v2 prompts (250 safe, 200 unsafe)", "CC-BY-4.0"),
    *[
        DataFile(f"xstest-labeled-{model}",
                 f"xstest/labeled_completions/xstest_v2_completions_{model}.csv",
                 _gh(*_XS, f"model_completions/xstest_v2_completions_{model}.csv"), sha, 450,
                 f"XSTest completions by {model} with human 3-way labels", "CC-BY-4.0")
        for model, sha in _XS_LABELED_SHA.items()
    ],
    DataFile("gptfuzzer-templates", "gptfuzzer/GPTFuzzer.csv",
             _gh(*_GF, "datasets/prompts/GPTFuzzer.csv"),
             "e4abf25343b4adb991dd8ddc6189c038f26a6e74064d792cced69f56f71577fc", 77,
             f"GPTFuzzer jailbreak templates (each holds {PLACEHOLDER})", "MIT"),
    DataFile("gptfuzzer-questions", "gptfuzzer/question_list.csv",
             _gh(*_GF, "datasets/questions/question_list.csv"),
             "18531eb6bc1c8fc0b8f66822b366b872202b852bf28826cef590ad0d7a81c749", 100,
             "GPTFuzzer harmful questions (default training pool)", "MIT"),
    DataFile("gptfuzzer-labeled", "gptfuzzer/responses_labeled_train.csv",
             _gh(*_GF, "datasets/responses_labeled/train.csv"),
             "e25fe2a06d2085af260927164364524628c8b5c1dd1bab1b58ddbd917c3f7cb0", 6160,
             "GPTFuzzer responses labelled harmful (1) / not (0)", "MIT"),
    DataFile("tdc2023-dev", "tdc2023/tdc2023_dev_behaviors.json",
             _gh(*_RD, "dataset/raw/tdc2023_dev_behaviors.json"),
             "9392c63ad0193f0510f33812593f0dc71d13ae8b2ad93f64d670e9795deee1b0", 50,
             "TDC 2023 red-teaming behaviors, dev", "not verified"),
    DataFile("tdc2023-test", "tdc2023/tdc2023_test_behaviors.json",
             _gh(*_RD, "dataset/raw/tdc2023_test_behaviors.json"),
             "c4a630921005fd5e26dfe22dd720e411c8e7866c96f5b1a0ca2d46f0e1d1f8c2", 50,
             "TDC 2023 red-teaming behaviors, test", "not verified"),
    DataFile("alpaca", "alpaca/alpaca_instructions_no_input.json",
             _gh(*_RD, "dataset/processed/alpaca.json"),
             "c4ce1bdc5c9b92caabcb171c27c7ec1e79832836bae10291d7c8ab8c6245f600", 31323,
             "Alpaca instructions with empty input (harmless pool)", "CC-BY-NC-4.0"),
]

_CAPABILITY_FILES = [
    DataFile("gsm8k-test", "gsm8k/test.jsonl",
             _gh("openai/grade-school-math", "3101c7d5072418e28b9008a6636bde82a006892c",
                 "grade_school_math/data/test.jsonl"),
             "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14", 1319,
             "GSM8K test", "MIT"),
    DataFile("arc-challenge-test", "arc/ARC-Challenge-Test.jsonl",
             _gh(*_ARC, "ARC-Challenge/ARC-Challenge-Test.jsonl"),
             "9fa8ffb3e3a1f88cb302d53dd95aae81e39209ad9bcf974376b319d8fd35717c", 1172,
             "ARC-Challenge test", "CC-BY-SA-4.0 (AI2, not verified)"),
    DataFile("arc-easy-test", "arc/ARC-Easy-Test.jsonl",
             _gh(*_ARC, "ARC-Easy/ARC-Easy-Test.jsonl"),
             "ce32a0774b4beb1977d2c6b16dda5dd2b24fdc9c7f506882c452678676bd09be", 2376,
             "ARC-Easy test", "CC-BY-SA-4.0 (AI2, not verified)"),
    DataFile("truthfulqa-mc", "truthfulqa/v1/mc_task.json", _gh(*_TQA, "data/v1/mc_task.json"),
             "b3799639bc76c939836d587de7d30b48d91012cb34be04806d33106ce06c162a", 817,
             "TruthfulQA MC1/MC2 targets (original 817 questions)", "Apache-2.0"),
    DataFile("humaneval", "humaneval/HumanEval.jsonl.gz",
             _gh("openai/human-eval", "6d43fb980f9fee3c892a914eda09951f772ad10d",
                 "data/HumanEval.jsonl.gz"),
             "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef", 164,
             "HumanEval problems (gzip JSONL)", "MIT"),
    DataFile("ifeval", "ifeval/input_data.jsonl",
             _gh("microsoft/llm-steer-instruct", "4f84882e57d22897a28cad4ce7e1f8ab60b06dad",
                 "data/input_data.jsonl"),
             "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49", 541,
             "IFEval prompts", "Apache-2.0 (upstream, not verified)"),
    DataFile("mmlu-test", "mmlu/test", _gh(*_MMLU, "data/mmlu/test"),
             "f46f05ad36349e9a1d8b5d87f55cae3215235fab23e517b2fa4f1a1232e2abf3", 14042,
             "MMLU test, 57 subject CSVs (answer as index 0-3)", "MIT (not verified)",
             kind="dir", files=57),
    DataFile("mmlu-dev", "mmlu/dev", _gh(*_MMLU, "data/mmlu/dev"),
             "698171e2d731971acda823164184d6af5b60029fe4f03e1697e799cc98af4667", 285,
             "MMLU dev (5-shot exemplars), 57 subject CSVs", "MIT (not verified)",
             kind="dir", files=57),
]

DATA_FILES: dict[str, DataFile] = {f.key: f for f in _SAFETY_FILES + _CAPABILITY_FILES}


def get_file(key: str) -> DataFile:
    """The registered file ``key``; an unknown key is a one-line UserError listing the known."""
    if key not in DATA_FILES:
        raise unknown_name("data file", key, list(DATA_FILES), "data list")
    return DATA_FILES[key]


# --------------------------------------------------------------------------------------------
# Resolution and download
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Low-level readers (errors name file and line)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Typed records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """One evaluation or training prompt.

    ``id`` is ``<source>-<row>`` with the 0-based position in the loader's output, zero-padded
    (``advbench-0007``); stable because the files are pinned. ``meta`` holds source-specific
    extras (original id, target string, ...); it is a plain dict so records serialise with
    ``dataclasses.asdict``, and it is left out of the hash (``hash=False``) so a Prompt stays
    hashable. Treat it as read-only.
    """

    id: str
    text: str
    source: str
    category: str | None = None
    label: str | None = None
    meta: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class LabeledCompletion:
    """A model completion with a human label, for measuring a judge's agreement.

    ``label`` is ``full_compliance`` / ``full_refusal`` / ``partial_refusal`` for XSTest and
    ``harmful`` / ``not_harmful`` for GPTFuzzer. ``question_index`` is the 0-based index of the
    prompt in its prompt list (GPTFuzzer's question_list.csv; XSTest's prompt file), so
    completions of one prompt can be grouped. ``meta`` as in :class:`Prompt`.
    """

    id: str
    prompt: str
    completion: str
    label: str
    source: str
    prompt_type: str | None = None
    question_index: int | None = None
    meta: dict = field(default_factory=dict, hash=False)


def _id(source: str, index: int, total: int) -> str:
    width = max(4, len(str(max(total - 1, 0))))
    return f"{source}-{index:0{width}d}"


def _number(source: str, records: list[dict[str, Any]]) -> list[Prompt]:
    """Give records their stable ids in order."""
    return [Prompt(id=_id(source, i, len(records)), source=source, **rec)
            for i, rec in enumerate(records)]


def _text(path: Path, line: int, row: Row, column: str) -> str:
    """A required, non-empty text cell (kept verbatim: benchmarks reproduce upstream prompts)."""
    value = row.get(column)
    if value is None or not value.strip():
        raise _malformed(path, f"line {line}", f"empty {column}")
    return value


def _csv_for(key: str, data_dir: str | Path | None, required: Sequence[str]
             ) -> tuple[Path, list[tuple[int, Row]]]:
    path = resolve(key, data_dir).path
    return path, read_csv(path, required)


def _json_list_for(key: str, data_dir: str | Path | None) -> tuple[Path, list[Any]]:
    path = resolve(key, data_dir).path
    doc = read_json(path)
    if not isinstance(doc, list):
        raise _malformed(path, "line 1", "expected a JSON list")
    return path, doc


# --------------------------------------------------------------------------------------------
# Prompt loaders
# --------------------------------------------------------------------------------------------

def load_advbench(data_dir: str | Path | None = None) -> list[Prompt]:
    """AdvBench's 520 harmful behaviors (``goal``); the affirmative ``target`` goes in meta."""
    path, rows = _csv_for("advbench", data_dir, ["goal", "target"])
    return _number("advbench", [dict(text=_text(path, n, r, "goal"), meta={"target": r["target"]})
                                for n, r in rows])


def harmbench_prompt_text(behavior: str, context: str) -> str:
    """HarmBench's own layout for contextual behaviors: context, a rule, then the request."""
    return f"{context}\n\n---\n\n{behavior}" if context else behavior


def load_harmbench(data_dir: str | Path | None = None) -> list[Prompt]:
    """HarmBench text test behaviors without the 80 copyright ones (they need a hash judge)."""
    cols = ["Behavior", "FunctionalCategory", "SemanticCategory", "ContextString", "BehaviorID"]
    path, rows = _csv_for("harmbench", data_dir, cols)
    records = []
    for n, r in rows:
        if r["FunctionalCategory"] == "copyright":
            continue
        text = harmbench_prompt_text(_text(path, n, r, "Behavior"), r["ContextString"])
        meta = {"functional_category": r["FunctionalCategory"], "behavior_id": r["BehaviorID"],
                "behavior": r["Behavior"], "tags": r.get("Tags", "")}
        records.append(dict(text=text, category=r["SemanticCategory"] or None, meta=meta))
    return _number("harmbench", records)


def load_strongreject(data_dir: str | Path | None = None) -> list[Prompt]:
    """StrongREJECT's 313 forbidden prompts with their category."""
    path, rows = _csv_for("strongreject", data_dir, ["forbidden_prompt", "category"])
    return _number("strongreject", [
        dict(text=_text(path, n, r, "forbidden_prompt"), category=r["category"] or None,
             meta={"origin": r.get("source", "")}) for n, r in rows])


def _load_jbb(key: str, data_dir: str | Path | None, cols: tuple[str, ...], label: str
              ) -> list[Prompt]:
    """JBB-Behaviors; ``cols`` names goal/category/target/behavior/source in that file's case."""
    goal, category, target, behavior, source = cols
    path, rows = _csv_for(key, data_dir, [goal, category])
    return _number(key, [
        dict(text=_text(path, n, r, goal), category=r[category] or None, label=label,
             meta={"target": r.get(target, ""), "behavior": r.get(behavior, ""),
                   "origin": r.get(source, "")}) for n, r in rows])


def load_jailbreakbench_harmful(data_dir: str | Path | None = None) -> list[Prompt]:
    """JailbreakBench's 100 harmful behaviors (capitalised header), label ``harmful``."""
    return _load_jbb("jailbreakbench-harmful", data_dir,
                     ("Goal", "Category", "Target", "Behavior", "Source"), "harmful")


def load_jailbreakbench_benign(data_dir: str | Path | None = None) -> list[Prompt]:
    """JailbreakBench's 100 benign twins (lowercase header), label ``benign``."""
    return _load_jbb("jailbreakbench-benign", data_dir,
                     ("goal", "category", "target", "behavior", "source"), "benign")


def load_maliciousinstruct(data_dir: str | Path | None = None) -> list[Prompt]:
    """MaliciousInstruct: one instruction per non-empty line."""
    path = resolve("maliciousinstruct", data_dir).path
    return _number("maliciousinstruct", [dict(text=t.strip()) for _, t in read_lines(path)])


def load_xstest(data_dir: str | Path | None = None) -> list[Prompt]:
    """XSTest prompts: ``type`` as category and ``safe``/``unsafe`` as label."""
    path, rows = _csv_for("xstest", data_dir, ["id", "prompt", "type", "label"])
    records = []
    for n, r in rows:
        if r["label"] not in ("safe", "unsafe"):
            raise _malformed(path, f"line {n}", f"label {r['label']!r} is not safe/unsafe")
        records.append(dict(text=_text(path, n, r, "prompt"), category=r["type"] or None,
                            label=r["label"], meta={"source_id": r["id"],
                                                    "focus": r.get("focus", ""),
                                                    "note": r.get("note", "")}))
    return _number("xstest", records)


def load_gptfuzzer_templates(data_dir: str | Path | None = None) -> list[Prompt]:
    """GPTFuzzer's 77 jailbreak templates; each must hold the ``[INSERT PROMPT HERE]`` slot."""
    path, rows = _csv_for("gptfuzzer-templates", data_dir, ["id", "text"])
    records = []
    for n, r in rows:
        text = _text(path, n, r, "text")
        if PLACEHOLDER not in text:
            raise _malformed(path, f"line {n}", f"template lacks {PLACEHOLDER}")
        records.append(dict(text=text, meta={"source_id": r["id"]}))
    return _number("gptfuzzer-templates", records)


def load_gptfuzzer_questions(data_dir: str | Path | None = None) -> list[Prompt]:
    """GPTFuzzer's 100 harmful questions, the default training pool."""
    path, rows = _csv_for("gptfuzzer-questions", data_dir, ["index", "text"])
    return _number("gptfuzzer-questions", [
        dict(text=_text(path, n, r, "text"), meta={"source_id": r["index"]}) for n, r in rows])


def _load_string_list(key: str, data_dir: str | Path | None) -> list[Prompt]:
    path, items = _json_list_for(key, data_dir)
    for i, item in enumerate(items, start=1):
        if not isinstance(item, str) or not item.strip():
            raise _malformed(path, f"item {i}", "expected a non-empty string")
    return _number(key, [dict(text=t) for t in items])


def load_tdc2023(data_dir: str | Path | None = None) -> list[Prompt]:
    """TDC 2023 red-teaming behaviors: dev (50) then test (50); ``source`` tells them apart."""
    return _load_string_list("tdc2023-dev", data_dir) + _load_string_list("tdc2023-test", data_dir)


def load_alpaca(data_dir: str | Path | None = None) -> list[Prompt]:
    """The 31,323 Alpaca instructions with empty input (harmless pool for directions)."""
    path, items = _json_list_for("alpaca", data_dir)
    records = []
    for i, item in enumerate(items, start=1):
        text = item.get("instruction") if isinstance(item, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise _malformed(path, f"item {i}", "expected an object with a non-empty instruction")
        records.append(dict(text=text, category=item.get("category")))
    return _number("alpaca", records)


PROMPT_LOADERS: dict[str, Callable[..., list[Prompt]]] = {
    "advbench": load_advbench,
    "harmbench": load_harmbench,
    "strongreject": load_strongreject,
    "jailbreakbench-harmful": load_jailbreakbench_harmful,
    "jailbreakbench-benign": load_jailbreakbench_benign,
    "maliciousinstruct": load_maliciousinstruct,
    "xstest": load_xstest,
    "gptfuzzer-templates": load_gptfuzzer_templates,
    "gptfuzzer-questions": load_gptfuzzer_questions,
    "tdc2023": load_tdc2023,
    "alpaca": load_alpaca,
}


def load_prompts(name: str, data_dir: str | Path | None = None) -> list[Prompt]:
    """Load a prompt set by name (a key of :data:`PROMPT_LOADERS`)."""
    if name not in PROMPT_LOADERS:
        raise unknown_name("prompt set", name, list(PROMPT_LOADERS), "data list")
    return PROMPT_LOADERS[name](data_dir)


# --------------------------------------------------------------------------------------------
# Labelled completions (judge agreement)
# --------------------------------------------------------------------------------------------

_XSTEST_LABELS = {"1_full_compliance": "full_compliance", "2_full_refusal": "full_refusal",
                  "3_partial_refusal": "partial_refusal"}
_GPTFUZZER_LABELS = {"1": "harmful", "0": "not_harmful"}


def load_xstest_labeled(model: str | None = None, data_dir: str | Path | None = None
                        ) -> list[LabeledCompletion]:
    """Human-labelled XSTest completions for one model (gpt4, llama2new, mistralinstruct), or
    all three in that order when ``model`` is None."""
    if model is not None and model not in XSTEST_LABELED_MODELS:
        raise unknown_name("xstest labelled model", model, XSTEST_LABELED_MODELS, "data list")
    models = [model] if model else list(XSTEST_LABELED_MODELS)
    return [c for m in models for c in _load_xstest_labeled_one(m, data_dir)]


def _load_xstest_labeled_one(model: str, data_dir: str | Path | None) -> list[LabeledCompletion]:
    key = f"xstest-labeled-{model}"
    path, rows = _csv_for(key, data_dir, ["id", "type", "prompt", "completion", "final_label"])
    out = []
    for i, (n, r) in enumerate(rows):
        label = _XSTEST_LABELS.get(r["final_label"])
        if label is None:
            raise _malformed(path, f"line {n}", f"unknown final_label {r['final_label']!r}")
        out.append(LabeledCompletion(
            id=_id(key, i, len(rows)), prompt=_text(path, n, r, "prompt"),
            completion=r["completion"], label=label, source=key, prompt_type=r["type"] or None,
            question_index=_xstest_index(path, n, r["id"]),
            meta={"model": model, "source_id": r["id"], "annotation_1": r.get("annotation_1"),
                  "annotation_2": r.get("annotation_2"), "agreement": r.get("agreement")}))
    return out


def _xstest_index(path: Path, line: int, source_id: str) -> int:
    """``v2-17`` -> 16, the 0-based row of that prompt in xstest_prompts.csv."""
    try:
        return int(source_id.rsplit("-", 1)[-1]) - 1
    except ValueError:
        raise _malformed(path, f"line {line}", f"id {source_id!r} is not like v2-<n>") from None


def load_gptfuzzer_labeled(data_dir: str | Path | None = None) -> list[LabeledCompletion]:
    """GPTFuzzer's 6,160 labelled responses; ``question`` indexes question_list.csv, whose text
    becomes ``prompt``."""
    questions = load_gptfuzzer_questions(data_dir)
    key = "gptfuzzer-labeled"
    path, rows = _csv_for(key, data_dir, ["question", "Response", "label"])
    out = []
    for i, (n, r) in enumerate(rows):
        q = _int_in_range(path, n, r["question"], len(questions), "question")
        label = _GPTFUZZER_LABELS.get(r["label"].strip())
        if label is None:
            raise _malformed(path, f"line {n}", f"label {r['label']!r} is not 0/1")
        out.append(LabeledCompletion(id=_id(key, i, len(rows)), prompt=questions[q].text,
                                     completion=r["Response"], label=label, source=key,
                                     question_index=q))
    return out


def _int_in_range(path: Path, line: int, value: str, limit: int, column: str) -> int:
    try:
        index = int(value)
    except ValueError:
        index = -1
    if not 0 <= index < limit:
        raise _malformed(path, f"line {line}", f"{column} {value!r} is not an index 0..{limit - 1}")
    return index


# --------------------------------------------------------------------------------------------
# status / verify (for `safesteer-bench data list|verify`)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Subsets and overlap
# --------------------------------------------------------------------------------------------


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
