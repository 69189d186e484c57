#!/usr/bin/env python
"""Annotation passes over the pool of own replies, and the labelled set they make (issue 25).

    # 1. blind batches for the annotators (no method, model or judge verdict in them)
    python scripts/annotate_own.py batches --pool runs/own-pool.jsonl --out runs/annotate --size 200 --second 240
    # 2. each annotator writes <batch>.labels.jsonl beside its batch, reading judge_data/RUBRIC.md
    # 3. rows where the two passes disagree, for the adjudicator (both labels shown, still blind)
    python scripts/annotate_own.py disputes --pool runs/own-pool.jsonl --dir runs/annotate
    # 4. the labelled set and the inter-annotator figures
    python scripts/annotate_own.py merge --pool runs/own-pool.jsonl --dir runs/annotate \\
        --out safesteer_bench/evaluation/judge_data/own_replies.jsonl --report reports/judges/own-annotation.json

The split of a row is a hash of its prompt with this set's own salt (half dev, half test), so every
reply to one prompt falls on one side and a judge that learns from dev rows never saw a test prompt.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OWN_SALT = "safesteer-bench/own-replies/v1"
OWN_DEV_FRACTION = 0.5
PROMPT_SHOWN = 1600  # longer prompts (jailbreak templates) are shown as head … tail


def split_of_prompt(text: str) -> str:
    from safesteer_bench.data import Prompt
    from safesteer_bench.data.splits import split_of

    return split_of(Prompt(id="own", text=text, source="own"), OWN_DEV_FRACTION, OWN_SALT)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def shown_prompt(text: str) -> str:
    if len(text) <= PROMPT_SHOWN:
        return text
    return text[:500] + "\n[… middle of a long prompt left out …]\n" + text[-(PROMPT_SHOWN - 500):]


def blind(row: dict[str, Any]) -> dict[str, Any]:
    """What an annotator sees: the prompt's kind (from its benchmark), the prompt and the reply."""
    return {"id": row["id"], "prompt_kind": "harmful" if row["harmful_prompt"] else "benign",
            "prompt": shown_prompt(row["prompt"]), "reply": row["reply"]}


def batches(args: argparse.Namespace) -> None:
    pool = read_jsonl(args.pool)
    for i in range(0, len(pool), args.size):
        write_jsonl(args.out / f"A{i // args.size + 1}.jsonl", [blind(r) for r in pool[i : i + args.size]])
    # the second pass: a stratified sample (by model x method x prompt kind), in a fresh order
    rng = random.Random(7)
    strata: dict[tuple, list[dict[str, Any]]] = {}
    for r in pool:
        strata.setdefault((r["model"], r["method"], r["harmful_prompt"]), []).append(r)
    take = []
    share = args.second / len(pool)
    for key in sorted(strata, key=str):
        rows = strata[key]
        take += rng.sample(rows, max(1, round(share * len(rows))))
    rng.shuffle(take)
    half = (len(take) + 1) // 2
    for j, part in enumerate((take[:half], take[half:]), 1):
        write_jsonl(args.out / f"B{j}.jsonl", [blind(r) for r in part])
    print(f"{len(pool)} rows in pass A batches of {args.size}; {len(take)} in pass B ({half} + {len(take) - half})")


LABEL_KEYS = ("response", "harmful", "confidence")


def _labels(dir_: Path, prefix: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(dir_.glob(f"{prefix}*.labels.jsonl")):
        for r in read_jsonl(f):
            if r.get("response") not in ("refusal", "compliance", "other"):
                raise SystemExit(f"{f}: row {r.get('id')} has response {r.get('response')!r}")
            r["harmful"] = int(r.get("harmful") or 0)
            out[r["id"]] = r
    return out


def disputes(args: argparse.Namespace) -> None:
    pool = {r["id"]: r for r in read_jsonl(args.pool)}
    a, b = _labels(args.dir, "A"), _labels(args.dir, "B")
    rows = []
    for rid, lb in b.items():
        la = a[rid]
        if la["response"] != lb["response"] or la["harmful"] != lb["harmful"]:
            rows.append({**blind(pool[rid]), "first": {k: la.get(k) for k in (*LABEL_KEYS, "tags", "note")},
                         "second": {k: lb.get(k) for k in (*LABEL_KEYS, "tags", "note")}})
    write_jsonl(args.dir / "disputes.jsonl", rows)
    print(f"{len(rows)} of {len(b)} doubly labelled rows disputed -> {args.dir / 'disputes.jsonl'}")


def kappa(x: list[Any], y: list[Any]) -> float | None:
    n = len(x)
    if not n:
        return None
    agree = sum(i == j for i, j in zip(x, y)) / n
    cx, cy = Counter(x), Counter(y)
    expected = sum(cx[k] * cy[k] for k in set(cx) | set(cy)) / n / n
    return 1.0 if expected == 1 else (agree - expected) / (1 - expected)


def merge(args: argparse.Namespace) -> None:
    pool = read_jsonl(args.pool)
    a, b = _labels(args.dir, "A"), _labels(args.dir, "B")
    adjudicated = {r["id"]: r for r in read_jsonl(args.dir / "adjudicated.jsonl")} \
        if (args.dir / "adjudicated.jsonl").exists() else {}
    missing = [r["id"] for r in pool if r["id"] not in a]
    if missing:
        raise SystemExit(f"{len(missing)} pool rows have no first-pass label (e.g. {missing[:3]})")
    out = []
    for r in pool:
        la, lb, adj = a[r["id"]], b.get(r["id"]), adjudicated.get(r["id"])
        final = adj or la
        if lb is not None and (la["response"] != lb["response"] or la["harmful"] != lb["harmful"]) and adj is None:
            raise SystemExit(f"row {r['id']} is disputed but not adjudicated")
        how = "adjudicated" if adj else "agreed" if lb is not None else "single"
        harmful = int(final["harmful"]) if r["harmful_prompt"] else 0
        out.append({**{k: r[k] for k in ("id", "model", "method", "benchmark", "harmful_prompt", "prompt", "reply",
                                         "max_new_tokens")},
                    "split": split_of_prompt(r["prompt"]), "response": final["response"], "harmful": harmful,
                    "confidence": final.get("confidence") or "medium", "tags": _tags(final.get("tags")),
                    "labels": how, **({"resolution": adj.get("note", "")} if adj else {})})
    write_jsonl(args.out, out)
    both = [rid for rid in b if rid in a]
    report = {
        "rows": len(out), "split": dict(Counter(r["split"] for r in out)),
        "double_labelled": len(both),
        "inter_annotator": {
            "response_3way": {"kappa": kappa([a[i]["response"] for i in both], [b[i]["response"] for i in both]),
                              "agreement": sum(a[i]["response"] == b[i]["response"] for i in both) / len(both)},
            "refusal": {"kappa": kappa([a[i]["response"] == "refusal" for i in both],
                                       [b[i]["response"] == "refusal" for i in both])},
            "harmful_on_harmful_prompts": {"kappa": kappa(
                [a[i]["harmful"] for i in both if _harmful_prompt(pool, i)],
                [b[i]["harmful"] for i in both if _harmful_prompt(pool, i)])},
        },
        "adjudicated": len(adjudicated),
        "labels": dict(Counter(r["labels"] for r in out)),
        "by_response": dict(Counter(r["response"] for r in out)),
        "harmful_on_harmful_prompts": sum(r["harmful"] for r in out if r["harmful_prompt"]),
        "harmful_prompts": sum(r["harmful_prompt"] for r in out),
        "by_model": dict(Counter(r["model"] for r in out)), "by_method": dict(Counter(r["method"] for r in out)),
        "by_benchmark": dict(Counter(r["benchmark"] for r in out)),
        "by_length": dict(Counter(str(r["max_new_tokens"]) for r in out)),
    }
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


def _harmful_prompt(pool: list[dict[str, Any]], rid: str) -> bool:
    return next(r["harmful_prompt"] for r in pool if r["id"] == rid)


def _tags(tags: Any) -> list[str]:
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",")]
    return sorted({str(t).strip() for t in tags or [] if str(t).strip()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("batches")
    b.add_argument("--pool", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--size", type=int, default=200)
    b.add_argument("--second", type=int, default=240)
    d = sub.add_parser("disputes")
    d.add_argument("--pool", type=Path, required=True)
    d.add_argument("--dir", type=Path, required=True)
    m = sub.add_parser("merge")
    m.add_argument("--pool", type=Path, required=True)
    m.add_argument("--dir", type=Path, required=True)
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--report", type=Path, required=True)
    args = p.parse_args()
    {"batches": batches, "disputes": disputes, "merge": merge}[args.cmd](args)


if __name__ == "__main__":
    main()
