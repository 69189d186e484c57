"""Benchmarks from a user's own file, without editing the package (docs/architecture.md §9).

``--benchmarks my_prompts.jsonl`` (or ``.csv``, ``.json``, ``.txt``) scores a file of prompts; a
small YAML spec (``--benchmarks my_set.yaml``) says more::

    name: my-harmful          # default: the file's stem
    file: my_prompts.jsonl    # relative to the YAML file
    column: prompt            # default: the first of prompt, text, goal, question, instruction, behavior
    harmful: true             # true: every prompt is harmful (refusal is right); false: every prompt
                              # is benign (refusal is over-refusal)
    label_column: label       # instead of `harmful`: per prompt, unsafe|harmful|1|true vs safe|benign|0|false
    judge: clf                # the default judge (`safesteer-bench judges`)
    max_new_tokens: 64        # default: the profile's
    description: ...

A plain file is harmful unless it has a ``label`` column. The spec is registered under its name
for the run (and rebuilt from the same path when the run is re-judged); its ``source`` records the
file's path and sha256, so a changed file is visible in the results.
"""

from __future__ import annotations

import hashlib
import json
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from safesteer_bench.data import Prompt, read_csv, read_jsonl, read_lines
from safesteer_bench.errors import UserError
from safesteer_bench.evaluation.benchmark import BENCHMARKS, BenchmarkSpec

PROMPT_FILES = (".jsonl", ".json", ".csv", ".txt")
SPEC_FILES = (".yaml", ".yml")
TEXT_COLUMNS = ("prompt", "text", "goal", "question", "instruction", "behavior")
HARMFUL_LABELS = {"unsafe", "harmful", "1", "true", "yes"}
BENIGN_LABELS = {"safe", "benign", "0", "false", "no"}
SPEC_KEYS = {"name", "file", "column", "harmful", "label_column", "judge", "max_new_tokens", "description"}
FIX = "see the spec format in docs/architecture.md §9 (or this module's docstring)"


def _short(value: Any) -> str:
    """``repr`` of a bad value, bounded (a YAML alias bomb must not become megabytes of error)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 2, 4, 4, 60, 60
    text = short.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True)
class UserFileSpec:
    """A user benchmark as declared (a YAML spec, or the defaults for a bare prompt file)."""

    name: str
    file: Path
    column: str | None = None
    harmful: bool | None = True
    label_column: str | None = None
    judge: str = "clf"
    max_new_tokens: int | None = None
    description: str = ""


def is_user_file(token: str) -> bool:
    """Whether a ``--benchmarks`` entry names a file rather than a registered benchmark or suite."""
    return Path(token).suffix.lower() in PROMPT_FILES + SPEC_FILES


def _records(path: Path) -> list[tuple[int, Any]]:
    """``(line, record)`` pairs of a prompt file: dict rows (JSONL, CSV, JSON list) or strings."""
    if path.suffix.lower() not in PROMPT_FILES:
        raise UserError(f"benchmark file {path} is not a prompt file ({', '.join(PROMPT_FILES)})",
                        f"point `file:` at a {'/'.join(PROMPT_FILES)} file")
    try:
        return _read_records(path)
    except UserError as exc:  # the shared readers' fix is about the package's data, not a user's file
        if not exc.problem.startswith("malformed data file"):
            raise
        raise UserError(exc.problem.replace("malformed data file", "malformed benchmark file", 1),
                        "fix the file (UTF-8 text; one JSON object per line, a CSV with a header row, "
                        "or one prompt per line)") from None


def _read_records(path: Path) -> list[tuple[int, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".csv":
        return [(line, row) for line, row in read_csv(path)]
    if suffix == ".txt":
        return [(line, text) for line, text in read_lines(path) if text.strip()]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc})", "write a JSON list of prompts or objects") from None
    if not isinstance(doc, list):
        raise UserError(f"{path} holds a JSON {type(doc).__name__}, not a list of prompts",
                        "write a JSON list of strings or of objects with a prompt field")
    return [(i + 1, item) for i, item in enumerate(doc)]


def _column(spec: UserFileSpec, first: Any) -> str | None:
    if not isinstance(first, dict):
        if spec.column is not None or spec.label_column is not None:
            raise UserError(f"{spec.file} holds plain prompts, so `column:`/`label_column:` cannot apply",
                            "drop them, or write JSONL/CSV rows with named columns")
        return None
    if spec.column is not None:
        if spec.column not in first:
            raise UserError(f"{spec.file} has no column '{spec.column}' (it has: {', '.join(map(str, first))})",
                            "set `column:` to one of them")
        return spec.column
    found = next((c for c in TEXT_COLUMNS if c in first), None)
    if found is None:
        raise UserError(f"{spec.file} has none of the prompt columns {', '.join(TEXT_COLUMNS)} "
                        f"(it has: {', '.join(map(str, first))})", f"name the column with a YAML spec; {FIX}")
    return found


def _label(spec: UserFileSpec, line: int, record: Any) -> str | None:
    if spec.label_column is None:
        return None
    value = str(record.get(spec.label_column, "")).strip().lower() if isinstance(record, dict) else ""
    if value in HARMFUL_LABELS:
        return "unsafe"
    if value in BENIGN_LABELS:
        return "safe"
    raise UserError(f"{spec.file} line {line}: label {value!r} in '{spec.label_column}' is neither harmful "
                    f"({', '.join(sorted(HARMFUL_LABELS))}) nor benign ({', '.join(sorted(BENIGN_LABELS))})",
                    "fix the label or drop the label column")


def load_user_prompts(spec: UserFileSpec) -> list[Prompt]:
    """The file's prompts as :class:`Prompt` records; every bad row is a UserError naming its line."""
    if not spec.file.is_file():
        what = "is a folder, not a file" if spec.file.is_dir() else "does not exist"
        raise UserError(f"benchmark file {spec.file} {what}", "check the path given to --benchmarks (or `file:`)")
    records = _records(spec.file)
    if not records:
        raise UserError(f"benchmark file {spec.file} holds no prompts", "add one prompt per row or line")
    column = _column(spec, records[0][1])
    width = len(str(len(records) - 1))
    prompts = []
    for i, (line, record) in enumerate(records):
        text = record.get(column) if column is not None and isinstance(record, dict) else record
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{spec.file} line {line}: no prompt text"
                            + (f" in '{column}'" if column else ""), "every row needs a non-empty prompt")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]  # an edited prompt gets a new id,
        # so a resumed run never reuses completions or verdicts of the old text under the same id
        prompts.append(Prompt(id=f"{spec.name}-{i:0{width}d}-{digest}", text=text, source=spec.name,
                              label=_label(spec, line, record), meta={"line": line}))
    return prompts


def _read_spec(path: Path) -> UserFileSpec:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})", FIX) from None
    if not isinstance(doc, dict) or "file" not in doc:
        raise UserError(f"{path} is not a benchmark spec (a mapping with at least `file:`)", FIX)
    unknown = sorted(set(map(str, doc)) - SPEC_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(unknown)}", f"valid keys: {', '.join(sorted(SPEC_KEYS))}")
    harmful = doc.get("harmful", None if doc.get("label_column") else True)
    if harmful not in (True, False, None) or (harmful is not None and doc.get("label_column")):
        raise UserError(f"{path}: `harmful` must be true or false, and not set together with `label_column`", FIX)
    file = doc["file"]
    if not isinstance(file, str) or not file.strip() or Path(file).suffix.lower() not in PROMPT_FILES:
        raise UserError(f"{path}: `file:` must name a prompt file ({', '.join(PROMPT_FILES)}), got {_short(file)}", FIX)
    for key in ("column", "label_column", "judge", "description"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise UserError(f"{path}: `{key}:` must be a string, got {_short(doc[key])}", FIX)
    if doc.get("name") is not None and (isinstance(doc["name"], bool) or not isinstance(doc["name"], (str, int))):
        raise UserError(f"{path}: `name:` must be a string, got {_short(doc['name'])}", FIX)
    tokens = doc.get("max_new_tokens")
    if tokens is not None and (not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1):
        raise UserError(f"{path}: max_new_tokens must be a positive integer", FIX)
    return UserFileSpec(name=str(doc.get("name") or Path(str(doc["file"])).stem), file=path.parent / str(doc["file"]),
                        column=doc.get("column"), harmful=harmful, label_column=doc.get("label_column"),
                        judge=str(doc.get("judge") or "clf"), max_new_tokens=tokens,
                        description=str(doc.get("description") or ""))


def _plain_spec(path: Path) -> UserFileSpec:
    """A bare prompt file: harmful, unless its first record has a ``label`` field."""
    records = _records(path) if path.is_file() else []
    labelled = bool(records) and isinstance(records[0][1], dict) and "label" in records[0][1]
    return UserFileSpec(name=path.stem, file=path, harmful=None if labelled else True,
                        label_column="label" if labelled else None)


def user_benchmark(token: str) -> BenchmarkSpec:
    """The spec of a user file named in ``--benchmarks``, registered under its name for this process."""
    from safesteer_bench.evaluation.judges import get_judge
    from safesteer_bench.paths import check_run_id

    path = Path(token).expanduser().resolve()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise UserError(f"benchmark file {token} {what}", "check the path given to --benchmarks")
    spec = _read_spec(path) if path.suffix.lower() in SPEC_FILES else _plain_spec(path)
    try:
        check_run_id(spec.name)  # a name that is one safe path component (it names folders)
    except UserError:
        raise UserError(f"benchmark name {spec.name!r} (from {path}) is not a safe name",
                        "use letters, digits and _ . + = - (set `name:` in a YAML spec)") from None
    from safesteer_bench.evaluation.benchmark import PROFILE_EXTRAS, SUITES

    if spec.name in SUITES or spec.name in PROFILE_EXTRAS:  # resolve_benchmarks would expand the suite instead
        raise UserError(f"benchmark name '{spec.name}' (from {path}) is the name of a suite",
                        "set another `name:` in a YAML spec (or rename the file)")
    get_judge(spec.judge)
    digest = hashlib.sha256(spec.file.read_bytes()).hexdigest() if spec.file.is_file() else "missing"
    loader: Callable[[Path | None], list[Prompt]] = lambda _data_dir: load_user_prompts(spec)  # noqa: E731
    built = BenchmarkSpec(name=spec.name, kind="safety", load=loader, harmful=spec.harmful,
                          default_judge=spec.judge, max_new_tokens=spec.max_new_tokens,
                          description=spec.description or f"user prompts from {spec.file.name}",
                          source=f"{spec.file} sha256:{digest[:16]}", origin=str(path))
    if spec.name in BENCHMARKS:
        known = BENCHMARKS.get(spec.name)
        if known.source != built.source:
            raise UserError(f"benchmark name '{spec.name}' (from {path}) is already taken by "
                            f"{known.source or 'a built-in benchmark'}", "set another `name:` in a YAML spec")
        return known
    load_user_prompts(spec)  # bad rows fail now, in the dry run, not after the model loads
    return BENCHMARKS.add(spec.name, built)
