"""Tests for safesteer_bench.data: loaders on the real shared files, resolution, download, errors.

The real files live in ``../shared/datasets`` (override with ``SAFESTEER_BENCH_TEST_DATA``).
Downloads are tested against a local ``http.server`` on 127.0.0.1; nothing here goes online.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import shutil
import threading
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from safesteer_bench import data
from safesteer_bench.data import DATA_FILES, Prompt
from safesteer_bench.errors import UserError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
_PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private cache, no data/URL overrides, offline by default: tests never touch ~/.cache
    or the network unless they opt in."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SAFESTEER_BENCH_CACHE", str(cache))
    for var in ("SAFESTEER_BENCH_DATA", "SAFESTEER_BENCH_DATA_URL", "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE",
                *_PROXY_VARS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SAFESTEER_BENCH_OFFLINE", "1")
    return cache


@pytest.fixture(scope="session")
def shared() -> Path:
    root = Path(os.environ.get("SAFESTEER_BENCH_TEST_DATA") or SHARED)
    if not root.is_dir():
        pytest.skip(f"shared datasets not found at {root} (set SAFESTEER_BENCH_TEST_DATA)")
    return root


def _copy(shared: Path, key: str, dest_root: Path) -> Path:
    relpath = DATA_FILES[key].relpath
    dest = dest_root / relpath
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared / relpath, dest)
    return dest


# ------------------------------------------------------------------------------------------
# Loaders on the real files
# ------------------------------------------------------------------------------------------

EXPECTED_COUNTS = {
    "advbench": 520, "harmbench": 240, "strongreject": 313, "jailbreakbench-harmful": 100,
    "jailbreakbench-benign": 100, "maliciousinstruct": 100, "xstest": 450,
    "gptfuzzer-templates": 77, "gptfuzzer-questions": 100, "tdc2023": 100, "alpaca": 31323,
}


@pytest.mark.parametrize("name,count", sorted(EXPECTED_COUNTS.items()))
def test_loader_counts_and_ids(shared: Path, name: str, count: int) -> None:
    prompts = data.load_prompts(name, shared)
    assert len(prompts) == count
    assert len({p.id for p in prompts}) == count
    assert all(isinstance(p, Prompt) and p.text.strip() for p in prompts)
    assert all(p.id.startswith(p.source + "-") for p in prompts)


def test_loaders_registered_for_every_set() -> None:
    assert set(data.PROMPT_LOADERS) == set(EXPECTED_COUNTS)


def test_advbench_ids_follow_file_order(shared: Path) -> None:
    prompts = data.load_advbench(shared)
    assert prompts[7].id == "advbench-0007"
    rows = data.read_csv(shared / DATA_FILES["advbench"].relpath)
    assert prompts[7].text == rows[7][1]["goal"]
    assert prompts[0].meta["target"].startswith("Sure, here is")


def test_harmbench_filter_and_context_layout(shared: Path) -> None:
    prompts = data.load_harmbench(shared)
    kinds = Counter(p.meta["functional_category"] for p in prompts)
    assert kinds == {"standard": 159, "contextual": 81}
    contextual = [p for p in prompts if p.meta["functional_category"] == "contextual"]
    assert all("\n\n---\n\n" in p.text and p.text.endswith(p.meta["behavior"]) for p in contextual)
    standard = [p for p in prompts if p.meta["functional_category"] == "standard"]
    assert all(p.text == p.meta["behavior"] for p in standard)
    assert all(p.category and p.category != "copyright" for p in prompts)


def test_xstest_labels_and_types(shared: Path) -> None:
    prompts = data.load_xstest(shared)
    assert Counter(p.label for p in prompts) == {"safe": 250, "unsafe": 200}
    assert len({p.category for p in prompts}) == 18
    assert prompts[0].meta["source_id"] == "1"


def test_jailbreakbench_pairs(shared: Path) -> None:
    harmful = data.load_jailbreakbench_harmful(shared)
    benign = data.load_jailbreakbench_benign(shared)
    assert {p.label for p in harmful} == {"harmful"} and {p.label for p in benign} == {"benign"}
    assert [p.category for p in harmful] == [p.category for p in benign]
    assert len({p.category for p in harmful}) == 10


def test_gptfuzzer_templates_hold_placeholder(shared: Path) -> None:
    templates = data.load_gptfuzzer_templates(shared)
    assert all(data.PLACEHOLDER in t.text for t in templates)


def test_tdc2023_has_both_splits(shared: Path) -> None:
    prompts = data.load_tdc2023(shared)
    assert Counter(p.source for p in prompts) == {"tdc2023-dev": 50, "tdc2023-test": 50}


@pytest.mark.parametrize("model", data.XSTEST_LABELED_MODELS)
def test_xstest_labeled_per_model(shared: Path, model: str) -> None:
    rows = data.load_xstest_labeled(model, shared)
    assert len(rows) == 450
    assert {r.label for r in rows} <= {"full_compliance", "full_refusal", "partial_refusal"}
    assert {r.question_index for r in rows} == set(range(450))
    assert all(r.prompt_type for r in rows)


def test_xstest_labeled_all_and_unknown(shared: Path) -> None:
    assert len(data.load_xstest_labeled(data_dir=shared)) == 1350
    with pytest.raises(UserError, match="gpt4"):
        data.load_xstest_labeled("gpt5", shared)


def test_gptfuzzer_labeled(shared: Path) -> None:
    rows = data.load_gptfuzzer_labeled(shared)
    questions = data.load_gptfuzzer_questions(shared)
    assert len(rows) == 6160
    assert Counter(r.label for r in rows) == {"not_harmful": 4466, "harmful": 1694}
    assert all(r.prompt == questions[r.question_index].text for r in rows)


def test_records_are_frozen_hashable_and_serialisable(shared: Path) -> None:
    p = data.load_xstest(shared)[0]
    assert hash(p) == hash(dataclasses.replace(p, meta={}))
    assert dataclasses.asdict(p)["meta"]["source_id"] == "1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.text = "x"  # type: ignore[misc]


# ------------------------------------------------------------------------------------------
# status / verify
# ------------------------------------------------------------------------------------------


def test_verify_every_shared_file_matches(shared: Path) -> None:
    results = data.verify(shared)
    assert [r.key for r in results] == list(DATA_FILES)
    bad = [(r.key, r.check) for r in results if not r.ok]
    assert not bad
    assert all(r.origin == "--data-dir" and r.rows == DATA_FILES[r.key].rows for r in results)


def test_verify_reports_mismatch_and_missing(shared: Path, tmp_path: Path) -> None:
    root = tmp_path / "d"
    path = _copy(shared, "maliciousinstruct", root)
    path.write_text(path.read_text() + "\nOne more line\n")  # file has no final newline
    results = {r.key: r for r in data.verify(root)}
    assert results["maliciousinstruct"].check.startswith("mismatch: sha256 differs; rows 101")
    assert results["advbench"].check == "missing" and results["advbench"].origin == "missing"


def test_status_and_table(shared: Path, tmp_path: Path) -> None:
    root = tmp_path / "d"
    _copy(shared, "advbench", root)
    rows = {r.key: r for r in data.status(root)}
    assert rows["advbench"].origin == "--data-dir" and rows["advbench"].rows == 520
    assert rows["xstest"].origin == "missing" and rows["xstest"].path is None
    table = data.format_status_table(rows.values()).splitlines()
    assert table[0].split() == ["KEY", "ORIGIN", "ROWS", "PATH"]
    assert len(table) == len(DATA_FILES) + 1
    origin_col = table[0].index("ORIGIN")
    assert all(line[origin_col - 2:origin_col] == "  " and line[origin_col] != " "
               for line in table)  # every row's origin starts in the same column
    assert "(xstest/xstest_prompts.csv)" in "\n".join(table)


# ------------------------------------------------------------------------------------------
# Resolution order
# ------------------------------------------------------------------------------------------


def test_resolution_order(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          isolated_env: Path) -> None:
    explicit, env, cache = tmp_path / "explicit", tmp_path / "env", isolated_env / "data"
    for root in (explicit, env, cache):
        _copy(shared, "advbench", root)
    monkeypatch.setenv("SAFESTEER_BENCH_DATA", str(env))

    got = data.resolve("advbench", explicit)
    assert (got.origin, got.path) == ("--data-dir", explicit / "advbench/harmful_behaviors.csv")
    assert data.resolve("advbench").origin == "SAFESTEER_BENCH_DATA"
    monkeypatch.delenv("SAFESTEER_BENCH_DATA")
    got = data.resolve("advbench")
    assert (got.origin, got.path) == ("cache", cache / "advbench/harmful_behaviors.csv")


def test_resolution_falls_through_missing_dirs(shared: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    empty, env = tmp_path / "empty", tmp_path / "env"
    empty.mkdir()
    _copy(shared, "xstest", env)
    monkeypatch.setenv("SAFESTEER_BENCH_DATA", str(env))
    assert data.resolve("xstest", empty).origin == "SAFESTEER_BENCH_DATA"


def test_bad_data_dir_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--data-dir .* is not a folder"):
        data.resolve("advbench", tmp_path / "nope")


def test_unknown_key() -> None:
    with pytest.raises(UserError, match="unknown data file 'nope'"):
        data.resolve("nope")


def test_mmlu_folder_must_be_complete(shared: Path, tmp_path: Path) -> None:
    assert data.resolve("mmlu-test", shared).path == shared / "mmlu/test"
    partial = tmp_path / "d" / "mmlu" / "test"
    partial.mkdir(parents=True)
    shutil.copyfile(shared / "mmlu/test/anatomy_test.csv", partial / "anatomy_test.csv")
    with pytest.raises(UserError, match="holds 1 CSV files, expected 57"):
        data.resolve("mmlu-test", tmp_path / "d")


# ------------------------------------------------------------------------------------------
# Download (local HTTP server)
# ------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder served at $SAFESTEER_BENCH_DATA_URL; put files at <owner>/<repo>/<commit>/<path>."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    monkeypatch.setenv("SAFESTEER_BENCH_DATA_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("SAFESTEER_BENCH_OFFLINE")
    try:
        yield root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _serve(mirror: Path, key: str, content: bytes) -> None:
    url_path = DATA_FILES[key].url.removeprefix(data.RAW_BASE + "/")
    dest = mirror / url_path
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(content)


@pytest.mark.parametrize("key", ["advbench", "tdc2023-dev"])
def test_download_into_cache(shared: Path, mirror: Path, isolated_env: Path, key: str) -> None:
    _serve(mirror, key, (shared / DATA_FILES[key].relpath).read_bytes())
    got = data.resolve(key)
    assert got.origin == "download"
    assert got.path == isolated_env / "data" / DATA_FILES[key].relpath
    assert hashlib.sha256(got.path.read_bytes()).hexdigest() == DATA_FILES[key].sha256
    assert data.resolve(key).origin == "cache"
    assert [p.name for p in got.path.parent.iterdir()] == [got.path.name]  # no temp files left


def test_download_used_by_loader(shared: Path, mirror: Path) -> None:
    _serve(mirror, "tdc2023-dev", (shared / DATA_FILES["tdc2023-dev"].relpath).read_bytes())
    _serve(mirror, "tdc2023-test", (shared / DATA_FILES["tdc2023-test"].relpath).read_bytes())
    assert len(data.load_tdc2023()) == 100


def test_download_wrong_bytes_rejected(shared: Path, mirror: Path, isolated_env: Path) -> None:
    good = (shared / DATA_FILES["advbench"].relpath).read_bytes()
    _serve(mirror, "advbench", good + b"tampered,row\n")
    with pytest.raises(UserError, match="sha256") as info:
        data.resolve("advbench")
    assert "advbench/harmful_behaviors.csv" in str(info.value)
    cached = isolated_env / "data" / "advbench"
    assert not cached.exists() or not any(cached.iterdir())


def test_download_not_found_on_server(mirror: Path) -> None:
    with pytest.raises(UserError, match="404"):
        data.resolve("advbench")


def test_server_down_names_file_and_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    port = server.server_address[1]
    server.server_close()  # nothing listens on that port any more
    monkeypatch.setenv("SAFESTEER_BENCH_DATA_URL", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("SAFESTEER_BENCH_OFFLINE")
    with pytest.raises(UserError) as info:
        data.resolve("strongreject")
    message = str(info.value)
    assert "strongreject/strongreject_dataset.csv" in message and "--data-dir" in message
    assert f"http://127.0.0.1:{port}/andyrdt/refusal_direction/" in message
    assert "\n" not in message


@pytest.mark.parametrize("var", ["SAFESTEER_BENCH_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_never_downloads(monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.delenv("SAFESTEER_BENCH_OFFLINE")
    monkeypatch.setenv(var, "1")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to download while offline")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(UserError, match="offline") as info:
        data.load_maliciousinstruct()
    assert "maliciousinstruct/MaliciousInstruct.txt" in str(info.value)
    assert "--data-dir" in str(info.value) and "SAFESTEER_BENCH_DATA" in str(info.value)


def test_download_false_and_folders_are_not_downloaded() -> None:
    with pytest.raises(UserError, match="not allowed"):
        data.resolve("advbench", download=False)
    with pytest.raises(UserError, match="not downloaded"):
        data.resolve("mmlu-test")


def test_source_url_override(monkeypatch: pytest.MonkeyPatch) -> None:
    df = DATA_FILES["xstest"]
    assert data.source_url(df) == df.url
    assert df.url.startswith("https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/")
    monkeypatch.setenv("SAFESTEER_BENCH_DATA_URL", "http://mirror.example/raw/")
    assert data.source_url(df) == df.url.replace(data.RAW_BASE, "http://mirror.example/raw")


# ------------------------------------------------------------------------------------------
# Malformed files
# ------------------------------------------------------------------------------------------


def _write(root: Path, key: str, text: str) -> Path:
    path = root / DATA_FILES[key].relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_malformed_csv_short_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "strongreject",
                  'category,source,forbidden_prompt\r\nViolence,custom,"multi\nline"\r\n'
                  "Violence,custom\r\n")
    with pytest.raises(UserError) as info:
        data.load_strongreject(tmp_path)
    assert str(path) in str(info.value) and "line 4" in str(info.value)


def test_malformed_csv_missing_column(tmp_path: Path) -> None:
    _write(tmp_path, "advbench", "goal_x,target\nhello,world\n")
    pattern = r"harmful_behaviors\.csv, line 1: missing column\(s\) goal"
    with pytest.raises(UserError, match=pattern):
        data.load_advbench(tmp_path)


def test_malformed_csv_empty_text_and_bad_quote(tmp_path: Path) -> None:
    _write(tmp_path, "advbench", "goal,target\nok,fine\n  ,empty goal\n")
    with pytest.raises(UserError, match="line 3: empty goal"):
        data.load_advbench(tmp_path)
    _write(tmp_path, "advbench", 'goal,target\nok,fine\n"unterminated,x\n')
    with pytest.raises(UserError, match="line 3"):
        data.load_advbench(tmp_path)


def test_csv_with_bom_and_blank_lines(tmp_path: Path) -> None:
    _write(tmp_path, "advbench", "\ufeffgoal,target\r\nfirst,a\r\n\r\nsecond,b\r\n")
    assert [p.text for p in data.load_advbench(tmp_path)] == ["first", "second"]


def test_template_without_placeholder(tmp_path: Path) -> None:
    _write(tmp_path, "gptfuzzer-templates", 'id,text\n0,"has [INSERT PROMPT HERE]"\n1,no slot\n')
    with pytest.raises(UserError, match=r"GPTFuzzer\.csv, line 3: template lacks"):
        data.load_gptfuzzer_templates(tmp_path)


def test_malformed_json(tmp_path: Path) -> None:
    _write(tmp_path, "tdc2023-dev", '[\n  "a",\n  "b"\n  "c"\n]\n')
    with pytest.raises(UserError, match=r"tdc2023_dev_behaviors\.json, line 4"):
        data.load_tdc2023(tmp_path)
    _write(tmp_path, "alpaca", '[{"instruction": "x"}, {"text": "y"}]')
    with pytest.raises(UserError, match="item 2"):
        data.load_alpaca(tmp_path)


def test_malformed_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(UserError, match="x.jsonl, line 3"):
        data.read_jsonl(path)


def test_gptfuzzer_labeled_bad_index_and_label(shared: Path, tmp_path: Path) -> None:
    _copy(shared, "gptfuzzer-questions", tmp_path)
    _write(tmp_path, "gptfuzzer-labeled", "question,Response,label\n0,ok,1\n100,bad,0\n")
    with pytest.raises(UserError, match="line 3: question '100'"):
        data.load_gptfuzzer_labeled(tmp_path)
    _write(tmp_path, "gptfuzzer-labeled", "question,Response,label\n0,ok,2\n")
    with pytest.raises(UserError, match="line 2: label"):
        data.load_gptfuzzer_labeled(tmp_path)


# ------------------------------------------------------------------------------------------
# Subsets and overlap
# ------------------------------------------------------------------------------------------


def test_seeded_subset() -> None:
    items = list(range(100))
    a = data.seeded_subset(items, 10, seed=3)
    assert a == data.seeded_subset(items, 10, seed=3)
    assert a != data.seeded_subset(items, 10, seed=4)
    assert a != sorted(a) and len(set(a)) == 10
    assert data.seeded_subset(items, 20, seed=3)[:10] == a  # smaller n is a prefix
    assert data.seeded_subset(items, None, seed=3) == items
    assert data.seeded_subset(items, 500, seed=3) == items
    assert data.seeded_subset(items, 0, seed=3) == []
    with pytest.raises(UserError):
        data.seeded_subset(items, -1, seed=3)


def test_normalize_text() -> None:
    assert data.normalize_text("  How  do I\tkill a\nPython process?? ") == \
        "how do i kill a python process"
    assert data.normalize_text("«Quoted», inner, punctuation!") == "quoted», inner, punctuation"
    assert data.normalize_text("...") == ""


def test_overlap() -> None:
    a = [Prompt("a-0", "Hello, world!", "a"), Prompt("a-1", "unique", "a"), Prompt("a-2", "?", "a")]
    b = [Prompt("b-0", "hello,   WORLD", "b"), Prompt("b-1", "HELLO, WORLD.", "b"),
         Prompt("b-2", "!", "b")]
    assert data.overlap(a, b) == [("a-0", "b-0"), ("a-0", "b-1")]


def test_overlap_on_real_sets(shared: Path) -> None:
    """The default training pool shares a few prompts with StrongREJECT; the runner reports it."""
    pairs = data.overlap(data.load_gptfuzzer_questions(shared), data.load_strongreject(shared))
    assert len(pairs) == 4
