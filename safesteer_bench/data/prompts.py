"""Benchmark data: prompt loaders (split from the data module at its own seams)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from safesteer_bench.errors import unknown_name
from .registry import PLACEHOLDER
from .resolve import resolve
from .readers import _malformed, read_lines
from .records import Prompt, _csv_for, _json_list_for, _number, _text


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
